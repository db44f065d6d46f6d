/**
 * The DINO augmentation (the official `DataAugmentationDINO`) as batched
 * tensor transforms on the batch's device. Per view: random resized crop and
 * horizontal flip (an antialiased resize per crop), color jitter with p 0.8 in
 * a random order per sample, grayscale with p 0.2, gaussian blur,
 * solarization, then normalisation.
 *
 * The views of one size (the two global ones, then the locals) go through as
 * one batch. Every random choice is drawn first, for all samples at once; then
 * samples that take the same steps (the same jitter order; then the same
 * gray/blur/solarize choices, blurs in order of sigma) are processed together,
 * a cache-sized chunk at a time, each result written straight to its place. So
 * per-sample randomness costs a few dozen batched calls, not a masked pass of
 * every op over the whole batch.
 *
 * Every random draw comes from the explicit generator, in a fixed order, so a
 * seed reproduces the views exactly.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, tidy, to } from "../../mod.ts";
 * import { AUGMENT_PRESETS, dinoViews } from "./augment.ts";
 * using g = new Generator(0);
 * const views = tidy(() => dinoViews(to(randint(g, 0, 256, [4, 1, 28, 28]), "u8"), AUGMENT_PRESETS.fmnist28, g));
 * assert.deepEqual(views.map((v) => v.shape[2]), [28, 28, 12, 12, 12, 12, 12, 12]); // 2 global, 6 local views
 * assert.ok(views.every((v) => v.dtype === "f32" && v.shape[0] === 4));
 * dispose(views);
 * ```
 * @module
 */
import {
  abs,
  add,
  addcmul,
  cat,
  clamp,
  conv2d,
  copyInto,
  type Device,
  div,
  empty,
  expand,
  flip,
  floor,
  type Generator,
  indexCopyInto,
  indexSelect,
  interpolate,
  maximum,
  mean,
  minimum,
  mul,
  narrow,
  permute,
  rand,
  reshape,
  sign,
  sub,
  type Tensor,
  tensor,
  tidy,
  to,
  toArray,
} from "../../ffi/mod.ts";

/** The augmentation's parameters; names follow the official code and torchvision. */
export interface AugmentConfig {
  /** Side of the global crops (224). */
  globalSize: number;
  /** Area fraction range of the global crops ((0.4, 1)). */
  globalScale: [number, number];
  /** Side of the local crops (96). */
  localSize: number;
  /** Area fraction range of the local crops ((0.05, 0.4)). */
  localScale: [number, number];
  /** Number of local crops (8); 0 disables multi-crop. */
  localCrops: number;
  /** Aspect-ratio range of the crops ((3/4, 4/3)). */
  ratio: [number, number];
  /** Horizontal flip probability (0.5). */
  flipP: number;
  /** Probability of color jitter (0.8) and its strengths. */
  jitterP: number;
  /** Brightness factor range 1 +- this (0.4). */
  brightness: number;
  /** Contrast factor range 1 +- this (0.4). */
  contrast: number;
  /** Saturation factor range 1 +- this (0.2). */
  saturation: number;
  /** Hue shift range +- this, in turns (0.1). */
  hue: number;
  /** Grayscale probability (0.2). */
  grayP: number;
  /** Blur probability of global 1, global 2 and each local crop ((1, 0.1, 0.5)). */
  blurP: [number, number, number];
  /** Range of the blur's sigma, in pixels ((0.1, 2)). */
  blurSigma: [number, number];
  /** Solarization probability of global 2 (0.2). */
  solarizeP: number;
  /** Per-channel normalisation. */
  mean: number[];
  /** Per-channel standard deviation of the normalisation. */
  std: number[];
  /** Crop resampling: bicubic (the official) or bilinear. */
  interpolation: "bicubic" | "bilinear";
}

const IMAGENET_MEAN = [0.485, 0.456, 0.406], IMAGENET_STD = [0.229, 0.224, 0.225];

const OFFICIAL: AugmentConfig = {
  globalSize: 224,
  globalScale: [0.4, 1],
  localSize: 96,
  localScale: [0.05, 0.4],
  localCrops: 8,
  ratio: [3 / 4, 4 / 3],
  flipP: 0.5,
  jitterP: 0.8,
  brightness: 0.4,
  contrast: 0.4,
  saturation: 0.2,
  hue: 0.1,
  grayP: 0.2,
  blurP: [1, 0.1, 0.5],
  blurSigma: [0.1, 2],
  solarizeP: 0.2,
  mean: IMAGENET_MEAN,
  std: IMAGENET_STD,
  interpolation: "bicubic",
};
/** Small images: 6 local crops and no blur (blurring 16 px crops erases them), as small-data recipes do. */
const SMALL_IMAGES = { localCrops: 6, blurP: [0, 0, 0] as [number, number, number] };

/**
 * Presets: the official ImageNet recipe (2 x 224 + 8 x 96), CIFAR at 32 px and
 * Fashion-MNIST at 28 px (no blur at these sizes, as small-data recipes do).
 */
