/**
 * Attention maps of a ViT, as the official `visualize_attention.py`: the last block's attention from the CLS
 * token to every patch, one map per head on the patch grid, upsampled by the patch size (nearest); the masks
 * that keep the smallest set of patches holding a share (`threshold`) of each head's attention mass; and the
 * pictures of both (heat maps in a viridis-like colormap, as matplotlib's `plt.imsave` default, masks drawn over
 * the image, and a grid of every head over the image). Everything here is a pure function of tensors: the
 * command (`cli/attention.ts`) decodes, calls these and writes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, tidy } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { attentionMaps, renderAttention } from "./attention.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, depth: 1 });
 * const vit = initViT(cfg, g);
 * using image = randint(g, 0, 256, [3, 24, 40], { dtype: "u8" }); // u8 [C, H, W], sides multiples of 8
 * const maps = attentionMaps(vit, cfg, image, { threshold: 0.6 });
 * assert.deepEqual([maps.attentions.shape, maps.masks.shape], [[3, 24, 40], [3, 24, 40]]); // [heads, H, W]
 * const pictures = tidy(() => renderAttention(image, maps.attentions, maps.masks));
 * assert.deepEqual([pictures.heatmaps.length, pictures.heatmaps[0].shape], [3, [24, 40, 3]]); // u8 [H, W, RGB]
 * dispose([vit, maps, pictures]);
 * ```
 * @module
 */
import {
  add,
  amax,
  amin,
  cat,
  clamp,
  cumsum,
  div,
  expand,
  flatten,
  floor,
  full,
  gather,
  gt,
  indexSelect,
  mean,
  minimum,
  mul,
  noGrad,
  pad,
  permute,
  pilResize,
  reshape,
  round,
  select,
  slice,
  sort,
  sub,
  sum,
  type Tensor,
  tensor,
  tidy,
  to,
  unsqueeze,
  where,
} from "../../ffi/mod.ts";
import { lastSelfAttention, type ViTConfig, type ViTParams } from "../model/vit.ts";

/** A per-channel normalisation: the network sees (pixel / 255 - mean) / std. */
export interface Normalization {
  /** One mean per channel. */
  mean: readonly number[];
  /** One standard deviation per channel. */
  std: readonly number[];
}

/** ImageNet's normalisation, the official code's (3 channels). */
export const IMAGENET_NORMALIZATION: Normalization = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/**
 * The normalisation to use when the weights do not say: ImageNet's for 3 channels, 0.5 / 0.5 for one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultNormalization } from "./attention.ts";
 * assert.deepEqual(defaultNormalization(1), { mean: [0.5], std: [0.5] });
 * assert.deepEqual(defaultNormalization(3).mean, [0.485, 0.456, 0.406]);
 * ```
 */
export function defaultNormalization(channels: number): Normalization {
  return channels === 3 ? IMAGENET_NORMALIZATION : { mean: Array(channels).fill(0.5), std: Array(channels).fill(0.5) };
}

/**
 * A u8 [C, H, W] image as the network's input: f32 [1, C, H, W], scaled to [0, 1] and normalised.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy, toArray } from "../../mod.ts";
 * import { normalizeImage } from "./attention.ts";
 * using image = full([1, 2, 2], 255, { dtype: "u8" });
 * const x = tidy(() => toArray(normalizeImage(image, { mean: [0.5], std: [0.25] })));
 * assert.deepEqual(x, [2, 2, 2, 2]); // (1 - 0.5) / 0.25
 * ```
 */
export function normalizeImage(image: Tensor, norm: Normalization): Tensor {
  const C = image.shape[0];
  if (image.ndim !== 3 || image.dtype !== "u8") {
    throw new TypeError(`normalizeImage takes a u8 [C, H, W] image, got ${image.dtype} [${image.shape}]`);
  }
  if (norm.mean.length !== C || norm.std.length !== C) {
    throw new RangeError(
      `normalizeImage: the image has ${C} channel(s) but the normalisation ${norm.mean.length} mean(s) and ` +
        `${norm.std.length} std(s); give one per channel`,
    );
  }
  return tidy(() => {
    const m = tensor(new Float32Array(norm.mean), { shape: [C, 1, 1] });
    const s = tensor(new Float32Array(norm.std), { shape: [C, 1, 1] });
    return unsqueeze(div(sub(div(to(image, "f32"), 255), m), s), 0);
  });
}

