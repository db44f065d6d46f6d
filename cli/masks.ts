/**
 * `deno task masks`: the DINO paper's Table 8 at small scale. Does the last block's attention of a ViT trained
 * with DINO segment objects better than the same ViT trained with labels, or left at random? On a dataset of
 * Fashion-MNIST items pasted on crops of real texture photos with known masks (`scripts/gen_objects.py`, made
 * when missing), it trains DINO (`cli/train.ts`) and the same network supervised on the item labels for the same
 * number of epochs (`cli/finetune.ts --from-scratch`), keeps a third at its random initialisation, and scores
 * each head's 60%-mass attention mask against the true masks of the held-out images by the Jaccard similarity.
 * Where the data names each image's background photo (`backgrounds.csv`), it also reports what each network's
 * features tell apart: the item's class or the background's photo (weighted k-NN). Writes
 * `<output-dir>/masks.md`, `masks.json` and `masks.png` (pictures of the first held-out images). Runs that are
 * complete are reused.
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
  type Tensor,
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
  extractFeatures,
  heatmap,
  knnClassify,
  type Normalization,
  tileGrid,
  toRGB,
  upsampleNearest,
} from "../lib/eval/mod.ts";
import { tensorDataset } from "../lib/data/mod.ts";
import { attentionJaccards, type JaccardSummary, summarizeJaccards } from "../lib/eval/segmentation.ts";
import { loadBackbone, loadEvalBackbone } from "../lib/weights/mod.ts";
import { isResNetArch } from "../lib/model/resnet.ts";
import { failure, integer, parseFlags, parseTrainArgs, splitPassthrough, UsageError } from "./flags.ts";
import { finishedRun } from "./run_folder.ts";
import { main as train } from "./train.ts";
import { main as finetune } from "./finetune.ts";

const SIZE = 64, PATCH = 8;

const HELP = `usage: deno task masks [options] [-- DINO training flags]

The DINO paper's Table 8 at small scale: the Jaccard similarity between the true object masks of held-out
images and the masks that keep 60% of each head's CLS attention in the last block, for the same ViT trained
with DINO, trained with labels (same epochs), and at random initialisation. Best head and mean over heads.

The data: Fashion-MNIST items pasted on crops of scikit-image's texture photos (grass, gravel, brick) at ${SIZE} px
with their masks, made by scripts/gen_objects.py when --data has no train/ folder (needs /usr/bin/python3 with
numpy, PIL and scipy, apt-get install python3-skimage dataset-fashion-mnist; scripts/gen_objects.py --photos all
makes the harder data on all of its photos). The network: the fmnist preset's ViT (D 128, depth 4, 4 heads) at
patch ${PATCH}, 2 x ${SIZE} + 4 x 32 px crops. Where the data has backgrounds.csv (the generator writes it), a
second table gives each network's k-NN top-1 by the item's class and by the background's photo.

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
  // A ResNet asked for after --: said before the training flags are read (they give it a patch size it would refuse).
  const arch = extra.flatMap((a, i) => a === "--arch" ? [extra[i + 1]] : a.startsWith("--arch=") ? [a.slice(7)] : [])
    .at(-1);
  if (arch && isResNetArch(arch)) throw new UsageError("attention masks need a ViT: drop --arch " + arch);
  const settings = parseTrainArgs(dinoArgs); // a bad passthrough flag is a usage error before anything runs
  if (settings === "help") throw new UsageError("--help is not a training flag here: use deno task masks --help");
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

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

/** A split's images (paths relative to the data folder), class folder by class folder, in name order. */
function splitFiles(data: string, split: "train" | "val", limit: number): string[] {
  const files = names(join(data, split)).flatMap((cls) =>
    names(join(data, split, cls)).map((f) => join(split, cls, f))
  );
  return limit > 0 ? files.slice(0, limit) : files;
}

