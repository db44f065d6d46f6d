/**
 * The image functions of the augmentation, on batches [B, C, H, W] of images in [0, 1]: the resized
 * crop, grayscale, the four colour-jitter ops (brightness, contrast, saturation, hue), gaussian blur,
 * solarization, normalisation and its inverse for looking at views. Each takes its per-sample choices
 * (boxes, factors, sigmas, masks) as arguments and draws nothing: the random draws are in `plans.ts`,
 * and their use by groups of samples in `views.ts`.
 * @module
 */
import {
  abs,
  add,
  addcmul,
  cat,
  clamp,
  conv2d,
  div,
  flip,
  floor,
  interpolate,
  maximum,
  mean,
  minimum,
  mul,
  narrow,
  permute,
  reshape,
  sign,
  sub,
  type Tensor,
  tensor,
  tidy,
  to,
} from "../../ffi/mod.ts";

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
 * import { resizedCrop } from "./image.ts";
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
 * import { adjustBrightness } from "./image.ts";
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
 * import { adjustContrast } from "./image.ts";
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
 * import { adjustSaturation } from "./image.ts";
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
 * import { adjustHue } from "./image.ts";
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
 * import { gaussianBlur } from "./image.ts";
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
 * import { solarize } from "./image.ts";
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

/**
 * (x - mean) / std per channel.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { normalize } from "./image.ts";
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
 * Undoes {@linkcode normalize} and returns u8 [B, H, W, C] pixels, for looking at views.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, tidy, toArray } from "../../mod.ts";
 * import { toPixels } from "./image.ts";
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
