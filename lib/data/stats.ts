/**
 * What a run learns about its data before training: that its images can be
 * read, the per-channel normalisation statistics, and a dataset cut to its
 * first images.
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

/**
 * No image of a dataset (or of the part of it that was read) could be decoded: every file was skipped as
 * unreadable. Training or evaluating on it would run on nothing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UnreadableDataError } from "./stats.ts";
 * const e = new UnreadableDataError("none of the 3 images of folder:x could be read", "x/a.png: not a readable image");
 * assert.equal(e.name, "UnreadableDataError");
 * assert.equal(e.message, "none of the 3 images of folder:x could be read (first: x/a.png: not a readable image)");
 * ```
 */
export class UnreadableDataError extends Error {
  /** What could not be read, and the first file's reason (`path: reason`). */
  constructor(what: string, readonly firstError: string) {
    super(firstError ? `${what} (first: ${firstError})` : what);
    this.name = "UnreadableDataError";
  }
}

/**
 * Checks that a dataset has images that decode: reads its first images, 64 at a time, until one batch holds a
 * readable image, and throws an {@linkcode UnreadableDataError} when none of the first `n` (all of them when
 * there are fewer) can be read, as when every file of an image folder is broken or in a format stb does not
 * read. Cheap on usable data (one batch).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { full, writeImage } from "../../mod.ts";
 * import { imageFolder } from "./folder.ts";
 * import { checkReadable, UnreadableDataError } from "./stats.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(join(dir, "a.png"), "not an image");
 * Deno.writeTextFileSync(join(dir, "b.jpg"), "nor this");
 * using broken = imageFolder(dir, { side: 8 });
 * await assert.rejects(checkReadable(broken), UnreadableDataError);
 * using gray = full([8, 8, 3], 128, { dtype: "u8" });
 * writeImage(join(dir, "c.png"), gray);
 * using fixed = imageFolder(dir, { side: 8 });
 * await checkReadable(fixed); // one of the three decodes
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function checkReadable(ds: Dataset, n = 2048): Promise<void> {
  const count = Math.min(n, ds.length);
  let firstError = "";
  for (let at = 0; at < count; at += 64) {
    const b = await ds.load(Array.from({ length: Math.min(64, count - at) }, (_, i) => at + i));
    const read = b.images.shape[0];
    dispose([b.images, b.labels]);
    if (read > 0) return;
    firstError ||= b.firstError;
  }
  throw new UnreadableDataError(
    count === ds.length
      ? `none of the ${count} images of ${ds.name} could be read`
      : `none of the first ${count} of the ${ds.length} images of ${ds.name} could be read`,
    firstError,
  );
}

/**
 * Per-channel mean and std (floored at 1e-3) of the first `n` images of a dataset, in [0, 1]; an
 * {@linkcode UnreadableDataError} when none of them can be read.
 */
export async function channelStats(ds: Dataset, n = 2048): Promise<{ mean: number[]; std: number[] }> {
  const b = await ds.load(Array.from({ length: Math.min(n, ds.length) }, (_, i) => i));
  try {
    if (b.images.shape[0] === 0) {
      throw new UnreadableDataError(
        `none of the first ${b.failed.length} images of ${ds.name} (its statistics' sample) could be read`,
        b.firstError,
      );
    }
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