export const AUGMENT_PRESETS: Record<"imagenet" | "cifar32" | "fmnist28", AugmentConfig> = {
  imagenet: OFFICIAL,
  cifar32: {
    ...OFFICIAL,
    ...SMALL_IMAGES,
    globalSize: 32,
    localSize: 16,
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.2435, 0.2616],
  },
  fmnist28: { ...OFFICIAL, ...SMALL_IMAGES, globalSize: 28, localSize: 12, mean: [0.286], std: [0.353] },
};

/** A crop box in pixels: top, left, height, width. */
export interface CropBox {
  /** Top row. */
  i: number;
  /** Left column. */
  j: number;
  /** Height. */
  h: number;
  /** Width. */
  w: number;
}

/**
 * RandomResizedCrop's boxes for `n` images of H x W, as torchvision draws
 * them: up to 10 tries of an area in `scale` and a log-uniform aspect ratio in
 * `ratio`, then a centre crop of the clamped ratio.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator } from "../../mod.ts";
 * import { cropBoxes } from "./augment.ts";
 * using g = new Generator(0);
 * const boxes = cropBoxes(g, 4, 256, 256, [0.4, 1], [3 / 4, 4 / 3]);
 * assert.equal(boxes.length, 4);
 * assert.ok(boxes.every(({ i, j, h, w }) => i >= 0 && j >= 0 && i + h <= 256 && j + w <= 256));
 * ```
 */
export function cropBoxes(
  g: Generator,
  n: number,
  H: number,
  W: number,
  scale: [number, number],
  ratio: [number, number],
): CropBox[] {
  const u = tidy(() => toArray(rand(g, [n, 10, 4], { dtype: "f64" })));
  const area = H * W;
  const [l0, l1] = [Math.log(ratio[0]), Math.log(ratio[1])];
  const boxes: CropBox[] = [];
  for (let b = 0; b < n; b++) {
    let box: CropBox | undefined;
    for (let a = 0; a < 10 && !box; a++) {
      const o = (b * 10 + a) * 4;
      const target = area * (scale[0] + (scale[1] - scale[0]) * u[o]);
      const aspect = Math.exp(l0 + (l1 - l0) * u[o + 1]);
      const w = Math.round(Math.sqrt(target * aspect));
      const h = Math.round(Math.sqrt(target / aspect));
      if (w > 0 && w <= W && h > 0 && h <= H) {
        box = { i: Math.floor(u[o + 2] * (H - h + 1)), j: Math.floor(u[o + 3] * (W - w + 1)), h, w };
      }
    }
    if (!box) {
      const inRatio = W / H;
      let w = W, h = H;
      if (inRatio < ratio[0]) h = Math.round(W / ratio[0]);
      else if (inRatio > ratio[1]) w = Math.round(H * ratio[1]);
      box = { i: Math.floor((H - h) / 2), j: Math.floor((W - w) / 2), h, w };
    }
    boxes.push(box);
  }
  return boxes;
}

/**
 * Crops image `sources[b]` (by default image b) to box b, mirrors the flipped ones and resizes to
 * size x size with an antialiased separable filter: bicubic (the official) or
 * bilinear, as PIL (and torchvision's `antialias=True`) resample, so that
 * shrinking does not alias. One resize per image: a separable pass over the
 * crop is several times cheaper than bicubic grid sampling of the batch.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, tidy } from "../../mod.ts";
 * import { resizedCrop } from "./augment.ts";
 * using y = tidy(() => resizedCrop(ones([1, 3, 8, 8]), [{ i: 0, j: 0, h: 4, w: 4 }], [false], 16));
 * assert.deepEqual(y.shape, [1, 3, 16, 16]);
 * ```
 */
export function resizedCrop(
  x: Tensor,
  boxes: readonly CropBox[],
  flips: readonly boolean[],
  size: number,
  interpolation: "bicubic" | "bilinear" = "bicubic",
  sources: readonly number[] = boxes.map((_, b) => b),
): Tensor {
  const crops = boxes.map(({ i, j, h, w }, b) =>
    tidy(() => {
      const region = narrow(narrow(narrow(x, 0, sources[b], 1), 2, i, h), 3, j, w); // [1, C, h, w], a view
      const resized = interpolate(region, { size: [size, size], mode: interpolation, antialias: true });
      return flips[b] ? flip(resized, [3]) : resized;
    })
  );
  // Bicubic overshoots; PIL clamps to the pixel range. A lone crop needs no joining copy.
  if (crops.length === 1) return tidy(() => clamp(crops[0], 0, 1));
  const out = clamp(cat(crops, 0), 0, 1);
  for (const c of crops) c.dispose();
  return out;
}

/** Per-sample factors as a [n, 1, 1, 1] tensor on `like`'s device, or one number when they are all equal. */
function perSample(values: readonly number[], like: Tensor): Tensor | number {
  if (values.every((v) => v === values[0])) return values[0];
  return tensor(new Float32Array(values), { shape: [values.length, 1, 1, 1], device: like.device });
}