/**
 * The last block's attention from the CLS token to every patch, per head, on the patch grid: a normalised
 * f32 [1, C, H, W] image (H and W multiples of the patch size; the position embeddings are interpolated as the
 * official code does) to f32 [heads, H / patch, W / patch]. This is `attentions[0, :, 0, 1:]` of the official
 * script, reshaped.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy, toArray } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { clsAttention } from "./attention.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 4, imgSize: 16, inChans: 1, depth: 1 });
 * const vit = initViT(cfg, g);
 * using maps = tidy(() => clsAttention(vit, cfg, randn(g, [1, 1, 8, 12])));
 * assert.deepEqual(maps.shape, [3, 2, 3]); // 3 heads over a 2 x 3 patch grid
 * assert.ok(toArray(maps).every((a) => a > 0 && a < 1)); // softmax weights (the CLS itself takes the rest)
 * dispose(vit);
 * ```
 */
export function clsAttention(p: ViTParams, cfg: ViTConfig, x: Tensor): Tensor {
  const P = cfg.patchSize;
  if (x.ndim !== 4 || x.shape[0] !== 1 || x.shape[1] !== cfg.inChans) {
    throw new RangeError(`clsAttention takes one image as [1, ${cfg.inChans}, H, W], got [${x.shape}]`);
  }
  const [, , H, W] = x.shape;
  if (H % P !== 0 || W % P !== 0) {
    throw new RangeError(`clsAttention: the image is ${H} x ${W}; both sides must be multiples of the patch size ${P}`);
  }
  return noGrad(() =>
    tidy(() => {
      const a = lastSelfAttention(p, cfg, x); // [1, heads, 1 + N, 1 + N]
      const cls = slice(select(select(a, 0, 0), 1, 0), 1, 1); // [heads, N]: the CLS query's row, patches only
      return reshape(cls, [cfg.numHeads, H / P, W / P]);
    })
  );
}

/**
 * The masks of the official script: for each head, the smallest set of patches that holds `threshold` of its
 * attention mass (sort ascending, normalise to sum 1, cumulative sum, keep where it passes 1 - threshold, and
 * put back in patch order). f32 [heads, h, w] to u8 [heads, h, w] of 0 and 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { attentionMasks } from "./attention.ts";
 * using maps = tensor([[[0.1, 0.5], [0.3, 0.1]]]); // one head over a 2 x 2 grid, mass 1
 * assert.deepEqual(tidy(() => toArray(attentionMasks(maps, 0.4))), [0, 1, 0, 0]); // 0.5 alone holds 40%
 * assert.deepEqual(tidy(() => toArray(attentionMasks(maps, 0.6))), [0, 1, 1, 0]); // 60% takes 0.5 + 0.3
 * ```
 */
export function attentionMasks(maps: Tensor, threshold: number): Tensor {
  if (!(threshold > 0 && threshold <= 1)) {
    throw new RangeError(`attentionMasks: threshold must be in (0, 1], got ${threshold}`);
  }
  if (maps.ndim !== 3) throw new RangeError(`attentionMasks takes [heads, h, w] maps, got [${maps.shape}]`);
  const [heads, h, w] = maps.shape;
  return tidy(() => {
    const { values, indices } = sort(reshape(maps, [heads, h * w]), -1); // ascending
    const share = div(values, sum(values, -1, { keepdim: true }));
    const kept = to(gt(cumsum(share, -1), 1 - threshold), "u8"); // in sorted order
    const back = sort(indices, -1).indices; // argsort(indices): where each patch sits in the sorted order
    return reshape(gather(kept, 1, back), [heads, h, w]);
  });
}

