/**
 * Video object segmentation by label propagation, as the official `eval_video_segmentation.py` (the DINO paper's
 * DAVIS 2017 protocol): the labels of the first frame are carried to each next frame through the affinities of
 * frozen last-block patch features. For a target frame, each patch takes a weighted mix of the soft labels of
 * the first frame and the previous `nLastFrames` frames: the weights are exp(cos / 0.1) between its feature and
 * theirs, only within `neighborhood` patches of it (a square window), and only the `topk` largest of all, then
 * normalised to sum 1. The soft labels are upsampled to the frame (bilinear, by the patch size), each label's map
 * rescaled to [0, 1], and the largest label wins.
 *
 * Everything here is a pure function of tensors, except {@linkcode LabelPropagator}, which holds the frames a
 * video's next frame looks back at. The command (`cli/propagate.ts`) decodes frames, extracts features, calls
 * these and writes masks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randn, Generator, tensor, tidy, toArray } from "../../mod.ts";
 * import { LabelPropagator, labelsFromSoft, oneHotLabels } from "./propagate.ts";
 * using g = new Generator(0);
 * using feats = randn(g, [4, 8]); // 4 patches (a 2 x 2 grid), 8 dims
 * using first = tensor([[0, 1], [0, 0]], { dtype: "u8" });
 * using seg = oneHotLabels(first, 2); // f32 [2, 2, 2]
 * using prop = new LabelPropagator(feats, seg, { h: 2, w: 2 });
 * using soft = prop.next(feats); // the same frame again: every patch finds itself
 * assert.deepEqual(tidy(() => toArray(labelsFromSoft(soft, 1))), [0, 1, 0, 0]);
 * ```
 * @module
 */
import {
  abs,
  add,
  amax,
  amin,
  arange,
  argmax,
  bmm,
  clamp,
  div,
  exp,
  expand,
  gt,
  interpolate,
  keep,
  le,
  logicalAnd,
  lt,
  matmul,
  mul,
  noGrad,
  norm,
  oneHot,
  reshape,
  select,
  slice,
  stack,
  sub,
  sum,
  type Tensor,
  tidy,
  to,
  topk,
  transpose,
  unsqueeze,
  where,
  zeros,
} from "../../ffi/mod.ts";
import { intermediateLayers, type ViTConfig, type ViTParams } from "../model/vit.ts";
import { patchCut, roundToU8 } from "./attention.ts";

/** The settings of label propagation (the official flags' defaults). */
export interface PropagationOptions {
  /** How many previous frames (besides the first) each frame looks back at (7). */
  nLastFrames?: number;
  /** The half-width, in patches, of the window a patch takes labels from; 0 for no window (12). */
  neighborhood?: number;
  /** How many of the largest affinities each patch keeps over all context frames (5). */
  topk?: number;
}

/** The official defaults of {@linkcode PropagationOptions}. */
export const PROPAGATION_DEFAULTS: Required<PropagationOptions> = { nLastFrames: 7, neighborhood: 12, topk: 5 };

/**
 * The size the official `read_frame` resizes a `height` x `width` frame to, [height, width]: the short side `size`
 * (480 there), the long side size * long / short floored to a multiple of 64; a square frame is a landscape one
 * (its width floored). Where the long side would come out 0 (under 64 pixels, the official script fails) it is
 * floored to a whole pixel instead.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { davisFrameSize } from "./propagate.ts";
 * assert.deepEqual(davisFrameSize(480, 854, 480), [480, 832]); // DAVIS 480p: 854 -> 832
 * assert.deepEqual(davisFrameSize(1080, 1920, 480), [480, 832]); // 853.3 -> 832
 * assert.deepEqual(davisFrameSize(480, 480, 480), [480, 448]);
 * ```
 */
export function davisFrameSize(height: number, width: number, size: number): [number, number] {
  const long = (size * (height > width ? height : width)) / (height > width ? width : height);
  const floored = long >= 64 ? Math.floor(long / 64) * 64 : Math.floor(long);
  return height > width ? [floored, size] : [size, floored];
}

/**
 * A frame as the official `read_frame` prepares it, u8 [C, H, W] in and out: resized to
 * {@linkcode davisFrameSize} with OpenCV's default bilinear filter (half-pixel centres, no antialiasing: here
 * libtorch's, rounded to 8 bits as OpenCV's u8 result), then cut at the bottom and right to multiples of the
 * patch size, the pixels that the official patch embedding's stride leaves out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, tidy } from "../../mod.ts";
 * import { davisFrame } from "./propagate.ts";
 * using frame = full([3, 480, 854], 90, { dtype: "u8" });
 * assert.deepEqual(tidy(() => davisFrame(frame, 480, 7).shape), [3, 476, 826]); // 480 x 832, cut to multiples of 7
 * ```
 */
