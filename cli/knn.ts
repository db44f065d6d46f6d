/**
 * `deno task knn`: weighted k-NN accuracy of any checkpoint (its teacher) or
 * official-layout weights, with the data's training split as the memory and
 * its test split as the queries. Any number of test images works.
 *
 * @example
 * ```sh
 * deno task knn --checkpoint output/checkpoint.safetensors --data fmnist
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { defaultMaxImagePixels, dispose } from "../mod.ts";
import { type Arch, ARCHS } from "../lib/model/vit.ts";
import { UsageError, usageError } from "./flags.ts";
import { openDataset } from "../lib/data/open.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { extractFeatures, knnClassify } from "../lib/eval/knn.ts";
import { loadEvalBackbone } from "../lib/weights/pretrained.ts";

const HELP = `usage: deno task knn --checkpoint FILE --data DATA [options]

Weighted k-NN (cosine similarity, votes exp(sim / T)) of the CLS features after the final norm.

options:
  --checkpoint FILE     a checkpoint of this project, or official-layout weights (.safetensors) (required)
  --data DATA           fmnist, cifar10, cifar100 or a folder with train/ and val/ (required)
  --k N                 neighbours (default 20; several as 10,20,100,200)
  --temperature T       vote temperature (default 0.07)
  --arch NAME           for weights without metadata: ${Object.keys(ARCHS).join(", ")}
  --patch-size N        for weights without metadata: checked against the weights
  --image-size N        side of the evaluated images (default: the model's)
  --batch-size N        images per forward pass (default 256)
  --train-limit N       use only the first N training images (default: all)
  --test-limit N        use only the first N test images (default: all)
  --max-image-pixels N  largest image (width x height) decoded; larger files are skipped
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

function int(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} takes a positive integer, got "${v}"`);
  return n;
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let o;
  try {
    const { values } = parseArgs({
      args,
      options: {
        checkpoint: { type: "string" },
        data: { type: "string" },
        k: { type: "string", default: "20" },
        temperature: { type: "string", default: "0.07" },
        arch: { type: "string" },
        "patch-size": { type: "string" },
        "image-size": { type: "string" },
        "batch-size": { type: "string" },
        "train-limit": { type: "string" },
        "test-limit": { type: "string" },
        "max-image-pixels": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (!values.checkpoint) throw new UsageError("--checkpoint is required");
    if (!values.data) throw new UsageError("--data is required");
    if (values.arch && !(values.arch in ARCHS)) {
      throw new UsageError(`--arch must be one of ${Object.keys(ARCHS).join(", ")}`);
    }
    const ks = values.k!.split(",").map((s) => int("k", s, 20));
    const temperature = Number(values.temperature);
    if (!(temperature > 0)) throw new UsageError(`--temperature must be positive, got "${values.temperature}"`);
    o = {
      checkpoint: values.checkpoint,
      data: values.data,
      ks,
      temperature,
      arch: values.arch as Arch | undefined,
      patchSize: values["patch-size"] ? int("patch-size", values["patch-size"], 16) : undefined,
      imageSize: values["image-size"] ? int("image-size", values["image-size"], 224) : undefined,
      batchSize: int("batch-size", values["batch-size"], 256),
      trainLimit: values["train-limit"] ? int("train-limit", values["train-limit"], 0) : 0,
      testLimit: values["test-limit"] ? int("test-limit", values["test-limit"], 0) : 0,
      maxImagePixels: int("max-image-pixels", values["max-image-pixels"], defaultMaxImagePixels()),
    };
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message.replace(/\. To specify.*$/s, "") : e}\n\n${HELP}`);
    return 2;
  }
  let model;
  try {
    model = loadEvalBackbone(o.checkpoint, { arch: o.arch, patchSize: o.patchSize });
  } catch (e) {
    const u = usageError(e);
    console.error(`error: ${u?.message ?? (e instanceof Error ? e.message : e)}`);
    return u ? 2 : 1;
  }
  const size = o.imageSize ?? model.vit.imgSize;
  let train: Dataset | undefined, test: Dataset | undefined;
  try {
    train = openDataset(o.data, "train", {
      side: Math.max(size, Math.round(size * 256 / 224)),
      channels: model.vit.inChans as 1 | 3,
      maxImagePixels: o.maxImagePixels,
    });
    test = openDataset(o.data, "test", {
      side: Math.max(size, Math.round(size * 256 / 224)),
      channels: model.vit.inChans as 1 | 3,
      maxImagePixels: o.maxImagePixels,
    });
    if (train.channels !== model.vit.inChans) {
      throw new Error(`the model takes ${model.vit.inChans}-channel images, ${o.data} has ${train.channels}`);
    }
    const norm = model.normalization ??
      (model.vit.inChans === 3
        ? { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
        : { mean: [0.5], std: [0.5] });
    const t = { size, ...norm };
    const a = await extractFeatures(model.backbone, model.vit, train, t, {
      batchSize: o.batchSize,
      limit: o.trainLimit,
    });
    const b = await extractFeatures(model.backbone, model.vit, test, t, { batchSize: o.batchSize, limit: o.testLimit });
    try {
      console.log(`k-NN on ${b.labels.length} test images, memory of ${a.labels.length} (T ${o.temperature}):`);
      for (const k of o.ks) {
        const r = knnClassify(a.features, a.labels, b.features, b.labels, { k, temperature: o.temperature });
        console.log(`  k ${String(k).padStart(3)}: top-1 ${r.top1.toFixed(2)}%  top-5 ${r.top5.toFixed(2)}%`);
      }
    } finally {
      dispose([a.features, b.features]);
    }
    return 0;
  } catch (e) {
    const u = usageError(e);
    console.error(`error: ${u?.message ?? (e instanceof Error ? e.message : e)}`);
    return u ? 2 : 1;
  } finally {
    dispose(model.backbone);
    train?.dispose();
    test?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
