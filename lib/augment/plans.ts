/**
 * The augmentation's per-sample random draws, each from the explicit generator: uniforms, the crop
 * boxes, the colour-jitter plan (whether, in which order, by how much), and the view specs that say
 * which views a batch gets. Kept apart so that the order of the draws, on which a seed's exact views and
 * a bit-exact resume depend, can be read in one place (`viewPlan` in `views.ts` makes them in turn, from
 * one generator for the batch or from each sample's own uniforms).
 * @module
 */
import { type Generator, rand, tidy, toArray } from "../../ffi/mod.ts";
import type { CropBox } from "./image.ts";
import type { AugmentConfig } from "./presets.ts";

/** Per-sample uniform draws on [lo, hi). */
export function uniforms(g: Generator, n: number, lo: number, hi: number): number[] {
  return tidy(() => toArray(rand(g, [n], { dtype: "f64" }))).map((u) => lo + (hi - lo) * u);
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
 * import { cropBoxes } from "./plans.ts";
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
  return Array.from({ length: n }, (_, b) => cropBox(u, b * CROP_DRAWS, H, W, scale, ratio));
}

/** The uniforms one crop box takes: 10 tries of 4 draws (area, log-ratio, top, left). */
export const CROP_DRAWS = 40;

/**
 * One RandomResizedCrop box from {@linkcode CROP_DRAWS} uniforms on [0, 1)
 * starting at `u[at]`: the first of 10 tries that fits, else a centre crop of
 * the clamped ratio (torchvision's fallback).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cropBox } from "./plans.ts";
 * const u = new Array(40).fill(0.5);
 * assert.deepEqual(cropBox(u, 0, 100, 100, [0.36, 0.36], [1, 1]), { i: 20, j: 20, h: 60, w: 60 });
 * ```
 */
export function cropBox(
  u: ArrayLike<number>,
  at: number,
  H: number,
  W: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): CropBox {
  const area = H * W;
  const [l0, l1] = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let a = 0; a < 10; a++) {
    const o = at + a * 4;
    const target = area * (scale[0] + (scale[1] - scale[0]) * u[o]);
    const aspect = Math.exp(l0 + (l1 - l0) * u[o + 1]);
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      return { i: Math.floor(u[o + 2] * (H - h + 1)), j: Math.floor(u[o + 3] * (W - w + 1)), h, w };
    }
  }
  const inRatio = W / H;
  let w = W, h = H;
  if (inRatio < ratio[0]) h = Math.round(W / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(H * ratio[1]);
  return { i: Math.floor((H - h) / 2), j: Math.floor((W - w) / 2), h, w };
}

/** ColorJitter's random choices for n samples: which ops in which order, and their factors. */
export interface JitterPlan {
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
export function jitterPlan(g: Generator, n: number, cfg: AugmentConfig, rgb: boolean): JitterPlan {
  const apply = uniforms(g, n, 0, 1);
  const factors = [0, 1, 2, 3].map(() => uniforms(g, n, 0, 1));
  const keys = tidy(() => toArray(rand(g, [n, 4], { dtype: "f64" })));
  return jitterFrom(apply, factors, (b, p) => keys[b * 4 + p], cfg, rgb);
}

/**
 * A {@linkcode JitterPlan} from uniforms on [0, 1): per sample, whether
 * (`apply`), each op's factor (`factors[op]`, scaled to the op's range), and
 * the keys whose order is the ops' order.
 */
export function jitterFrom(
  apply: readonly number[],
  factors: readonly (readonly number[])[],
  key: (sample: number, op: number) => number,
  cfg: AugmentConfig,
  rgb: boolean,
): JitterPlan {
  const ranges = [
    [Math.max(0, 1 - cfg.brightness), 1 + cfg.brightness],
    [Math.max(0, 1 - cfg.contrast), 1 + cfg.contrast],
    [Math.max(0, 1 - cfg.saturation), 1 + cfg.saturation],
    [-cfg.hue, cfg.hue],
  ];
  const order = apply.map((u, b) =>
    u < cfg.jitterP ? [0, 1, 2, 3].sort((p, q) => key(b, p) - key(b, q)).filter((o) => rgb || o < 2) : []
  );
  return { order, factors: factors.map((f, o) => f.map((u) => ranges[o][0] + (ranges[o][1] - ranges[o][0]) * u)) };
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

/**
 * The views of the official recipe, in the official order: global 1, global 2, then the locals.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS } from "../../mod.ts";
 * import { viewSpecs } from "./plans.ts";
 * const specs = viewSpecs(AUGMENT_PRESETS.imagenet);
 * assert.deepEqual(specs.map((s) => s.size), [224, 224, 96, 96, 96, 96, 96, 96, 96, 96]);
 * assert.deepEqual(specs.slice(0, 3).map((s) => [s.blurP, s.solarizeP]), [[1, 0], [0.1, 0.2], [0.5, 0]]);
 * ```
 */
export function viewSpecs(cfg: AugmentConfig): ViewSpec[] {
  const global = (blurP: number, solarizeP: number): ViewSpec => ({
    size: cfg.globalCropsSize,
    scale: cfg.globalCropsScale,
    blurP,
    solarizeP,
  });
  return [
    global(cfg.blurP[0], 0),
    global(cfg.blurP[1], cfg.solarizeP),
    ...Array.from({ length: cfg.localCropsNumber }, () => ({
      size: cfg.localCropsSize,
      scale: cfg.localCropsScale,
      blurP: cfg.blurP[2],
      solarizeP: 0,
    })),
  ];
}
