/**
 * `deno task finetune`: the fine-tuning evaluation of a checkpoint (its
 * teacher, or another network with --checkpoint-key) or official weights: the
 * whole backbone and a linear classifier trained with labels (AdamW with
 * layer-wise learning-rate decay, cosine schedule with warmup, RandomResizedCrop
 * and flip, label smoothing, drop path for ViTs; see lib/eval/finetune.ts),
 * tested after every epoch; the best epoch is reported. `--from-scratch` trains
 * the same network from a fresh initialisation with the same budget: the
 * baseline the fine-tuned number is read against.
 *
 * Writes to --output-dir: checkpoint.safetensors (backbone, head and AdamW
 * state, after every epoch), metrics.jsonl (one record per epoch),
 * config.json and summary.json.
 *
 * Exit codes: 0 done, 1 a run-time failure (unreadable or unlabelled data),
 * 2 a bad flag, value, path, weights file or shape (one line on stderr; nothing
 * is written), 130/143 interrupted (the last epoch's checkpoint is kept: the
 * same command with `--resume latest` continues the run, ending with the
 * network it would have ended with).
 *
 * @example
 * ```sh
 * deno task finetune --weights output/checkpoint.safetensors --data fmnist --epochs 5
 * ```
 * @module
 */
import { join } from "node:path";
import {
  cudaAvailable,
  defaultMaxImagePixels,
  type Device,
  dispose,
  exists,
  Generator,
  mapTree,
  toDevice,
} from "../mod.ts";
import { type Dataset, firstImages } from "../lib/data/mod.ts";
import {
  FINETUNE_DEFAULTS,
  FINETUNE_FORMAT,
  finetuneLoop,
  type FinetuneState,
  initFinetune,
  loadFinetune,
  saveFinetune,
} from "../lib/eval/finetune.ts";
import { type BestEpoch, numLabels, trainCrop } from "../lib/eval/linear.ts";
import { type BackboneConfig, type BackboneParams, describeBackbone, initBackbone } from "../lib/model/backbone.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
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
import { clock, EpochBar, epochLine } from "./progress.ts";
import { EpochRecords, prepareOutputDir, refuseOtherRun } from "./run_folder.ts";
import { listenForStop } from "./stop.ts";

const D = FINETUNE_DEFAULTS;
const HELP = `usage: deno task finetune --weights FILE --data DATA [options]

Fine-tuning evaluation: the whole backbone and a linear classifier trained with labels, from DINO weights (a
checkpoint's teacher, or official weights), tested after every epoch; the best epoch is reported.

options:
  --weights FILE            a checkpoint of this project or official weights (.pth or .safetensors) (required)
  --data DATA               labelled images: fmnist, cifar10, cifar100 or a folder (one subfolder per class)
                            (required)
${modelHelp(28)}
  --from-scratch            train the same network from a fresh initialisation (the baseline), same budget
  --epochs N                epochs, 1 to 100000 (default ${D.epochs})
  --batch-size N            images per step (default ${D.batchSize})
  --lr X                    peak learning rate per 256 images (default ${D.lr}; the step's is lr x batch / 256)
  --min-lr X                the cosine schedule's final rate (default ${D.minLr})
  --warmup-epochs X         linear warmup, in epochs (default ${D.warmupEpochs}; a shorter run warms up throughout,
                            never reaching the peak, as DeiT's scheduler does)
  --weight-decay X          AdamW weight decay, not for biases, 1-D weights, cls_token, pos_embed (default ${D.weightDecay})
  --layer-decay X           layer-wise lr decay: each layer's rate is X times the one above (default ${D.layerDecay})
  --smoothing X             label smoothing of the cross-entropy, 0 to < 1 (default ${D.smoothing})
  --drop-path X             stochastic depth of a ViT's last block, 0 to < 1 (default ${D.dropPath})
  --image-size N            side of the images the backbone sees, 1 to 8192 (default: the model's)
  --seed N                  seed of the classifier, the shuffles and the augmentation (default 0)
  --device D                auto, cpu or cuda (default auto)
  --output-dir DIR          where checkpoint.safetensors, metrics.jsonl, config.json and summary.json go
                            (default output/finetune)
  --train-limit N           use only the first N training images (0: all)
  --test-limit N            use only the first N test images (0: all)
  --max-image-pixels N      largest image (width x height) decoded (default $DINO_MAX_IMAGE_PIXELS or 89478485)
  --resume FILE             continue an interrupted run from its checkpoint (latest: --output-dir's), with the
                            flags it was started with
  -h, --help                this text`;