/** Luma as torchvision and PIL compute it: 0.299 R + 0.587 G + 0.114 B, [B, 1, H, W]; a 1-channel image is itself. */
export function grayscale(x: Tensor): Tensor {
  if (x.shape[1] === 1) return x;
  const [r, g, b] = [0, 1, 2].map((c) => narrow(x, 1, c, 1)); // [B, 1, H, W] views
  return add(add(mul(r, 0.299), g, 0.587), b, 0.114);
}

/**
 * clamp(y, 0, 1), as torchvision clamps after each colour op, unless every
 * factor is at most 1: then y, a shrunk image or a mix of two images in
 * [0, 1], is inside already and the clamp would change nothing.
 */
function clampUnlessShrinking(y: Tensor, f: readonly number[]): Tensor {
  return f.some((v) => v > 1) ? clamp(y, 0, 1) : y;
}

/**
 * torchvision's blend: clamp(f a + (1 - f) b, 0, 1), f per sample, b broadcast
 * to a. (libtorch vectorises an elementwise loop with at most one operand
 * constant along the rows: hence addcmul only when b varies along them.)
 */
function blend(a: Tensor, b: Tensor, f: readonly number[]): Tensor {
  const t = perSample(f, a);
  if (typeof t === "number") return clampUnlessShrinking(add(mul(b, 1 - t), a, t), f); // (1 - t) b + t a: one pass
  const rest = mul(b, sub(1, t));
  return clampUnlessShrinking(b.shape[3] === 1 ? add(mul(a, t), rest) : addcmul(rest, a, t), f);
}

/**
 * Brightness: clamp(x * f, 0, 1), for images in [0, 1].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy, toArray } from "../../mod.ts";
 * import { adjustBrightness } from "./augment.ts";
 * using x = full([2, 1, 1, 1], 0.5); // two 1 x 1 gray images
 * assert.deepEqual(tidy(() => toArray(adjustBrightness(x, [4, 0.5]))), [1, 0.25]); // a factor per image
 * ```
 */
export function adjustBrightness(x: Tensor, f: readonly number[]): Tensor {
  return clampUnlessShrinking(mul(x, perSample(f, x)), f);
}
/**
 * Contrast: blend with the mean of the image's grayscale, for images in [0, 1].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { adjustContrast } from "./augment.ts";
 * using x = tensor([[[[0.25, 0.75]]]]); // one 1 x 2 grayscale image, mean 0.5
 * assert.deepEqual(tidy(() => toArray(adjustContrast(x, [2]))), [0, 1]);
 * ```
 */
export function adjustContrast(x: Tensor, f: readonly number[]): Tensor {
  return blend(x, grayscale(mean(x, [2, 3], { keepdim: true })), f); // the luma of the mean colour: one pass
}
/**
 * Saturation: blend with the image's grayscale (3 channels, in [0, 1]).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { adjustSaturation } from "./augment.ts";
 * using red = tensor([[[[1]], [[0]], [[0]]]]); // [1, 3, 1, 1]
 * const [r, g, b] = tidy(() => toArray(adjustSaturation(red, [0]))); // factor 0: grayscale
 * assert.ok(r === g && g === b && r > 0.29 && r < 0.3); // luma 0.299
 * ```
 */
export function adjustSaturation(x: Tensor, f: readonly number[]): Tensor {
  return blend(x, grayscale(x), f);
}

/**
 * Hue: rotate the hue by f (in turns, |f| <= 0.5) in HSV space, as
 * torchvision's `adjust_hue` (3 channels only).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { adjustHue } from "./augment.ts";
 * const green = tidy(() => toArray(adjustHue(tensor([[[[1]], [[0]], [[0]]]]), [1 / 3]))); // red, a third of a turn
 * assert.deepEqual(green.map(Math.round), [0, 1, 0]);
 * ```
 */
