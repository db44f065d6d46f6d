/**
 * Data-parallel collectives as pure functions over records of tensors: the
 * process group is an explicit value passed in, and each function returns new
 * tensors, leaving its inputs as they were. A one-process run passes no group
 * and calls none of them.
 *
 * @example One process: a world of one (a real run starts one process per rank)
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, distributedBackends, ProcessGroup, tensor, toArray } from "../../mod.ts";
 * import { allReduceMean } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   const grads = { "head.weight": tensor([0.5, -2]) };
 *   const mean = allReduceMean(grads, group);
 *   assert.deepEqual(toArray(mean["head.weight"]), [0.5, -2]);
 *   dispose([grads, mean]);
 * }
 * ```
 * @module
 */
import { allReduce, broadcast, type ProcessGroup, type Tensor, tensor, tidy, toArray } from "../../ffi/mod.ts";
import { type Flat, mapTree, stateDict } from "../weights/tree.ts";

function overKeys(flat: Flat, f: (ts: Tensor[]) => Tensor[]): Flat {
  const keys = Object.keys(flat);
  const out = f(keys.map((k) => flat[k]));
  return Object.fromEntries(keys.map((k, i) => [k, out[i]]));
}

/**
 * The mean over the ranks of each gradient (as DDP averages them after
 * backward), coalesced into buckets: one collective per bucket, not per
 * tensor. Every rank passes the same keys with the same shapes.
 */
export function allReduceMean(grads: Flat, group: ProcessGroup): Flat {
  return overKeys(grads, (ts) => allReduce(ts, group, { op: "mean" }));
}

/**
 * The sum over the ranks of each tensor (the teacher-output sums of the
 * center update, counts, metrics).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, distributedBackends, ProcessGroup, tensor, toArray } from "../../mod.ts";
 * import { allReduceSum } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   const sums = allReduceSum({ center: tensor([[1, 2]]) }, group);
 *   assert.deepEqual(toArray(sums.center), [1, 2]);
 *   dispose(sums);
 * }
 * ```
 */
export function allReduceSum(flat: Flat, group: ProcessGroup): Flat {
  return overKeys(flat, (ts) => allReduce(ts, group, { op: "sum" }));
}

/**
 * Rank `root`'s tensors of a tree (parameters, a whole training state) on
 * every rank: a tree of the same structure with new tensors, its numbers and
 * strings as they were. Every rank passes a tree of the same structure and
 * shapes (the others' values are ignored): this is how every rank starts from
 * the same weights.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, distributedBackends, ProcessGroup, tensor, toArray } from "../../mod.ts";
 * import { broadcastTree } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   const params = { blocks: [{ w: tensor([1, 2]) }], step: 3 };
 *   const same = broadcastTree(params, group);
 *   assert.deepEqual([toArray(same.blocks[0].w), same.step], [[1, 2], 3]);
 *   dispose([params, same]);
 * }
 * ```
 */
export function broadcastTree<T extends object>(tree: T, group: ProcessGroup, root = 0): T {
  const flat = overKeys(stateDict(tree), (ts) => broadcast(ts, group, { root }));
  return mapTree(tree, (_, key) => flat[key]);
}

/**
 * Rank `root`'s numbers on every rank (a step count, a random stream's
 * counter), exactly: integers up to 2^53 survive as f64.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { distributedBackends, ProcessGroup } from "../../mod.ts";
 * import { broadcastNumbers } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   assert.deepEqual(broadcastNumbers([937, 2 ** 40], group), [937, 2 ** 40]);
 * }
 * ```
 */
export function broadcastNumbers(values: readonly number[], group: ProcessGroup, root = 0): number[] {
  return tidy(() => toArray(broadcast([tensor(new Float64Array(values))], group, { root })[0]));
}

/**
 * Whether any rank says yes: every rank calls it with its own answer and
 * gets the same result (so that all of them stop at the same step when one
 * is asked to).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { distributedBackends, ProcessGroup } from "../../mod.ts";
 * import { anyRank } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   assert.equal(anyRank(true, group), true);
 * }
 * ```
 */
export function anyRank(flag: boolean, group: ProcessGroup): boolean {
  return tidy(() => toArray(allReduce([tensor(new Float64Array([flag ? 1 : 0]))], group)[0])[0] > 0);
}

/**
 * Every rank's number, by rank: each rank passes its own and all get the
 * same list (a stop request's exit code, say).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { distributedBackends, ProcessGroup } from "../../mod.ts";
 * import { gatherNumbers } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   assert.deepEqual(gatherNumbers(130, group), [130]);
 * }
 * ```
 */
export function gatherNumbers(value: number, group: ProcessGroup): number[] {
  const mine = new Float64Array(group.worldSize);
  mine[group.rank] = value;
  return tidy(() => toArray(allReduce([tensor(mine)], group)[0]));
}

/**
 * The ranks whose `text` (a configuration's hash) differs from rank 0's;
 * every rank gets the same list. Rank 0 broadcasts its text's bytes, each
 * rank compares, and the verdicts are summed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { distributedBackends, ProcessGroup } from "../../mod.ts";
 * import { ranksDiffering } from "./collectives.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   assert.deepEqual(ranksDiffering("3f2a", group), []);
 * }
 * ```
 */
export function ranksDiffering(text: string, group: ProcessGroup): number[] {
  const bytes = new TextEncoder().encode(text);
  const width = 256;
  if (bytes.length > width) throw new RangeError(`ranksDiffering compares up to ${width} bytes, got ${bytes.length}`);
  return tidy(() => {
    const mine = new Float64Array(width + 1);
    mine.set(bytes);
    mine[width] = bytes.length;
    const theirs = toArray(broadcast([tensor(mine)], group)[0]);
    const differs = theirs.some((v, i) => v !== mine[i]);
    return gatherNumbers(differs ? 1 : 0, group).flatMap((v, r) => (v > 0 ? [r] : []));
  });
}
