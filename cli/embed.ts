/**
 * `deno task embed`: writes the CLS features (after the final norm, not
 * normalised) of every image of a dataset split to a safetensors file:
 * `features` [N, D], `indices` [N] (each row's item of the split, in its
 * order: unreadable files leave no row) and, when known, `labels` [N]. The
 * metadata records the preprocessing (size, mean, std), the weights and the
 * split, and for an image folder `files`: each row's file, relative to it (past 16 MiB of names, the file
 * `<out>.files.json`, named by `files_json`).
 *
 * Exit codes: 0 written, 1 a run-time failure (unreadable data), 2 a bad flag,
 * value, path or weights file (one line on stderr). `--out` is checked before
 * anything is loaded, and nothing is written on any error.
 *
 * @example
 * ```sh
 * deno task embed --weights output/checkpoint.safetensors --data fmnist --out features.safetensors
 * deno task embed --weights dino_vits16.safetensors --arch vit_small --patch-size 16 --data photos/ --out f.safetensors
 * ```
 * @module
 */
import { basename, relative } from "node:path";
import { defaultMaxImagePixels, dispose, exists, tensor, writeFileAtomic } from "../mod.ts";
import { openDataset } from "../lib/data/open.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { evalResizeSide, extractFeatures } from "../lib/eval/knn.ts";
import { Bar } from "./bar.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";
import {
  dataSpec,
  failure,
  integer,
  loadModel,
  MODEL_FLAGS,
  modelHelp,
  modelOptions,
  outputFile,
  parseFlags,
  UsageError,
  weightsFile,
} from "./flags.ts";

const HELP = `usage: deno task embed --weights FILE --data DATA --out FILE [options]

Writes features [N, D] (CLS after the final norm), indices [N] (each row's item of the split: unreadable files
leave no row) and labels [N] of a dataset split; for an image folder, the metadata's "files" names each row's file
(a JSON list, relative to --data).

options:
  --weights FILE        a checkpoint of this project, or official weights (.pth as published, or .safetensors) (required)
  --data DATA           fmnist, cifar10, cifar100 or an image folder (required)
  --out FILE            the .safetensors file to write, in an existing folder (required)
  --split NAME          train or test (default test)
${modelHelp()}
  --image-size N        side of the embedded images, 1 to 8192 (default: the model's)
  --mean M,M,M          normalisation mean, one per channel (default: the checkpoint's, else ImageNet's)
  --std S,S,S           normalisation std, one per channel, > 0 (default: the checkpoint's, else ImageNet's)
  --batch-size N        images per forward pass, 1 to 65536 (default 256)
  --max-image-pixels N  largest image (width x height) decoded; larger files are skipped
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

/** The largest list of file names kept in the safetensors header, whose readers refuse headers of 100 MB. */
export const MAX_FILES_METADATA = 16 * 2 ** 20;

/**
 * Where the rows' file names go: the metadata's `files` (a JSON list), or, past `limit` bytes (a folder of a few
 * hundred thousand images), the file `<out>.files.json` (`aside`, its bytes), which the metadata's `files_json`
 * names. Pure: the command writes the file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { filesMetadata } from "./embed.ts";
 * assert.deepEqual(filesMetadata("f.safetensors", ["a/1.png"]), { metadata: { files: '["a/1.png"]' } });
 * assert.deepEqual(filesMetadata("f.safetensors", ["a/1.png"], 4).metadata, { files_json: "f.safetensors.files.json" });
 * ```
 */
export function filesMetadata(
  out: string,
  names: string[],
  limit = MAX_FILES_METADATA,
): { metadata: Record<string, string>; aside?: Uint8Array } {
  const json = JSON.stringify(names), bytes = new TextEncoder().encode(json);
  if (bytes.length <= limit) return { metadata: { files: json } };
  return { metadata: { files_json: basename(`${out}.files.json`) }, aside: bytes };
}

/** Comma-separated finite numbers, one per channel (1 or 3). */
function numbers(flag: string, v: string): number[] {
  const xs = v.split(",").map((s) => s.trim() === "" ? NaN : Number(s));
  if (xs.some((x) => !Number.isFinite(x))) throw new UsageError(`${flag} takes comma-separated numbers, got "${v}"`);
  if (xs.length !== 1 && xs.length !== 3) {
    throw new UsageError(`${flag} takes one number per channel (1 or 3), got ${xs.length}`);
  }
  return xs;
}

