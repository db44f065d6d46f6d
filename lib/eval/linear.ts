/**
 * Linear evaluation, as the official `eval_linear.py`: a linear layer trained
 * on the frozen backbone's features with SGD (momentum 0.9, no weight decay,
 * lr x batch / 256, cosine annealing per epoch, eta_min 0) and cross-entropy,
 * top-1 and top-5 measured after each epoch, the best epoch reported.
 *
 * The features are the CLS tokens of the last `nLastBlocks` blocks, each after
 * the final norm, concatenated, and with `avgpoolPatchtokens` the mean of the
 * last block's normed patch tokens (see {@linkcode linearFeatures} for the
 * layout). Training images get RandomResizedCrop + horizontal flip; test images
 * the evaluation transform of k-NN ({@linkcode evalImages}). Features can also
 * be computed once on the un-augmented training images and the layer trained
 * on them ({@linkcode linearProbe}): the fast path for small data.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, tidy, to } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { linearProbe } from "./linear.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { imgSize: 8, patchSize: 4, inChans: 1, depth: 2, embedDim: 16, numHeads: 2 });
 * const backbone = initViT(vit, g);
 * using images = tidy(() => to(randint(g, 0, 256, [16, 1, 8, 8]), "u8"));
 * using data = tensorDataset(images, { labels: new Int32Array(16).map((_, i) => i % 2) });
 * const r = await linearProbe(backbone, vit, {
 *   train: data, test: data, transform: { size: 8, mean: [0.5], std: [0.25] }, epochs: 2, batchSize: 8,
 * });
 * assert.deepEqual([r.featureDim, r.numLabels, r.epochs.length], [32, 2, 2]); // 2 blocks' CLS of width 16
 * assert.equal(r.top5, 100); // 2 classes
 * dispose(backbone);
 * ```
 * @module
 */
import {
  cat,
  detach,
  dispose,
  div,
  gather,
  Generator,
  grad,
  indexSelect,
  item,
  linear,
  logSoftmax,
  mean,
  mul,
  narrow,
  noGrad,
  normal,
  requiresGrad,
  reshape,
  select,
  stack,
  streamSeed,
  type Tensor,
  tensor,
  tidy,
  to,
  toArray,
  toDevice,
  topk,
  unsqueeze,
  zeros,
} from "../../ffi/mod.ts";
import { cropBoxes, normalize, resizedCrop } from "../augment/mod.ts";
import { uniforms } from "../augment/plans.ts";
import type { Dataset } from "../data/dataset.ts";
import { batches, epochOrder } from "../data/loader.ts";
import { intermediateLayers, type LinearParams, type ViTParams } from "../model/vit.ts";
import { type BackboneConfig, type BackboneParams, isResNetConfig } from "../model/backbone.ts";
import { resnetFeatures, type ResNetParams } from "../model/resnet.ts";
import { sgd, type SGDState } from "../training/optim.ts";
import { turnsEvery } from "../training/turns.ts";
import { writeSafetensors } from "../weights/safetensors.ts";
import { type EvalTransform, extractFeatures, type FeatureOptions } from "./knn.ts";
import type { Accuracy } from "./report.ts";

// ---- features ----------------------------------------------------------------------

/** Which features the linear layer sees (the official `n_last_blocks` and `avgpool_patchtokens`). */
export interface LinearFeatureSpec {
  /** CLS tokens of this many last blocks, each after the final norm, concatenated. */
  nLastBlocks: number;
  /** Also the mean of the last block's normed patch tokens. */
  avgpoolPatchtokens: boolean;
}

/**
 * The official choice for an architecture, by width: ViT-S-like (narrower than 768) the CLS of the last 4
 * blocks (fewer in a shallower net) and no pooling; ViT-B-like (768 or wider) the last block's CLS and the
 * pooled patch tokens. A ResNet's feature is its pooled output (`model(inp)` in the official code), which
 * reads as one block and no pooling here.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vitConfig } from "../model/vit.ts";
 * import { defaultFeatureSpec } from "./linear.ts";
 * assert.deepEqual(defaultFeatureSpec(vitConfig("vit_small")), { nLastBlocks: 4, avgpoolPatchtokens: false });
 * assert.deepEqual(defaultFeatureSpec(vitConfig("vit_base")), { nLastBlocks: 1, avgpoolPatchtokens: true });
 * ```
 */
