/**
 * Fine-tuning evaluation: the whole backbone trained with labels, from DINO
 * weights (or from scratch, the baseline). The DINO paper fine-tunes with
 * DeiT's recipe; this is that recipe's shape with BEiT's layer-wise decay: a
 * linear classifier (`head`: weight N(0, 0.01), bias 0, as the linear
 * evaluation's) on the backbone's feature (a ViT's CLS after the final norm, a
 * ResNet's pooled output), AdamW with layer-wise
 * learning-rate decay (the head at the full rate, each layer below it `decay`
 * times the one above), a cosine schedule per step with a linear warmup,
 * RandomResizedCrop and a horizontal flip, cross-entropy with label smoothing,
 * stochastic depth for ViTs, and top-1 / top-5 on the test images after every
 * epoch. Weight decay skips biases, 1-D weights, `cls_token` and `pos_embed`
 * (timm's `no_weight_decay`). A ResNet's batch norms train on the batch's
 * statistics and are tested on their running ones.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { initFinetune, layerScale } from "./finetune.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { depth: 2, imgSize: 16, patchSize: 8 });
 * const state = initFinetune(initViT(vit, g), vit, 10, g);
 * assert.deepEqual(state.head.weight.shape, [10, 192]);
 * assert.equal(layerScale("head.weight", vit, 0.5), 1); // the head: the full rate
 * assert.equal(layerScale("backbone.blocks.1.mlp.fc1.weight", vit, 0.5), 0.5); // the last block: one decay
 * assert.equal(layerScale("backbone.cls_token", vit, 0.5), 0.125); // the embeddings: depth + 1 decays
 * dispose(state);
 * ```
 * @module
 */
import {
  add,
  alias,
  dispose,
  gather,
  Generator,
  grad,
  item,
  linear,
  logSoftmax,
  mean,
  mul,
  normal,
  requiresGrad,
  streamSeed,
  type Tensor,
  tensor,
  tidy,
  toDevice,
  unsqueeze,
  zeros,
} from "../../ffi/mod.ts";
import type { Dataset } from "../data/dataset.ts";
import { batches } from "../data/loader.ts";
import { type BackboneConfig, type BackboneParams, isResNetConfig } from "../model/backbone.ts";
import { resnetForward, type ResNetParams } from "../model/resnet.ts";
import { type LinearParams, vitForward, type ViTParams } from "../model/vit.ts";
import { adamw, type AdamWState } from "../training/optim.ts";
import { cosineSchedule } from "../training/schedules.ts";
import { turnsEvery } from "../training/turns.ts";
import { type Flat, mapTree, stateDict } from "../weights/tree.ts";
import { readSafetensors, writeSafetensors } from "../weights/safetensors.ts";
import { fitBackbone } from "../weights/weights.ts";
import { type EvalTransform, extractFeatures } from "./knn.ts";
import { augmentForLinear, type BestEpoch, evaluateClassifier, type LinearAccuracy, type TrainCrop } from "./linear.ts";

/** The checkpoint format's name, in the metadata: /2 since each epoch's last partial batch is dropped. */
export const FINETUNE_FORMAT = "dino-deno-finetune/2";

/** The fine-tuning hyperparameters. */
export interface FinetuneHyper {
  /** Epochs. */
  epochs: number;
  /** Images per step. */
  batchSize: number;
  /** Peak learning rate for a batch of 256 (the step's is lr x batchSize / 256). */
  lr: number;
  /** The cosine schedule's final rate. */
  minLr: number;
  /** Linear warmup, in epochs. */
  warmupEpochs: number;
  /** AdamW's weight decay (decayed weights only). */
  weightDecay: number;
  /** Layer-wise learning-rate decay: each layer's rate is this times the rate of the layer above. */
  layerDecay: number;
  /** Label smoothing of the cross-entropy. */
  smoothing: number;
  /** Stochastic depth of a ViT's last block (ignored for ResNets). */
  dropPath: number;
}

