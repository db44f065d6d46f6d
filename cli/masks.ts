/**
 * `deno task masks`: the DINO paper's Table 8 at small scale. Does the last block's attention of a ViT trained
 * with DINO segment objects better than the same ViT trained with labels, or left at random? On a dataset of
 * Fashion-MNIST items pasted on crops of real photos with known masks (`scripts/gen_objects.py`, made when
 * missing), it trains DINO (`cli/train.ts`) and the same network supervised on the item labels for the same
 * number of epochs (`cli/finetune.ts --from-scratch`), keeps a third at its random initialisation, and scores
 * each head's 60%-mass attention mask against the true masks of the held-out images by the Jaccard similarity.
 * Writes `<output-dir>/masks.md`, `masks.json` and `masks.png` (pictures of the first held-out images). Runs
 * that are complete are reused.
 *
 * Exit codes: 0 done, 1 a run or the evaluation failed, 2 a bad flag, 130 interrupted.
 *
 * @example
 * ```sh
 * deno task masks                                     # about 20 minutes on 2 cores
 * deno task masks --epochs 1 --output-dir output/masks-short
 * deno task masks -- --lr 0.002                       # flags after -- go to the DINO run
 * ```
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  decodeImages,
  dispose,
  exists,
  Generator,
  permute,
  select,
  tidy,
  writeFileAtomic,
  writeImage,
} from "../mod.ts";
import { initViT, type ViTConfig, type ViTParams } from "../lib/model/vit.ts";
import {
  attentionMaps,
  blend,
  decodeIndexedPng,
  drawMask,
  heatmap,
  type Normalization,
  tileGrid,
  toRGB,
  upsampleNearest,
} from "../lib/eval/mod.ts";
import { attentionJaccards, type JaccardSummary, summarizeJaccards } from "../lib/eval/segmentation.ts";
import { loadBackbone, loadEvalBackbone } from "../lib/weights/mod.ts";
import { failure, integer, parseFlags, parseTrainArgs, splitPassthrough, UsageError } from "./flags.ts";
import { finishedRun } from "./run_folder.ts";
import { main as train } from "./train.ts";
import { main as finetune } from "./finetune.ts";

const SIZE = 64, PATCH = 8;

const HELP = `usage: deno task masks [options] [-- DINO training flags]

The DINO paper's Table 8 at small scale: the Jaccard similarity between the true object masks of held-out
images and the masks that keep 60% of each head's CLS attention in the last block, for the same ViT trained
with DINO, trained with labels (same epochs), and at random initialisation. Best head and mean over heads.

The data: Fashion-MNIST items pasted on crops of scikit-image's photos at ${SIZE} px with their masks, made by
scripts/gen_objects.py when --data has no train/ folder (needs /usr/bin/python3 with numpy, PIL and scipy,
apt-get install python3-skimage dataset-fashion-mnist). The network: the fmnist preset's ViT (D 128, depth 4,
4 heads) at patch ${PATCH}, 2 x ${SIZE} + 4 x 32 px crops.

options:
  --output-dir DIR      where the runs, masks.md, masks.json and masks.png go (default output/masks)
  --data DIR            the dataset (default <output-dir>/data; made there when missing)
  --seed N              seed of the data, both runs and the random network (default 0)
  --epochs N            epochs of the DINO run and of the supervised run (default 4)
  --max-steps N         stop the DINO run after N steps (default: all epochs)
  --train-limit N       train on the first N training images only (0: all)
  --val-limit N         score the first N held-out images only (0: all)
  --pictures N          held-out images drawn in masks.png (default 6)
  -h, --help            this help
Flags after -- are passed to the DINO run (deno task train --help lists them).`;

function parse(args: string[]) {
  const { own, extra } = splitPassthrough(args);
  const v = parseFlags(own, {
    "output-dir": { type: "string", default: join("output", "masks") },
    data: { type: "string" },
    seed: { type: "string", default: "0" },
    epochs: { type: "string", default: "4" },
    "max-steps": { type: "string", default: "0" },
    "train-limit": { type: "string", default: "0" },
    "val-limit": { type: "string", default: "0" },
    pictures: { type: "string", default: "6" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  const outputDir = v["output-dir"];
  const data = v.data ?? join(outputDir, "data");
  const seed = integer("--seed", v.seed, 0);
  const epochs = integer("--epochs", v.epochs, 1, 10000);
  const maxSteps = integer("--max-steps", v["max-steps"], 0);
  const trainLimit = integer("--train-limit", v["train-limit"], 0);
  const dinoDir = join(outputDir, "dino"), supervisedDir = join(outputDir, "supervised");
  const dinoArgs = [
    ...["--data", data, "--image-size", String(SIZE), "--patch-size", String(PATCH), "--augmentation", "cifar32"],
    ...["--global-crops-size", String(SIZE), "--local-crops-size", "32", "--local-crops-number", "4"],
    // The official momentum schedule, as the README's masks were measured (the fmnist preset now holds it at 0.99).
    ...["--momentum-teacher-end", "1"],
    ...["--epochs", String(epochs), "--max-steps", String(maxSteps), "--train-limit", String(trainLimit)],
    ...["--seed", String(seed), "--report", "false", ...extra, "--output-dir", dinoDir],
  ];
  const settings = parseTrainArgs(dinoArgs); // a bad passthrough flag is a usage error before anything runs
  if (settings === "help") throw new UsageError("--help is not a training flag here: use deno task masks --help");
  if (settings.arch.startsWith("resnet")) {
    throw new UsageError("attention masks need a ViT: drop --arch " + settings.arch);
  }
  const supervised = {
    fromScratch: true,
    epochs,
    seed,
    layerDecay: 1,
    warmupEpochs: Math.min(1, epochs / 4),
    imageSize: SIZE,
    trainLimit,
  };
  const supervisedArgs = [
    ...["--weights", join(dinoDir, "checkpoint.safetensors"), "--from-scratch", "--data", data],
    ...["--epochs", String(epochs), "--seed", String(seed), "--layer-decay", "1"],
    ...["--warmup-epochs", String(supervised.warmupEpochs), "--image-size", String(SIZE)],
    ...["--train-limit", String(trainLimit), "--output-dir", supervisedDir],
  ];
  return {
    outputDir,
    data,
    dataGiven: v.data !== undefined,
    seed,
    dinoDir,
    dinoArgs,
    settings,
    supervisedDir,
    supervisedArgs,
    supervised,
    valLimit: integer("--val-limit", v["val-limit"], 0),
    pictures: integer("--pictures", v.pictures, 0, 100),
  };
}

type Options = Exclude<ReturnType<typeof parse>, "help">;

/** Makes the dataset with the checked-in generator; throws with the fix when it cannot. */
async function makeData(o: Options): Promise<void> {
  const script = join(dirname(fileURLToPath(import.meta.url)), "..", "scripts", "gen_objects.py");
  const python = Deno.env.get("DINO_PYTHON") ?? "/usr/bin/python3";
  console.log(`making the dataset: ${python} ${script} ${o.data} --seed ${o.seed}`);
  let status: Deno.CommandStatus;
  try {
    status = await new Deno.Command(python, { args: [script, o.data, "--seed", String(o.seed)] }).spawn().status;
  } catch (e) {
    throw new Error(
      `cannot run ${python} (${e instanceof Error ? e.message : e}): install Python 3 with numpy, PIL and scipy ` +
        "(apt-get install python3-skimage), or set DINO_PYTHON",
    );
  }
  if (!status.success) throw new Error(`scripts/gen_objects.py failed (exit ${status.code}): see its message above`);
}