export function defaultFeatureSpec(vit: BackboneConfig): LinearFeatureSpec {
  if (isResNetConfig(vit)) return { nLastBlocks: 1, avgpoolPatchtokens: false };
  return vit.embedDim >= 768
    ? { nLastBlocks: 1, avgpoolPatchtokens: true }
    : { nLastBlocks: Math.min(4, vit.depth), avgpoolPatchtokens: false };
}

/**
 * The width of the features: D x (nLastBlocks + 1 with pooling).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vitConfig } from "../model/vit.ts";
 * import { featureDim } from "./linear.ts";
 * assert.equal(featureDim(vitConfig("vit_small"), { nLastBlocks: 4, avgpoolPatchtokens: false }), 1536);
 * ```
 */
export function featureDim(vit: BackboneConfig, spec: LinearFeatureSpec): number {
  return vit.embedDim * (spec.nLastBlocks + (spec.avgpoolPatchtokens ? 1 : 0));
}

function checkSpec(vit: BackboneConfig, spec: LinearFeatureSpec): void {
  const n = spec.nLastBlocks;
  if (isResNetConfig(vit)) {
    if (n !== 1 || spec.avgpoolPatchtokens) {
      throw new RangeError(
        `a ResNet's feature is its pooled output: n_last_blocks and avgpool_patchtokens are for ViTs`,
      );
    }
    return;
  }
  if (!(Number.isInteger(n) && n >= 1 && n <= vit.depth)) {
    throw new RangeError(`n_last_blocks must be between 1 and the backbone's depth ${vit.depth}, got ${n}`);
  }
}

/**
 * The features of a batch of prepared images, [B, featureDim]. With pooling and one block the layout is the
 * official one (the CLS and the mean interleaved channel by channel: cls_0, mean_0, cls_1, mean_1, ...), so that
 * released linear weights apply; the official line fails for more blocks with pooling, and here the mean then
 * follows the concatenated CLS tokens (as DINOv2 does). A ResNet gives its pooled evaluation-mode output.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { linearFeatures } from "./linear.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { imgSize: 16, patchSize: 8, depth: 2 });
 * const p = initViT(vit, g);
 * using x = randn(g, [3, 3, 16, 16]);
 * using f = tidy(() => linearFeatures(p, vit, x, { nLastBlocks: 2, avgpoolPatchtokens: true }));
 * assert.deepEqual(f.shape, [3, 3 * 192]); // 2 CLS tokens and the pooled patches
 * dispose(p);
 * ```
 */
export function linearFeatures(p: BackboneParams, vit: BackboneConfig, x: Tensor, spec: LinearFeatureSpec): Tensor {
  checkSpec(vit, spec);
  if (isResNetConfig(vit)) return tidy(() => resnetFeatures(p as ResNetParams, vit, x)); // [B, D]
  return tidy(() => {
    // Each [B, 1 + N, D], normed; without pooling, the last block's CLS token is all that is read of it.
    const layers = intermediateLayers(p as ViTParams, vit, x, spec.nLastBlocks, !spec.avgpoolPatchtokens);
    const cls = cat(layers.map((l) => select(l, 1, 0)), 1); // [B, n D]
    if (!spec.avgpoolPatchtokens) return cls;
    const last = layers[layers.length - 1];
    const pooled = mean(narrow(last, 1, 1, last.shape[1] - 1), 1); // [B, D]
    if (spec.nLastBlocks === 1) return reshape(stack([cls, pooled], 2), [x.shape[0], -1]);
    return cat([cls, pooled], 1);
  });
}

/**
 * Features of every image of a dataset through the evaluation transform (no augmentation), with the labels.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, zeros } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { extractLinearFeatures } from "./linear.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { imgSize: 8, patchSize: 4, inChans: 1, depth: 1 });
 * const backbone = initViT(vit, g);
 * using images = zeros([3, 1, 8, 8], { dtype: "u8" });
 * using data = tensorDataset(images, { labels: new Int32Array([0, 1, 1]) });
 * const spec = { nLastBlocks: 1, avgpoolPatchtokens: true };
 * const { features, labels } = await extractLinearFeatures(backbone, vit, data, { size: 8, mean: [0], std: [1] }, spec);
 * assert.deepEqual([features.shape, [...labels]], [[3, 384], [0, 1, 1]]);
 * dispose([backbone, features]);
 * ```
 */