/**
 * The defaults: BEiT's fine-tuning of ViT-S (with DeiT's augmentation, here RandomResizedCrop and flip): 100
 * epochs, batch 128, lr 5e-4 per 256 with 5 warmup epochs to 1e-6, weight decay 0.05, layer decay 0.65, label
 * smoothing 0.1, drop path 0.1.
 */
export const FINETUNE_DEFAULTS: FinetuneHyper = {
  epochs: 100,
  batchSize: 128,
  lr: 5e-4,
  minLr: 1e-6,
  warmupEpochs: 5,
  weightDecay: 0.05,
  layerDecay: 0.65,
  smoothing: 0.1,
  dropPath: 0.1,
};

/** What a fine-tuning step takes and returns. */
export interface FinetuneState {
  /** The backbone, trained (a ResNet's buffers move too). */
  backbone: BackboneParams;
  /** The classifier: `head.weight` [classes, D], `head.bias` [classes]. */
  head: LinearParams;
  /** AdamW's state over `backbone.<key>` and `head.<key>`. */
  optimizer: AdamWState;
  /** Steps taken. */
  step: number;
}

const BUFFERS = /\.(running_mean|running_var|num_batches_tracked)$/;
const OPT = adamw();

/** The trainable tensors of a state under their keys (`backbone.<key>`, `head.weight`, `head.bias`). */
function trainables(s: Pick<FinetuneState, "backbone" | "head">): Flat {
  const out: Flat = {};
  for (const [k, v] of Object.entries(stateDict(s.backbone))) if (!BUFFERS.test(k)) out[`backbone.${k}`] = v;
  out["head.weight"] = s.head.weight;
  out["head.bias"] = s.head.bias;
  return out;
}

/**
 * A state to fine-tune `backbone` (taken over: the state owns it) with a fresh classifier for `classes` classes
 * (weight N(0, 0.01), bias 0, as the linear evaluation's) and a fresh AdamW state.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initResNet, resnetConfig } from "../model/resnet.ts";
 * import { initFinetune } from "./finetune.ts";
 * using g = new Generator(0);
 * const rn = resnetConfig("resnet18");
 * const s = initFinetune(initResNet(rn, g), rn, 100, g);
 * assert.deepEqual(s.head.weight.shape, [100, 512]);
 * assert.ok(!("backbone.bn1.running_mean" in s.optimizer.exp_avg)); // buffers are not optimised
 * dispose(s);
 * ```
 */
export function initFinetune(
  backbone: BackboneParams,
  cfg: BackboneConfig,
  classes: number,
  g: Generator,
): FinetuneState {
  const head = { weight: normal(g, [classes, cfg.embedDim], 0, 0.01), bias: zeros([classes]) };
  const device = Object.values(stateDict(backbone))[0].device;
  const onDevice = device === "cpu" ? head : mapTree(head, (t) => toDevice(t, device));
  if (onDevice !== head) dispose(head);
  return { backbone, head: onDevice, optimizer: OPT.init(trainables({ backbone, head: onDevice })), step: 0 };
}

/** How many layers the decay counts: a ViT's blocks and its embeddings, a ResNet's 4 stages and its stem. */
function layerCount(cfg: BackboneConfig): number {
  return isResNetConfig(cfg) ? 5 : cfg.depth + 1;
}

/**
 * The learning-rate factor of a parameter, BEiT's layer-wise decay: decay^(layers - id) where the head's id is
 * `layers` (factor 1), a ViT's block i has id i + 1 and its embeddings (`cls_token`, `pos_embed`,
 * `patch_embed`) id 0, its final norm the head's; a ResNet's stage i (`layer<i>`) has id i and its stem id 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resnetConfig } from "../model/resnet.ts";
 * import { layerScale } from "./finetune.ts";
 * assert.equal(layerScale("backbone.layer3.0.conv1.weight", resnetConfig("resnet50"), 0.5), 0.25);
 * ```
 */
