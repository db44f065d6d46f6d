/**
 * Linear algebra and neural-network ops.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gelu, Generator, linear, randn, tidy } from "../mod.ts";
 * using g = new Generator(0);
 * using y = tidy(() => gelu(linear(randn(g, [4, 8]), randn(g, [16, 8]))));
 * assert.deepEqual(y.shape, [4, 16]);
 * ```
 * @module
 */
import { ctx, native } from "../library.ts";
import { type DType, DTYPE_CODES, type Tensor, wrap, wrapList } from "../tensor.ts";
import { ints } from "./args.ts";

const NULL = null;

/**
 * Matrix product with broadcasting, as `torch.matmul`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmul, tensor, tidy, toArray, transpose } from "../mod.ts";
 * using q = tensor([[1, 2]]);
 * using k = tensor([[3, 4], [5, 6]]);
 * assert.deepEqual(tidy(() => toArray(matmul(q, transpose(k, -2, -1)))), [11, 17]); // [1, 2]
 * ```
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return wrap(native.matmul(ctx, a.ptr, b.ptr), "matmul");
}
/**
 * Batched matrix product of [B, n, m] and [B, m, p].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bmm, ones } from "../mod.ts";
 * using a = ones([2, 1, 3]);
 * using b = ones([2, 3, 4]);
 * using c = bmm(a, b);
 * assert.deepEqual(c.shape, [2, 1, 4]);
 * ```
 */
export function bmm(a: Tensor, b: Tensor): Tensor {
  return wrap(native.bmm(ctx, a.ptr, b.ptr), "bmm");
}
/**
 * `x W^T + b`, W of shape [out, in].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { linear, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 2]]);
 * using w = tensor([[1, 0], [0, 1], [1, 1]]); // 2 in, 3 out
 * using b = tensor([0, 0, 1]);
 * assert.deepEqual(tidy(() => toArray(linear(x, w, b))), [1, 2, 4]);
 * ```
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  return wrap(native.linear(ctx, x.ptr, weight.ptr, bias?.ptr ?? NULL), "linear");
}

/** Options of {@linkcode conv2d}. */
export interface Conv2dOptions {
  /** Step of the kernel, per axis or both (default 1). */
  stride?: number | [number, number];
  /** Zero padding on each side, per axis or both (default 0). */
  padding?: number | [number, number];
  /** Spacing of the kernel taps (default 1). */
  dilation?: number | [number, number];
  /** Channel groups (default 1). */
  groups?: number;
}
const pair = (v: number | [number, number] | undefined, d: number): number[] =>
  v === undefined ? [d, d] : typeof v === "number" ? [v, v] : v;

/**
 * 2-D convolution of [B, C, H, W] by [out, C/groups, kH, kW].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { conv2d, ones, tensor, toArray } from "../mod.ts";
 * using img = ones([1, 1, 4, 4]);
 * using w = ones([2, 1, 2, 2]); // 2 filters of 2 x 2
 * using b = tensor([0, 1]);
 * using y = conv2d(img, w, b, { stride: 2 }); // non-overlapping 2 x 2 patches, as a ViT's patch embedding
 * assert.deepEqual([y.shape, toArray(y)], [[1, 2, 2, 2], [4, 4, 4, 4, 5, 5, 5, 5]]);
 * ```
 */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor, options: Conv2dOptions = {}): Tensor {
  const s = pair(options.stride, 1), p = pair(options.padding, 0), d = pair(options.dilation, 1);
  return wrap(
    native.conv2d(ctx, x.ptr, weight.ptr, bias?.ptr ?? NULL, ints(s), 2, ints(p), 2, ints(d), 2, options.groups ?? 1),
    "conv2d",
  );
}

/** Options of {@linkcode maxPool2d}. */
export interface MaxPool2dOptions {
  /** Step of the window, per axis or both (default: the kernel size). */
  stride?: number | [number, number];
  /** Implicit -inf padding on each side, per axis or both (default 0). */
  padding?: number | [number, number];
  /** Spacing of the window taps (default 1). */
  dilation?: number | [number, number];
  /** Round the output size up rather than down (default false). */
  ceilMode?: boolean;
}

/**
 * 2-D max pooling of [B, C, H, W], as `F.max_pool2d`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { maxPool2d, reshape, tensor, tidy, toArray } from "../mod.ts";
 * using x = tidy(() => reshape(tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]), [1, 1, 4, 4]));
 * using y = maxPool2d(x, 3, { stride: 2, padding: 1 }); // a ResNet stem's pooling
 * assert.deepEqual([y.shape, toArray(y)], [[1, 1, 2, 2], [6, 8, 14, 16]]);
 * ```
 */
