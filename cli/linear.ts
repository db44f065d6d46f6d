/**
 * `deno task linear`: linear evaluation of any checkpoint (its teacher, or
 * another network with --checkpoint-key) or official weights, as the official
 * `eval_linear.py`: a linear layer on the frozen backbone's features, trained
 * with SGD (momentum 0.9, no weight decay, lr x batch / 256, cosine per epoch)
 * and cross-entropy, tested after every epoch; the best epoch is reported.
 * `--cached-features` computes the training features once on un-augmented
 * images instead of augmenting every epoch: fast on small data.
 *
 * Writes to --output-dir: checkpoint.safetensors (the classifier, after every
 * epoch), metrics.jsonl (one record per epoch), config.json and summary.json.
 *
 * Exit codes: 0 done, 1 a run-time failure (unreadable or unlabelled data),
 * 2 a bad flag, value, path, weights file or shape (one line on stderr; nothing
 * is written), 130/143 interrupted (the last epoch's checkpoint is kept).
 *
 * @example
 * ```sh
 * deno task linear --weights output/checkpoint.safetensors --data fmnist --cached-features
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { defaultMaxImagePixels, dispose, Generator } from "../mod.ts";
import { type Dataset, firstImages } from "../lib/data/mod.ts";
import {
  defaultFeatureSpec,
  extractLinearFeatures,
  featureDim,
  type FeatureSet,
  initLinearState,
  LINEAR_FORMAT,
  type LinearFeatureSpec,
  linearLoop,
  type LinearState,
  numLabels,
  saveLinearCheckpoint,
  trainCrop,
} from "../lib/eval/linear.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
import {
  argsError,
  dataSpec,
  failure,
  integer,
  loadModel,
  MODEL_FLAGS,
  modelHelp,
  modelOptions,
  openEvalSplits,
  UsageError,
  warnLimits,
  weightsFile,
} from "./flags.ts";
import { clock, EpochBar, epochLine } from "./progress.ts";
import { EpochRecords, prepareOutputDir, refuseOtherRun } from "./run_folder.ts";
import { listenForStop } from "./stop.ts";

const HELP = `usage: deno task linear --weights FILE --data DATA [options]

Linear evaluation (the official eval_linear.py): a linear layer trained on the frozen backbone's
features, tested after every epoch; the best epoch's top-1 is the result.

options:
  --weights FILE            a checkpoint of this project, or official weights (.pth as published, or .safetensors) (required)
  --data DATA               fmnist, cifar10, cifar100 or a folder with train/ and val/ (required)
${modelHelp(28)}
  --n-last-blocks N         CLS tokens of the last N blocks, each after the final norm, concatenated
                            (default as the official table: 4 for ViT-S-like widths under 768, 1 for ViT-B)
  --avgpool-patchtokens [B] also the mean of the last block's normed patch tokens (true or false; the bare
                            flag is true; default as the official table: false under width 768, true from 768)
  --image-size N            side of the images the backbone sees, 1 to 8192 (default: the model's)
  --cached-features         compute the training features once on un-augmented images (fast on small data)
                            instead of RandomResizedCrop + flip every epoch
  --epochs N                epochs, 1 to 100000 (default 100)
  --batch-size N            images per step, 1 to 65536 (default 128) [official: batch_size_per_gpu]
  --lr LR                   learning rate per 256 images, > 0 (default 0.001): the step's is lr x batch / 256,
                            annealed by a cosine to 0 over the epochs
  --val-freq N              test after epochs 1, N+1, 2N+1, ... and the last, as the official
                            (default 1)
  --seed N                  seed of the classifier's init, the shuffles and the crops (default 0)
  --output-dir DIR          where the classifier, metrics.jsonl and summary.json go (default output/linear)
  --train-limit N           use only the first N training images (default 0: all)
  --test-limit N            use only the first N test images (default 0: all)
  --max-image-pixels N      largest image (width x height) decoded; larger files are skipped
                            (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help                this help

Images: test images (and cached training features) are prepared as the official Resize(256) + CenterCrop(224)
in the same ratio: resized to side x 256/224 (28 px Fashion-MNIST for a 21 px model to 24), then centre-cropped
to the model's side; images no larger than the side (32 px CIFAR for a 32 px model) are used whole. Training
crops are RandomResizedCrop scale (0.08, 1) (official), or (0.4, 1) for images under 64 px, and a horizontal
flip, of a folder's images resized to side x 256/224 and centre-cropped to a square.`;

const BOOL: Record<string, boolean> = { true: true, false: false, "1": true, "0": false, yes: true, no: false };

/** `--avgpool-patchtokens` alone, `=B` or followed by true/false; returns the other arguments and its value. */
function avgpoolFlag(args: string[]): { rest: string[]; value?: boolean } {
  const rest: string[] = [];
  let value: boolean | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const m = /^--avgpool-patchtokens(?:=(.*))?$/.exec(a);
    if (!m) {
      rest.push(a);
      continue;
    }
    let v = m[1];
    if (v === undefined && args[i + 1] !== undefined && args[i + 1].toLowerCase() in BOOL) v = args[++i];
    if (v !== undefined && !(v.toLowerCase() in BOOL)) {
      throw new UsageError(`--avgpool-patchtokens takes true or false, got "${v}"`);
    }
    value = v === undefined ? true : BOOL[v.toLowerCase()];
  }
  return { rest, value };
}