export function layerScale(key: string, cfg: BackboneConfig, decay: number): number {
  const layers = layerCount(cfg);
  let id = layers;
  if (key.startsWith("backbone.")) {
    const k = key.slice("backbone.".length);
    const block = /^blocks\.(\d+)\./.exec(k), stage = /^layer(\d)\./.exec(k);
    if (block) id = Number(block[1]) + 1;
    else if (stage) id = Number(stage[1]);
    else if (/^(cls_token|pos_embed|patch_embed\.|conv1\.|bn1\.)/.test(k)) id = 0;
  }
  return decay ** (layers - id);
}

/**
 * Whether AdamW decays a parameter: not a bias, not 1-D, not `cls_token` or `pos_embed` (timm's skip list).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeros } from "../../mod.ts";
 * import { finetuneDecayed } from "./finetune.ts";
 * using w = zeros([1, 1, 8]);
 * assert.deepEqual([finetuneDecayed("backbone.cls_token", w), finetuneDecayed("head.weight", w)], [false, true]);
 * ```
 */
export function finetuneDecayed(key: string, t: Tensor): boolean {
  return !(key.endsWith(".bias") || t.ndim === 1 || /(^|\.)(cls_token|pos_embed)$/.test(key));
}

/**
 * Mean cross-entropy with label smoothing `eps` of logits [B, C] against class indices [B] (i64), as
 * `nn.CrossEntropyLoss(label_smoothing=eps)` (and timm's `LabelSmoothingCrossEntropy`): (1 - eps) of the
 * true class's negative log-probability plus eps of the mean over all classes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { item, tensor, tidy } from "../../mod.ts";
 * import { smoothedCrossEntropy } from "./finetune.ts";
 * const loss = tidy(() => item(smoothedCrossEntropy(tensor([[0, 0]]), tensor(new BigInt64Array([0n])), 0.1)));
 * assert.equal(loss.toFixed(6), Math.LN2.toFixed(6)); // two equal logits: ln 2 whatever the smoothing
 * ```
 */
export function smoothedCrossEntropy(logits: Tensor, labels: Tensor, eps: number): Tensor {
  return tidy(() => {
    const logp = logSoftmax(logits, 1); // [B, C]
    const nll = mul(gather(logp, 1, unsqueeze(labels, 1)), -1); // [B, 1]
    if (eps === 0) return mean(nll);
    const smooth = mul(mean(logp, 1, { keepdim: true }), -1); // [B, 1]
    return mean(add(mul(nll, 1 - eps), mul(smooth, eps)));
  });
}

/** The logits [B, classes] of prepared images, in training mode; a ResNet's moved buffers come back too. */
function trainForward(
  s: Pick<FinetuneState, "backbone" | "head">,
  cfg: BackboneConfig,
  x: Tensor,
  dropPath: number,
  g: Generator,
): { logits: Tensor; bnStats: Record<string, Tensor> } {
  if (isResNetConfig(cfg)) {
    const r = resnetForward(s.backbone as ResNetParams, cfg, x, { training: true });
    return { logits: linear(r.output, s.head.weight, s.head.bias), bnStats: r.bnStats };
  }
  const features = vitForward(s.backbone as ViTParams, { ...cfg, dropPathRate: dropPath }, x, { dropPath: g });
  return { logits: linear(features, s.head.weight, s.head.bias), bnStats: {} };
}