/**
 * Nearest-neighbour upsampling of the last two dims by an integer factor (each value becomes a factor x factor
 * block), any dtype: `F.interpolate(..., scale_factor=factor, mode="nearest")` for whole factors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { upsampleNearest } from "./attention.ts";
 * using x = tensor([[1, 2]]);
 * assert.deepEqual(tidy(() => toArray(upsampleNearest(x, 2))), [1, 1, 2, 2, 1, 1, 2, 2]); // [2, 4]
 * ```
 */
export function upsampleNearest(x: Tensor, factor: number): Tensor {
  if (!Number.isInteger(factor) || factor < 1) {
    throw new RangeError(`upsampleNearest: factor must be an integer >= 1, got ${factor}`);
  }
  if (x.ndim < 2) throw new RangeError(`upsampleNearest takes [..., h, w], got [${x.shape}]`);
  const lead = x.shape.slice(0, -2);
  const [h, w] = x.shape.slice(-2);
  return tidy(() =>
    reshape(
      expand(reshape(x, [...lead, h, 1, w, 1]), [...lead, h, factor, w, factor]),
      [...lead, h * factor, w * factor],
    )
  );
}

/** Options of {@linkcode attentionMaps}. */
export interface AttentionOptions {
  /** The normalisation the weights were trained with (default {@linkcode defaultNormalization}). */
  normalization?: Normalization;
  /** The share of each head's attention mass its mask keeps, in (0, 1] (default 0.6, as the DINO paper). */
  threshold?: number;
}

/** The largest side an image is resized to for a patch grid ({@linkcode patchCut}; as decoding's). */
export const MAX_RESIZED_SIDE = 16384;

/**
 * The size torchvision's `Resize(size)` gives an image of `height` x `width`: with one number the short side
 * becomes it and the long side int(size * long / short); with [height, width], exactly that.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resizedSize } from "./attention.ts";
 * assert.deepEqual(resizedSize(427, 640, 480), [480, 719]); // int(719.43)
 * assert.deepEqual(resizedSize(427, 640, [480, 480]), [480, 480]);
 * ```
 */
export function resizedSize(height: number, width: number, size: number | readonly [number, number]): [number, number] {
  if (typeof size !== "number") return [size[0], size[1]];
  const long = Math.trunc((size * Math.max(height, width)) / Math.min(height, width));
  return width <= height ? [long, size] : [size, long];
}

/**
 * An image as the official `visualize_attention.py` prepares it, u8 [C, H, W] in and out: torchvision's
 * `Resize(size)` (see {@linkcode resizedSize}) with its default filter, PIL's antialiased bilinear
 * ({@linkcode pilResize}: PIL's pixels), then the bottom rows and right columns past the last multiple of the patch
 * size cut off.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy } from "../../mod.ts";
 * import { attentionImage } from "./attention.ts";
 * using photo = full([3, 427, 640], 128, { dtype: "u8" });
 * const shape = tidy(() => attentionImage(photo, 480, 16).shape); // 480 x 719, cut to 480 x 704
 * assert.deepEqual(shape, [3, 480, 704]);
 * ```
 */
export function attentionImage(image: Tensor, size: number | readonly [number, number], patchSize: number): Tensor {
  const [h, w] = resizedSize(image.shape[1], image.shape[2], size);
  const [rows, cols] = patchCut("attentionImage", image, [h, w], patchSize);
  return tidy(() => slice(slice(pilResize(image, [h, w], "bilinear"), 1, 0, rows), 2, 0, cols));
}

/**
 * The rows and columns that a ViT's patch embedding reads of an image resized to `size` ([height, width]): each
 * cut to a multiple of the patch size, as the official scripts cut them. Checks that `image` is u8 [C, H, W] and
 * that the resized image holds a patch and is at most {@linkcode MAX_RESIZED_SIDE} a side (a `RangeError` saying
 * so; `caller` names the function in errors).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeros } from "../../mod.ts";
 * import { patchCut } from "./attention.ts";
 * using image = zeros([3, 427, 640], { dtype: "u8" });
 * assert.deepEqual(patchCut("example", image, [480, 719], 16), [480, 704]);
 * assert.throws(() => patchCut("example", image, [480, 12], 16), /smaller than one patch/);
 * ```
 */
