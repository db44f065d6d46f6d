/**
 * What a run learns about its data before training: the per-channel
 * normalisation statistics, and a dataset cut to its first images.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full } from "../../mod.ts";
 * import { tensorDataset } from "./dataset.ts";
 * import { channelStats, firstImages } from "./stats.ts";
 * using images = full([4, 1, 2, 2], 51, { dtype: "u8" });
 * using ds = tensorDataset(images, { labels: new Int32Array([0, 1, 0, 1]) });
 * const stats = await channelStats(ds);
 * assert.ok(Math.abs(stats.mean[0] - 0.2) < 1e-6 && stats.std[0] === 1e-3); // constant images: the std's floor
 * assert.deepEqual([firstImages(ds, 3).length, firstImages(ds, 3).labels], [3, new Int32Array([0, 1, 0])]);
 * ```
 * @module
 */
import { dispose, mean, sqrt, tidy, to, toArray, variance } from "../../ffi/mod.ts";
import type { Dataset } from "./dataset.ts";

/** Per-channel mean and std (floored at 1e-3) of the first `n` images of a dataset, in [0, 1]. */
export async function channelStats(ds: Dataset, n = 2048): Promise<{ mean: number[]; std: number[] }> {
  const b = await ds.load(Array.from({ length: Math.min(n, ds.length) }, (_, i) => i));
  try {
    return tidy(() => {
      const x = to(b.images, "f32");
      const m = toArray(mean(x, [0, 2, 3])).map((v) => v / 255);
      const s = toArray(sqrt(variance(x, [0, 2, 3], { correction: 0 }))).map((v) => Math.max(v / 255, 1e-3));
      return { mean: m, std: s };
    });
  } finally {
    dispose([b.images, b.labels]);
  }
}

/** The first `n` images of a dataset (all of them when `n` is 0 or not smaller); it shares the dataset's tensors. */
export function firstImages(ds: Dataset, n: number): Dataset {
  return n > 0 && n < ds.length ? { ...ds, length: n, labels: ds.labels?.subarray(0, n) } : ds;
}
