/**
 * Weighted k-NN evaluation, as the official `eval_knn.py`: features are
 * L2-normalised, similarity is cosine, and each of the k nearest training
 * images votes exp(similarity / T) for its class. Unlike the official
 * script, any number of test images works (it crashes below 100).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn } from "../../mod.ts";
 * import { knnClassify } from "./knn.ts";
 * using g = new Generator(0);
 * const train = randn(g, [100, 8]), test = randn(g, [10, 8]);
 * const r = knnClassify(train, new Int32Array(100), test, new Int32Array(10), { k: 5 });
 * assert.equal(r.top1, 100); // every label is 0
 * dispose([train, test]);
 * ```
 * @module
 */
import {
  cat,
  div,
  exp,
  expand,
  gather,
  matmul,
  mul,
  narrow,
  noGrad,
  oneHot,
  pilResize,
  reshape,
  sort,
  sub,
  sum,
  type Tensor,
  tensor,
  tidy,
  to,
  toArray,
  toDevice,
  topk,
  transpose,
  unsqueeze,
} from "../../ffi/mod.ts";
import { l2Normalize } from "../model/head.ts";
import type { Dataset } from "../data/dataset.ts";
import { batches, skippedWarning } from "../data/loader.ts";
import { type BackboneConfig, backboneDevice, backboneFeatures, type BackboneParams } from "../model/backbone.ts";
import { turnsEvery } from "../training/turns.ts";

/** Options of {@linkcode knnClassify}. */
export interface KnnOptions {
  /** Neighbours (20); fewer when the memory is smaller. */
  k?: number;
  /** Temperature of the vote weights (0.07). */
  temperature?: number;
  /**
   * Number of classes: the data set's (the official code's 1000 for ImageNet; default, and at least, the largest
   * label + 1). Where fewer than five classes got votes, classes without any fill the top 5 in libtorch's order of
   * ties, as in the official code.
   */
  numClasses?: number;
  /** Test images per similarity block (500). */
  chunk?: number;
  /**
   * For each test image, a memory row to leave out of its neighbours (-1: none): the image itself, where the test
   * images are the memory's (see {@linkcode selfRows}), so that none finds itself.
   */
  exclude?: Int32Array;
}

/** What {@linkcode knnClassify} measured. */
export interface KnnResult {
  /** Top-1 accuracy (%). */
  top1: number;
  /** Top-5 accuracy (%): the truth among the first min(5, k) classes. */
  top5: number;
  /** The test images classified. */
  images: number;
}

/**
 * Top-1 and top-5 accuracy (percent) of weighted k-NN with `train` features as the memory.
 * Features need not be normalised: they are L2-normalised here.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../../mod.ts";
 * import { knnClassify } from "./knn.ts";
 * const train = tensor([[1, 0], [0, 1]]), test = tensor([[0.9, 0.1], [0, 2]]);
 * const { top1 } = knnClassify(train, new Int32Array([0, 1]), test, new Int32Array([0, 0]), { k: 1 });
 * assert.equal(top1, 50); // the first test image is nearest class 0 (right), the second class 1 (wrong)
 * dispose([train, test]);
 * ```
 */