export function patchCut(
  caller: string,
  image: Tensor,
  size: readonly [number, number],
  patchSize: number,
): [number, number] {
  if (image.ndim !== 3 || image.dtype !== "u8") {
    throw new TypeError(`${caller} takes a u8 [C, H, W] image, got ${image.dtype} [${image.shape}]`);
  }
  const [, H, W] = image.shape, [h, w] = size;
  const rows = h - (h % patchSize), cols = w - (w % patchSize);
  if (rows === 0 || cols === 0) {
    throw new RangeError(
      `a ${W} x ${H} image resized to ${w} x ${h} is smaller than one patch (${patchSize} pixels) on a side: ` +
        "give a larger image size",
    );
  }
  if (h > MAX_RESIZED_SIDE || w > MAX_RESIZED_SIDE) {
    throw new RangeError(
      `a ${W} x ${H} image resized to ${w} x ${h} passes the largest side ${MAX_RESIZED_SIDE}: give a smaller size`,
    );
  }
  return [rows, cols];
}

/**
 * Resampled f32 pixel values to u8 as PIL's and OpenCV's fixed point rounds them: halves up, clamped to [0, 255]
 * (libtorch's `round` takes halves to even).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { roundToU8 } from "./attention.ts";
 * assert.deepEqual(tidy(() => toArray(roundToU8(tensor([0.5, 1.5, 2.49, -3, 300])))), [1, 2, 2, 0, 255]);
 * ```
 */
export function roundToU8(x: Tensor): Tensor {
  return tidy(() => to(clamp(floor(add(x, 0.5)), 0, 255), "u8"));
}

/** The arrays of one image: what {@linkcode attentionMaps} returns. */
export interface AttentionMaps {
  /** f32 [heads, H, W]: each head's CLS-to-patch attention, upsampled by the patch size (nearest). */
  attentions: Tensor;
  /** u8 [heads, H, W]: 1 where the patch is in the head's mask, upsampled the same way. */
  masks: Tensor;
}

/**
 * The official `visualize_attention.py` arrays of one image: a u8 [C, H, W] image (C the backbone's channels,
 * H and W multiples of its patch size) is normalised, run through the backbone, and its CLS-to-patch attention
 * and masks are returned at the image's resolution.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, toArray } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { attentionMaps } from "./attention.ts";
 * using g = new Generator(1);
 * const cfg = vitConfig("vit_tiny", { patchSize: 7, imgSize: 28, inChans: 1, depth: 1 }); // a Fashion-MNIST shape
 * const vit = initViT(cfg, g);
 * using image = randint(g, 0, 256, [1, 28, 42], { dtype: "u8" });
 * const { attentions, masks } = attentionMaps(vit, cfg, image, { normalization: { mean: [0.286], std: [0.353] } });
 * assert.deepEqual([attentions.shape, masks.dtype], [[3, 28, 42], "u8"]);
 * assert.ok(toArray(masks).some((m) => m === 1));
 * dispose([vit, attentions, masks]);
 * ```
 */
export function attentionMaps(p: ViTParams, cfg: ViTConfig, image: Tensor, o: AttentionOptions = {}): AttentionMaps {
  const C = cfg.inChans;
  if (image.ndim !== 3 || image.dtype !== "u8" || image.shape[0] !== C) {
    throw new RangeError(
      `attentionMaps takes a u8 [${C}, H, W] image (the backbone's channels), got ${image.dtype} [${image.shape}]`,
    );
  }
  const threshold = o.threshold ?? 0.6;
  return tidy(() => {
    const grid = clsAttention(p, cfg, normalizeImage(image, o.normalization ?? defaultNormalization(C)));
    return {
      attentions: upsampleNearest(grid, cfg.patchSize),
      masks: upsampleNearest(attentionMasks(grid, threshold), cfg.patchSize),
    };
  });
}