/** The held-out images and their masks, class folder by class folder, in name order. */
function heldOut(data: string, limit: number): { images: string[]; masks: string[] } {
  const val = join(data, "val"), maskDir = join(data, "val_masks");
  if (!exists(maskDir)) {
    throw new UsageError(`--data ${data} has no val_masks/ folder: make it with scripts/gen_objects.py`);
  }
  const images: string[] = [], masks: string[] = [];
  const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  for (const cls of names(val)) {
    for (const file of names(join(val, cls))) {
      const mask = join(maskDir, cls, file);
      if (!exists(mask)) throw new Error(`${join(val, cls, file)} has no mask ${mask}`);
      images.push(join(val, cls, file));
      masks.push(mask);
    }
  }
  return limit > 0 ? { images: images.slice(0, limit), masks: masks.slice(0, limit) } : { images, masks };
}

interface Network {
  name: string;
  label: string;
  vit: ViTParams;
  normalization: Normalization;
}

/** The three networks: DINO's teacher, the supervised one, and the random initialisation of the same shape. */
function networks(o: Options): { cfg: ViTConfig; nets: Network[] } {
  const dino = loadEvalBackbone(join(o.dinoDir, "checkpoint.safetensors"));
  if (!dino.vit) throw new Error("the DINO run holds no ViT");
  const norm = dino.normalization!;
  const supervisedNorm = JSON.parse(Deno.readTextFileSync(join(o.supervisedDir, "config.json"))).normalization;
  const supervised = loadBackbone(join(o.supervisedDir, "checkpoint.safetensors"), dino.vit);
  using g = new Generator(o.seed);
  return {
    cfg: dino.vit,
    nets: [
      { name: "random", label: "random initialisation", vit: initViT(dino.vit, g), normalization: norm },
      { name: "supervised", label: "supervised (labels)", vit: supervised, normalization: supervisedNorm },
      { name: "dino", label: "DINO", vit: dino.backbone, normalization: norm },
    ],
  };
}