export function knnClassify(
  train: Tensor,
  trainLabels: Int32Array,
  test: Tensor,
  testLabels: Int32Array,
  o: KnnOptions = {},
): KnnResult {
  if (train.shape[0] !== trainLabels.length || test.shape[0] !== testLabels.length) {
    throw new Error("k-NN: features and labels differ in count");
  }
  if (testLabels.length === 0) throw new Error("k-NN: no test images");
  if (trainLabels.some((l) => l < 0) || testLabels.some((l) => l < 0)) {
    throw new Error("k-NN needs labelled images: this data has none (use a folder with one subfolder per class)");
  }
  const exclude = o.exclude;
  if (exclude && exclude.length !== testLabels.length) throw new Error("k-NN: one excluded row per test image");
  const k = Math.min(o.k ?? 20, train.shape[0] - (exclude?.some((r) => r >= 0) ? 1 : 0));
  if (k < 1) throw new Error("k-NN: the memory holds no image besides the test image itself");
  const T = o.temperature ?? 0.07;
  let maxLabel = 0;
  for (const l of trainLabels) maxLabel = Math.max(maxLabel, l);
  for (const l of testLabels) maxLabel = Math.max(maxLabel, l);
  const C = Math.max(o.numClasses ?? 0, maxLabel + 1);
  const chunk = o.chunk ?? 500;
  let top1 = 0, top5 = 0;
  noGrad(() =>
    tidy(() => {
      const memory = transpose(l2Normalize(to(train, "f32")), 0, 1); // [D, N]
      const labels = tensor(BigInt64Array.from(trainLabels, BigInt), { device: train.device }); // [N]
      const queries = l2Normalize(to(test, "f32")); // [M, D]
      for (let start = 0; start < testLabels.length; start += chunk) {
        tidy(() => {
          const n = Math.min(chunk, testLabels.length - start);
          const sim = matmul(narrow(queries, 0, start, n), memory); // [n, N]
          const wide = exclude ? Math.min(k + 1, train.shape[0]) : k; // one more, to leave one out
          let { values, indices } = topk(sim, wide, 1); // [n, wide]
          if (exclude) ({ values, indices } = leaveOut(values, indices, exclude.subarray(start, start + n), k));
          const neighbours = gather(expand(unsqueeze(labels, 0), [n, -1]), 1, indices); // [n, k]
          const votes = mul(to(oneHot(neighbours, C), "f32"), unsqueeze(exp(div(values, T)), 2)); // [n, k, C]
          // The classes by votes as the official code ranks them (a descending sort, not topk: ties in the same
          // order, libtorch's).
          const width = Math.min(5, C);
          const ranked = toArray(narrow(sort(sum(votes, 1), 1, true).indices, 1, 0, width)); // [n, <=5]
          for (let i = 0; i < n; i++) {
            const truth = testLabels[start + i];
            const row = ranked.slice(i * width, (i + 1) * width);
            if (row[0] === truth) top1++;
            if (row.slice(0, Math.min(5, k)).includes(truth)) top5++;
          }
        });
      }
    })
  );
  const total = testLabels.length;
  return { top1: (100 * top1) / total, top5: (100 * top5) / total, images: total };
}

/** The k of k + 1 neighbours [n, k + 1] other than each row's excluded one (the last where it is not among them). */
function leaveOut(
  values: Tensor,
  indices: Tensor,
  exclude: Int32Array,
  k: number,
): { values: Tensor; indices: Tensor } {
  const [n, width] = values.shape, v = toArray(values), ix = toArray(indices);
  const keptValues = new Float32Array(n * k), keptIndices = new BigInt64Array(n * k);
  for (let i = 0; i < n; i++) {
    let out = 0;
    for (let j = 0; j < width && out < k; j++) {
      if (Number(ix[i * width + j]) === exclude[i]) continue;
      keptValues[i * k + out] = v[i * width + j];
      keptIndices[i * k + out++] = BigInt(ix[i * width + j]);
    }
  }
  return {
    values: tensor(keptValues, { shape: [n, k], device: values.device }),
    indices: tensor(keptIndices, { shape: [n, k], device: values.device }),
  };
}

/**
 * For each test row, the memory row of the same dataset item (-1: none): what {@linkcode knnClassify} leaves out
 * when the test images are the memory's own (a data set without a test split).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { selfRows } from "./knn.ts";
 * assert.deepEqual([...selfRows(new Int32Array([0, 2, 3]), new Int32Array([3, 1, 0]))], [2, -1, 0]);
 * ```
 */
export function selfRows(memoryIndices: Int32Array, testIndices: Int32Array): Int32Array {
  const row = new Map([...memoryIndices].map((item, r) => [item, r]));
  return testIndices.map((item) => row.get(item) ?? -1);
}

/** The rows of {@linkcode extractFeatures} and {@linkcode pixelFeatures}: one per image that could be read. */
export interface Features {
  /** f32 [N, D]. */
  features: Tensor;
  /** Each row's label (-1 when unknown). */
  labels: Int32Array;
  /** Each row's item in the dataset: unreadable files leave no row, so these can skip. */
  indices: Int32Array;
}