function number(flag: string, v: string): number {
  const n = v.trim() === "" ? NaN : Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${flag} takes a number, got "${v}"`);
  if (!(n > 0)) throw new UsageError(`${flag} must be positive, got ${n}`);
  return n;
}

function parse(args: string[]) {
  const avgpool = avgpoolFlag(args);
  let values;
  try {
    ({ values } = parseArgs({
      args: avgpool.rest,
      strict: true,
      allowPositionals: false,
      options: {
        weights: { type: "string" },
        data: { type: "string" },
        ...MODEL_FLAGS,
        "n-last-blocks": { type: "string" },
        "image-size": { type: "string" },
        "cached-features": { type: "boolean", default: false },
        epochs: { type: "string", default: "100" },
        "batch-size": { type: "string", default: "128" },
        lr: { type: "string", default: "0.001" },
        "val-freq": { type: "string", default: "1" },
        seed: { type: "string", default: "0" },
        "output-dir": { type: "string", default: "output/linear" },
        "train-limit": { type: "string", default: "0" },
        "test-limit": { type: "string", default: "0" },
        "max-image-pixels": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    throw argsError(e);
  }
  if (values.help) return "help";
  if (!values.weights) throw new UsageError("--weights is required");
  if (!values.data) throw new UsageError("--data is required");
  if (values["output-dir"].trim() === "") throw new UsageError("--output-dir needs a folder path");
  const maxPixels = values["max-image-pixels"];
  const n = values["n-last-blocks"];
  return {
    ...modelOptions(values),
    nLastBlocks: n === undefined ? undefined : integer("--n-last-blocks", n, 1, 1000),
    avgpoolPatchtokens: avgpool.value,
    imageSize: values["image-size"] === undefined ? undefined : integer("--image-size", values["image-size"], 1, 8192),
    cachedFeatures: values["cached-features"],
    epochs: integer("--epochs", values.epochs, 1, 100000),
    batchSize: integer("--batch-size", values["batch-size"], 1, 65536),
    lr: number("--lr", values.lr),
    valFreq: integer("--val-freq", values["val-freq"], 1),
    seed: integer("--seed", values.seed, 0),
    outputDir: values["output-dir"],
    trainLimit: integer("--train-limit", values["train-limit"], 0),
    testLimit: integer("--test-limit", values["test-limit"], 0),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    weights: weightsFile("--weights", values.weights),
    data: dataSpec(values.data),
  };
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  using stop = listenForStop();
  let model: EvalBackbone | undefined, train: Dataset | undefined, test: Dataset | undefined;
  let created: ReturnType<typeof prepareOutputDir> | undefined, records: EpochRecords | undefined, saved = "";
  const sets: FeatureSet[] = [];
  let state: LinearState | undefined;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    model = loadModel("--weights", o.weights, o);
    const vit = model.resnet ?? model.vit;
    const defaults = defaultFeatureSpec(vit);
    const spec: LinearFeatureSpec = {
      nLastBlocks: o.nLastBlocks ?? defaults.nLastBlocks,
      avgpoolPatchtokens: o.avgpoolPatchtokens ?? defaults.avgpoolPatchtokens,
    };
    if (model.resnet && (o.nLastBlocks !== undefined || o.avgpoolPatchtokens !== undefined)) {
      throw new UsageError(
        `${o.weights} is a ${model.resnet.arch}: its feature is the pooled output; ` +
          "--n-last-blocks and --avgpool-patchtokens are for ViTs",
      );
    }
    if (model.vit && spec.nLastBlocks > model.vit.depth) {
      throw new UsageError(`--n-last-blocks ${spec.nLastBlocks} exceeds the ${model.vit.depth} blocks of ${o.weights}`);
    }
    let transform;
    ({ train, test, transform } = openEvalSplits(
      "--weights",
      o.weights,
      model,
      { ...o, augmentTrain: !o.cachedFeatures },
      "linear evaluation",
    ));
    const size = transform.size, norm = { mean: transform.mean, std: transform.std };
    const data = firstImages(train, o.trainLimit), queries = firstImages(test, o.testLimit);
    warnLimits(train, test, o);
    refuseOtherRun(o.outputDir, "linear");
    created = prepareOutputDir(o.outputDir);
    const dim = featureDim(vit, spec);
    const what = model.vit
      ? `(D ${model.vit.embedDim}, depth ${model.vit.depth}, patch ${model.vit.patchSize}): ` +
        `CLS of the last ${spec.nLastBlocks} block(s)${spec.avgpoolPatchtokens ? " + pooled patch tokens" : ""} `
      : `(${model.resnet.arch}): its pooled output `;
    console.log(
      `linear evaluation of ${o.weights} ${what}` +
        `(${dim} features), ${data.name} (${data.length} train, ${queries.length} test images), ${o.epochs} epochs, ` +
        `batch ${o.batchSize}, lr ${o.lr} x ${o.batchSize}/256, ` +
        (o.cachedFeatures
          ? "cached features"
          : `RandomResizedCrop ${trainCrop(data.size, size).scale.join("-")} + flip`),
    );
    const started = performance.now();
    const f = { batchSize: Math.max(o.batchSize, 256), signal: stop.signal };
    const testSet = await extractLinearFeatures(model.backbone, vit, queries, transform, spec, f);
    sets.push(testSet);
    let trainSet: FeatureSet | undefined;
    if (o.cachedFeatures) {
      trainSet = await extractLinearFeatures(model.backbone, vit, data, transform, spec, f);
      sets.push(trainSet);
    }
    const labels = numLabels(trainSet?.labels ?? data.labels!, testSet.labels, data.classes.length);
    console.log(`features in ${clock((performance.now() - started) / 1000)}; ${labels} classes`);
    {
      using g = new Generator(o.seed);
      state = initLinearState(dim, labels, g);
    }
    const source = trainSet ??
      { dataset: data, backbone: model.backbone, vit, spec, crop: trainCrop(data.size, size), norm };
    const config = { ...o, nLastBlocks: spec.nLastBlocks, avgpoolPatchtokens: spec.avgpoolPatchtokens, labels, dim };
    records = new EpochRecords(o.outputDir, config);
    const checkpoint = records.path("checkpoint.safetensors");
    const bar = new EpochBar(o.epochs, o.batchSize);
    let last;
    for await (const e of linearLoop(state, { ...o, train: source, test: testSet, signal: stop.signal })) {
      state = e.state;
      if (e.type === "step") {
        bar.step(e);
        continue;
      }
      bar.finish();
      records.record({
        epoch: e.epoch,
        lr: e.lr,
        train_loss: e.trainLoss,
        ...(e.test ? { test_acc1: e.test.top1, test_acc5: e.test.top5, test_loss: e.test.loss } : {}),
        ...(e.best ? { best_acc1: e.best.top1, best_epoch: e.best.epoch } : {}),
      });
      saveLinearCheckpoint(checkpoint, state, {
        epoch: e.epoch + 1,
        spec,
        best: e.best,
        extra: { weights: o.weights, data: o.data, num_labels: String(labels), feature_dim: String(dim) },
      });
      saved = `the classifier after epoch ${e.epoch + 1} is kept in ${checkpoint}`;
      if (e.test) {
        last = e.test;
        console.log(epochLine(e.epoch, o.epochs, e.test, e.best!));
      }
      if (e.epoch === o.epochs - 1) {
        const best = e.best!, seconds = (performance.now() - started) / 1000;
        const summary = {
          top1: best.top1,
          top5: best.top5,
          best_epoch: best.epoch,
          last_top1: last!.top1,
          last_top5: last!.top5,
          epochs: o.epochs,
          n_last_blocks: spec.nLastBlocks,
          avgpool_patchtokens: spec.avgpoolPatchtokens,
          cached_features: o.cachedFeatures,
          seconds,
        };
        records.json("summary.json", summary);
        console.log(
          `linear top-1 ${best.top1.toFixed(2)}%  top-5 ${best.top5.toFixed(2)}% (best epoch ${best.epoch + 1} of ` +
            `${o.epochs}; last epoch ${last!.top1.toFixed(2)}%) in ${clock(seconds)}; classifier: ${checkpoint} ` +
            `(${LINEAR_FORMAT})`,
        );
      }
    }
    return 0;
  } catch (e) {
    if (!records?.written) created?.undo();
    if (stop.code) {
      console.log(
        saved ? `interrupted: ${saved}` : "interrupted before the first epoch ended: nothing written",
      );
      return stop.code;
    }
    return failure(e, "linear");
  } finally {
    records?.close();
    dispose([state, ...sets.map((s) => s.features)]);
    if (model) dispose(model.backbone);
    train?.dispose();
    test?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
