/**
 * Batches of a dataset for an epoch: a seeded shuffle per epoch, fixed-size
 * batches, drop_last, and prefetching (the next batches load while the
 * current one is used; folder datasets decode on native threads meanwhile).
 * Unreadable files are skipped, and reported once per epoch.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose } from "../../mod.ts";
 * import { fashionMnist } from "./idx.ts";
 * import { batches } from "./loader.ts";
 * using ds = fashionMnist("test"); // needs: apt-get install dataset-fashion-mnist
 * let seen = 0;
 * for await (const b of batches(ds, 0, { batchSize: 256, seed: 0 })) {
 *   seen += b.indices.length;
 *   dispose([b.images, b.labels]);
 * }
 * assert.equal(seen, 39 * 256); // whole batches only: the last 16 images are dropped
 * ```
 * @module
 */
import { Generator, randperm, streamSeed, tidy, toArray } from "../../ffi/mod.ts";
import type { Batch, Dataset } from "./dataset.ts";

/** Options of {@linkcode batches}. */
export interface LoaderOptions {
  /** Items per batch. */
  batchSize: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** Seed of the shuffles; epoch e uses a stream derived from (seed, e). */
  seed?: number;
  /** Drop the last, smaller batch (default true). */
  dropLast?: boolean;
  /** Batches loaded ahead (default 2). */
  prefetch?: number;
  /** Skip the epoch's first N batches (to resume mid-epoch). */
  start?: number;
  /** This process's rank: it takes its shard of the epoch (see {@linkcode shardOrder}; default 0). */
  rank?: number;
  /** How many ranks share the epoch (default 1: the whole epoch). */
  worldSize?: number;
  /** Called once per epoch with the files that could not be decoded, and why (see {@linkcode skippedWarning}). */
  onSkipped?: (files: string[], why: string) => void;
}

/**
 * The warning for files that could not be decoded: how many, where (`in epoch 3`), why (the first file of each
 * kind of reason, up to three kinds, as the loader gives it), the first ten.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { skippedWarning } from "./loader.ts";
 * assert.equal(
 *   skippedWarning(["a.png"], "a.png: not a readable image", "in epoch 0"),
 *   "warning: skipped 1 unreadable image file(s) in epoch 0 (a.png: not a readable image): a.png",
 * );
 * ```
 */
export function skippedWarning(files: readonly string[], why: string, where: string): string {
  const shown = files.slice(0, 10).join(", ") + (files.length > 10 ? `, and ${files.length - 10} more` : "");
  return `warning: skipped ${files.length} unreadable image file(s) ${where} (${why}): ${shown}`;
}

/**
 * The item order of an epoch: a permutation from (seed, epoch), or 0..n-1 without shuffling.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { epochOrder } from "./loader.ts";
 * const order = epochOrder(10, 3, { seed: 0 });
 * assert.deepEqual([...order].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]); // a permutation
 * assert.deepEqual(epochOrder(10, 3, { seed: 0 }), order); // the same for the same seed and epoch
 * assert.deepEqual(epochOrder(4, 3, { shuffle: false }), [0, 1, 2, 3]);
 * ```
 */
export function epochOrder(n: number, epoch: number, o: { shuffle?: boolean; seed?: number } = {}): number[] {
  if (o.shuffle === false) return Array.from({ length: n }, (_, i) => i);
  using g = new Generator(streamSeed(o.seed ?? 0, epoch));
  return tidy(() => toArray(randperm(g, n)));
}

/**
 * One rank's shard of an epoch's order, as PyTorch's `DistributedSampler`
 * (which the official code uses): the same order on every rank, padded with
 * its first items to a multiple of the world size, and rank r takes every
 * world-size-th item from the r-th. Batch b of rank r then holds items r, r +
 * W, r + 2W, ... of the global batch b (W x the batch size) of the padded
 * order, so the ranks' batches together are the global one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shardOrder } from "./loader.ts";
 * const order = [4, 0, 3, 1, 2]; // 5 items over 2 ranks: padded with the first
 * assert.deepEqual(shardOrder(order, 0, 2), [4, 3, 2]);
 * assert.deepEqual(shardOrder(order, 1, 2), [0, 1, 4]);
 * assert.deepEqual(shardOrder(order, 0, 1), order);
 * ```
 */