export function adjustHue(x: Tensor, f: readonly number[]): Tensor {
  // RGB -> HSV as torchvision's _rgb2hsv: hue h6 / 6 with h6 cr = g - b where max = r, 2 cr + b - r where
  // max = g (not r), else 4 cr + r - g. With d = max - x (0 on the max channel) and the masks notR = sign(d_r),
  // notG = sign(d_g): h6 cr = (d_b - d_g) + notR (2 cr + d_r - 2 d_b + notG 2 (cr + d_g - d_r)), which uses
  // d_g = 0 where max = g and d_b = 0 where max = b: cheap passes over one plane, no comparisons or selects.
  const [r, g, b] = [0, 1, 2].map((c) => narrow(x, 1, c, 1)); // [B, 1, H, W] views
  const maxc = maximum(maximum(r, g), b); // faster than amax over dim 1
  const cr = sub(maxc, minimum(minimum(r, g), b));
  // Each phase frees its temporaries before the next allocates, so that their blocks come back while in cache.
  const h6 = tidy(() => {
    const d = sub(maxc, x); // [B, 3, H, W]
    const [dr, dg, db] = [0, 1, 2].map((c) => narrow(d, 1, c, 1)); // [B, 1, H, W] views
    const num = tidy(() => {
      const whenG = add(add(dr, cr, 2), db, -2);
      const toB = sub(add(cr, dg), dr);
      return addcmul(sub(db, dg), sign(dr), addcmul(whenG, sign(dg), toB, 2));
    });
    return div(num, clamp(cr, 1e-12)); // gray pixels: 0 / 1e-12 = 0
  });
  // HSV -> RGB: with w = h6 + 6 f, each channel is min + cr F(w - c), F the hexcone's ramp clamp(2 - circular
  // distance to 0, 0, 1), c the channel's centre (r 3, g 5, b 1, mod 6). For |u| <= 6, F(u) = clamp(||u| - 3| - 1,
  // 0, 1), so out = (max + cr) - cr clamp(||h6 - (c - 6 f)| - 3|, 1, 2). h6 is in [-1, 5]; with |6 f| <= 2 (up
  // to a third of a turn) the centres r 3, b 1 and g 5 (f >= 0) or -1 (f < 0) keep |u| <= 6 with no wrapping, and
  // the shift goes into them. Larger shifts wrap h6 + 6 f into [0, 6) first.
  const shifts = f.map((v) => 6 * v);
  const wrap = shifts.some((v) => Math.abs(v) > 2);
  const w = wrap
    ? tidy(() => {
      const shifted = add(h6, perSample(shifts, x));
      return add(shifted, floor(mul(shifted, 1 / 6)), -6); // [B, 1, H, W] in [0, 6)
    })
    : h6;
  const centresOf = (v: number) => wrap ? [3, 5, 1] : [3 - v, (v >= 0 ? 5 : -1) - v, 1 - v];
  const perRow = wrap || shifts.every((v) => v === shifts[0]) ? [centresOf(shifts[0])] : shifts.map(centresOf);
  const centres = tensor(new Float32Array(perRow.flat()), { shape: [perRow.length, 3, 1, 1], device: x.device });
  const ramp = tidy(() => clamp(abs(sub(abs(sub(w, centres)), 3)), 1, 2)); // [B, 3, H, W]
  return addcmul(add(maxc, cr), cr, ramp, -1);
}

/**
 * Gaussian blur with one sigma per sample (reflect padding), as a separable
 * depthwise convolution. With `normalization`, the result is also normalised,
 * (y - mean) / std per channel, for free: folded into the last pass's taps and
 * bias.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy, toArray } from "../../mod.ts";
 * import { gaussianBlur } from "./augment.ts";
 * const y = tidy(() => gaussianBlur(ones([2, 3, 16, 16]), [0.5, 2]));
 * const z = tidy(() => gaussianBlur(ones([2, 3, 16, 16]), [0.5, 2], { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }));
 * assert.ok(toArray(y).every((v) => Math.abs(v - 1) < 1e-5)); // a flat image stays flat
 * assert.ok(toArray(z).every((v) => Math.abs(v - 2) < 1e-5)); // blurred, then normalised: (1 - 0.5) / 0.25
 * dispose([y, z]);
 * ```
 */
export function gaussianBlur(
  x: Tensor,
  sigmas: readonly number[],
  normalization?: { mean: readonly number[]; std: readonly number[] },
): Tensor {
  const [B, C, H, W] = x.shape;
  // Each sample's kernel ends at its own ceil(3 sigma) (zeros beyond, up to the call's largest): a sample's result
  // does not depend on the others blurred with it. Reflect padding needs a radius below the side.
  const radii = sigmas.map((s) => Math.min(Math.ceil(3 * s), Math.floor((Math.min(H, W) - 1) / 2)));
  const radius = Math.max(...radii);
  if (radius < 1) return normalization ? normalize(x, normalization.mean, normalization.std) : x;
  const K = 2 * radius + 1, P = B * C;
  const scale = Array.from({ length: C }, (_, c) => (normalization ? 1 / normalization.std[c] : 1));
  const taps = new Float32Array(P * K), lastTaps = new Float32Array(P * K);
  sigmas.forEach((s, b) => {
    const w = Array.from(
      { length: K },
      (_, t) => Math.abs(t - radius) <= radii[b] ? Math.exp(-((t - radius) ** 2) / (2 * s * s)) : 0,
    );
    const total = w.reduce((a, v) => a + v, 0);
    for (let c = 0; c < C; c++) {
      w.forEach((v, t) => {
        taps[(b * C + c) * K + t] = v / total;
        lastTaps[(b * C + c) * K + t] = (v / total) * scale[c];
      });
    }
  });
  const vertical = tensor(taps, { shape: [P, 1, K, 1], device: x.device });
  const horizontal = tensor(lastTaps, { shape: [P, 1, 1, K], device: x.device });
  const bias = normalization &&
    tensor(Float32Array.from({ length: P }, (_, p) => -normalization.mean[p % C] * scale[p % C]), { device: x.device });
  const planes = reshape(x, [1, P, H, W]);
  const depthwise = (y: Tensor, kernel: Tensor, b?: Tensor) => conv2d(y, kernel, b, { groups: P });
  // Up to 7 x 7 taps, one 2-D pass is cheaper than two 1-D ones (libtorch's depthwise conv is memory-bound).
  const blurred = radius <= 3
    ? depthwise(reflect(reflect(planes, 2, radius), 3, radius), mul(vertical, horizontal), bias)
    : depthwise(reflect(depthwise(reflect(planes, 2, radius), vertical), 3, radius), horizontal, bias);
  return reshape(blurred, [B, C, H, W]);
}