export async function extractLinearFeatures(
  backbone: BackboneParams,
  vit: BackboneConfig,
  ds: Dataset,
  t: EvalTransform,
  spec: LinearFeatureSpec,
  o: FeatureOptions = {},
): Promise<FeatureSet> {
  checkSpec(vit, spec);
  return await extractFeatures(backbone, vit, ds, t, { ...o, embed: (x) => linearFeatures(backbone, vit, x, spec) });
}

// ---- the classifier -------------------------------------------------------------------

/** The official `LinearClassifier`: one `nn.Linear` (keys `linear.weight` [labels, dim], `linear.bias`). */
export interface LinearClassifier {
  /** The layer. */
  linear: LinearParams;
}

/** The classifier and its optimizer's state: what a training step takes and returns. */
export interface LinearState {
  /** The layer. */
  classifier: LinearClassifier;
  /** SGD's momentum buffers, under the classifier's keys. */
  optimizer: SGDState;
}

/**
 * A fresh classifier and optimizer state: weight N(0, 0.01), bias 0, zero momentum, as the official code.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, toArray } from "../../mod.ts";
 * import { initLinearState } from "./linear.ts";
 * using g = new Generator(0);
 * const s = initLinearState(384, 10, g);
 * assert.deepEqual([s.classifier.linear.weight.shape, toArray(s.classifier.linear.bias)], [[10, 384], Array(10).fill(0)]);
 * assert.deepEqual(Object.keys(s.optimizer.momentum_buffer), ["linear.weight", "linear.bias"]);
 * dispose(s);
 * ```
 */
export function initLinearState(dim: number, numLabels: number, g: Generator): LinearState {
  const classifier = { linear: { weight: normal(g, [numLabels, dim], 0, 0.01), bias: zeros([numLabels]) } };
  return { classifier, optimizer: SGD.init(flat(classifier)) };
}

const SGD = sgd({ momentum: 0.9 });

const flat = (c: LinearClassifier) => ({ "linear.weight": c.linear.weight, "linear.bias": c.linear.bias });

/**
 * Mean cross-entropy of logits [B, C] against class indices [B] (i64), as `nn.CrossEntropyLoss()`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { item, tensor, tidy } from "../../mod.ts";
 * import { crossEntropy } from "./linear.ts";
 * const loss = tidy(() => item(crossEntropy(tensor([[0, 0], [0, 0]]), tensor(new BigInt64Array([0n, 1n])))));
 * assert.equal(loss.toFixed(6), Math.LN2.toFixed(6)); // two equal logits: ln 2
 * ```
 */
export function crossEntropy(logits: Tensor, labels: Tensor): Tensor {
  return tidy(() => mul(mean(gather(logSoftmax(logits, 1), 1, unsqueeze(labels, 1))), -1));
}

/**
 * One SGD step (momentum 0.9, dampening 0, no Nesterov, no weight decay, as `torch.optim.SGD`) of the
 * classifier on a batch of features [B, dim] and labels [B] (i64) at `lr`. Returns the new state and the
 * batch's loss; the old state is the caller's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tensor } from "../../mod.ts";
 * import { initLinearState, linearStep } from "./linear.ts";
 * using g = new Generator(0);
 * const s0 = initLinearState(4, 3, g);
 * using x = randn(g, [2, 4]);
 * using y = tensor(new BigInt64Array([0n, 2n]));
 * const { state: s1, loss } = linearStep(s0, x, y, 0.1);
 * assert.ok(Math.abs(loss - Math.log(3)) < 0.1); // near-uniform predictions at init
 * dispose([s0, s1]);
 * ```
 */