/** The held-out images and their masks, class folder by class folder, in name order. */
function heldOut(data: string, limit: number): { images: string[]; masks: string[] } {
  for (const folder of ["val", "val_masks"]) {
    if (!exists(join(data, folder))) {
      throw new UsageError(`--data ${data} has no ${folder}/ folder: make the data with scripts/gen_objects.py`);
    }
  }
  const files = splitFiles(data, "val", limit);
  const masks = files.map((f) => join(data, "val_masks", f.slice("val/".length)));
  for (const [i, mask] of masks.entries()) {
    if (!exists(mask)) throw new Error(`${join(data, files[i])} has no mask ${mask}`);
  }
  return { images: files.map((f) => join(data, f)), masks };
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

/** Weighted k-NN top-1 (%) of a network's features by the item's class and by the background's photo. */
interface KnnRow {
  name: string;
  label: string;
  item: number;
  background: number;
}

/**
 * What each network's features tell apart: weighted k-NN top-1 (k 20, T 0.07) of the held-out images (`heldOut`,
 * already decoded: u8 [N, 3, SIZE, SIZE] in `splitFiles` order) against the training images, by the item's class
 * and by the photo the background was cut from (`backgrounds.csv`, which the generator writes; without it,
 * undefined). A network that tells the photos apart and not the items has learned the backgrounds.
 */
async function whatFeaturesTell(
  o: Options,
  cfg: ViTConfig,
  nets: Network[],
  heldOutImages: Tensor,
): Promise<{ photos: number; rows: KnnRow[] } | undefined> {
  const csv = join(o.data, "backgrounds.csv");
  if (!exists(csv)) return undefined;
  const photoOf = new Map(
    Deno.readTextFileSync(csv).trim().split("\n").slice(1).map((line) => {
      const [split, cls, file, photo] = line.split(",");
      return [join(split, cls, file), photo];
    }),
  );
  const classes = names(join(o.data, "train")), photoIds = new Map<string, number>();
  const labels = (files: string[]) => ({
    item: Int32Array.from(files, (f) => classes.indexOf(f.split("/")[1])),
    photo: Int32Array.from(files, (f) => {
      const name = photoOf.get(f);
      if (name === undefined) throw new Error(`${csv} does not name the background of ${f}: make the data again`);
      if (!photoIds.has(name)) photoIds.set(name, photoIds.size);
      return photoIds.get(name)!;
    }),
  });
  const trainFiles = splitFiles(o.data, "train", o.supervised.trainLimit);
  const train = labels(trainFiles), val = labels(splitFiles(o.data, "val", o.valLimit));
  const decoded = await decodeImages(trainFiles.map((f) => join(o.data, f)), { side: SIZE, channels: 3 });
  try {
    if (decoded.failed.length) throw new Error(`a training image cannot be decoded: ${decoded.firstError}`);
    using trainSet = tensorDataset(decoded.images), valSet = tensorDataset(heldOutImages);
    const rows: KnnRow[] = [];
    for (const n of nets) {
      const t = { size: SIZE, mean: [...n.normalization.mean], std: [...n.normalization.std] };
      const memory = await extractFeatures(n.vit, cfg, trainSet, t);
      const queries = await extractFeatures(n.vit, cfg, valSet, t);
      try {
        rows.push({
          name: n.name,
          label: n.label,
          item: knnClassify(memory.features, train.item, queries.features, val.item).top1,
          background: knnClassify(memory.features, train.photo, queries.features, val.photo).top1,
        });
      } finally {
        dispose([memory.features, queries.features]);
      }
    }
    return { photos: photoIds.size, rows };
  } finally {
    decoded.images.dispose();
  }
}

/** Each network's summary on the held-out images, what its features tell apart, and masks.png. */
async function evaluate(o: Options, files: { images: string[]; masks: string[] }): Promise<{
  cfg: ViTConfig;
  rows: (JaccardSummary & Network)[];
  knn?: { photos: number; rows: KnnRow[] };
}> {
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
    const knn = await whatFeaturesTell(o, cfg, nets, decoded.images);
    for (const k of knn?.rows ?? []) {
      console.log(
        `${k.label.padEnd(22)} k-NN top-1: item ${k.item.toFixed(1)}%, background photo ${k.background.toFixed(1)}%`,
      );
    }
    return { cfg, rows, knn };
  } finally {
    dispose(owned);
  }
}

function markdown(
  rows: (JaccardSummary & Network)[],
  o: Options,
  knn?: { photos: number; rows: KnnRow[] },
): string {
  const lines = [
    "| network | Jaccard, best head | Jaccard, mean over heads | per head |",
    "| --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.label} | ${(100 * r.best).toFixed(1)} (head ${r.bestHead}) | ${(100 * r.mean).toFixed(1)} | ` +
      `${r.perHead.map((j) => (100 * j).toFixed(1)).join(" / ")} |`
    ),
  ];
  const knnTable = knn
    ? [
      "",
      `| network | k-NN top-1, item class | k-NN top-1, background photo (${knn.photos}) |`,
      "| --- | --- | --- |",
      ...knn.rows.map((k) => `| ${k.label} | ${k.item.toFixed(1)} | ${k.background.toFixed(1)} |`),
      "",
      "Weighted k-NN (k 20, T 0.07) of the held-out images against the training images, by the item's class and by " +
      "the photo its background was cut from.",
    ]
    : [];
  return `${lines.join("\n")}\n\n${rows[0].images} held-out images of ${o.data}, ${SIZE} px, patch ${PATCH}; ` +
    `masks keep 60% of each head's CLS attention (last block); seed ${o.seed}.\n` +
    (knnTable.length ? knnTable.join("\n") + "\n" : "");
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
    const files = heldOut(o.data, o.valLimit); // a held-out image without its mask is an error now, not after training
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
    const { rows, knn } = await evaluate(o, files);
    const table = markdown(rows, o, knn);
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
      ...(knn && {
        background_photos: knn.photos,
        knn_top1: knn.rows.map((k) => ({ network: k.name, item: k.item, background_photo: k.background })),
      }),
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