/**
 * x padded by r mirrored samples at both ends of `dim` (reflect padding:
 * the edge sample is not repeated), by joining mirrored edge slices: several
 * times faster than libtorch's reflection pad here.
 */
function reflect(x: Tensor, dim: number, r: number): Tensor {
  const n = x.shape[dim];
  return cat([flip(narrow(x, dim, 1, r), [dim]), x, flip(narrow(x, dim, n - 1 - r, r), [dim])], dim);
}

/**
 * Solarization at 128/255: pixels at or above it are inverted, for the
 * samples in `mask` (images in [0, 1]).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { solarize } from "./augment.ts";
 * using x = tensor([[[[0.25, 0.75]]], [[[0.25, 0.75]]]]); // two 1 x 2 images
 * assert.deepEqual(tidy(() => toArray(solarize(x, [true, false]))), [0.25, 0.25, 0.25, 0.75]); // 0.75 -> 0.25
 * ```
 */
export function solarize(x: Tensor, mask: readonly boolean[]): Tensor {
  // m = floor(x + (1 - t)) is 1 exactly where x >= t (t = 128/255 in f32), for x in [0, 1]: near t, x and
  // 1 - t are multiples of 2^-24, so their f32 sum is exact. Then x + m - 2 m x inverts where m = 1. No
  // comparisons or selects, which are several times slower than arithmetic in libtorch 1.13.
  const bright = floor(add(x, 1 - Math.fround(128 / 255))), picked = perSample(mask.map(Number), x);
  const m = picked === 1 ? bright : mul(bright, picked); // every sample picked: no masking pass
  return addcmul(add(x, m), m, x, -2);
}

/** Whether `ids` are consecutive rows, so that a narrow view reaches them without an index. */
const consecutive = (ids: readonly number[]) => ids.every((b, k) => b === ids[0] + k);
/** `ids` as an i64 index tensor on `device`. */
const indexOf = (ids: readonly number[], device: Device) => tensor(new BigInt64Array(ids.map(BigInt)), { device });

/** Samples `ids` of x: a view when they are consecutive, else a gathered copy. */
function rows(x: Tensor, ids: readonly number[]): Tensor {
  return consecutive(ids) ? narrow(x, 0, ids[0], ids.length) : indexSelect(x, 0, indexOf(ids, x.device));
}

/** Per-sample uniform draws on [lo, hi). */
function uniforms(g: Generator, n: number, lo: number, hi: number): number[] {
  return tidy(() => toArray(rand(g, [n], { dtype: "f64" }))).map((u) => lo + (hi - lo) * u);
}

/**
 * The samples of each group (samples with equal keys), at most `chunk` at a
 * time, in group order: per-sample random choices become a few batched calls.
 * With `powersOfTwo`, every chunk has a power of two of samples, so that calls
 * see few distinct shapes (oneDNN compiles a convolution for each input shape
 * and reuses it). With `by`, each group is in increasing order of it.
 */
function batches(keys: readonly string[], chunk: number, powersOfTwo = false, by?: readonly number[]): number[][] {
  const groups = new Map<string, number[]>();
  keys.forEach((key, b) => groups.get(key)?.push(b) ?? groups.set(key, [b]));
  const out: number[][] = [];
  for (const idx of groups.values()) {
    if (by) idx.sort((p, q) => by[p] - by[q]);
    for (let start = 0, size = 0; start < idx.length; start += size) {
      size = Math.min(chunk, idx.length - start);
      if (powersOfTwo) size = 2 ** Math.floor(Math.log2(size));
      out.push(idx.slice(start, start + size));
    }
  }
  return out;
}

/** Writes the samples of `source` to rows `at` of `target`, a tensor its caller has just made. */
function scatter(target: Tensor, at: readonly number[], source: Tensor): void {
  if (consecutive(at)) copyInto(narrow(target, 0, at[0], at.length), source);
  else indexCopyInto(target, 0, indexOf(at, target.device), source);
}

/** Applies `steps` in turn, freeing each intermediate result as soon as the next one exists. */
function pipe(x: Tensor, steps: readonly ((y: Tensor) => Tensor)[]): Tensor {
  return steps.reduce((y, step) => {
    const z = tidy(() => step(y));
    if (y !== x && z !== y) y.dispose();
    return z;
  }, x);
}