/** Options of {@linkcode extractFeatures} and {@linkcode pixelFeatures}. */
export interface FeatureOptions {
  /** Images per forward pass (256). */
  batchSize?: number;
  /** Only the first images (0 or absent: all). */
  limit?: number;
  /** Stops between batches, throwing the signal's reason, once it is aborted. */
  signal?: AbortSignal;
  /** Told of the files that could not be decoded (default: a warning naming the dataset). */
  onSkipped?: (files: string[], why: string) => void;
  /** Told after each batch how many of the dataset's items it held (for a progress display). */
  onProgress?: (items: number) => void;
}

/** How images are prepared for feature extraction: centre crop to `size`, scale to [0, 1], normalise. */
export interface EvalTransform {
  /** The side the model sees: larger images are resized to {@linkcode evalResizeSide} of it, then centre-cropped. */
  size: number;
  /** Per-channel mean of the normalisation. */
  mean: number[];
  /** Per-channel standard deviation of the normalisation. */
  std: number[];
}

/**
 * The side images are resized to before the centre crop to `size`: 256 for 224, as the official evaluations'
 * `Resize(256)` + `CenterCrop(224)`, in that ratio for other sizes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { evalResizeSide } from "./knn.ts";
 * assert.deepEqual([224, 96, 21].map(evalResizeSide), [256, 110, 24]);
 * ```
 */
export function evalResizeSide(size: number): number {
  return Math.max(size, Math.round(size * 256 / 224));
}

/**
 * u8 [B, C, S, S] images to normalised f32 [B, C, size, size] ([B, C, S, S] when S <= size), as the official evaluation's `Resize(256)` +
 * `CenterCrop(224)` in the same ratio: images larger than `size` are resized (bicubic, as PIL: `pilResize`) to a side of round(size x 256 / 224) unless they have it already (image folders are decoded
 * at that side), then centre-cropped to `size`; images of `size` or smaller are used whole.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy, toArray } from "../../mod.ts";
 * import { evalImages } from "./knn.ts";
 * using images = full([1, 1, 32, 32], 255, { dtype: "u8" });
 * using x = tidy(() => evalImages(images, { size: 28, mean: [0.5], std: [0.5] })); // centre 28 x 28
 * assert.deepEqual([x.dtype, x.shape, new Set(toArray(x))], ["f32", [1, 1, 28, 28], new Set([1])]); // (1 - 0.5) / 0.5
 * using fmnist = full([1, 1, 28, 28], 255, { dtype: "u8" });
 * using y = tidy(() => evalImages(fmnist, { size: 21, mean: [0], std: [1] })); // 28 -> 24, centre 21 x 21
 * assert.deepEqual([y.shape, new Set(toArray(y))], [[1, 1, 21, 21], new Set([1])]);
 * ```
 */
export function evalImages(images: Tensor, t: EvalTransform): Tensor {
  return tidy(() => {
    let x = images;
    const resized = evalResizeSide(t.size);
    if (x.shape[2] > t.size && x.shape[2] !== resized) {
      x = pilResize(x, [resized, resized], "bicubic");
    }
    const S = x.shape[2];
    if (S > t.size) {
      // torchvision's CenterCrop: int(round((S - size) / 2)), Python's round taking a half to the even neighbour.
      const half = (S - t.size) / 2,
        o = Number.isInteger(half) || Math.floor(half) % 2 === 0 ? Math.floor(half) : half + 0.5;
      x = narrow(narrow(x, 2, o, t.size), 3, o, t.size);
    }
    const C = x.shape[1];
    const m = tensor(new Float32Array(t.mean), { shape: [1, C, 1, 1], device: x.device });
    const s = tensor(new Float32Array(t.std), { shape: [1, C, 1, 1], device: x.device });
    return div(sub(div(to(x, "f32"), 255), m), s);
  });
}

