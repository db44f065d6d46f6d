/**
 * `deno task embed`: writes the CLS features (after the final norm, not
 * normalised) of every image of a dataset split to a safetensors file:
 * `features` [N, D] and, when known, `labels` [N]. The metadata records the
 * preprocessing (size, mean, std), the weights and the split.
 *
 * @example
 * ```sh
 * deno task embed --weights output/checkpoint.safetensors --data fmnist --out features.safetensors
 * deno task embed --weights dino_vits16.safetensors --arch vit_small --patch-size 16 --data photos/ --out f.safetensors
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { defaultMaxImagePixels, dispose, tensor } from "../mod.ts";
import { type Arch, ARCHS } from "../lib/model/vit.ts";
import { UsageError, usageError } from "./flags.ts";
import { openDataset } from "../lib/data/open.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { extractFeatures } from "../lib/eval/knn.ts";
import { loadEvalBackbone } from "../lib/weights/pretrained.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";

const HELP = `usage: deno task embed --weights FILE --data DATA --out FILE [options]

Writes features [N, D] (CLS after the final norm) and labels [N] of a dataset split.

options:
  --weights FILE        a checkpoint of this project, or official-layout weights (.safetensors) (required)
  --data DATA           fmnist, cifar10, cifar100 or an image folder (required)
  --out FILE            the .safetensors file to write (required)
  --split NAME          train or test (default test)
  --arch NAME           for weights without metadata: ${Object.keys(ARCHS).join(", ")}
  --patch-size N        for weights without metadata: checked against the weights
  --image-size N        side of the embedded images (default: the model's)
  --mean M,M,M          normalisation mean (default: the checkpoint's, else ImageNet's)
  --std S,S,S           normalisation std (default: the checkpoint's, else ImageNet's)
  --batch-size N        images per forward pass (default 256)
  --max-image-pixels N  largest image (width x height) decoded; larger files are skipped
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

function numbers(name: string, v: string): number[] {
  const xs = v.split(",").map(Number);
  if (xs.some((x) => !Number.isFinite(x))) throw new UsageError(`--${name} takes comma-separated numbers, got "${v}"`);
  return xs;
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let v;
  try {
    ({ values: v } = parseArgs({
      args,
      options: {
        weights: { type: "string" },
        data: { type: "string" },
        out: { type: "string" },
        split: { type: "string", default: "test" },
        arch: { type: "string" },
        "patch-size": { type: "string" },
        "image-size": { type: "string" },
        mean: { type: "string" },
        std: { type: "string" },
        "batch-size": { type: "string", default: "256" },
        "max-image-pixels": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
    if (v.help) {
      console.log(HELP);
      return 0;
    }
    for (const k of ["weights", "data", "out"] as const) if (!v[k]) throw new UsageError(`--${k} is required`);
    if (v.split !== "train" && v.split !== "test") {
      throw new UsageError(`--split must be train or test, got "${v.split}"`);
    }
    if (v.arch && !(v.arch in ARCHS)) throw new UsageError(`--arch must be one of ${Object.keys(ARCHS).join(", ")}`);
    v["max-image-pixels"] ??= String(defaultMaxImagePixels());
    for (const k of ["patch-size", "image-size", "batch-size", "max-image-pixels"] as const) {
      if (v[k] !== undefined && !(Number.isInteger(Number(v[k])) && Number(v[k]) > 0)) {
        throw new UsageError(`--${k} takes a positive integer, got "${v[k]}"`);
      }
    }
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message.replace(/\. To specify.*$/s, "") : e}\n\n${HELP}`);
    return 2;
  }
  let model;
  try {
    model = loadEvalBackbone(v.weights!, {
      arch: v.arch as Arch | undefined,
      patchSize: v["patch-size"] ? Number(v["patch-size"]) : undefined,
    });
  } catch (e) {
    const u = usageError(e);
    console.error(`error: ${u?.message ?? (e instanceof Error ? e.message : e)}`);
    return u ? 2 : 1;
  }
  let ds: Dataset | undefined;
  try {
    const size = v["image-size"] ? Number(v["image-size"]) : model.vit.imgSize;
    const C = model.vit.inChans;
    const fallback = C === 3
      ? { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
      : { mean: [0.5], std: [0.5] };
    const norm = {
      mean: v.mean ? numbers("mean", v.mean) : (model.normalization ?? fallback).mean,
      std: v.std ? numbers("std", v.std) : (model.normalization ?? fallback).std,
    };
    if (norm.mean.length !== C || norm.std.length !== C) throw new UsageError(`--mean and --std need ${C} values each`);
    ds = openDataset(v.data!, v.split as "train" | "test", {
      side: Math.max(size, Math.round(size * 256 / 224)),
      channels: C as 1 | 3,
      maxImagePixels: Number(v["max-image-pixels"]),
    });
    if (ds.channels !== C) throw new Error(`the model takes ${C}-channel images, ${v.data} has ${ds.channels}`);
    const { features, labels } = await extractFeatures(model.backbone, model.vit, ds, { size, ...norm }, {
      batchSize: Number(v["batch-size"]),
    });
    try {
      const out: Record<string, ReturnType<typeof tensor>> = { features };
      using labelTensor = tensor(BigInt64Array.from(labels, BigInt));
      if (ds.labels) out.labels = labelTensor;
      writeSafetensors(v.out!, out, {
        preprocessing: JSON.stringify({
          size,
          mean: norm.mean,
          std: norm.std,
          crop: "center",
          range: "[0, 1] then normalised",
        }),
        weights: v.weights!,
        source: model.source,
        data: v.data!,
        split: v.split!,
        classes: JSON.stringify(ds.classes),
        vit: JSON.stringify(model.vit),
      });
      console.log(`wrote ${v.out}: features [${features.shape}]${ds.labels ? `, labels [${labels.length}]` : ""}`);
    } finally {
      features.dispose();
    }
    return 0;
  } catch (e) {
    const u = usageError(e);
    console.error(`error: ${u?.message ?? (e instanceof Error ? e.message : e)}`);
    return u ? 2 : 1;
  } finally {
    dispose(model.backbone);
    ds?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