/**
 * How many samples of C x H x W one call takes on `device`: on the CPU about
 * `values` values (at least one sample), elsewhere all of them, since a GPU
 * wants few, large kernels.
 */
function chunkOf(values: number, [, C, H, W]: readonly number[], device: Device): number {
  return device === "cpu" ? Math.max(1, Math.floor(values / (C * H * W))) : Infinity;
}

/**
 * About how many values one colour-jitter call works on: the hue's dozen
 * temporaries then stay in a core's cache (a 224 px image alone, several 96 px
 * ones together), which halves its time against whole-batch calls.
 */
const JITTER_CHUNK = 1 << 18;
/**
 * How many samples one grayscale/blur/solarize/normalise call takes at least
 * on the CPU: 16 RGB samples are 48 planes, three whole blocks of oneDNN's
 * depthwise convolution (which works on 16 planes at a time); fewer waste a
 * block's work. More only for small images, up to about FINISH_CHUNK values:
 * 16 96 px images are already as many as stay in cache.
 */
const FINISH_SAMPLES = 16, FINISH_CHUNK = 1 << 19;

/** ColorJitter's random choices for n samples: which ops in which order, and their factors. */
interface JitterPlan {
  /** Per sample, the ops (0 brightness, 1 contrast, 2 saturation, 3 hue) in the order applied. */
  order: number[][];
  /** Per op, per sample, its factor. */
  factors: number[][];
}

/**
 * ColorJitter's draws, as torchvision's `ColorJitter` inside `RandomApply`:
 * applied with probability p, its four ops in a random order per sample
 * (torchvision draws `randperm(4)` per image). Saturation and hue need 3
 * channels and are left out for grayscale images.
 */
function jitterPlan(g: Generator, n: number, cfg: AugmentConfig, rgb: boolean): JitterPlan {
  const apply = uniforms(g, n, 0, 1).map((u) => u < cfg.jitterP);
  const factors = [
    uniforms(g, n, Math.max(0, 1 - cfg.brightness), 1 + cfg.brightness),
    uniforms(g, n, Math.max(0, 1 - cfg.contrast), 1 + cfg.contrast),
    uniforms(g, n, Math.max(0, 1 - cfg.saturation), 1 + cfg.saturation),
    uniforms(g, n, -cfg.hue, cfg.hue),
  ];
  const keys = tidy(() => toArray(rand(g, [n, 4], { dtype: "f64" })));
  const order = Array.from(
    { length: n },
    (_, b) =>
      apply[b] ? [0, 1, 2, 3].sort((p, q) => keys[b * 4 + p] - keys[b * 4 + q]).filter((o) => rgb || o < 2) : [],
  );
  return { order, factors };
}

const JITTER_OPS = [adjustBrightness, adjustContrast, adjustSaturation, adjustHue];

/** Applies a jitter plan to x: the samples sharing an order go through it together, a few at a time. */
function applyJitter(x: Tensor, plan: JitterPlan): Tensor {
  const keys = plan.order.map((o) => o.join(""));
  if (keys.every((k) => k === "")) return x;
  return tidy(() => {
    const y = empty(x.shape, { dtype: x.dtype, device: x.device });
    for (const ids of batches(keys, chunkOf(JITTER_CHUNK, x.shape, x.device))) {
      tidy(() => scatter(y, ids, pipe(rows(x, ids), jitterSteps(plan, ids))));
    }
    return y;
  });
}

/** The jitter ops of samples `ids`, which share one order, as pipeline steps. */
function jitterSteps(plan: JitterPlan, ids: readonly number[]): ((y: Tensor) => Tensor)[] {
  return plan.order[ids[0]].map((o) => (y: Tensor) => JITTER_OPS[o](y, ids.map((b) => plan.factors[o][b])));
}

/**
 * ColorJitter applied with probability p: brightness, contrast, saturation and
 * hue in a random order per sample, as torchvision's `ColorJitter` (which
 * draws `randperm(4)` per image). Saturation and hue need 3 channels and are
 * skipped on grayscale input.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, rand, tidy, toArray } from "../../mod.ts";
 * import { AUGMENT_PRESETS, colorJitter } from "./augment.ts";
 * using g = new Generator(0);
 * using y = tidy(() => colorJitter(rand(g, [4, 3, 8, 8]), AUGMENT_PRESETS.imagenet, g));
 * assert.ok(y.shape[0] === 4 && toArray(y).every((v) => v >= 0 && v <= 1));
 * ```
 */
export function colorJitter(x: Tensor, cfg: AugmentConfig, g: Generator): Tensor {
  return applyJitter(x, jitterPlan(g, x.shape[0], cfg, x.shape[1] === 3));
}

/** Which view a crop is: its size, scale range and blur/solarize probabilities. */
export interface ViewSpec {
  /** Output side. */
  size: number;
  /** Area fraction range of the crop. */
  scale: [number, number];
  /** Blur probability. */
  blurP: number;
  /** Solarization probability. */
  solarizeP: number;
}