/**
 * One fine-tuning step on prepared images x [B, C, H, W] with labels [B] (i64) at learning rate `lr` (the
 * head's; lower layers take their decayed share) and weight decay `weightDecay`. Returns the new state and the
 * batch's loss; the old state is the caller's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tensor } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { FINETUNE_DEFAULTS, finetuneStep, initFinetune } from "./finetune.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { depth: 1, imgSize: 16, patchSize: 8 });
 * const s0 = initFinetune(initViT(vit, g), vit, 3, g);
 * using x = randn(g, [2, 3, 16, 16]);
 * using y = tensor(new BigInt64Array([0n, 2n]));
 * const { state: s1, loss } = finetuneStep(s0, vit, x, y, { ...FINETUNE_DEFAULTS, lr: 1e-3, weightDecay: 0.05 }, g);
 * assert.ok(Math.abs(loss - Math.log(3)) < 0.2 && s1.step === 1);
 * dispose([s0, s1]);
 * ```
 */
export function finetuneStep(
  state: FinetuneState,
  cfg: BackboneConfig,
  x: Tensor,
  labels: Tensor,
  h: Pick<FinetuneHyper, "layerDecay" | "smoothing" | "dropPath"> & { lr: number; weightDecay: number },
  g: Generator,
): { state: FinetuneState; loss: number } {
  return tidy(() => {
    const params = trainables(state);
    const keys = Object.keys(params);
    const leaves: Flat = Object.fromEntries(keys.map((k) => [k, requiresGrad(params[k])]));
    const backbone = mapTree(state.backbone, (t, k) => leaves[`backbone.${k}`] ?? t);
    const head = { weight: leaves["head.weight"], bias: leaves["head.bias"] };
    const { logits, bnStats } = trainForward({ backbone, head }, cfg, x, h.dropPath, g);
    const loss = smoothedCrossEntropy(logits, labels, h.smoothing);
    const grads = grad(loss, keys.map((k) => leaves[k]));
    // AdamW by group: each (layer factor, decayed) pair is one of the official parameter groups.
    const groups = new Map<string, string[]>();
    for (const k of keys) {
      const id = `${layerScale(k, cfg, h.layerDecay)}:${finetuneDecayed(k, params[k])}`;
      groups.set(id, [...(groups.get(id) ?? []), k]);
    }
    const updated: Flat = {};
    const optimizer: AdamWState = { exp_avg: {}, exp_avg_sq: {}, step: {} };
    for (const members of groups.values()) {
      const pick = <T>(r: Record<string, T>) => Object.fromEntries(members.map((k) => [k, r[k]]));
      const scale = layerScale(members[0], cfg, h.layerDecay);
      const decayed = finetuneDecayed(members[0], params[members[0]]);
      const r = OPT.update(
        pick(params),
        Object.fromEntries(members.map((k) => [k, grads[keys.indexOf(k)]])),
        {
          exp_avg: pick(state.optimizer.exp_avg),
          exp_avg_sq: pick(state.optimizer.exp_avg_sq),
          step: pick(state.optimizer.step),
        },
        { lr: h.lr * scale, weightDecay: decayed ? h.weightDecay : 0 },
      );
      Object.assign(updated, r.params);
      Object.assign(optimizer.exp_avg, r.state.exp_avg);
      Object.assign(optimizer.exp_avg_sq, r.state.exp_avg_sq);
      Object.assign(optimizer.step, r.state.step);
    }
    const next: FinetuneState = {
      backbone: mapTree(state.backbone, (t, k) => alias(updated[`backbone.${k}`] ?? bnStats[k] ?? t)),
      head: { weight: alias(updated["head.weight"]), bias: alias(updated["head.bias"]) },
      optimizer: {
        exp_avg: mapTree(optimizer.exp_avg, (t) => alias(t)),
        exp_avg_sq: mapTree(optimizer.exp_avg_sq, (t) => alias(t)),
        step: optimizer.step,
      },
      step: state.step + 1,
    };
    return { state: next, loss: item(loss) };
  });
}