// ---- pictures -----------------------------------------------------------------------------------------------

/**
 * 33 colours of viridis (matplotlib's default colormap, CC0), evenly spaced from 0 to 1, as RGB hex; the 256
 * entries of the lookup table are interpolated between them (within 2 levels of matplotlib's own table).
 */
const VIRIDIS_POINTS = "440154470d6048186a482374472d7b4537814240863e49893b528b375b8d33638d2f6b8e2c728e297a8e" +
  "26828e23898e21918c1f978b1f9f8821a68527ad8131b57b3dbc744cc26c5cc8636ece5881d34d95d840aadc32c0df25d5e21aeae51afde725";

let viridisTable: Uint8Array<ArrayBuffer> | undefined;

/** The 256-entry RGB table, as matplotlib's `ListedColormap` of N = 256: entry i is the colour at i / 255. */
function viridis(): Uint8Array<ArrayBuffer> {
  if (viridisTable) return viridisTable;
  const n = VIRIDIS_POINTS.length / 6;
  const point = (k: number, c: number) => parseInt(VIRIDIS_POINTS.slice(6 * k + 2 * c, 6 * k + 2 * c + 2), 16);
  const table = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const at = (i / 255) * (n - 1), k = Math.min(Math.floor(at), n - 2), f = at - k;
    for (let c = 0; c < 3; c++) table[3 * i + c] = Math.round(point(k, c) * (1 - f) + point(k + 1, c) * f);
  }
  return (viridisTable = table);
}

/**
 * A heat map of one [H, W] array, as `plt.imsave` draws it: scaled to its own minimum and maximum (all the
 * lowest colour when flat), then looked up in a 256-colour viridis-like table. Returns u8 [H, W, 3].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { heatmap } from "./attention.ts";
 * using x = tensor([[0, 1]]);
 * const rgb = tidy(() => toArray(heatmap(x)));
 * assert.deepEqual(rgb.slice(0, 3), [0x44, 0x01, 0x54]); // the lowest value: viridis' dark purple
 * assert.ok(rgb[3] > 0xf0 && rgb[4] > 0xe0); // the highest: its yellow
 * ```
 */
export function heatmap(values: Tensor): Tensor {
  if (values.ndim !== 2) throw new RangeError(`heatmap takes an [H, W] array, got [${values.shape}]`);
  const [H, W] = values.shape;
  return tidy(() => {
    const v = to(values, "f32");
    const lo = amin(v), range = sub(amax(v), lo);
    // (v - lo) / range in [0, 1]; a flat map (range 0) is all 0, as matplotlib's Normalize.
    const scaled = where(gt(range, 0), div(sub(v, lo), where(gt(range, 0), range, full([], 1))), full([], 0));
    const index = to(clamp(floor(mul(scaled, 256)), 0, 255), "i64");
    const lut = tensor(viridis(), { shape: [256, 3] });
    return reshape(indexSelect(lut, 0, flatten(index)), [H, W, 3]);
  });
}

/**
 * A u8 [C, H, W] image (1 or 3 channels) as u8 [H, W, 3] RGB, for drawing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy } from "../../mod.ts";
 * import { toRGB } from "./attention.ts";
 * using gray = full([1, 2, 5], 9, { dtype: "u8" });
 * assert.deepEqual(tidy(() => toRGB(gray).shape), [2, 5, 3]);
 * ```
 */
export function toRGB(image: Tensor): Tensor {
  if (image.ndim !== 3 || image.dtype !== "u8" || (image.shape[0] !== 1 && image.shape[0] !== 3)) {
    throw new RangeError(`toRGB takes a u8 [C, H, W] image with 1 or 3 channels, got ${image.dtype} [${image.shape}]`);
  }
  const [C, H, W] = image.shape;
  return tidy(() => {
    const hwc = permute(image, [1, 2, 0]);
    return add(C === 1 ? expand(hwc, [H, W, 3]) : hwc, 0); // a contiguous copy
  });
}