export function linearStep(state: LinearState, x: Tensor, labels: Tensor, lr: number): {
  state: LinearState;
  loss: number;
} {
  return tidy(() => {
    const { weight, bias } = state.classifier.linear;
    const w = requiresGrad(weight), b = requiresGrad(bias);
    const loss = crossEntropy(linear(x, w, b), labels);
    const [gw, gb] = grad(loss, [w, b]);
    const next = SGD.update(flat(state.classifier), { "linear.weight": gw, "linear.bias": gb }, state.optimizer, {
      lr,
      weightDecay: 0,
    });
    const classifier = { linear: { weight: next.params["linear.weight"], bias: next.params["linear.bias"] } };
    return { state: { classifier, optimizer: next.state }, loss: item(detach(loss)) };
  });
}

/** Accuracy and mean loss of a classifier on a feature set. */
export interface LinearAccuracy extends Accuracy {
  /** Mean cross-entropy over the images. */
  loss: number;
}

/**
 * Top-1, top-5 (percent; top-k of the k < 5 classes there are when fewer) and mean loss of the classifier
 * on `features` [N, dim] with `labels`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../../mod.ts";
 * import { evaluateClassifier } from "./linear.ts";
 * const classifier = { linear: { weight: tensor([[1, 0], [0, 1]]), bias: tensor([0, 0]) } };
 * using x = tensor([[2, 0], [0, 2], [2, 0]]);
 * const r = evaluateClassifier(classifier, x, new Int32Array([0, 1, 1]));
 * assert.deepEqual([r.top1.toFixed(2), r.top5], ["66.67", 100]);
 * dispose(classifier);
 * ```
 */
export function evaluateClassifier(
  c: LinearClassifier,
  features: Tensor,
  labels: Int32Array,
  o: { chunk?: number } = {},
): LinearAccuracy {
  const n = labels.length;
  if (features.shape[0] !== n) throw new Error(`${features.shape[0]} feature rows for ${n} labels`);
  if (n === 0) throw new Error("linear evaluation: no test images");
  const C = c.linear.weight.shape[0], k = Math.min(5, C), chunk = o.chunk ?? 4096;
  let top1 = 0, top5 = 0, loss = 0;
  noGrad(() => {
    for (let start = 0; start < n; start += chunk) {
      tidy(() => {
        const m = Math.min(chunk, n - start);
        const truth = labels.subarray(start, start + m);
        const logits = linear(narrow(features, 0, start, m), c.linear.weight, c.linear.bias);
        const y = tensor(BigInt64Array.from(truth, BigInt), { device: logits.device });
        loss += item(crossEntropy(logits, y)) * m;
        const ranked = toArray(topk(logits, k, 1).indices);
        for (let i = 0; i < m; i++) {
          const row = ranked.slice(i * k, (i + 1) * k);
          if (row[0] === truth[i]) top1++;
          if (row.includes(truth[i])) top5++;
        }
      });
    }
  });
  return { top1: (100 * top1) / n, top5: (100 * top5) / n, loss: loss / n };
}

// ---- schedule and augmentation -------------------------------------------------------------

/**
 * `torch.optim.lr_scheduler.CosineAnnealingLR(T_max = epochs, eta_min)` stepped once per epoch, as a function
 * of the epoch: etaMin + (base - etaMin) (1 + cos(pi epoch / epochs)) / 2.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cosineAnnealingLr } from "./linear.ts";
 * const lr = cosineAnnealingLr(0.1, 4);
 * assert.deepEqual([lr(0), lr(2).toFixed(6)], [0.1, "0.050000"]);
 * assert.throws(() => lr(4), RangeError);
 * ```
 */
export function cosineAnnealingLr(base: number, epochs: number, etaMin = 0): (epoch: number) => number {
  return (epoch: number) => {
    if (!(Number.isInteger(epoch) && epoch >= 0 && epoch < epochs)) {
      throw new RangeError(`epoch ${epoch} is outside the schedule's 0..${epochs - 1}`);
    }
    return etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * epoch) / epochs))) / 2;
  };
}

/** The training crop: RandomResizedCrop to `size` with `scale` (and aspect ratio 3/4..4/3), then a flip. */
export interface TrainCrop {
  /** The side the backbone sees. */
  size: number;
  /** The crop's area range, as a fraction of the image. */
  scale: [number, number];
}