/** Options of {@linkcode finetuneLoop}. */
export interface FinetuneLoopOptions extends FinetuneHyper {
  /** The labelled training images. */
  train: Dataset;
  /** The labelled test images, prepared by `transform`. */
  test: Dataset;
  /** How test images are prepared (resize, centre crop, normalisation). */
  transform: EvalTransform;
  /** The training crop (RandomResizedCrop size and scale; a flip follows). */
  crop: TrainCrop;
  /** The normalisation after the crop. */
  norm: { mean: number[]; std: number[] };
  /** The seed of the shuffles, the augmentation and the drop-path masks. */
  seed: number;
  /** Images per forward pass when testing (256). */
  testBatchSize?: number;
  /** Stops between steps, throwing the signal's reason, once it is aborted. */
  signal?: AbortSignal;
  /** The first epoch to run (0-based; default 0): a resumed run's, with the state after the epoch before. */
  startEpoch?: number;
  /** The best epoch before `startEpoch` (a resumed run's). */
  best?: BestEpoch;
}

/** An event of {@linkcode finetuneLoop}. Its state belongs to the loop until the next event. */
export type FinetuneEvent =
  | {
    /** A step was taken. */
    type: "step";
    /** The state after it. */
    state: FinetuneState;
    /** Its epoch (0-based). */
    epoch: number;
    /** The step within the epoch (1-based). */
    step: number;
    /** Steps in an epoch. */
    steps: number;
    /** The batch's loss. */
    loss: number;
    /** The head's learning rate. */
    lr: number;
    /** Images in the batch. */
    images: number;
  }
  | {
    /** An epoch ended. */
    type: "epoch";
    /** The state at its end. */
    state: FinetuneState;
    /** The epoch (0-based). */
    epoch: number;
    /** The mean of its steps' losses. */
    trainLoss: number;
    /** The test result. */
    test: LinearAccuracy;
    /** The best epoch so far (highest top-1; the first of equals). */
    best: BestEpoch;
  };

const AUGMENT_STREAM = 0xf1e7;

/**
 * Fine-tunes for `epochs`, yielding an event after every step and at the end of every epoch, with the test
 * top-1 / top-5 (evaluation mode) and the best epoch so far. The batch order, the augmentation and the
 * drop-path masks depend only on the seed, the epoch and the step. Ownership, as the linear loop's: the loop
 * owns the state it is given and every state it makes, disposing each when the next replaces it; the state of
 * the last event seen (or the initial state) is the caller's to dispose.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, zeros } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { FINETUNE_DEFAULTS, finetuneLoop, initFinetune } from "./finetune.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { depth: 1, imgSize: 8, patchSize: 4, inChans: 1 });
 * let state = initFinetune(initViT(vit, g), vit, 2, g);
 * using images = zeros([4, 1, 8, 8], { dtype: "u8" });
 * using data = tensorDataset(images, { labels: new Int32Array([0, 1, 0, 1]) });
 * const norm = { mean: [0.5], std: [0.5] };
 * const seen: string[] = [];
 * for await (
 *   const e of finetuneLoop(state, vit, {
 *     ...FINETUNE_DEFAULTS, epochs: 1, warmupEpochs: 0, batchSize: 2, train: data, test: data,
 *     transform: { size: 8, ...norm }, crop: { size: 8, scale: [0.4, 1] }, norm, seed: 0,
 *   })
 * ) {
 *   state = e.state;
 *   seen.push(e.type === "step" ? `step ${e.step}/${e.steps}` : `epoch ${e.epoch}: top-1 ${e.test.top1}%`);
 * }
 * assert.deepEqual(seen, ["step 1/2", "step 2/2", "epoch 0: top-1 50%"]); // blank images: a coin toss
 * dispose(state);
 * ```
 */