export function maxPool2d(x: Tensor, kernelSize: number | [number, number], options: MaxPool2dOptions = {}): Tensor {
  const k = pair(kernelSize, 1), s = options.stride === undefined ? k : pair(options.stride, 1);
  const p = pair(options.padding, 0), d = pair(options.dilation, 1);
  return wrap(
    native.max_pool2d(ctx, x.ptr, ints(k), 2, ints(s), 2, ints(p), 2, ints(d), 2, options.ceilMode ?? false),
    "maxPool2d",
  );
}

/**
 * Adaptive average pooling of [B, C, H, W] to [B, C, h, w], as `F.adaptive_avg_pool2d`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { adaptiveAvgPool2d, reshape, tensor, tidy, toArray } from "../mod.ts";
 * using x = tidy(() => reshape(tensor([1, 2, 3, 4, 5, 6, 7, 8]), [1, 2, 2, 2]));
 * using y = adaptiveAvgPool2d(x, 1); // global average pooling, as a ResNet's avgpool
 * assert.deepEqual([y.shape, toArray(y)], [[1, 2, 1, 1], [2.5, 6.5]]);
 * ```
 */
export function adaptiveAvgPool2d(x: Tensor, outputSize: number | [number, number]): Tensor {
  return wrap(native.adaptive_avg_pool2d(ctx, x.ptr, ints(pair(outputSize, 1)), 2), "adaptiveAvgPool2d");
}
/**
 * Layer normalisation over the trailing `normalizedShape` dims. With `options.dtype`, the output comes in that dtype,
 * as `to(layerNorm(...), dtype)` (for bf16, ready for a matrix product under mixed precision); over the last dim of
 * fp32 input with a weight and a bias, on AVX-512 CPUs, fused: each row read from memory once each way.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layerNorm, ones, tensor, tidy, toArray, zeros } from "../mod.ts";
 * using x = tensor([[1, 3], [10, 20]]);
 * using w = ones([2]);
 * using b = zeros([2]);
 * const y = tidy(() => toArray(layerNorm(x, [2], w, b, 1e-6)));
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["-1.0000", "1.0000", "-1.0000", "1.0000"]);
 * using low = layerNorm(x, [2], w, b, 1e-6, { dtype: "bf16" });
 * assert.equal(low.dtype, "bf16");
 * ```
 */
export function layerNorm(
  x: Tensor,
  normalizedShape: readonly number[],
  weight?: Tensor,
  bias?: Tensor,
  eps = 1e-5,
  options: { dtype?: DType } = {},
): Tensor {
  return wrap(native.layer_norm(ctx, x.ptr, ...normArgs(normalizedShape, weight, bias, eps, options)), "layerNorm");
}

/** The shim's arguments after the input(s) of {@linkcode layerNorm} and {@linkcode addLayerNorm}; dtype -1: x's. */
function normArgs(
  normalizedShape: readonly number[],
  weight: Tensor | undefined,
  bias: Tensor | undefined,
  eps: number,
  options: { dtype?: DType },
) {
  const dtype = options.dtype === undefined ? -1 : DTYPE_CODES[options.dtype];
  return [ints(normalizedShape), normalizedShape.length, weight?.ptr ?? NULL, bias?.ptr ?? NULL, eps, dtype] as const;
}

/**
 * A pre-norm residual step in one: `h = add(x, y)` and `layerNorm(h, ...)` (in `options.dtype`), returned as
 * `[h, normed]`. For fp32 x, fp32 or bf16 y of x's shape, a weight and a bias over the last dim, on AVX-512 CPUs,
 * fused: each row read and written once each way, h's two gradients summed and y's cast to its dtype in the same pass
 * (the composite makes three passes forward and three back); elsewhere those ops.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addLayerNorm, ones, tensor, tidy, toArray, zeros } from "../mod.ts";
 * using x = tensor([[1, 1], [10, 10]]);
 * using y = tensor([[0, 2], [0, 10]], { dtype: "bf16" });
 * using w = ones([2]);
 * using b = zeros([2]);
 * const [h, normed] = tidy(() => addLayerNorm(x, y, [2], w, b, 1e-6, { dtype: "bf16" }));
 * assert.deepEqual([h.dtype, normed.dtype], ["f32", "bf16"]);
 * assert.deepEqual(toArray(h), [1, 3, 10, 20]);
 * assert.deepEqual(toArray(normed), [-1, 1, -1, 1]);
 * h.dispose();
 * normed.dispose();
 * ```
 */