/** Each network's summary on the held-out images, and masks.png. */
async function evaluate(o: Options): Promise<{ cfg: ViTConfig; rows: (JaccardSummary & Network)[] }> {
  const files = heldOut(o.data, o.valLimit);
  const decoded = await decodeImages(files.images, { side: SIZE, channels: 3 });
  const owned: unknown[] = [decoded.images];
  try {
    if (decoded.failed.length) throw new Error(`a held-out image cannot be decoded: ${decoded.firstError}`);
    const images = Array.from({ length: files.images.length }, (_, i) => select(decoded.images, 0, i));
    const truths = files.masks.map((m) => decodeIndexedPng(Deno.readFileSync(m)).labels);
    owned.push(...images, ...truths);
    for (const [i, t] of truths.entries()) {
      if (t.shape[0] !== SIZE || t.shape[1] !== SIZE) throw new Error(`${files.masks[i]} is not ${SIZE} x ${SIZE}`);
    }
    const { cfg, nets } = networks(o);
    owned.push(...nets.map((n) => n.vit));
    const rows = nets.map((n) => {
      const s = summarizeJaccards(attentionJaccards(n.vit, cfg, images, truths, { normalization: n.normalization }));
      console.log(
        `${n.label.padEnd(22)} Jaccard: best head ${(100 * s.best).toFixed(1)} (head ${s.bestHead}), ` +
          `mean over heads ${(100 * s.mean).toFixed(1)} (${s.images} images)`,
      );
      return { ...n, ...s };
    });
    if (o.pictures > 0) {
      const grid = tidy(() => {
        const lines = images.slice(0, o.pictures).map((image, i) => {
          const rgb = toRGB(image);
          const cells = [rgb, drawMask(rgb, truths[i], [255, 255, 255])];
          for (const r of rows) {
            const { attentions, masks } = attentionMaps(r.vit, cfg, image, { normalization: r.normalization });
            cells.push(blend(rgb, heatmap(select(attentions, 0, r.bestHead)), 0.6));
            cells.push(drawMask(rgb, select(masks, 0, r.bestHead), [255, 60, 60]));
          }
          return cells;
        });
        // [H, W, 3] -> twice the size, so that 8 px patches read on a page
        return permute(upsampleNearest(permute(tileGrid(lines, 2), [2, 0, 1]), 2), [1, 2, 0]);
      });
      owned.push(grid);
      writeImage(join(o.outputDir, "masks.png"), grid);
    }
    return { cfg, rows };
  } finally {
    dispose(owned);
  }
}

function markdown(rows: (JaccardSummary & Network)[], o: Options): string {
  const lines = [
    "| network | Jaccard, best head | Jaccard, mean over heads | per head |",
    "| --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.label} | ${(100 * r.best).toFixed(1)} (head ${r.bestHead}) | ${(100 * r.mean).toFixed(1)} | ` +
      `${r.perHead.map((j) => (100 * j).toFixed(1)).join(" / ")} |`
    ),
  ];
  return `${lines.join("\n")}\n\n${rows[0].images} held-out images of ${o.data}, ${SIZE} px, patch ${PATCH}; ` +
    `masks keep 60% of each head's CLS attention (last block); seed ${o.seed}.\n`;
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    Deno.mkdirSync(o.outputDir, { recursive: true });
    if (!exists(join(o.data, "train"))) {
      if (o.dataGiven && exists(o.data)) {
        throw new UsageError(`--data ${o.data} has no train/ folder: leave --data out to make the dataset`);
      }
      await makeData(o);
    }
    const steps: [string, string, () => boolean, () => Promise<number>][] = [
      ["DINO", o.dinoDir, () => finishedRun(o.dinoDir, o.settings), () => train(o.dinoArgs)],
      [
        "supervised",
        o.supervisedDir,
        () => finishedRun(o.supervisedDir, o.supervised),
        () => finetune(o.supervisedArgs),
      ],
    ];
    for (const [what, dir, done, run] of steps) {
      if (done()) {
        console.log(`${what}: reusing the complete run in ${dir}`);
        continue;
      }
      console.log(`${what}: training into ${dir}`);
      const code = await run();
      if (code !== 0) {
        if (code !== 2 && code !== 130 && code !== 143) console.error(`error: the ${what} run failed (exit ${code})`);
        return code === 2 ? 1 : code;
      }
    }
    const { rows } = await evaluate(o);
    const table = markdown(rows, o);
    const json = {
      data: o.data,
      seed: o.seed,
      size: SIZE,
      patch: PATCH,
      threshold: 0.6,
      dino_run: o.dinoDir,
      supervised_run: o.supervisedDir,
      networks: rows.map((r) => ({
        network: r.name,
        best_head: r.bestHead,
        jaccard_best_head: r.best,
        jaccard_mean_over_heads: r.mean,
        jaccard_per_head: r.perHead,
        images: r.images,
      })),
      dino_knn_top1: JSON.parse(Deno.readTextFileSync(join(o.dinoDir, "summary.json"))).knn_top1,
      supervised_top1: JSON.parse(Deno.readTextFileSync(join(o.supervisedDir, "summary.json"))).top1,
    };
    const encode = (s: string) => new TextEncoder().encode(s);
    writeFileAtomic(join(o.outputDir, "masks.md"), encode(table));
    writeFileAtomic(join(o.outputDir, "masks.json"), encode(JSON.stringify(json, null, 2) + "\n"));
    console.log("\n" + table);
    console.log(
      `written: ${join(o.outputDir, "masks.md")}, masks.json` + (o.pictures > 0 ? ", masks.png" : ""),
    );
    return 0;
  } catch (e) {
    return failure(e, "masks");
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