export function davisFrame(image: Tensor, size: number, patchSize: number): Tensor {
  const [, H, W] = image.shape;
  const [h, w] = davisFrameSize(H, W, size);
  const [rows, cols] = patchCut("davisFrame", image, [h, w], patchSize);
  return tidy(() => {
    let x = unsqueeze(image, 0); // [1, C, H, W]
    if (h !== H || w !== W) {
      x = roundToU8(interpolate(to(x, "f32"), { size: [h, w], mode: "bilinear" })); // OpenCV's u8 result
    }
    return slice(slice(select(x, 0, 0), 1, 0, rows), 2, 0, cols);
  });
}

/**
 * The last block's patch tokens of one image (after the final norm, CLS dropped), as the official
 * `extract_feature`: a normalised f32 [1, C, H, W] (sides multiples of the patch size) to f32 [N, D], N = (H / P)
 * x (W / P) in row order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { patchFeatures } from "./propagate.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, depth: 1 });
 * const vit = initViT(cfg, g);
 * using f = tidy(() => patchFeatures(vit, cfg, randn(g, [1, 3, 16, 24])));
 * assert.deepEqual(f.shape, [6, 192]); // a 2 x 3 grid
 * dispose(vit);
 * ```
 */
export function patchFeatures(p: ViTParams, cfg: ViTConfig, x: Tensor): Tensor {
  if (x.ndim !== 4 || x.shape[0] !== 1) {
    throw new RangeError(`patchFeatures takes one image [1, C, H, W], got [${x.shape}]`);
  }
  return noGrad(() => tidy(() => select(slice(intermediateLayers(p, cfg, x, 1)[0], 1, 1), 0, 0)));
}

/**
 * The official `restrict_neighborhood`: f32 [h w, h w], 1 where target patch (i, j) (row) may take labels from
 * source patch (p, q) (column), |i - p| <= size and |j - q| <= size; 0 elsewhere.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tidy, toArray } from "../../mod.ts";
 * import { neighborhoodMask } from "./propagate.ts";
 * const m = tidy(() => toArray(neighborhoodMask(1, 3, 1))); // 1 x 3 patches, window of 1
 * assert.deepEqual(m, [1, 1, 0, 1, 1, 1, 0, 1, 1]);
 * ```
 */
export function neighborhoodMask(h: number, w: number, size: number): Tensor {
  return tidy(() => {
    const rows = reshape(expand(reshape(arange(0, h), [h, 1]), [h, w]), [-1]);
    const cols = reshape(expand(reshape(arange(0, w), [1, w]), [h, w]), [-1]);
    const near = (v: Tensor) => le(abs(sub(reshape(v, [-1, 1]), reshape(v, [1, -1]))), size);
    return to(logicalAnd(near(rows), near(cols)), "f32");
  });
}

/**
 * Integer labels u8 [h, w] as one-hot soft labels f32 [classes, h, w], as the official `to_one_hot`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { oneHotLabels } from "./propagate.ts";
 * using l = tensor([[2, 0]], { dtype: "u8" });
 * assert.deepEqual(tidy(() => toArray(oneHotLabels(l, 3))), [0, 1, 0, 0, 1, 0]); // [3, 1, 2]
 * ```
 */
export function oneHotLabels(labels: Tensor, classes: number): Tensor {
  if (labels.ndim !== 2) throw new RangeError(`oneHotLabels takes [h, w] labels, got [${labels.shape}]`);
  return tidy(() => transpose(transpose(to(oneHot(to(labels, "i64"), classes), "f32"), 0, 2), 1, 2));
}

/** L2-normalised rows, as `F.normalize(x, dim=-1)` (eps 1e-12). */
function normalizeRows(x: Tensor): Tensor {
  return div(x, clamp(norm(x, 2, -1, { keepdim: true }), 1e-12));
}

/** What {@linkcode propagationStep} needs besides the features and labels. */
export interface StepOptions {
  /** The patch grid's height. */
  h: number;
  /** The patch grid's width. */
  w: number;
  /** How many of the largest affinities each target patch keeps (5). */
  topk?: number;
  /** {@linkcode neighborhoodMask} of the grid, or undefined for none. */
  mask?: Tensor;
}

