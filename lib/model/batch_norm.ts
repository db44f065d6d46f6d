/**
 * Batch norm as the official code runs it: `nn.SyncBatchNorm`, which on one
 * process (or outside training) is plain batch norm, and on several processes
 * normalises each rank's batch with the statistics of the global batch, so
 * that N processes of batch B train what one process of batch N x B would.
 *
 * Over several ranks, the global mean and the (biased) variance are sums over
 * ranks made differentiable ({@linkcode sumOverRanks}): the mean from every
 * rank's per-channel sums and counts, then the variance from the sums of
 * squared deviations from that mean (two passes, as exact as one process's
 * batch norm). Gradients flow through both, summed over the ranks in the
 * backward pass, as PyTorch's SyncBatchNorm all-reduces its gradient sums.
 * The running statistics move by the global mean and the unbiased global
 * variance, the same on every rank.
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
} from "../../ffi/mod.ts";

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
    const counted = cat([sum(x, dims), full([1], x.size / c, { dtype: x.dtype, device: x.device })]); // [C + 1]
    const totals = sumOverRanks(counted, group);
    const count = narrow(totals, 0, c, 1); // [1]: the global batch's values per channel
    const mean = div(narrow(totals, 0, 0, c), count); // [C]
    const centered = sub(x, reshape(mean, perChannel));
    const variance = div(sumOverRanks(sum(mul(centered, centered), dims), group), count); // [C], biased
    let output = mul(centered, reshape(rsqrt(add(variance, eps)), perChannel));
    if (o.weight) output = mul(output, reshape(o.weight, perChannel));
    if (o.bias) output = add(output, reshape(o.bias, perChannel));
    if (!o.runningMean || !o.runningVar) return { output };
    const unbiased = div(mul(variance, count), sub(count, 1));
    const moved = (running: Tensor, batch: Tensor) => add(mul(running, 1 - momentum), mul(detach(batch), momentum)); // PyTorch's momentum convention
    return { output, runningMean: moved(o.runningMean, mean), runningVar: moved(o.runningVar, unbiased) };
  });
}