export async function* finetuneLoop(
  state: FinetuneState,
  cfg: BackboneConfig,
  o: FinetuneLoopOptions,
): AsyncGenerator<FinetuneEvent> {
  const labels = o.train.labels, testLabels = o.test.labels;
  if (!labels || !testLabels) throw new Error("fine-tuning needs labelled images (one subfolder per class)");
  const n = o.train.length;
  if (n === 0) throw new Error("fine-tuning: no training images");
  // DeiT's loader drops the last partial batch (drop_last=True), which also keeps a batch of one image from a ResNet's
  // batch norms; a training set smaller than one batch is one batch.
  const dropLast = n >= o.batchSize;
  const steps = dropLast ? Math.floor(n / o.batchSize) : 1;
  const lrAt = cosineSchedule((o.lr * o.batchSize) / 256, o.minLr, o.epochs, steps, o.warmupEpochs);
  const device = state.head.weight.device;
  let best = o.best;
  const turn = turnsEvery(100); // for a signal handler to abort
  for (let epoch = o.startEpoch ?? 0; epoch < o.epochs; epoch++) {
    let lossSum = 0, step = 0;
    for await (const b of batches(o.train, epoch, { batchSize: o.batchSize, seed: o.seed, dropLast })) {
      let event: FinetuneEvent;
      try {
        if (o.signal) await turn();
        o.signal?.throwIfAborted();
        if (b.indices.length === 0) continue;
        const lr = lrAt(state.step);
        using g = new Generator(streamSeed(o.seed + AUGMENT_STREAM, epoch * steps + step));
        const next = tidy(() => {
          const images = b.images.device === device ? b.images : toDevice(b.images, device);
          const x = augmentForLinear(images, o.crop, o.norm, g);
          const y = tensor(BigInt64Array.from(b.indices.map((i) => BigInt(labels[i]))), { device });
          return finetuneStep(state, cfg, x, y, { ...o, lr, weightDecay: o.weightDecay }, g);
        });
        dispose(state);
        state = next.state;
        lossSum += next.loss;
        step++;
        event = { type: "step", state, epoch, step, steps, loss: next.loss, lr, images: b.indices.length };
      } finally {
        dispose([b.images, b.labels]);
      }
      yield event;
    }
    const f = await extractFeatures(state.backbone, cfg, o.test, o.transform, {
      batchSize: o.testBatchSize ?? 256,
      signal: o.signal,
    });
    let test: LinearAccuracy;
    try {
      test = evaluateClassifier({ linear: state.head }, f.features, f.labels);
    } finally {
      f.features.dispose();
    }
    if (!best || test.top1 > best.top1) best = { epoch, top1: test.top1, top5: test.top5 };
    yield { type: "epoch", state, epoch, trainLoss: lossSum / Math.max(1, step), test, best };
  }
}

/**
 * Writes a fine-tuned network atomically as safetensors: `backbone.<key>` (the backbone's official keys),
 * `head.weight`, `head.bias`, AdamW's moments (`optimizer.exp_avg.<key>`, ...), and in the metadata the
 * format, the epoch, the steps and `meta`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { readSafetensors } from "../weights/safetensors.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { FINETUNE_FORMAT, initFinetune, saveFinetune } from "./finetune.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { depth: 1 });
 * const s = initFinetune(initViT(vit, g), vit, 10, g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveFinetune(path, s, { epoch: "1" });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.deepEqual([metadata.format, metadata.epoch, tensors["head.weight"].shape], [FINETUNE_FORMAT, "1", [10, 192]]);
 * dispose([s, tensors]);
 * Deno.removeSync(path);
 * ```
 */
export function saveFinetune(path: string, s: FinetuneState, meta: Record<string, string>): void {
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(stateDict(s.backbone))) tensors[`backbone.${k}`] = v;
  tensors["head.weight"] = s.head.weight;
  tensors["head.bias"] = s.head.bias;
  for (const [k, v] of Object.entries(s.optimizer.exp_avg)) tensors[`optimizer.exp_avg.${k}`] = v;
  for (const [k, v] of Object.entries(s.optimizer.exp_avg_sq)) tensors[`optimizer.exp_avg_sq.${k}`] = v;
  writeSafetensors(path, tensors, {
    format: FINETUNE_FORMAT,
    step: String(s.step),
    optimizer_steps: JSON.stringify(s.optimizer.step),
    ...meta,
  });
}