export function addLayerNorm(
  x: Tensor,
  y: Tensor,
  normalizedShape: readonly number[],
  weight?: Tensor,
  bias?: Tensor,
  eps = 1e-5,
  options: { dtype?: DType } = {},
): Tensor[] {
  const args = normArgs(normalizedShape, weight, bias, eps, options);
  return wrapList(native.add_layer_norm(ctx, x.ptr, y.ptr, ...args), "addLayerNorm");
}

/** Inputs of {@linkcode batchNorm} besides x. */
export interface BatchNormOptions {
  /** Per-channel scale. */
  weight?: Tensor;
  /** Per-channel shift. */
  bias?: Tensor;
  /** Running mean; an updated copy is returned in training. */
  runningMean?: Tensor;
  /** Running variance; an updated copy is returned in training. */
  runningVar?: Tensor;
  /** Use batch statistics (and update the running ones) rather than the running ones. */
  training: boolean;
  /** Weight of the new batch in the running statistics (default 0.1). */
  momentum?: number;
  /** Added to the variance (default 1e-5). */
  eps?: number;
}
/**
 * Batch normalisation over dim 1. Pure: the running statistics are not
 * changed in place; their updated copies are returned (when given).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { batchNorm, dispose, Generator, mean, ones, randn, toArray, zeros } from "../mod.ts";
 * using g = new Generator(1);
 * using x = randn(g, [8, 4]);
 * using m = zeros([4]);
 * using v = ones([4]);
 * const r = batchNorm(x, { runningMean: m, runningVar: v, training: true });
 * using mu = mean(r.output, 0);
 * assert.ok(toArray(mu).every((c) => Math.abs(c) < 1e-5)); // each channel centred
 * assert.deepEqual(r.runningMean?.shape, [4]); // updated copies; m and v are unchanged
 * dispose(r);
 * ```
 */
export function batchNorm(
  x: Tensor,
  o: BatchNormOptions,
): { output: Tensor; runningMean?: Tensor; runningVar?: Tensor } {
  if (o.training && x.ndim >= 2 && x.size === x.shape[1]) {
    // libtorch would return NaN statistics; PyTorch's functional batch_norm refuses it in Python.
    throw new Error(
      `batchNorm: expected more than 1 value per channel when training, got input of shape [${x.shape}]: ` +
        "train on a batch of two or more (or a larger input), or use the running statistics (training: false)",
    );
  }
  const list = native.batch_norm(
    ctx,
    x.ptr,
    o.weight?.ptr ?? NULL,
    o.bias?.ptr ?? NULL,
    o.runningMean?.ptr ?? NULL,
    o.runningVar?.ptr ?? NULL,
    o.training,
    o.momentum ?? 0.1,
    o.eps ?? 1e-5,
  );
  const [output, ...stats] = wrapList(list, "batchNorm");
  return o.runningMean && o.runningVar ? { output, runningMean: stats[0], runningVar: stats[1] } : { output };
}
/**
 * GELU: exact (erf) by default, or the tanh approximation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gelu, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([0, 1]);
 * const [exact, tanh] = tidy(() => [gelu(x), gelu(x, "tanh")].map(toArray));
 * assert.deepEqual([exact[1].toFixed(5), tanh[1].toFixed(5)], ["0.84134", "0.84119"]);
 * ```
 */
export function gelu(x: Tensor, approximate: "none" | "tanh" = "none"): Tensor {
  return wrap(native.gelu(ctx, x.ptr, approximate === "tanh"), "gelu");
}
/**
 * Softmax along `dim`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { softmax, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(softmax(tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), -1))), Array(8).fill(0.25));
 * ```
 */