/**
 * (1 - alpha) a + alpha b, of two u8 [H, W, 3] pictures, rounded.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy, toArray } from "../../mod.ts";
 * import { blend } from "./attention.ts";
 * using black = full([1, 1, 3], 0, { dtype: "u8" });
 * using white = full([1, 1, 3], 255, { dtype: "u8" });
 * assert.deepEqual(tidy(() => toArray(blend(black, white, 0.5))), [128, 128, 128]);
 * ```
 */
export function blend(a: Tensor, b: Tensor, alpha: number): Tensor {
  return tidy(() => to(round(add(mul(to(a, "f32"), 1 - alpha), mul(to(b, "f32"), alpha))), "u8"));
}

/** The colours masks are drawn in, one per head (cycled): distinct, bright hues. */
export const MASK_COLORS: readonly (readonly [number, number, number])[] = [
  [255, 64, 64],
  [64, 160, 255],
  [64, 220, 64],
  [255, 200, 0],
  [200, 64, 255],
  [0, 220, 220],
  [255, 128, 0],
  [255, 64, 200],
  [160, 255, 64],
  [64, 64, 255],
  [255, 255, 128],
  [128, 255, 200],
];

/**
 * A mask drawn over a u8 [H, W, 3] picture as the official `display_instances` does: the masked pixels tinted
 * (half the colour, alpha 0.5) and the mask's outline (its pixels with an unmasked 4-neighbour) in the colour.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tensor, tidy, toArray } from "../../mod.ts";
 * import { drawMask } from "./attention.ts";
 * using black = full([1, 3, 3], 0, { dtype: "u8" });
 * using mask = tensor([[0, 1, 1]], { dtype: "u8" });
 * const px = tidy(() => toArray(drawMask(black, mask, [200, 0, 0])));
 * // outside untouched; the middle pixel is outline (next to an unmasked one); the last is inside: tinted
 * assert.deepEqual(px, [0, 0, 0, 200, 0, 0, 100, 0, 0]);
 * ```
 */
export function drawMask(
  picture: Tensor,
  mask: Tensor,
  color: readonly [number, number, number],
  alpha = 0.5,
): Tensor {
  const [H, W] = picture.shape;
  if (mask.ndim !== 2 || mask.shape[0] !== H || mask.shape[1] !== W) {
    throw new RangeError(`drawMask: the mask [${mask.shape}] must be [${H}, ${W}], the picture's size`);
  }
  return tidy(() => {
    const m = to(gt(mask, 0), "f32");
    // The interior: masked pixels whose 4 neighbours are masked too (the picture's edge counts as masked).
    const padded = pad(reshape(m, [1, 1, H, W]), [1, 1, 1, 1], "replicate");
    const nb = (dy: number, dx: number) =>
      reshape(slice(slice(padded, 2, 1 + dy, 1 + dy + H), 3, 1 + dx, 1 + dx + W), [H, W]);
    const interior = minimum(minimum(minimum(nb(-1, 0), nb(1, 0)), minimum(nb(0, -1), nb(0, 1))), m);
    const rgb = tensor(new Float32Array(color), { shape: [1, 1, 3] });
    const tinted = add(mul(to(picture, "f32"), 1 - alpha), mul(rgb, alpha));
    const inside = unsqueeze(gt(m, 0), 2), edge = unsqueeze(gt(sub(m, interior), 0), 2);
    const drawn = where(edge, expand(rgb, [H, W, 3]), where(inside, tinted, to(picture, "f32")));
    return to(round(drawn), "u8");
  });
}

/**
 * Pictures (u8 [H, W, 3], all the same size) in rows, with `gap` pixels of `background` between and around
 * them; a row may be shorter than the longest (the rest is background).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy } from "../../mod.ts";
 * import { tileGrid } from "./attention.ts";
 * using a = full([4, 6, 3], 0, { dtype: "u8" });
 * assert.deepEqual(tidy(() => tileGrid([[a, a, a], [a]], 2).shape), [2 + 4 + 2 + 4 + 2, 2 + 3 * (6 + 2), 3]);
 * ```
 */