/**
 * The training crop for images of side `side` seen at `size`: the official RandomResizedCrop scale (0.08, 1),
 * except for small images (under 64 px: 28 px Fashion-MNIST, 32 px CIFAR), where a crop of 8% (8 x 8 px) would
 * leave too little to recognise: there (0.4, 1), the range of the global crops the backbone trained on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { trainCrop } from "./linear.ts";
 * assert.deepEqual(trainCrop(256, 224), { size: 224, scale: [0.08, 1] });
 * assert.deepEqual(trainCrop(28, 28), { size: 28, scale: [0.4, 1] });
 * ```
 */
export function trainCrop(side: number, size: number): TrainCrop {
  return { size, scale: side < 64 ? [0.4, 1] : [0.08, 1] };
}

/**
 * u8 [B, C, S, S] images to normalised f32 [B, C, size, size]: RandomResizedCrop (bilinear, as torchvision's
 * default) and a horizontal flip with probability 1/2, drawn from `g`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, Generator, tidy, toArray } from "../../mod.ts";
 * import { augmentForLinear } from "./linear.ts";
 * using g = new Generator(0);
 * using images = full([2, 1, 28, 28], 255, { dtype: "u8" });
 * using x = tidy(() => augmentForLinear(images, { size: 28, scale: [0.4, 1] }, { mean: [0.5], std: [0.5] }, g));
 * assert.deepEqual([x.shape, new Set(toArray(x))], [[2, 1, 28, 28], new Set([1])]); // white stays white
 * ```
 */
export function augmentForLinear(
  images: Tensor,
  crop: TrainCrop,
  norm: { mean: number[]; std: number[] },
  g: Generator,
): Tensor {
  const [B, , H, W] = images.shape;
  const boxes = cropBoxes(g, B, H, W, crop.scale, [3 / 4, 4 / 3]);
  const flips = uniforms(g, B, 0, 1).map((u) => u < 0.5);
  return tidy(() =>
    normalize(resizedCrop(div(to(images, "f32"), 255), boxes, flips, crop.size, "bilinear"), norm.mean, norm.std)
  );
}

// ---- the loop --------------------------------------------------------------------------

/** Features [N, dim] and their labels. */
export interface FeatureSet {
  /** [N, dim]. */
  features: Tensor;
  /** N class indices. */
  labels: Int32Array;
}

/** Augmented training: each epoch's images are cropped, flipped and passed through the frozen backbone. */
export interface AugmentedImages {
  /** The training images (labelled). */
  dataset: Dataset;
  /** The frozen backbone. */
  backbone: BackboneParams;
  /** Its shape. */
  vit: BackboneConfig;
  /** Which features. */
  spec: LinearFeatureSpec;
  /** The crop. */
  crop: TrainCrop;
  /** The normalisation after the crop. */
  norm: { mean: number[]; std: number[] };
}

/** Options of {@linkcode linearLoop}. */
export interface LinearLoopOptions {
  /** Cached features, or images augmented every epoch. */
  train: FeatureSet | AugmentedImages;
  /** The test features (the evaluation transform is deterministic: computed once). */
  test: FeatureSet;
  /** Epochs (official 100). */
  epochs: number;
  /** Images per step (official 128 per GPU); the last batch of an epoch may be smaller (no drop_last). */
  batchSize: number;
  /** The learning rate for a batch of 256 (official 0.001): the step's is lr x batchSize / 256, then annealed. */
  lr: number;
  /** The seed of the shuffles and the augmentation. */
  seed: number;
  /** Test after epochs 0, N, 2N, ... (counted from 0) and the last (official `val_freq`, 1). */
  valFreq?: number;
  /** Stops between steps, throwing the signal's reason, once it is aborted. */
  signal?: AbortSignal;
}

/** The best epoch so far. */
export interface BestEpoch extends Accuracy {
  /** The epoch (0-based). */
  epoch: number;
}

