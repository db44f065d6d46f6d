import assert from "node:assert/strict";
import { join } from "node:path";
import { captured, TINY_VIT_FLAGS } from "./helpers.ts";
import { main as masks } from "../cli/masks.ts";
import {
  decodeImage,
  dispose,
  exists,
  Generator,
  liveTensors,
  randint,
  tensor,
  tidy,
  toArray,
  writeImage,
} from "../mod.ts";
import { attentionMaps, encodeIndexedPng } from "../lib/eval/mod.ts";
import { loadEvalBackbone, requireViT } from "../lib/weights/mod.ts";

/**
 * A dataset in the generator's layout, made here (the generator needs scikit-image's photos): noise with one
 * bright square per image, two classes by the square's colour, the squares' masks as indexed PNGs, and a
 * backgrounds.csv that names each class's own "photo", so that telling the photos apart is telling the classes apart.
 */
function tinyObjects(root: string, perClass: { train: number; val: number }): void {
  using g = new Generator(5);
  const backgrounds = ["split,class,file,photo"];
  for (const split of ["train", "val"] as const) {
    for (const [c, cls] of ["red", "blue"].entries()) {
      for (let n = 0; n < perClass[split]; n++) {
        const [x, y, s] = [(n * 13) % 30, (n * 7 + 11 * c) % 30, 20 + (n % 3) * 8];
        tidy(() => {
          const pixels = toArray(randint(g, 0, 120, [64, 64, 3], { dtype: "u8" }));
          const mask = new Uint8Array(64 * 64);
          for (let i = y; i < y + s; i++) {
            for (let j = x; j < x + s; j++) {
              mask[i * 64 + j] = 1;
              pixels.splice((i * 64 + j) * 3, 3, ...(c === 0 ? [250, 40, 40] : [40, 40, 250]));
            }
          }
          Deno.mkdirSync(join(root, split, cls), { recursive: true });
          writeImage(join(root, split, cls, `${n}.png`), tensor(new Uint8Array(pixels), { shape: [64, 64, 3] }));
          backgrounds.push(`${split},${cls},${n}.png,${cls}-noise.png`);
          if (split === "val") {
            Deno.mkdirSync(join(root, "val_masks", cls), { recursive: true });
            const png = encodeIndexedPng(tensor(mask, { shape: [64, 64] }), [[0, 0, 0], [255, 255, 255]]);
            Deno.writeFileSync(join(root, "val_masks", cls, `${n}.png`), png);
          }
        });
      }
    }
  }
  Deno.writeTextFileSync(join(root, "backgrounds.csv"), backgrounds.join("\n") + "\n");
}

const TINY = [...TINY_VIT_FLAGS, "--batch-size", "8", "--log-every", "1"];