/**
 * One step of the official `label_propagation`: the soft labels f32 [C, h, w] of a target frame, from its patch
 * features `target` f32 [N, D] and the context frames' features `sources` (each [N, D]) and soft labels `segs`
 * (each [C, h, w]). Affinities exp(cos / 0.1), restricted by `mask`, the `topk` largest per target patch over
 * all context frames kept (ties with the k-th kept too), normalised per target patch.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { propagationStep } from "./propagate.ts";
 * using f = tensor([[1, 0], [0, 1]]); // 2 patches in a 1 x 2 grid
 * using seg = tensor([[[1, 0]], [[0, 1]]]); // label 0 at the left patch, 1 at the right
 * using swapped = tensor([[0, 1], [1, 0]]);
 * const soft = tidy(() => toArray(propagationStep(swapped, [f], [seg], { h: 1, w: 2, topk: 1 })));
 * assert.deepEqual(soft, [0, 1, 1, 0]); // the labels follow the features
 * ```
 */
export function propagationStep(
  target: Tensor,
  sources: readonly Tensor[],
  segs: readonly Tensor[],
  o: StepOptions,
): Tensor {
  const { h, w } = o, N = h * w, n = sources.length;
  if (n === 0 || segs.length !== n) {
    throw new RangeError(
      `propagationStep takes one soft label map per source frame (at least one), got ${n} and ${segs.length}`,
    );
  }
  if (target.ndim !== 2 || target.shape[0] !== N) {
    throw new RangeError(
      `propagationStep: the target features must be [${N}, D] (a ${h} x ${w} grid), got [${target.shape}]`,
    );
  }
  const C = segs[0].shape[0];
  return tidy(() => {
    const tar = normalizeRows(target); // [N, D]
    const src = normalizeRows(stack(sources, 0)); // [n, N, D]
    const D = tar.shape[1];
    // [n, N (target: queries), N (source: keys)]
    let aff = exp(div(bmm(expand(unsqueeze(tar, 0), [n, N, D]), transpose(src, 1, 2)), 0.1));
    if (o.mask) aff = mul(aff, o.mask);
    const flat = reshape(transpose(aff, 2, 1), [n * N, N]); // [n N (source), N (target)]
    const k = Math.min(o.topk ?? 5, n * N);
    const kth = amin(topk(flat, k, 0).values, 0); // [N]: each target's k-th largest
    const kept = where(lt(flat, kth), zeros([], { dtype: "f32" }), flat);
    const weights = div(kept, sum(kept, 0, { keepdim: true }));
    const labels = transpose(reshape(transpose(reshape(stack(segs, 0), [n, C, N]), 2, 1), [n * N, C]), 0, 1); // [C, n N]
    return reshape(matmul(labels, weights), [C, h, w]);
  });
}

/**
 * The official `norm_mask`: each label's map [C, H, W] with a positive maximum is shifted to start at 0 and
 * divided by its new maximum; maps whose maximum is not positive are left as they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { normMask } from "./propagate.ts";
 * using x = tensor([[[1, 3]], [[0, 0]]]);
 * assert.deepEqual(tidy(() => toArray(normMask(x))), [0, 1, 0, 0]);
 * ```
 */
export function normMask(x: Tensor): Tensor {
  const C = x.shape[0];
  return tidy(() => {
    const flat = reshape(x, [C, -1]);
    const shifted = sub(flat, amin(flat, 1, { keepdim: true }));
    const scaled = div(shifted, amax(shifted, 1, { keepdim: true }));
    return reshape(where(gt(amax(flat, 1, { keepdim: true }), 0), scaled, flat), x.shape);
  });
}

/**
 * The labels of a frame from its soft labels f32 [C, h, w], as the official script: upsampled by the patch size
 * (bilinear, half-pixel centres), {@linkcode normMask}, then the largest label per pixel (the first on ties):
 * u8 [h patch, w patch].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { labelsFromSoft } from "./propagate.ts";
 * using soft = tensor([[[0.9, 0.2]], [[0.1, 0.8]]]); // 2 labels on a 1 x 2 grid
 * assert.deepEqual(tidy(() => toArray(labelsFromSoft(soft, 2))), [0, 0, 1, 1, 0, 0, 1, 1]); // [2, 4]
 * ```
 */
export function labelsFromSoft(soft: Tensor, patch: number): Tensor {
  if (soft.ndim !== 3) throw new RangeError(`labelsFromSoft takes soft labels [C, h, w], got [${soft.shape}]`);
  if (soft.shape[0] > 256) throw new RangeError(`labelsFromSoft: at most 256 labels fit u8, got ${soft.shape[0]}`);
  return tidy(() => {
    const up = select(interpolate(unsqueeze(soft, 0), { scaleFactor: patch, mode: "bilinear" }), 0, 0);
    return to(argmax(normMask(up), 0), "u8");
  });
}