/** An event of {@linkcode linearLoop}. Its state belongs to the loop until the next event. */
export type LinearEvent =
  | {
    /** A step was taken. */
    type: "step";
    /** The state after it. */
    state: LinearState;
    /** Its epoch (0-based). */
    epoch: number;
    /** The step within the epoch (1-based). */
    step: number;
    /** Steps in an epoch. */
    steps: number;
    /** The batch's loss. */
    loss: number;
    /** The learning rate used. */
    lr: number;
    /** Images in the batch. */
    images: number;
  }
  | {
    /** An epoch ended. */
    type: "epoch";
    /** The state at its end. */
    state: LinearState;
    /** The epoch (0-based). */
    epoch: number;
    /** Its learning rate. */
    lr: number;
    /** The mean of its steps' losses. */
    trainLoss: number;
    /** The test result, when tested after this epoch. */
    test?: LinearAccuracy;
    /** The best tested epoch so far (highest top-1; the first of equals). */
    best?: BestEpoch;
  };

const AUGMENT_STREAM = 0x11ea;

function isFeatureSet(t: FeatureSet | AugmentedImages): t is FeatureSet {
  return "features" in t;
}

/** Labels as an i64 tensor on `device`. */
function labelTensor(labels: ArrayLike<number>, device: Tensor["device"]): Tensor {
  return tensor(BigInt64Array.from(Array.from(labels), BigInt), { device });
}

/**
 * Trains the classifier for `epochs`, yielding an event after every step and at the end of every epoch (with
 * the test result after epochs 0, `valFreq`, 2 `valFreq`, ... and the last). The batch order and the augmentation depend only
 * on the seed and the epoch.
 *
 * Ownership, as the training loop's: the loop owns the state it is given and every state it makes, and disposes
 * each one when the next replaces it; the state of the last event the caller saw (or the initial state, when
 * there was none) is the caller's to dispose.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn } from "../../mod.ts";
 * import { initLinearState, linearLoop } from "./linear.ts";
 * using g = new Generator(0);
 * using features = randn(g, [10, 4]);
 * const labels = new Int32Array(10).map((_, i) => i % 2);
 * let state = initLinearState(4, 2, g);
 * const seen: string[] = [];
 * for await (const e of linearLoop(state, { train: { features, labels }, test: { features, labels }, epochs: 2, batchSize: 4, lr: 0.1, seed: 0 })) {
 *   state = e.state;
 *   seen.push(e.type === "step" ? `${e.step}/${e.steps}` : `epoch ${e.epoch}`);
 * }
 * assert.deepEqual(seen, ["1/3", "2/3", "3/3", "epoch 0", "1/3", "2/3", "3/3", "epoch 1"]);
 * dispose(state);
 * ```
 */
export async function* linearLoop(state: LinearState, o: LinearLoopOptions): AsyncGenerator<LinearEvent> {
  const lrAt = cosineAnnealingLr((o.lr * o.batchSize) / 256, o.epochs);
  const valFreq = o.valFreq ?? 1;
  const train = o.train;
  const n = isFeatureSet(train) ? train.labels.length : train.dataset.length;
  if (n === 0) throw new Error("linear evaluation: no training images");
  const steps = Math.ceil(n / o.batchSize);
  const device = state.classifier.linear.weight.device;
  let best: BestEpoch | undefined;
  const turn = turnsEvery(100);
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    const lr = lrAt(epoch);
    let lossSum = 0, step = 0;
    const take = (x: Tensor, y: Tensor, images: number): LinearEvent => {
      const next = linearStep(state, x, y, lr);
      dispose(state);
      state = next.state;
      lossSum += next.loss;
      step++;
      return { type: "step", state, epoch, step, steps, loss: next.loss, lr, images };
    };
    const pause = async () => {
      if (o.signal) await turn(); // for a signal handler to abort
      o.signal?.throwIfAborted();
    };
    if (isFeatureSet(train)) {
      const order = epochOrder(n, epoch, { seed: o.seed });
      for (let start = 0; start < n; start += o.batchSize) {
        await pause();
        const idx = order.slice(start, start + o.batchSize);
        const event = tidy(() => {
          const at = tensor(BigInt64Array.from(idx, BigInt), { device: train.features.device });
          const x = indexSelect(train.features, 0, at);
          return take(
            device === x.device ? x : toDevice(x, device),
            labelTensor(idx.map((i) => train.labels[i]), device),
            idx.length,
          );
        });
        yield event;
      }
    } else {
      const labels = train.dataset.labels;
      if (!labels) throw new Error(`${train.dataset.name} has no labels: a linear classifier needs them`);
      for await (const b of batches(train.dataset, epoch, { batchSize: o.batchSize, seed: o.seed, dropLast: false })) {
        let event: LinearEvent;
        try {
          await pause();
          if (b.indices.length === 0) continue;
          using g = new Generator(streamSeed(o.seed + AUGMENT_STREAM, epoch * steps + step));
          event = tidy(() => {
            const images = b.images.device === device ? b.images : toDevice(b.images, device);
            const x = noGrad(() =>
              linearFeatures(train.backbone, train.vit, augmentForLinear(images, train.crop, train.norm, g), train.spec)
            );
            return take(x, labelTensor(b.indices.map((i) => labels[i]), device), b.indices.length);
          });
        } finally {
          dispose([b.images, b.labels]);
        }
        yield event;
      }
    }
    let test: LinearAccuracy | undefined;
    // eval_linear.py's `epoch % val_freq == 0 or epoch == epochs - 1`: the first epoch is always tested.
    if (epoch % valFreq === 0 || epoch === o.epochs - 1) {
      test = evaluateClassifier(state.classifier, o.test.features, o.test.labels);
      if (!best || test.top1 > best.top1) best = { epoch, top1: test.top1, top5: test.top5 };
    }
    yield { type: "epoch", state, epoch, lr, trainLoss: lossSum / Math.max(1, step), test, best };
  }
}