/** The views of the official recipe, in the official order: global 1, global 2, then the locals. */
export function viewSpecs(cfg: AugmentConfig): ViewSpec[] {
  const global = (blurP: number, solarizeP: number): ViewSpec => ({
    size: cfg.globalSize,
    scale: cfg.globalScale,
    blurP,
    solarizeP,
  });
  return [
    global(cfg.blurP[0], 0),
    global(cfg.blurP[1], cfg.solarizeP),
    ...Array.from({ length: cfg.localCrops }, () => ({
      size: cfg.localSize,
      scale: cfg.localScale,
      blurP: cfg.blurP[2],
      solarizeP: 0,
    })),
  ];
}

/**
 * Augmented views of a batch of images in [0, 1] (f32 [B, C, H, W]), one per
 * spec, normalised. Views of one size go through as one batch of
 * specs.length x B samples, each with its spec's scale and blur and
 * solarization probabilities: fewer, larger calls than one view at a time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, rand, tidy } from "../../mod.ts";
 * import { AUGMENT_PRESETS, augmentViews, viewSpecs } from "./augment.ts";
 * using g = new Generator(0);
 * const cfg = AUGMENT_PRESETS.cifar32;
 * const [g1, g2] = tidy(() => augmentViews(rand(g, [4, 3, 32, 32]), viewSpecs(cfg).slice(0, 2), cfg, g));
 * const side = cfg.globalSize;
 * assert.deepEqual([g1.shape, g2.shape], [[4, 3, side, side], [4, 3, side, side]]); // the two global views
 * dispose([g1, g2]);
 * ```
 */
export function augmentViews(x: Tensor, specs: readonly ViewSpec[], cfg: AugmentConfig, g: Generator): Tensor[] {
  const [B, C, H, W] = x.shape;
  const size = specs[0].size;
  if (specs.some((s) => s.size !== size)) throw new Error("augmentViews: views augmented together share one size");
  const n = specs.length * B;
  const specOf = (k: number) => specs[Math.floor(k / B)];
  const boxes = specs.flatMap((s) => cropBoxes(g, B, H, W, s.scale, cfg.ratio));
  const flips = uniforms(g, n, 0, 1).map((u) => u < cfg.flipP);
  const jitter = jitterPlan(g, n, cfg, C === 3);
  const gray = uniforms(g, n, 0, 1).map((u) => C === 3 && u < cfg.grayP);
  const blur = uniforms(g, n, 0, 1).map((u, k) => u < specOf(k).blurP);
  const sigmas = uniforms(g, n, cfg.blurSigma[0], cfg.blurSigma[1]);
  const sol = uniforms(g, n, 0, 1).map((u, k) => u < specOf(k).solarizeP);

  const pick = <T>(xs: readonly T[], ids: readonly number[]) => ids.map((k) => xs[k]);
  // Gray, blur, solarize and normalise by groups that take the same steps, on the CPU in power-of-two chunks;
  // blurs in order of sigma, so that a chunk's kernel (its largest) is not much larger than its samples need, and
  // chunks are large: a depthwise convolution of a few planes costs several times more per plane. `slot` lists the
  // samples group by group, so each finishing chunk is one block of rows.
  const finishKeys = Array.from(
    { length: n },
    (_, k) => `${+gray[k]}/${+blur[k]}/${+sol[k]}`,
  );
  const finishChunk = Math.max(FINISH_SAMPLES, chunkOf(FINISH_CHUNK, [n, C, size, size], x.device));
  const finishing = batches(finishKeys, finishChunk, x.device === "cpu", sigmas);
  const slot = new Array<number>(n);
  finishing.flat().forEach((k, at) => (slot[k] = at));
  // Crop and jitter by groups of samples with the same jitter order, a few at a time so that they stay in
  // cache; each result goes straight to its samples' slots, so that each finishing group is one block.
  const options = { dtype: x.dtype, device: x.device };
  const jittered = empty([n, C, size, size], options);
  for (const ids of batches(jitter.order.map((o) => o.join("")), chunkOf(JITTER_CHUNK, [n, C, size, size], x.device))) {
    tidy(() => {
      const sources = ids.map((k) => k % B);
      const crops = resizedCrop(x, pick(boxes, ids), pick(flips, ids), size, cfg.interpolation, sources);
      scatter(jittered, pick(slot, ids), pipe(crops, jitterSteps(jitter, ids)));
    });
  }
  const y = empty([n, C, size, size], options);
  for (const ids of finishing) {
    const k = ids[0];
    tidy(() =>
      scatter(
        y,
        ids,
        pipe(narrow(jittered, 0, slot[k], ids.length), [
          // One channel from grayscale to the normalisation: a third of the blur's work.
          ...(gray[k] ? [grayscale] : []),
          // When the blur comes last, it normalises too (the normalisation folded into its taps).
          ...(blur[k] && !gray[k] && !sol[k] ? [(z: Tensor) => gaussianBlur(z, pick(sigmas, ids), cfg)] : [
            ...(blur[k] ? [(z: Tensor) => gaussianBlur(z, pick(sigmas, ids))] : []),
            ...(sol[k] ? [(z: Tensor) => solarize(z, ids.map(() => true))] : []),
            (z: Tensor) => normalize(expand(z, [-1, C, -1, -1]), cfg.mean, cfg.std),
          ]),
        ]),
      )
    );
  }
  jittered.dispose();
  const views = specs.map((_, v) => narrow(y, 0, v * B, B)); // views of y's storage, which they keep alive
  y.dispose();
  return views;
}