export function tileGrid(rows: readonly (readonly Tensor[])[], gap = 4, background = 255): Tensor {
  const first = rows[0]?.[0];
  if (!first) throw new RangeError("tileGrid needs at least one picture");
  const [H, W] = first.shape;
  for (const t of rows.flat()) {
    if (t.ndim !== 3 || t.shape[0] !== H || t.shape[1] !== W || t.shape[2] !== 3 || t.dtype !== "u8") {
      throw new RangeError(`tileGrid: every picture must be u8 [${H}, ${W}, 3], got ${t.dtype} [${t.shape}]`);
    }
  }
  const columns = Math.max(...rows.map((r) => r.length));
  return tidy(() => {
    const fill = (h: number, w: number) => full([h, w, 3], background, { dtype: "u8" });
    const lines = rows.map((r) => {
      const parts: Tensor[] = [fill(H, gap)];
      for (let j = 0; j < columns; j++) parts.push(r[j] ?? fill(H, W), fill(H, gap));
      return cat(parts, 1);
    });
    const width = gap + columns * (W + gap);
    const parts: Tensor[] = [fill(gap, width)];
    for (const line of lines) parts.push(line, fill(gap, width));
    return cat(parts, 0);
  });
}

/** The pictures of one image: what {@linkcode renderAttention} returns, all u8 [H, W, 3]. */
export interface AttentionPictures {
  /** The image as the network saw it (before normalisation), in RGB. */
  image: Tensor;
  /** One heat map per head, as the official `attn-head{j}.png`. */
  heatmaps: Tensor[];
  /** One mask per head drawn over the image, as the official `mask_th{t}_head{j}.png`. */
  masks: Tensor[];
  /**
   * Every head over the image: on top the image, then each head's heat map blended over it (alpha 0.6); below,
   * the mean of the heads' maps blended over the image, then each head's mask.
   */
  grid: Tensor;
}

/**
 * The pictures of {@linkcode attentionMaps}' arrays: the image u8 [C, H, W] (1 or 3 channels), attentions
 * [heads, H, W] and masks [heads, H, W].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, full, rand, Generator, tidy } from "../../mod.ts";
 * import { renderAttention } from "./attention.ts";
 * using g = new Generator(0);
 * using image = full([1, 16, 24], 128, { dtype: "u8" });
 * using attentions = rand(g, [2, 16, 24]);
 * using masks = full([2, 16, 24], 1, { dtype: "u8" });
 * const p = tidy(() => renderAttention(image, attentions, masks));
 * assert.deepEqual([p.masks.length, p.grid.shape], [2, [4 + 16 + 4 + 16 + 4, 4 + 3 * (24 + 4), 3]]);
 * dispose(p);
 * ```
 */
export function renderAttention(image: Tensor, attentions: Tensor, masks: Tensor): AttentionPictures {
  const [, H, W] = image.shape;
  for (const [name, t] of [["attentions", attentions], ["masks", masks]] as const) {
    if (t.ndim !== 3 || t.shape[1] !== H || t.shape[2] !== W) {
      throw new RangeError(`renderAttention: ${name} [${t.shape}] must be [heads, ${H}, ${W}], the image's size`);
    }
  }
  const heads = attentions.shape[0];
  return tidy(() => {
    const rgb = toRGB(image);
    const heatmaps = Array.from({ length: heads }, (_, j) => heatmap(select(attentions, 0, j)));
    const drawn = Array.from(
      { length: heads },
      (_, j) => drawMask(rgb, select(masks, 0, j), MASK_COLORS[j % MASK_COLORS.length]),
    );
    const over = (heat: Tensor) => blend(rgb, heat, 0.6);
    const grid = tileGrid([
      [rgb, ...heatmaps.map(over)],
      [over(heatmap(mean(attentions, 0))), ...drawn],
    ]);
    return { image: rgb, heatmaps, masks: drawn, grid };
  });
}