export function softmax(x: Tensor, dim: number): Tensor {
  return wrap(native.softmax(ctx, x.ptr, dim), "softmax");
}
/**
 * Attention's softmax: softmax(x * scale) along the last dim, in fp32 whatever x's dtype, with `x * scale` rounded
 * to x's dtype first (as `softmax(to(mul(x, scale), "f32"), -1)`). With `low`, for bf16 or fp16 scores, it also
 * gives the probabilities rounded to x's dtype, ready for the product with the values. On AVX-512 CPUs, for fp32 and
 * bf16, fused: each row read from memory once each way (the composed ops make four passes each); elsewhere those ops.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scaledSoftmax, tensor, tidy, to, toArray } from "../mod.ts";
 * using scores = tensor([[0, 0, 0, 0], [0, 8, 0, 0]], { dtype: "bf16" });
 * const [p, low] = tidy(() => scaledSoftmax(scores, 0.125, { low: true }));
 * assert.deepEqual([p.dtype, low.dtype], ["f32", "bf16"]);
 * assert.deepEqual(toArray(p).slice(0, 4), [0.25, 0.25, 0.25, 0.25]);
 * assert.equal(toArray(p)[5].toFixed(4), (Math.E / (Math.E + 3)).toFixed(4)); // e^1 against three e^0
 * p.dispose();
 * low.dispose();
 * ```
 */
export function scaledSoftmax(x: Tensor, scale: number, options: { low?: boolean } = {}): Tensor[] {
  return wrapList(native.scaled_softmax(ctx, x.ptr, scale, options.low ?? false), "scaledSoftmax");
}
/**
 * log(softmax(x)) along `dim`, computed stably.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logSoftmax, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(logSoftmax(tensor([[0, 0], [-1000, 1000]]), -1))); // no overflow
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["-0.6931", "-0.6931", "-2000.0000", "0.0000"]);
 * ```
 */
export function logSoftmax(x: Tensor, dim: number): Tensor {
  return wrap(native.log_softmax(ctx, x.ptr, dim), "logSoftmax");
}

/** An interpolation mode of {@linkcode interpolate}. */
export type InterpolationMode = "nearest" | "bilinear" | "bicubic";
const INTERPOLATION: Record<InterpolationMode, number> = { nearest: 0, bilinear: 1, bicubic: 2 };
/** Options of {@linkcode interpolate}: a target `size`, or `scaleFactor` (as PyTorch, size = floor(in * scale)). */
export interface InterpolateOptions {
  /** Output [H, W]. */
  size?: [number, number];
  /** Scale of H and W, used both for the size and by the kernel. */
  scaleFactor?: number | [number, number];
  /** Interpolation (default nearest). */
  mode?: InterpolationMode;
  /** Map corner pixels' centres onto each other (bilinear and bicubic). */
  alignCorners?: boolean;
  /** Low-pass filter when shrinking (bilinear and bicubic), as torchvision's antialias=True. */
  antialias?: boolean;
}
/**
 * Resizes [B, C, H, W] images, as `torch.nn.functional.interpolate`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { interpolate, ones } from "../mod.ts";
 * using x = ones([1, 3, 8, 8]);
 * using y = interpolate(x, { size: [4, 4], mode: "bicubic", antialias: true });
 * assert.deepEqual(y.shape, [1, 3, 4, 4]);
 * ```
 */
export function interpolate(x: Tensor, o: InterpolateOptions): Tensor {
  const mode = o.mode ?? "nearest";
  if (x.ndim !== 4) throw new RangeError(`interpolate takes [B, C, H, W] input, got shape [${x.shape}]`);
  let size: number[];
  let sh = NaN, sw = NaN;
  if (o.size) {
    size = o.size;
  } else if (o.scaleFactor !== undefined) {
    [sh, sw] = typeof o.scaleFactor === "number" ? [o.scaleFactor, o.scaleFactor] : o.scaleFactor;
    size = [Math.floor(x.shape[2] * sh), Math.floor(x.shape[3] * sw)];
  } else {
    throw new TypeError("interpolate needs size or scaleFactor");
  }
  const align = mode === "nearest" ? false : o.alignCorners ?? false;
  return wrap(
    native.interpolate(ctx, x.ptr, ints(size), 2, INTERPOLATION[mode], align, o.antialias ?? false, sh, sw),
    "interpolate",
  );
}
/**
 * The sampling grid [B, H, W, 2] of affine maps `theta` [B, 2, 3], as `F.affine_grid`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { affineGrid, tensor, toArray } from "../mod.ts";
 * using identity = tensor([[[1, 0, 0], [0, 1, 0]]]);
 * using grid = affineGrid(identity, [1, 3, 2, 2]); // pixel centres of a 2 x 2 image, as (x, y)
 * assert.deepEqual([grid.shape, toArray(grid)], [[1, 2, 2, 2], [-0.5, -0.5, 0.5, -0.5, -0.5, 0.5, 0.5, 0.5]]);
 * ```
 */