/** Options of {@linkcode extractFeatures}. */
export interface ExtractOptions extends FeatureOptions {
  /**
   * The features of a batch of prepared images (normalised f32 [B, C, size, size] on the backbone's device)
   * (default: `backboneFeatures`, a ViT's CLS after the final norm or a ResNet's pooled feature in evaluation
   * mode). Runs without gradients, inside a scope.
   */
  embed?: (x: Tensor) => Tensor;
}

/**
 * Features of every image of a dataset: a ViT's CLS after the final norm or a ResNet's pooled evaluation-mode
 * output ([N, D], not normalised),
 * or what `o.embed` makes of each batch, with the labels (-1 when unknown) and the rows' dataset items.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, zeros } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { extractFeatures } from "./knn.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { imgSize: 28, patchSize: 7, inChans: 1, depth: 1 });
 * const backbone = initViT(cfg, g);
 * using images = zeros([3, 1, 28, 28], { dtype: "u8" });
 * using testSet = tensorDataset(images, { labels: new Int32Array([0, 1, 1]) });
 * const transform = { size: 28, mean: [0.286], std: [0.353] };
 * const { features, labels } = await extractFeatures(backbone, cfg, testSet, transform);
 * assert.deepEqual([features.shape, [...labels]], [[3, 192], [0, 1, 1]]);
 * dispose([backbone, features]);
 * ```
 */
export async function extractFeatures(
  backbone: BackboneParams,
  cfg: BackboneConfig,
  ds: Dataset,
  t: EvalTransform,
  o: ExtractOptions = {},
): Promise<Features> {
  const device = backboneDevice(backbone);
  const embed = o.embed ?? ((x: Tensor) => backboneFeatures(backbone, cfg, x));
  return await rows(
    ds,
    o,
    (images) =>
      noGrad(() => tidy(() => embed(evalImages(images.device === device ? images : toDevice(images, device), t)))),
  );
}

/**
 * Raw pixels as features: each image flattened, in [0, 1] ([N, C x S x S]).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, toArray } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { pixelFeatures } from "./knn.ts";
 * using images = full([2, 1, 2, 2], 255, { dtype: "u8" });
 * using testSet = tensorDataset(images); // unlabeled
 * const { features, labels } = await pixelFeatures(testSet);
 * assert.deepEqual([features.shape, toArray(features), [...labels]], [[2, 4], [1, 1, 1, 1, 1, 1, 1, 1], [-1, -1]]);
 * features.dispose();
 * ```
 */
export async function pixelFeatures(
  ds: Dataset,
  o: FeatureOptions = {},
): Promise<Features> {
  return await rows(ds, o, (images) => tidy(() => reshape(div(to(images, "f32"), 255), [images.shape[0], -1])));
}

async function rows(
  ds: Dataset,
  o: FeatureOptions,
  fn: (images: Tensor) => Tensor,
): Promise<Features> {
  const n = o.limit && o.limit > 0 ? Math.min(o.limit, ds.length) : ds.length;
  const view: Dataset = n === ds.length ? ds : { ...ds, length: n };
  const parts: Tensor[] = [];
  const labels: number[] = [], indices: number[] = [];
  const turn = turnsEvery(100); // for a signal handler to abort
  try {
    const onSkipped = o.onSkipped ?? ((files, why) => console.warn(skippedWarning(files, why, `of ${ds.name}`)));
    const order = { batchSize: o.batchSize ?? 256, shuffle: false, dropLast: false, onSkipped };
    for await (const b of batches(view, 0, order)) {
      try {
        if (o.signal) await turn();
        o.signal?.throwIfAborted();
        parts.push(fn(b.images));
        for (const i of b.indices) {
          labels.push(ds.labels ? ds.labels[i] : -1);
          indices.push(i);
        }
        o.onProgress?.(b.indices.length + b.failed.length);
      } finally {
        b.images.dispose();
        b.labels?.dispose();
      }
    }
    // A batch whose files all failed still adds its empty rows: count the rows, not the batches.
    if (indices.length === 0) throw new Error(`${ds.name}: no images could be read`);
    return { features: cat(parts, 0), labels: Int32Array.from(labels), indices: Int32Array.from(indices) };
  } finally {
    for (const p of parts) p.dispose();
  }
}