/** A fine-tuning checkpoint read back by {@linkcode loadFinetune}. */
export interface FinetuneCheckpoint {
  /** The state to continue from (the caller's to dispose). */
  state: FinetuneState;
  /** The checkpoint's metadata (`epoch`, `best`, `config` and what else the writer put there). */
  metadata: Record<string, string>;
}

/**
 * Reads a checkpoint that {@linkcode saveFinetune} wrote back into a state for a network of shape `cfg`: the
 * backbone, the classifier, AdamW's moments and step counts, and the steps taken, so that a fine-tuning run can
 * continue where it stopped. A file of another format, another shape or with a moment missing is an error that
 * says which.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, toArray } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { initFinetune, loadFinetune, saveFinetune } from "./finetune.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { depth: 1, imgSize: 16, patchSize: 8 });
 * const s = initFinetune(initViT(vit, g), vit, 10, g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveFinetune(path, s, { epoch: "1" });
 * const back = loadFinetune(path, vit);
 * assert.deepEqual(toArray(back.state.head.weight), toArray(s.head.weight));
 * assert.equal(back.metadata.epoch, "1");
 * dispose([s, back.state]);
 * Deno.removeSync(path);
 * ```
 */
export function loadFinetune(path: string, cfg: BackboneConfig): FinetuneCheckpoint {
  const { tensors, metadata } = readSafetensors(path);
  const made: Tensor[] = [];
  try {
    if (metadata.format === "dino-deno-finetune/1") {
      throw new Error(
        `${path} was written before each epoch's last partial batch was dropped: its step count does not continue ` +
          "in this version's schedule; start the fine-tuning again (its backbone still loads in knn, linear, ...)",
      );
    }
    if (metadata.format !== FINETUNE_FORMAT) {
      throw new Error(
        `${path} is not a fine-tuning checkpoint (format ${metadata.format ?? "none"}, not ${FINETUNE_FORMAT})`,
      );
    }
    const part = (prefix: string) =>
      Object.fromEntries(
        Object.entries(tensors).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
      );
    const backbone = fitBackbone(part("backbone."), cfg, path);
    made.push(...Object.values(stateDict(backbone)));
    const copy = (key: string, like?: Tensor): Tensor => {
      const t = tensors[key];
      if (!t) throw new Error(`${path} has no ${key}`);
      if (like && t.shape.join() !== like.shape.join()) {
        throw new Error(`${path}: ${key} is [${t.shape}], the network's is [${like.shape}]`);
      }
      const c = alias(t); // a handle of its own on the same storage: the file's handles are released below
      made.push(c);
      return c;
    };
    const head = { weight: copy("head.weight"), bias: copy("head.bias") };
    if (head.weight.shape[1] !== cfg.embedDim || head.bias.shape[0] !== head.weight.shape[0]) {
      throw new Error(`${path}: the classifier [${head.weight.shape}] does not fit a ${cfg.embedDim}-wide backbone`);
    }
    const params = trainables({ backbone, head });
    const steps = JSON.parse(metadata.optimizer_steps ?? "{}") as Record<string, number>;
    const optimizer: AdamWState = { exp_avg: {}, exp_avg_sq: {}, step: {} };
    for (const [k, p] of Object.entries(params)) {
      optimizer.exp_avg[k] = copy(`optimizer.exp_avg.${k}`, p);
      optimizer.exp_avg_sq[k] = copy(`optimizer.exp_avg_sq.${k}`, p);
      if (!Number.isInteger(steps[k])) throw new Error(`${path} has no step count for ${k}`);
      optimizer.step[k] = steps[k];
    }
    const step = Number(metadata.step);
    if (!Number.isInteger(step) || step < 0) throw new Error(`${path}: its step "${metadata.step}" is not a count`);
    made.length = 0; // the state owns them now
    return { state: { backbone, head, optimizer, step }, metadata };
  } finally {
    dispose([tensors, made]);
  }
}