Deno.test("masks trains DINO and a supervised twin, scores each head's 60%-mass mask by Jaccard, and reuses complete runs", async () => {
  const root = Deno.makeTempDirSync(), data = join(root, "data"), out = join(root, "out");
  tinyObjects(data, { train: 8, val: 3 });
  const live = liveTensors();
  const args = ["--output-dir", out, "--data", data, "--epochs", "1", "--max-steps", "2", "--pictures", "2"];
  const r = await captured(() => masks([...args, "--", ...TINY]));
  assert.equal(r.value, 0, r.err + r.out);
  assert.equal(liveTensors(), live, "every tensor the program made is released");

  const json = JSON.parse(Deno.readTextFileSync(join(out, "masks.json")));
  assert.deepEqual(json.networks.map((n: { network: string }) => n.network), ["random", "supervised", "dino"]);
  for (const n of json.networks) {
    assert.equal(n.images, 6);
    assert.equal(n.jaccard_per_head.length, 2); // --num-heads 2
    assert(n.jaccard_per_head.every((j: number) => j >= 0 && j <= 1), JSON.stringify(n));
    assert.equal(n.jaccard_best_head, Math.max(...n.jaccard_per_head));
    assert(Math.abs(n.jaccard_mean_over_heads - (n.jaccard_per_head[0] + n.jaccard_per_head[1]) / 2) < 1e-12);
  }

  // The DINO row, recomputed here from the checkpoint: masks by attentionMaps, Jaccard counted in JavaScript.
  const model = requireViT(loadEvalBackbone(join(out, "dino", "checkpoint.safetensors")), "the test");
  const perHead = [0, 0];
  const files = ["blue/0", "blue/1", "blue/2", "red/0", "red/1", "red/2"]; // class folders, then files, by name
  for (const f of files) {
    const { image } = await decodeImage(join(data, "val", `${f}.png`), { side: 64 });
    const truth = new Array<number>(64 * 64).fill(0);
    const [cls, n] = f.split("/");
    const [x, y, s] = [(+n * 13) % 30, (+n * 7 + 11 * (cls === "red" ? 0 : 1)) % 30, 20 + (+n % 3) * 8];
    for (let i = y; i < y + s; i++) for (let j = x; j < x + s; j++) truth[i * 64 + j] = 1;
    const maps = attentionMaps(model.backbone, model.vit, image!, { normalization: model.normalization });
    const m = toArray(maps.masks);
    for (let h = 0; h < 2; h++) {
      let inter = 0, union = 0;
      for (let p = 0; p < 64 * 64; p++) {
        const a = m[h * 64 * 64 + p], b = truth[p];
        inter += a && b ? 1 : 0;
        union += a || b ? 1 : 0;
      }
      perHead[h] += inter / union / files.length;
    }
    dispose([image, maps]);
  }
  dispose(model.backbone);
  const dino = json.networks[2];
  for (let h = 0; h < 2; h++) assert(Math.abs(dino.jaccard_per_head[h] - perHead[h]) < 1e-9, `head ${h}`);

  // Each class has its own photo here, so the k-NN by photo must agree with the k-NN by class, network by network.
  assert.equal(json.background_photos, 2);
  assert.deepEqual(json.knn_top1.map((k: { network: string }) => k.network), ["random", "supervised", "dino"]);
  for (const k of json.knn_top1) {
    assert(k.item >= 0 && k.item <= 100, JSON.stringify(k));
    assert.equal(k.background_photo, k.item, JSON.stringify(k));
  }

  const md = Deno.readTextFileSync(join(out, "masks.md"));
  assert.match(md, /\| DINO \| \d+\.\d \(head [01]\) \| \d+\.\d \| \d+\.\d \/ \d+\.\d \|/);
  assert.match(md, /\| DINO \| \d+\.\d \| \d+\.\d \|\n/); // the k-NN table
  const { image: picture } = await decodeImage(join(out, "masks.png"), { side: 268 });
  assert.deepEqual(picture?.shape, [3, 268, 2 * (2 + 8 * 66)]); // 2 images x (image, truth, 3 x (heat map, mask)), doubled
  picture?.dispose();

  const again = await captured(() => masks([...args, "--", ...TINY]));
  assert.equal(again.value, 0, again.err);
  assert.equal(again.out.match(/reusing the complete run/g)?.length, 2);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("masks: bad flags and a folder without train/, val/ or val_masks/ are usage errors before any training", async () => {
  const dir = Deno.makeTempDirSync();
  const noMasks = join(dir, "no-masks"), out = join(dir, "out");
  for (const split of ["train", "val"]) Deno.mkdirSync(join(noMasks, split, "shirt"), { recursive: true });
  for (
    const [args, message] of [
      [["--epochs", "0"], /--epochs must be between 1 and 10000/],
      [["--pictures", "x"], /--pictures takes an integer/],
      [["--data", dir], /has no train\/ folder: leave --data out to make the dataset/],
      [
        ["--data", noMasks, "--output-dir", out],
        /has no val_masks\/ folder: make the data with scripts\/gen_objects\.py/,
      ],
      [["--output-dir", dir, "--", "--arch", "resnet18"], /attention masks need a ViT/],
      [["--", "--no-such-flag", "1"], /no-such-flag/],
    ] as const
  ) {
    const r = await captured(() => masks([...args]));
    assert.equal(r.value, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, message);
  }
  assert.ok(!exists(join(out, "dino")), "no training started");
  const help = await captured(() => masks(["--help"]));
  assert.equal(help.value, 0);
  assert.match(help.out, /Table 8/);
  Deno.removeSync(dir, { recursive: true });
});