function parse(args: string[]) {
  const v = parseFlags(args, {
    weights: { type: "string" },
    data: { type: "string" },
    out: { type: "string" },
    split: { type: "string", default: "test" },
    ...MODEL_FLAGS,
    "image-size": { type: "string" },
    mean: { type: "string" },
    std: { type: "string" },
    "batch-size": { type: "string", default: "256" },
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  for (const k of ["weights", "data", "out"] as const) if (!v[k]) throw new UsageError(`--${k} is required`);
  if (v.split !== "train" && v.split !== "test") {
    throw new UsageError(`--split must be train or test, got "${v.split}"`);
  }
  const mean = v.mean === undefined ? undefined : numbers("--mean", v.mean);
  const std = v.std === undefined ? undefined : numbers("--std", v.std);
  if (std?.some((s) => !(s > 0))) throw new UsageError(`--std must be positive, got ${v.std}`);
  if (mean && std && mean.length !== std.length) {
    throw new UsageError(`--mean has ${mean.length} values, --std ${std.length}: give one per channel to both`);
  }
  const maxPixels = v["max-image-pixels"];
  return {
    split: v.split as "train" | "test",
    ...modelOptions(v),
    imageSize: v["image-size"] === undefined ? undefined : integer("--image-size", v["image-size"], 1, 8192),
    batchSize: integer("--batch-size", v["batch-size"], 1, 65536),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    mean,
    std,
    out: outputFile("--out", v.out!),
    weights: weightsFile("--weights", v.weights!),
    data: dataSpec(v.data!),
  };
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let model: EvalBackbone | undefined, ds: Dataset | undefined;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    model = loadModel("--weights", o.weights, o);
    const vit = model.resnet ?? model.vit;
    const size = o.imageSize ?? model.imageSize;
    if (model.vit && size % model.vit.patchSize !== 0) {
      throw new UsageError(`--image-size ${size} is not a multiple of the model's patch size ${model.vit.patchSize}`);
    }
    const C = vit.inChans;
    const fallback = C === 3
      ? { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
      : { mean: [0.5], std: [0.5] };
    const norm = {
      mean: o.mean ?? (model.normalization ?? fallback).mean,
      std: o.std ?? (model.normalization ?? fallback).std,
    };
    for (const [flag, given] of [["--mean", o.mean], ["--std", o.std]] as const) {
      if (given && given.length !== C) {
        throw new UsageError(`${flag} needs ${C} value(s), one per channel of the model's images, got ${given.length}`);
      }
    }
    ds = openDataset(o.data, o.split, {
      side: evalResizeSide(size),
      crop: size,
      channels: C as 1 | 3,
      maxImagePixels: o.maxImagePixels,
    });
    if (ds.channels !== C) {
      throw new UsageError(`--weights ${o.weights} takes ${C}-channel images; --data ${o.data} has ${ds.channels}`);
    }
    const bar = new Bar("features", ds.length, { unit: "image" });
    const { features, labels, indices } = await extractFeatures(model.backbone, vit, ds, { size, ...norm }, {
      batchSize: o.batchSize,
      onProgress: (n) => bar.tick(n),
    }).finally(() => bar.finish());
    try {
      const out: Record<string, ReturnType<typeof tensor>> = { features };
      using labelTensor = tensor(BigInt64Array.from(labels, BigInt));
      if (ds.labels) out.labels = labelTensor;
      // Which item of the split each row is: unreadable files leave no row.
      using indexTensor = tensor(BigInt64Array.from(indices, BigInt));
      out.indices = indexTensor;
      const names = ds.files
        ? filesMetadata(o.out, Array.from(indices, (i) => relative(o.data, ds!.files![i])))
        : { metadata: {} };
      // The list beside the file first, so that the features never name a list that is not there; an earlier run's
      // list goes only once the new file is in place.
      const aside = `${o.out}.files.json`;
      if (names.aside) writeFileAtomic(aside, names.aside);
      writeSafetensors(o.out, out, {
        preprocessing: JSON.stringify({
          size,
          mean: norm.mean,
          std: norm.std,
          resize: evalResizeSide(size), // the short side, bicubic, for images larger than `size`
          crop: "center",
          range: "[0, 1] then normalised",
        }),
        weights: o.weights,
        source: model.source,
        data: o.data,
        split: o.split,
        classes: JSON.stringify(ds.classes),
        ...names.metadata,
        [model.resnet ? "resnet" : "vit"]: JSON.stringify(vit),
      });
      if (!names.aside && exists(aside)) Deno.removeSync(aside); // an earlier run's list, not this file's
      const labelled = ds.labels ? `, labels [${labels.length}]` : "";
      const named = names.aside ? `, files (${aside})` : ds.files ? ", files (metadata)" : "";
      console.log(`wrote ${o.out}: features [${features.shape}], indices [${indices.length}]${labelled}${named}`);
    } finally {
      features.dispose();
    }
    return 0;
  } catch (e) {
    return failure(e, "embed");
  } finally {
    if (model) dispose(model.backbone);
    ds?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
