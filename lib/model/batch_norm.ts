/**
 * Batch norm as the official code runs it: `nn.SyncBatchNorm`, which on one
 * process (or outside training) is plain batch norm, and on several processes
 * normalises each rank's batch with the statistics of the global batch, so
 * that N processes of batch B train what one process of batch N x B would.
 *
 * Over several ranks, each rank's per-channel count, mean and sum of squared
 * deviations (two passes over its own rows) go to every rank in one
 * differentiable collective ({@linkcode sumOverRanks} of a table with one row
 * per rank, each rank filling its own), and are combined exactly as Chan's
 * parallel variance does: PyTorch's SyncBatchNorm gathers each rank's mean
 * and inverse deviation the same way. Gradients flow through the table,
 * summed over the ranks in the backward pass (one more collective), as
 * PyTorch's SyncBatchNorm all-reduces its gradient sums. The running
 * statistics move by the global mean and the unbiased global variance, the
 * same on every rank.
 *
 * @example A world of one: plain batch norm
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, distributedBackends, Generator, ones, ProcessGroup, randn, toArray, zeros } from "../../mod.ts";
 * import { syncBatchNorm } from "./batch_norm.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   using g = new Generator(0);
 *   using x = randn(g, [6, 3, 2, 2]);
 *   using m = zeros([3]);
 *   using v = ones([3]);
 *   const r = syncBatchNorm(x, { runningMean: m, runningVar: v, training: true }, group);
 *   assert.deepEqual(r.output.shape, [6, 3, 2, 2]);
 *   assert.equal(toArray(r.runningMean!).length, 3);
 *   dispose(r);
 * }
 * ```
 * @module
 */
import {
  add,
  batchNorm,
  type BatchNormOptions,
  cat,
  detach,
  div,
  full,
  mul,
  narrow,
  type ProcessGroup,
  reshape,
  rsqrt,
  sub,
  sum,
  sumOverRanks,
  type Tensor,
  tidy,
  zerosLike,
} from "../../ffi/mod.ts";

const squared = (t: Tensor) => mul(t, t);

/**
 * Batch normalisation over dim 1 of `x` ([B, C] or [B, C, ...]), with the
 * statistics of every rank's batch when `group` spans several processes and
 * `o.training` is set; otherwise exactly {@linkcode batchNorm}. Pure: the
 * updated running statistics come back as new tensors. Every rank calls it
 * with tensors of the same channels, in the same order.
 */
export function syncBatchNorm(
  x: Tensor,
  o: BatchNormOptions,
  group?: ProcessGroup,
): { output: Tensor; runningMean?: Tensor; runningVar?: Tensor } {
  if (!o.training || !group || group.worldSize === 1) return batchNorm(x, o);
  const momentum = o.momentum ?? 0.1, eps = o.eps ?? 1e-5;
  const c = x.shape[1];
  const dims = [0, ...x.shape.slice(2).map((_, i) => i + 2)];
  const perChannel = [1, c, ...x.shape.slice(2).map(() => 1)]; // [1, C, 1, ...]
  return tidy(() => {
    const n = x.size / c; // this rank's values per channel
    const localMean = div(sum(x, dims), n); // [C]
    const deviations = sum(squared(sub(x, reshape(localMean, perChannel))), dims); // [C]
    const own = cat([localMean, deviations, full([1], n, { dtype: x.dtype, device: x.device })]); // [2C + 1]
    const row = (r: number) => r === group.rank ? own : zerosLike(own);
    const table = reshape(sumOverRanks(cat([...Array(group.worldSize).keys()].map(row)), group), [-1, 2 * c + 1]);
    const counts = narrow(table, 1, 2 * c, 1); // [W, 1]
    const means = narrow(table, 1, 0, c); // [W, C]
    const count = sum(counts, 0); // [1]: the global batch's values per channel
    const mean = div(sum(mul(means, counts), 0), count); // [C]
    const spread = sum(mul(squared(sub(means, mean)), counts), 0); // [C]: between the ranks' means
    const variance = div(add(sum(narrow(table, 1, c, c), 0), spread), count); // [C], biased
    const centered = sub(x, reshape(mean, perChannel));
    let output = mul(centered, reshape(rsqrt(add(variance, eps)), perChannel));
    if (o.weight) output = mul(output, reshape(o.weight, perChannel));
    if (o.bias) output = add(output, reshape(o.bias, perChannel));
    if (!o.runningMean || !o.runningVar) return { output };
    const unbiased = div(mul(variance, count), sub(count, 1));
    // PyTorch's momentum convention: the new batch's weight is `momentum`.
    const moved = (running: Tensor, batch: Tensor) => add(mul(running, 1 - momentum), mul(detach(batch), momentum));
    return { output, runningMean: moved(o.runningMean, mean), runningVar: moved(o.runningVar, unbiased) };
  });
}