/**
 * One augmented view of a batch of images in [0, 1] (f32 [B, C, H, W]),
 * normalised: {@linkcode augmentViews} with one spec.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, rand, tidy } from "../../mod.ts";
 * import { AUGMENT_PRESETS, augmentView, viewSpecs } from "./augment.ts";
 * using g = new Generator(0);
 * const cfg = AUGMENT_PRESETS.cifar32;
 * const local = viewSpecs(cfg).at(-1)!;
 * using v = tidy(() => augmentView(rand(g, [4, 3, 32, 32]), local, cfg, g));
 * assert.deepEqual(v.shape, [4, 3, cfg.localSize, cfg.localSize]);
 * ```
 */
export function augmentView(x: Tensor, spec: ViewSpec, cfg: AugmentConfig, g: Generator): Tensor {
  return augmentViews(x, [spec], cfg, g)[0];
}

/**
 * (x - mean) / std per channel.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { normalize } from "./augment.ts";
 * using x = tensor([[[[0, 0.5, 1]]]]); // [1, 1, 1, 3]
 * assert.deepEqual(tidy(() => toArray(normalize(x, [0.5], [0.5]))), [-1, 0, 1]);
 * ```
 */
export function normalize(x: Tensor, meanValues: readonly number[], stdValues: readonly number[]): Tensor {
  const C = x.shape[1];
  if (meanValues.length !== C || stdValues.length !== C) {
    throw new Error(
      `normalisation has ${meanValues.length} means and ${stdValues.length} stds for ${C}-channel images`,
    );
  }
  const m = tensor(new Float32Array(meanValues), { shape: [1, C, 1, 1], device: x.device });
  const s = tensor(new Float32Array(stdValues), { shape: [1, C, 1, 1], device: x.device });
  return div(sub(x, m), s);
}

/**
 * All views of a batch: u8 (0..255) or f32 ([0, 1]) images [B, C, H, W] in;
 * 2 global views then the local ones out, each normalised f32.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, tidy, to } from "../../mod.ts";
 * import { AUGMENT_PRESETS, dinoViews, viewSpecs } from "./augment.ts";
 * using g = new Generator(0);
 * const cfg = AUGMENT_PRESETS.cifar32;
 * const views = tidy(() => dinoViews(to(randint(g, 0, 256, [2, 3, 32, 32]), "u8"), cfg, g));
 * assert.deepEqual(views.map((v) => v.shape[2]), viewSpecs(cfg).map((s) => s.size));
 * dispose(views);
 * ```
 */
export function dinoViews(images: Tensor, cfg: AugmentConfig, g: Generator): Tensor[] {
  return tidy(() => {
    const x = images.dtype === "u8" ? div(images, 255) : images; // true division: f32 in one pass
    // Consecutive views of one size (the globals, then the locals) are augmented together.
    const runs: ViewSpec[][] = [];
    for (const spec of viewSpecs(cfg)) {
      const last = runs.at(-1);
      if (last && last[0].size === spec.size) last.push(spec);
      else runs.push([spec]);
    }
    return runs.flatMap((run) => tidy(() => augmentViews(x, run, cfg, g)));
  });
}

/**
 * Undoes {@linkcode normalize} and returns u8 [B, H, W, C] pixels, for looking at views.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, tidy, toArray } from "../../mod.ts";
 * import { toPixels } from "./augment.ts";
 * using px = tidy(() => toPixels(ones([1, 3, 2, 2]), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])); // 1 * 0.5 + 0.5 = 1
 * assert.deepEqual([px.dtype, px.shape, new Set(toArray(px))], ["u8", [1, 2, 2, 3], new Set([255])]);
 * ```
 */
export function toPixels(x: Tensor, meanValues: readonly number[], stdValues: readonly number[]): Tensor {
  const C = x.shape[1];
  const m = tensor(new Float32Array(meanValues), { shape: [1, C, 1, 1], device: x.device });
  const s = tensor(new Float32Array(stdValues), { shape: [1, C, 1, 1], device: x.device });
  const pixels = floor(add(mul(clamp(add(mul(x, s), m), 0, 1), 255), 0.5)); // [B, C, H, W]
  return to(permute(pixels, [0, 2, 3, 1]), "u8");
}
