/**
 * The fused augmentation kernel of the shim (`native/augment.cpp`): every
 * view of a batch in one call, each view cropped, resized, jittered, blurred
 * and normalised in one pass over its pixels, on native threads over the
 * views. The plan (one record of {@linkcode AUGMENT_RECORD} numbers per view)
 * is made by `lib/augment/views.ts`; nothing here draws. The `Async` twin runs
 * off the JavaScript thread, so a batch's views are made while a training
 * step runs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_RECORD, augmentBatch, dispose, full } from "../mod.ts";
 * using images = full([1, 1, 8, 8], 255, { dtype: "u8" }); // one white 8 x 8 image
 * const plan = new Float64Array(AUGMENT_RECORD);
 * plan.set([0, 0, 0, 8, 8]); // sample 0, the whole image; no flip, jitter, gray, blur or solarization
 * const [views] = augmentBatch(images, plan, [[4, 1]], { mean: [0.5], std: [0.5] }); // one 4 x 4 view
 * assert.deepEqual(views.shape, [1, 1, 4, 4]);
 * dispose(views);
 * ```
 * @module
 */
import { native, newContext } from "../library.ts";
import { getNumThreads } from "../runtime.ts";
import { keep, type Tensor, wrapList } from "../tensor.ts";
import { alias } from "./shape.ts";

/**
 * The numbers of one view's record in a plan: sample, crop top, left,
 * height, width, flip, jitter op count, 4 op codes in order (0 brightness,
 * 1 contrast, 2 saturation, 3 hue), 4 factors by op code, gray, blur sigma
 * (0: none), solarize.
 */
export const AUGMENT_RECORD = 18;

/** What every view of an {@linkcode augmentBatch} call shares. */
export interface AugmentBatchOptions {
  /** Per-channel normalisation mean. */
  mean: readonly number[];
  /** Per-channel normalisation std. */
  std: readonly number[];
  /** Crop resampling (default bicubic). */
  interpolation?: "bicubic" | "bilinear";
  /** Threads over the views (default: libtorch's intra-op thread count, as `setNumThreads` set it). */
  threads?: number;
}

function callArgs(
  images: Tensor,
  plan: Float64Array<ArrayBuffer>,
  runs: readonly [number, number][],
  o: AugmentBatchOptions,
) {
  if (images.device !== "cpu") throw new Error(`augmentBatch: the images must be on the CPU, not ${images.device}`);
  const C = images.shape[1];
  if (o.mean.length !== C || o.std.length !== C) {
    throw new Error(`normalisation has ${o.mean.length} means and ${o.std.length} stds for ${C}-channel images`);
  }
  const records = runs.reduce((n, [, count]) => n + count, 0);
  if (plan.length !== records * AUGMENT_RECORD) {
    throw new RangeError(`augmentBatch: a plan of ${plan.length} numbers for ${records} views`);
  }
  const runList = new Float64Array(runs.flat());
  const norm = new Float64Array([...o.mean, ...o.std]);
  const mode = o.interpolation === "bilinear" ? 1 : 2;
  // Resolved here, on the caller's thread: the nonblocking call runs on a fresh native thread, where libtorch's
  // count is OpenMP's default, not setNumThreads'.
  const threads = o.threads ?? getNumThreads();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`augmentBatch: threads must be an integer >= 1, got ${threads}`);
  }
  return [images.ptr, plan, records, runList, runList.length, norm, mode, threads] as const;
}

/**
 * The views of a batch of images (u8 [B, C, H, W], or f32 in [0, 1]), as
 * planned: one f32 tensor [views, C, side, side] per run of `runs` (pairs of
 * side and view count), whose records follow each other in `plan`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_RECORD, augmentBatch, dispose, ones, tidy, toArray } from "../mod.ts";
 * using images = ones([2, 3, 16, 16]);
 * const plan = new Float64Array(2 * AUGMENT_RECORD);
 * plan.set([1, 4, 4, 8, 8, 1], 0); // sample 1's centre, flipped
 * plan.set([0, 0, 0, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], AUGMENT_RECORD); // sample 0, solarized
 * const [big, small] = augmentBatch(images, plan, [[16, 1], [8, 1]], { mean: [0, 0, 0], std: [1, 1, 1] });
 * assert.deepEqual([big.shape, small.shape], [[1, 3, 16, 16], [1, 3, 8, 8]]);
 * assert.ok(tidy(() => toArray(big)).every((v) => Math.abs(v - 1) < 1e-6)); // a white crop stays white
 * assert.ok(tidy(() => toArray(small)).every((v) => v === 0)); // solarized white is black
 * dispose([big, small]);
 * ```
 */
export function augmentBatch(
  images: Tensor,
  plan: Float64Array<ArrayBuffer>,
  runs: readonly [number, number][],
  o: AugmentBatchOptions,
): Tensor[] {
  const c = newContext();
  return wrapList(native.augment_views(c, ...callArgs(images, plan, runs, o)), "augmentBatch", c);
}

/**
 * {@linkcode augmentBatch} off the JavaScript thread: the promise resolves
 * when the views are made. The call holds its own handle on `images`, which
 * the caller may dispose meanwhile.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_RECORD, augmentBatchAsync, dispose, ones } from "../mod.ts";
 * using images = ones([1, 1, 12, 12]);
 * const plan = new Float64Array(AUGMENT_RECORD);
 * plan.set([0, 2, 2, 8, 8]);
 * const [views] = await augmentBatchAsync(images, plan, [[6, 1]], { mean: [0], std: [1], threads: 1 });
 * assert.deepEqual(views.shape, [1, 1, 6, 6]);
 * dispose(views);
 * ```
 */
export async function augmentBatchAsync(
  images: Tensor,
  plan: Float64Array<ArrayBuffer>,
  runs: readonly [number, number][],
  o: AugmentBatchOptions,
): Promise<Tensor[]> {
  const c = newContext();
  // The native thread reads the images after this function has returned to the caller, who may dispose them (or a
  // scope may): it reads a handle of its own, outside any scope, freed when the views are made.
  const held = keep(alias(images));
  try {
    const list = await native.augment_views_async(c, ...callArgs(held, plan, runs, o));
    return wrapList(list, "augmentBatchAsync", c);
  } finally {
    held.dispose();
  }
}