// ---- the whole protocol ----------------------------------------------------------------

/**
 * The number of classes of labelled training and test images: the training set's class count, or more when
 * a label is larger. Throws when either set is unlabelled.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { numLabels } from "./linear.ts";
 * assert.equal(numLabels(new Int32Array([0, 1]), new Int32Array([2]), 0), 3);
 * assert.throws(() => numLabels(new Int32Array([-1]), new Int32Array([0]), 0), /labelled/);
 * ```
 */
export function numLabels(train: Int32Array, test: Int32Array, classes: number): number {
  let max = classes - 1;
  for (const labels of [train, test]) {
    for (const l of labels) {
      if (l < 0) {
        throw new Error("linear evaluation needs labelled images: this data has none (use one subfolder per class)");
      }
      max = Math.max(max, l);
    }
  }
  return max + 1;
}

/** Options of {@linkcode linearProbe}. */
export interface LinearProbeOptions {
  /** The labelled training images. */
  train: Dataset;
  /** The labelled test images. */
  test: Dataset;
  /** How images are prepared for the backbone (the evaluation transform of k-NN). */
  transform: EvalTransform;
  /** Which features (default: {@linkcode defaultFeatureSpec}). */
  spec?: LinearFeatureSpec;
  /** Epochs (100). */
  epochs?: number;
  /** Images per step (128). */
  batchSize?: number;
  /** Learning rate per 256 images (0.001). */
  lr?: number;
  /** Seed of the classifier's init and the shuffles (0). */
  seed?: number;
  /** Images per forward pass of the backbone (256). */
  featureBatchSize?: number;
  /** Stops between batches and steps, throwing the signal's reason, once it is aborted. */
  signal?: AbortSignal;
  /** Called at the end of every epoch. */
  onEpoch?: (e: Extract<LinearEvent, { type: "epoch" }>) => void;
}

/** One epoch's record. */
export interface LinearEpoch {
  /** The epoch (0-based). */
  epoch: number;
  /** Its learning rate. */
  lr: number;
  /** Mean training loss. */
  trainLoss: number;
  /** The test result, when tested. */
  test?: LinearAccuracy;
}

/** What {@linkcode linearProbe} reports: the best epoch's accuracy (the official report) and the rest. */
export interface LinearProbeResult extends Accuracy {
  /** The epoch (0-based) of the best top-1; `top1` and `top5` are that epoch's. */
  bestEpoch: number;
  /** The last epoch's test result. */
  last: LinearAccuracy;
  /** Every epoch. */
  epochs: LinearEpoch[];
  /** The features used. */
  spec: LinearFeatureSpec;
  /** Their width. */
  featureDim: number;
  /** Classes. */
  numLabels: number;
}

