/**
 * `deno task knn`: weighted k-NN accuracy of any checkpoint (its teacher) or
 * official-layout weights, with the data's training split as the memory and
 * its test split as the queries. Any number of test images works.
 *
 * Exit codes: 0 done, 1 a run-time failure (unreadable or unlabelled data),
 * 2 a bad flag, value, path or weights file (one line on stderr; nothing is
 * loaded before every flag is checked).
 *
 * @example
 * ```sh
 * deno task knn --checkpoint output/checkpoint.safetensors --data fmnist
 * ```
 * @module
 */
import { defaultMaxImagePixels, dispose } from "../mod.ts";
import {
  dataSpec,
  failure,
  integer,
  loadModel,
  MODEL_FLAGS,
  modelHelp,
  modelOptions,
  openEvalSplits,
  parseFlags,
  UsageError,
  warnLimits,
  weightsFile,
} from "./flags.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
import { type Dataset, firstImages } from "../lib/data/mod.ts";
import { extractFeatures, knnClassify, selfRows } from "../lib/eval/knn.ts";
import { Bar } from "./bar.ts";

const HELP = `usage: deno task knn --checkpoint FILE --data DATA [options]

Weighted k-NN (cosine similarity, votes exp(sim / T)) of the CLS features after the final norm. Data without a
test split (no val/ or test/ folder) is classified leave-one-out: each image is left out of its own neighbours.

options:
  --checkpoint FILE     a checkpoint of this project, or official weights (.pth as published, or .safetensors) (required)
  --data DATA           fmnist, cifar10, cifar100 or a folder with train/ and val/ (required)
  --k N                 neighbours, 1 to 100000 (default 20; several as 10,20,100,200)
  --temperature T       vote temperature, > 0 (default 0.07)
${modelHelp()}
  --image-size N        side of the evaluated images, 1 to 8192 (default: the model's)
  --batch-size N        images per forward pass, 1 to 65536 (default 256)
  --train-limit N       use only the first N training images (default 0: all)
  --test-limit N        use only the first N test images (default 0: all)
  --max-image-pixels N  largest image (width x height) decoded; larger files are skipped
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

function parse(args: string[]) {
  const values = parseFlags(args, {
    checkpoint: { type: "string" },
    data: { type: "string" },
    k: { type: "string", default: "20" },
    temperature: { type: "string", default: "0.07" },
    ...MODEL_FLAGS,
    "image-size": { type: "string" },
    "batch-size": { type: "string", default: "256" },
    "train-limit": { type: "string", default: "0" },
    "test-limit": { type: "string", default: "0" },
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  if (!values.checkpoint) throw new UsageError("--checkpoint is required");
  if (!values.data) throw new UsageError("--data is required");
  const temperature = values.temperature.trim() === "" ? NaN : Number(values.temperature);
  if (!Number.isFinite(temperature)) {
    throw new UsageError(`--temperature takes a number, got "${values.temperature}"`);
  }
  if (!(temperature > 0)) throw new UsageError(`--temperature must be positive, got ${temperature}`);
  const maxPixels = values["max-image-pixels"];
  const o = {
    ks: values.k.split(",").map((s) => integer("--k", s, 1, 100000)),
    temperature,
    ...modelOptions(values),
    imageSize: values["image-size"] === undefined ? undefined : integer("--image-size", values["image-size"], 1, 8192),
    batchSize: integer("--batch-size", values["batch-size"], 1, 65536),
    trainLimit: integer("--train-limit", values["train-limit"], 0),
    testLimit: integer("--test-limit", values["test-limit"], 0),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
  };
  return { ...o, checkpoint: weightsFile("--checkpoint", values.checkpoint), data: dataSpec(values.data) };
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let model: EvalBackbone | undefined, train: Dataset | undefined, test: Dataset | undefined;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    model = loadModel("--checkpoint", o.checkpoint, o);
    const vit = model.resnet ?? model.vit;
    let t;
    ({ train, test, transform: t } = openEvalSplits("--checkpoint", o.checkpoint, model, o, "k-NN"));
    warnLimits(train, test, o);
    const splits = [firstImages(train, o.trainLimit), firstImages(test, o.testLimit)];
    const bar = new Bar("features", splits[0].length + splits[1].length, { unit: "image" });
    const features: Awaited<ReturnType<typeof extractFeatures>>[] = [];
    try {
      for (const ds of splits) {
        const onProgress = (n: number) => bar.tick(n);
        features.push(await extractFeatures(model.backbone, vit, ds, t, { batchSize: o.batchSize, onProgress }));
      }
      bar.finish();
      const [a, b] = features, same = train.name === test.name;
      const exclude = same ? selfRows(a.indices, b.indices) : undefined; // each leaves itself out
      const memory = a.labels.length - (same ? 1 : 0);
      console.log(`k-NN on ${b.labels.length} test images, memory of ${a.labels.length} (T ${o.temperature}):`);
      for (const k of o.ks) {
        const r = knnClassify(a.features, a.labels, b.features, b.labels, {
          k,
          temperature: o.temperature,
          numClasses: train.classes.length,
          exclude,
        });
        const used = k > memory ? ` (all ${memory} of the memory)` : "";
        console.log(`  k ${String(k).padStart(3)}${used}: top-1 ${r.top1.toFixed(2)}%  top-5 ${r.top5.toFixed(2)}%`);
      }
    } finally {
      bar.finish(); // before an error's message
      dispose(features.map((f) => f.features));
    }
    return 0;
  } catch (e) {
    return failure(e, "knn");
  } finally {
    if (model) dispose(model.backbone);
    train?.dispose();
    test?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