/**
 * A video's propagation state: the first frame's features and one-hot labels, and a queue of the last
 * `nLastFrames` frames' features and soft labels. {@linkcode LabelPropagator.next} takes the next frame's
 * features, returns its soft labels and pushes it into the queue (dropping the oldest when full), as the
 * official `eval_video_tracking_davis` loop. It owns copies of what it keeps; dispose it (or `using`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, liveTensors, randn, zeros } from "../../mod.ts";
 * import { LabelPropagator } from "./propagate.ts";
 * using g = new Generator(0);
 * const before = liveTensors();
 * {
 *   using feats = randn(g, [6, 4]);
 *   using seg = zeros([2, 2, 3]);
 *   using prop = new LabelPropagator(feats, seg, { h: 2, w: 3, nLastFrames: 1 });
 *   for (let i = 0; i < 3; i++) prop.next(feats).dispose();
 *   assert.equal(prop.context, 2); // the first frame and the last one
 * }
 * assert.equal(liveTensors(), before);
 * ```
 */
export class LabelPropagator {
  #first: { feat: Tensor; seg: Tensor };
  #queue: { feat: Tensor; seg: Tensor }[] = [];
  #mask?: Tensor;
  readonly #o: Required<PropagationOptions> & { h: number; w: number };

  /**
   * Starts a video from its first frame's patch features f32 [h w, D] and soft (one-hot) labels f32 [C, h, w].
   */
  constructor(firstFeatures: Tensor, firstLabels: Tensor, o: PropagationOptions & { h: number; w: number }) {
    this.#o = { ...PROPAGATION_DEFAULTS, ...o };
    const { h, w, nLastFrames, neighborhood, topk } = this.#o;
    if (!(Number.isInteger(nLastFrames) && nLastFrames >= 0)) {
      throw new RangeError(`LabelPropagator: nLastFrames must be a whole number >= 0, got ${nLastFrames}`);
    }
    if (!(Number.isInteger(neighborhood) && neighborhood >= 0)) {
      throw new RangeError(`LabelPropagator: neighborhood must be a whole number >= 0, got ${neighborhood}`);
    }
    if (!(Number.isInteger(topk) && topk >= 1)) throw new RangeError(`LabelPropagator: topk must be >= 1, got ${topk}`);
    if (firstFeatures.ndim !== 2 || firstFeatures.shape[0] !== h * w) {
      throw new RangeError(
        `LabelPropagator: the features must be [${h * w}, D] (${h} x ${w}), got [${firstFeatures.shape}]`,
      );
    }
    if (firstLabels.ndim !== 3 || firstLabels.shape[1] !== h || firstLabels.shape[2] !== w) {
      throw new RangeError(`LabelPropagator: the labels must be [C, ${h}, ${w}], got [${firstLabels.shape}]`);
    }
    this.#first = keep({ feat: tidy(() => add(firstFeatures, 0)), seg: tidy(() => to(firstLabels, "f32")) });
    if (neighborhood > 0) this.#mask = keep(neighborhoodMask(h, w, neighborhood));
  }

  /** How many frames the next frame looks back at (the first frame and those queued). */
  get context(): number {
    return 1 + this.#queue.length;
  }

  /** The soft labels f32 [C, h, w] of the next frame, from its patch features [h w, D]; the caller owns them. */
  next(features: Tensor): Tensor {
    const { h, w, topk, nLastFrames } = this.#o;
    const used = [this.#first, ...this.#queue];
    const soft = tidy(() =>
      propagationStep(features, used.map((u) => u.feat), used.map((u) => u.seg), { h, w, topk, mask: this.#mask })
    );
    if (nLastFrames > 0) {
      if (this.#queue.length === nLastFrames) {
        const old = this.#queue.shift()!;
        old.feat.dispose();
        old.seg.dispose();
      }
      this.#queue.push(keep({ feat: tidy(() => add(features, 0)), seg: tidy(() => add(soft, 0)) }));
    }
    return soft;
  }

  /** Frees what the propagator holds. */
  dispose(): void {
    for (const u of [this.#first, ...this.#queue]) {
      u.feat.dispose();
      u.seg.dispose();
    }
    this.#queue = [];
    this.#mask?.dispose();
  }

  /** Frees what the propagator holds. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