function number(flag: string, v: string, o: { min?: number; below?: number; positive?: boolean } = {}): number {
  const n = v.trim() === "" ? NaN : Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${flag} takes a number, got "${v}"`);
  if (o.positive && !(n > 0)) throw new UsageError(`${flag} must be positive, got ${n}`);
  if (o.min !== undefined && n < o.min) throw new UsageError(`${flag} must be at least ${o.min}, got ${n}`);
  if (o.below !== undefined && !(n < o.below)) throw new UsageError(`${flag} must be below ${o.below}, got ${n}`);
  return n;
}

function parse(args: string[]) {
  const values = parseFlags(args, {
    weights: { type: "string" },
    data: { type: "string" },
    ...MODEL_FLAGS,
    "from-scratch": { type: "boolean", default: false },
    epochs: { type: "string", default: String(D.epochs) },
    "batch-size": { type: "string", default: String(D.batchSize) },
    lr: { type: "string", default: String(D.lr) },
    "min-lr": { type: "string", default: String(D.minLr) },
    "warmup-epochs": { type: "string", default: String(D.warmupEpochs) },
    "weight-decay": { type: "string", default: String(D.weightDecay) },
    "layer-decay": { type: "string", default: String(D.layerDecay) },
    smoothing: { type: "string", default: String(D.smoothing) },
    "drop-path": { type: "string", default: String(D.dropPath) },
    "image-size": { type: "string" },
    seed: { type: "string", default: "0" },
    device: { type: "string", default: "auto" },
    "output-dir": { type: "string", default: "output/finetune" },
    "train-limit": { type: "string", default: "0" },
    "test-limit": { type: "string", default: "0" },
    "max-image-pixels": { type: "string" },
    resume: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  if (!values.weights) throw new UsageError("--weights is required");
  if (values.resume?.trim() === "") throw new UsageError("--resume takes a checkpoint file or latest");
  if (!values.data) throw new UsageError("--data is required");
  if (values["output-dir"].trim() === "") throw new UsageError("--output-dir needs a folder path");
  if (!["auto", "cpu", "cuda"].includes(values.device)) {
    throw new UsageError(`--device must be auto, cpu or cuda, got "${values.device}"`);
  }
  const epochs = integer("--epochs", values.epochs, 1, 100000);
  // A warmup longer than the run is DeiT's too: its rate climbs for the whole run (cosineSchedule does the same).
  const warmupEpochs = number("--warmup-epochs", values["warmup-epochs"], { min: 0 });
  const maxPixels = values["max-image-pixels"];
  return {
    ...modelOptions(values),
    fromScratch: values["from-scratch"],
    epochs,
    batchSize: integer("--batch-size", values["batch-size"], 1, 65536),
    lr: number("--lr", values.lr, { positive: true }),
    minLr: number("--min-lr", values["min-lr"], { min: 0 }),
    warmupEpochs,
    weightDecay: number("--weight-decay", values["weight-decay"], { min: 0 }),
    layerDecay: number("--layer-decay", values["layer-decay"], { positive: true }),
    smoothing: number("--smoothing", values.smoothing, { min: 0, below: 1 }),
    dropPath: number("--drop-path", values["drop-path"], { min: 0, below: 1 }),
    imageSize: values["image-size"] === undefined ? undefined : integer("--image-size", values["image-size"], 1, 8192),
    seed: integer("--seed", values.seed, 0),
    device: values.device as "auto" | Device,
    outputDir: values["output-dir"],
    trainLimit: integer("--train-limit", values["train-limit"], 0),
    testLimit: integer("--test-limit", values["test-limit"], 0),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    weights: weightsFile("--weights", values.weights),
    data: dataSpec(values.data),
    resume: values.resume,
  };
}

/** The settings a resumed run must share with the run it continues (all but where its files go). */
function mismatches(saved: Record<string, unknown>, now: Record<string, unknown>): string[] {
  const keys = new Set([...Object.keys(saved), ...Object.keys(now)]);
  keys.delete("outputDir");
  return [...keys].filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(now[k])).map((k) =>
    `${k}: ${JSON.stringify(saved[k])} then, ${JSON.stringify(now[k])} now`
  );
}

/** The checkpoint `--resume` names and its state, checked against this run's settings. */
function resumeFrom(o: { resume?: string; outputDir: string }, cfg: BackboneConfig, config: Record<string, unknown>) {
  if (o.resume === undefined) return undefined;
  const path = o.resume === "latest" ? join(o.outputDir, "checkpoint.safetensors") : o.resume;
  if (!exists(path)) {
    throw new UsageError(
      `--resume ${o.resume}: ${path} does not exist` +
        (o.resume === "latest" ? " (no epoch of a run in --output-dir has ended)" : ""),
    );
  }
  let ck;
  try {
    ck = loadFinetune(path, cfg);
  } catch (e) {
    throw new UsageError(`--resume ${e instanceof Error ? e.message : e}`);
  }
  try {
    const differ = mismatches(JSON.parse(ck.metadata.config ?? "{}"), config);
    if (differ.length > 0) {
      throw new UsageError(
        `--resume ${path} continues a run with other settings (${differ.join("; ")}): rerun the command that ` +
          "started it, with --resume",
      );
    }
    const epoch = Number(ck.metadata.epoch);
    const best = ck.metadata.best ? JSON.parse(ck.metadata.best) as BestEpoch : undefined;
    if (!Number.isInteger(epoch) || epoch < 1 || !best) {
      throw new UsageError(`--resume ${path}: no epoch count or best epoch in it`);
    }
    return { path, state: ck.state, startEpoch: epoch, best };
  } catch (e) {
    dispose(ck.state);
    throw e;
  }
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  using stop = listenForStop();
  let model: EvalBackbone | undefined, train: Dataset | undefined, test: Dataset | undefined;
  let created: ReturnType<typeof prepareOutputDir> | undefined, records: EpochRecords | undefined, saved = "";
  let state: FinetuneState | undefined;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    model = loadModel("--weights", o.weights, o);
    const { weights, data: dataName, resume: _, ...rest } = o;
    const cfg = model.resnet ?? model.vit;
    let transform;
    ({ train, test, transform } = openEvalSplits(
      "--weights",
      o.weights,
      model,
      { ...o, augmentTrain: true },
      "fine-tuning",
    ));
    const size = transform.size;
    const data = firstImages(train, o.trainLimit), queries = firstImages(test, o.testLimit);
    warnLimits(train, test, o);
    const labels = numLabels(
      Int32Array.from({ length: data.length }, (_, i) => data.labels![i]),
      Int32Array.from({ length: queries.length }, (_, i) => queries.labels![i]),
      data.classes.length,
    );
    refuseOtherRun(o.outputDir, "finetune");
    created = prepareOutputDir(o.outputDir);
    const norm = { mean: transform.mean, std: transform.std };
    const config = { weights, data: dataName, ...rest, labels, imageSize: size, normalization: norm };
    const device: Device = o.device === "cuda" || (o.device === "auto" && cudaAvailable()) ? "cuda" : "cpu";
    const resumed = resumeFrom(o, cfg, config);
    if (resumed) {
      dispose(model.backbone);
      model = undefined;
      state = device === "cpu" ? resumed.state : mapTree(resumed.state, (t) => toDevice(t, device));
      if (state !== resumed.state) dispose(resumed.state);
    } else {
      using g = new Generator(o.seed);
      let backbone: BackboneParams = model.backbone;
      if (o.fromScratch) {
        backbone = initBackbone(cfg, g);
        dispose(model.backbone);
      }
      model = undefined; // the state owns the backbone now
      if (device !== "cpu") {
        const moved = mapTree(backbone, (t) => toDevice(t, device));
        dispose(backbone);
        backbone = moved;
      }
      state = initFinetune(backbone, cfg, labels, g);
    }
    if (resumed && resumed.startEpoch >= o.epochs) {
      console.log(`${resumed.path}: all ${o.epochs} epochs of this run have ended; nothing to do`);
      return 0;
    }
    const crop = trainCrop(data.size, size);
    console.log(
      `fine-tuning ${o.fromScratch ? `from scratch (the network of ${o.weights})` : o.weights}: ` +
        `${describeBackbone(cfg)} + linear head (${labels} classes), ${data.name} (${data.length} train, ` +
        `${queries.length} test images), ${o.epochs} epochs, batch ${o.batchSize}, AdamW lr ${o.lr} x ` +
        `${o.batchSize}/256 (warmup ${o.warmupEpochs}, cosine to ${o.minLr}), weight decay ${o.weightDecay}, ` +
        `layer decay ${o.layerDecay}, label smoothing ${o.smoothing}` +
        `${"cls_token" in state.backbone ? `, drop path ${o.dropPath}` : ""}, ` +
        `RandomResizedCrop ${crop.scale.join("-")} + flip at ${size} px, ${device}` +
        (resumed ? `; resuming after epoch ${resumed.startEpoch} from ${resumed.path}` : ""),
    );
    const started = performance.now();
    records = new EpochRecords(o.outputDir, config);
    const checkpoint = records.path("checkpoint.safetensors");
    if (resumed) records.resume(resumed.startEpoch);
    const bar = new EpochBar(o.epochs, o.batchSize);
    const loop = finetuneLoop(state, cfg, {
      ...o,
      train: data,
      test: queries,
      transform: { size, ...norm },
      crop,
      norm,
      signal: stop.signal,
      startEpoch: resumed?.startEpoch,
      best: resumed?.best,
    });
    for await (const e of loop) {
      state = e.state;
      if (e.type === "step") {
        bar.step(e);
        continue;
      }
      bar.finish();
      records.record({
        epoch: e.epoch,
        step: e.state.step,
        train_loss: e.trainLoss,
        test_acc1: e.test.top1,
        test_acc5: e.test.top5,
        test_loss: e.test.loss,
        best_acc1: e.best.top1,
        best_epoch: e.best.epoch,
      });
      saveFinetune(checkpoint, state, {
        epoch: String(e.epoch + 1),
        best: JSON.stringify(e.best),
        config: JSON.stringify(config),
        ["cls_token" in state.backbone ? "vit" : "resnet"]: JSON.stringify(cfg),
      });
      saved = `the network after epoch ${e.epoch + 1} is kept in ${checkpoint}; ` +
        "rerun the same command with --resume latest to continue";
      console.log(epochLine(e.epoch, o.epochs, e.test, e.best));
      if (e.epoch === o.epochs - 1) {
        const seconds = (performance.now() - started) / 1000;
        records.json("summary.json", {
          top1: e.best.top1,
          top5: e.best.top5,
          best_epoch: e.best.epoch,
          last_top1: e.test.top1,
          last_top5: e.test.top5,
          epochs: o.epochs,
          from_scratch: o.fromScratch,
          seconds,
        });
        console.log(
          `fine-tuned top-1 ${e.best.top1.toFixed(2)}%  top-5 ${e.best.top5.toFixed(2)}% (best epoch ${
            e.best.epoch + 1
          } of ${o.epochs}; last epoch ${e.test.top1.toFixed(2)}%) in ${clock(seconds)}; network: ${checkpoint} ` +
            `(${FINETUNE_FORMAT})`,
        );
      }
    }
    return 0;
  } catch (e) {
    if (!records?.written) created?.undo();
    if (stop.code) {
      console.log(saved ? `interrupted: ${saved}` : "interrupted before the first epoch ended: nothing written");
      return stop.code;
    }
    return failure(e, "finetune");
  } finally {
    records?.close();
    dispose(state);
    if (model) dispose(model.backbone);
    train?.dispose();
    test?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