export function shardOrder(order: readonly number[], rank: number, worldSize: number): number[] {
  if (!(Number.isInteger(worldSize) && worldSize >= 1)) {
    throw new RangeError(`world size must be a positive integer, got ${worldSize}`);
  }
  if (!(Number.isInteger(rank) && rank >= 0 && rank < worldSize)) {
    throw new RangeError(`rank must be an integer in 0..${worldSize - 1}, got ${rank}`);
  }
  if (worldSize === 1) return [...order];
  const total = Math.ceil(order.length / worldSize) * worldSize;
  const padded = Array.from({ length: total }, (_, i) => order[i % order.length]);
  return padded.filter((_, i) => i % worldSize === rank);
}

/** The index lists of an epoch's batches (of this rank's shard, with `rank` and `worldSize`). */
export function batchIndices(n: number, epoch: number, o: LoaderOptions): number[][] {
  if (!(Number.isInteger(o.batchSize) && o.batchSize > 0)) {
    throw new RangeError(`batch size must be a positive integer, got ${o.batchSize}`);
  }
  const order = shardOrder(epochOrder(n, epoch, o), o.rank ?? 0, o.worldSize ?? 1);
  const out: number[][] = [];
  for (let i = 0; i < order.length; i += o.batchSize) {
    const b = order.slice(i, i + o.batchSize);
    if (b.length < o.batchSize && (o.dropLast ?? true)) break;
    out.push(b);
  }
  return out;
}

/**
 * The epoch's batches, loaded ahead of use. The caller owns each batch's tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "../../mod.ts";
 * import { tensorDataset } from "./dataset.ts";
 * import { batches } from "./loader.ts";
 * using images = ones([10, 1, 4, 4], { dtype: "u8" });
 * using ds = tensorDataset(images);
 * const sizes: number[] = [];
 * for await (const b of batches(ds, 0, { batchSize: 4, dropLast: false })) {
 *   sizes.push(b.images.shape[0]);
 *   b.images.dispose();
 * }
 * assert.deepEqual(sizes, [4, 4, 2]);
 * ```
 */
export async function* batches(ds: Dataset, epoch: number, o: LoaderOptions): AsyncGenerator<Batch> {
  const plan = batchIndices(ds.length, epoch, o).slice(o.start ?? 0);
  const ahead = Math.max(1, o.prefetch ?? 2);
  const queue: Promise<Batch>[] = [];
  const skipped: string[] = [];
  // The first file of each kind of reason (numbers aside), so that a fixable kind is not hidden behind another.
  const kinds = new Map<string, string>();
  let next = 0;
  const fill = () => {
    while (queue.length < ahead && next < plan.length) queue.push(ds.load(plan[next++]));
  };
  try {
    fill();
    while (queue.length > 0) {
      const batch = await queue.shift()!;
      fill();
      skipped.push(...batch.failed);
      const reasons = batch.reasons ?? (batch.firstError ? [batch.firstError] : []);
      reasons.forEach((reason, k) => {
        const kind = reason.replace(/\d+/g, "N");
        if (kinds.size < 3 && !kinds.has(kind)) {
          kinds.set(kind, batch.reasons ? `${batch.failed[k]}: ${reason}` : reason);
        }
      });
      yield batch;
    }
  } finally {
    // An abandoned epoch must not leak the batches already loading.
    for (const p of queue) p.then((b) => [b.images, b.labels].forEach((t) => t?.dispose()), () => {});
    if (skipped.length > 0) {
      const why = [...kinds.values()].join("; ");
      if (o.onSkipped) o.onSkipped(skipped, why);
      else console.warn(skippedWarning(skipped, why, `in epoch ${epoch}`));
    }
  }
}