/**
 * The linear probe on cached features, for a training run's report: features of the un-augmented training and
 * test images are computed once, then the classifier is trained on them with the official optimiser and
 * schedule. The classifier is discarded; every tensor is freed.
 */
export async function linearProbe(
  backbone: BackboneParams,
  vit: BackboneConfig,
  o: LinearProbeOptions,
): Promise<LinearProbeResult> {
  const spec = o.spec ?? defaultFeatureSpec(vit);
  const f = { batchSize: o.featureBatchSize ?? 256, signal: o.signal };
  const train = await extractLinearFeatures(backbone, vit, o.train, o.transform, spec, f);
  let test: FeatureSet | undefined, state: LinearState | undefined;
  try {
    test = await extractLinearFeatures(backbone, vit, o.test, o.transform, spec, f);
    const labels = numLabels(train.labels, test.labels, o.train.classes.length);
    using g = new Generator(o.seed ?? 0);
    state = initLinearState(featureDim(vit, spec), labels, g);
    const epochs: LinearEpoch[] = [];
    let best: BestEpoch | undefined, last: LinearAccuracy | undefined;
    const loop = linearLoop(state, {
      train,
      test,
      epochs: o.epochs ?? 100,
      batchSize: o.batchSize ?? 128,
      lr: o.lr ?? 0.001,
      seed: o.seed ?? 0,
      signal: o.signal,
    });
    for await (const e of loop) {
      state = e.state;
      if (e.type !== "epoch") continue;
      epochs.push({ epoch: e.epoch, lr: e.lr, trainLoss: e.trainLoss, test: e.test });
      best = e.best;
      last = e.test ?? last;
      o.onEpoch?.(e);
    }
    if (!best || !last) throw new Error("linear evaluation: no epoch was tested");
    return {
      top1: best.top1,
      top5: best.top5,
      bestEpoch: best.epoch,
      last,
      epochs,
      spec,
      featureDim: featureDim(vit, spec),
      numLabels: labels,
    };
  } finally {
    dispose([train.features, test?.features, state]);
  }
}

/** What a classifier checkpoint records besides the tensors. */
export interface LinearCheckpointInfo {
  /** Epochs completed. */
  epoch: number;
  /** Which features the classifier reads. */
  spec: LinearFeatureSpec;
  /** The best tested epoch so far. */
  best?: BestEpoch;
  /** Anything else to record (strings, as safetensors metadata). */
  extra?: Record<string, string>;
}

/** The format tag of a classifier checkpoint's metadata. */
export const LINEAR_FORMAT = "dino-deno-linear/1";

/**
 * Writes the classifier (`linear.weight`, `linear.bias`, the official key names without DDP's `module.`) and
 * its momentum buffers (`optimizer.momentum_buffer.linear.*`) atomically as safetensors, with the epoch, the
 * feature spec and the best epoch as metadata.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { readSafetensors } from "../weights/safetensors.ts";
 * import { initLinearState, saveLinearCheckpoint } from "./linear.ts";
 * using g = new Generator(0);
 * const s = initLinearState(8, 3, g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveLinearCheckpoint(path, s, { epoch: 1, spec: { nLastBlocks: 4, avgpoolPatchtokens: false } });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.deepEqual([tensors["linear.weight"].shape, metadata.format, metadata.n_last_blocks], [[3, 8], "dino-deno-linear/1", "4"]);
 * dispose([s, tensors]);
 * Deno.removeSync(path);
 * ```
 */
export function saveLinearCheckpoint(path: string, state: LinearState, info: LinearCheckpointInfo): void {
  const tensors: Record<string, Tensor> = { ...flat(state.classifier) };
  for (const [k, t] of Object.entries(state.optimizer.momentum_buffer)) tensors[`optimizer.momentum_buffer.${k}`] = t;
  writeSafetensors(path, tensors, {
    ...info.extra,
    format: LINEAR_FORMAT,
    epoch: String(info.epoch),
    n_last_blocks: String(info.spec.nLastBlocks),
    avgpool_patchtokens: String(info.spec.avgpoolPatchtokens),
    ...(info.best
      ? { best_epoch: String(info.best.epoch), best_top1: String(info.best.top1), best_top5: String(info.best.top5) }
      : {}),
  });
}