export function affineGrid(theta: Tensor, size: readonly number[], alignCorners = false): Tensor {
  return wrap(native.affine_grid(ctx, theta.ptr, ints(size), size.length, alignCorners), "affineGrid");
}
const GRID_MODE: Record<InterpolationMode, number> = { bilinear: 0, nearest: 1, bicubic: 2 };
/** What {@linkcode gridSample} reads outside the image. */
export type GridPadding = "zeros" | "border" | "reflection";
const GRID_PADDING: Record<GridPadding, number> = { zeros: 0, border: 1, reflection: 2 };
/** Options of {@linkcode gridSample}. */
export interface GridSampleOptions {
  /** Interpolation (default bilinear). */
  mode?: InterpolationMode;
  /** What lies outside the image (default zeros). */
  padding?: GridPadding;
  /** Whether -1 and 1 are the corner pixels' centres (default false: their outer edges). */
  alignCorners?: boolean;
}
/**
 * Samples `x` [B, C, H, W] at `grid` [B, h, w, 2] in [-1, 1] coordinates, as `F.grid_sample`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gridSample, tensor, toArray } from "../mod.ts";
 * using img = tensor([[[[0, 1], [2, 3]]]]);
 * using grid = tensor([[[[-0.5, -0.5], [0.5, 0.5]]]]); // [1, 1, 2, 2]: the top-left and bottom-right pixel centres
 * using y = gridSample(img, grid, { mode: "bilinear" });
 * assert.deepEqual([y.shape, toArray(y)], [[1, 1, 1, 2], [0, 3]]);
 * ```
 */
export function gridSample(
  x: Tensor,
  grid: Tensor,
  o: GridSampleOptions = {},
): Tensor {
  const mode = GRID_MODE[o.mode ?? "bilinear"], padding = GRID_PADDING[o.padding ?? "zeros"];
  return wrap(native.grid_sample(ctx, x.ptr, grid.ptr, mode, padding, o.alignCorners ?? false), "gridSample");
}
/** A padding mode of {@linkcode pad}. */
export type PadMode = "constant" | "reflect" | "replicate" | "circular";
const PAD_MODE: Record<PadMode, number> = { constant: 0, reflect: 1, replicate: 2, circular: 3 };
/**
 * Pads the last dims; `pads` lists (before, after) pairs from the last dim backwards, as `F.pad`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pad, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[[1, 2, 3]]]);
 * const [reflected, zeroed] = tidy(() => [pad(x, [1, 1], "reflect"), pad(x, [2, 0])].map(toArray));
 * assert.deepEqual([reflected, zeroed], [[2, 1, 2, 3, 2], [0, 0, 1, 2, 3]]);
 * ```
 */
export function pad(x: Tensor, pads: readonly number[], mode: PadMode = "constant", value = 0): Tensor {
  return wrap(native.pad(ctx, x.ptr, ints(pads), pads.length, PAD_MODE[mode], value), "pad");
}
/**
 * The weight-normalised weight g * v / ||v||, the norm taken over every dim but `dim`, as `torch._weight_norm`
 * (the fused kernel PyTorch's `nn.utils.weight_norm` uses).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { norm, ones, tidy, toArray, weightNorm } from "../mod.ts";
 * using v = ones([4, 2]);
 * using g = ones([4, 1]);
 * using w = weightNorm(v, g, 0);
 * const rowNorms = tidy(() => toArray(norm(w, 2, 1)));
 * assert.ok(rowNorms.every((n) => Math.abs(n - 1) < 1e-6)); // rows of norm g = 1
 * ```
 */
export function weightNorm(v: Tensor, g: Tensor, dim = 0): Tensor {
  return wrap(native.weight_norm(ctx, v.ptr, g.ptr, dim), "weightNorm");
}
/**
 * One-hot encoding of i64 class indices.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { oneHot, tensor, tidy, toArray } from "../mod.ts";
 * using labels = tensor([0, 2], { dtype: "i64" });
 * assert.deepEqual(tidy(() => toArray(oneHot(labels, 3))), [1, 0, 0, 0, 0, 1]); // [2, 3], i64
 * ```
 */
export function oneHot(x: Tensor, numClasses = -1): Tensor {
  return wrap(native.one_hot(ctx, x.ptr, numClasses), "oneHot");
}
