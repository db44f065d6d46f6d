/**
 * Shape ops: views and copies that rearrange elements. Each returns a new
 * handle; views share memory with their input, which is safe because no op in
 * this project writes into an existing tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, reshape, tidy, toArray, transpose } from "../mod.ts";
 * const v = tidy(() => toArray(transpose(reshape(arange(0, 6), [2, 3]), 0, 1)));
 * assert.deepEqual(v, [0, 3, 1, 4, 2, 5]);
 * ```
 * @module
 */
import { checked, ctx, native } from "../library.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { handles, ints } from "./args.ts";

/**
 * The same elements in a new shape (one size may be -1).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, reshape } from "../mod.ts";
 * using x = ones([2, 3, 4]);
 * using y = reshape(x, [2, -1]);
 * assert.deepEqual(y.shape, [2, 12]);
 * ```
 */
export function reshape(a: Tensor, shape: readonly number[]): Tensor {
  return wrap(native.reshape(ctx, a.ptr, ints(shape), shape.length), "reshape");
}
/**
 * Reorders the dims.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, permute } from "../mod.ts";
 * using x = ones([2, 3, 4, 5]);
 * using y = permute(x, [0, 2, 1, 3]);
 * assert.deepEqual(y.shape, [2, 4, 3, 5]);
 * ```
 */
export function permute(a: Tensor, dims: readonly number[]): Tensor {
  return wrap(native.permute(ctx, a.ptr, ints(dims), dims.length), "permute");
}
/**
 * Swaps two dims.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray, transpose } from "../mod.ts";
 * using k = tensor([[1, 2, 3], [4, 5, 6]]);
 * assert.deepEqual(tidy(() => toArray(transpose(k, -2, -1))), [1, 4, 2, 5, 3, 6]); // [3, 2]
 * ```
 */
export function transpose(a: Tensor, dim0: number, dim1: number): Tensor {
  return wrap(native.transpose(ctx, a.ptr, dim0, dim1), "transpose");
}
/**
 * `length` elements of `dim` from `start`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { narrow, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 2, 3], [4, 5, 6]]);
 * assert.deepEqual(tidy(() => toArray(narrow(x, 1, 1, 2))), [2, 3, 5, 6]); // [2, 2]
 * ```
 */
export function narrow(a: Tensor, dim: number, start: number, length: number): Tensor {
  return wrap(native.narrow(ctx, a.ptr, dim, start, length), "narrow");
}
/**
 * Elements `start` to `end` (exclusive) by `step` along `dim`, as `x[start:end:step]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, slice, tidy, toArray } from "../mod.ts";
 * using x = arange(0, 6);
 * assert.deepEqual(tidy(() => [slice(x, 0, 1), slice(x, 0, 0, 6, 2)].map(toArray)), [[1, 2, 3, 4, 5], [0, 2, 4]]);
 * ```
 */
export function slice(a: Tensor, dim: number, start = 0, end?: number, step = 1): Tensor {
  // To the end of the dim: its size (an out-of-range dim is left for libtorch to name).
  const stop = end ?? a.shape.at(dim) ?? 0;
  return wrap(native.slice(ctx, a.ptr, dim, start, stop, step), "slice");
}
/**
 * The slice at `index` of `dim`, with that dim removed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, select } from "../mod.ts";
 * using tokens = ones([2, 17, 192]); // [B, 1 + patches, D]
 * using cls = select(tokens, 1, 0); // the CLS token
 * assert.deepEqual(cls.shape, [2, 192]);
 * ```
 */
export function select(a: Tensor, dim: number, index: number): Tensor {
  return wrap(native.select(ctx, a.ptr, dim, index), "select");
}
/**
 * Picks entries of `dim` by an i64 index vector.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { indexSelect, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4], [5, 6]]);
 * using idx = tensor([2, 0], { dtype: "i64" });
 * assert.deepEqual(tidy(() => toArray(indexSelect(x, 0, idx))), [5, 6, 1, 2]);
 * ```
 */
export function indexSelect(a: Tensor, dim: number, index: Tensor): Tensor {
  return wrap(native.index_select(ctx, a.ptr, dim, index.ptr), "indexSelect");
}
/**
 * out[i][j] = a[i][index[i][j]] for dim 1, and so on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gather, tensor, tidy, toArray } from "../mod.ts";
 * using a = tensor([[10, 11, 12], [20, 21, 22]]);
 * using idx = tensor([[2, 0], [1, 1]], { dtype: "i64" });
 * assert.deepEqual(tidy(() => toArray(gather(a, 1, idx))), [12, 10, 21, 21]);
 * ```
 */
export function gather(a: Tensor, dim: number, index: Tensor): Tensor {
  return wrap(native.gather(ctx, a.ptr, dim, index.ptr), "gather");
}
/**
 * Joins tensors along an existing dim.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cat, ones, zeros } from "../mod.ts";
 * using a = ones([2, 3]);
 * using b = zeros([1, 3]);
 * using c = cat([a, b], 0);
 * assert.deepEqual(c.shape, [3, 3]);
 * ```
 */
export function cat(ts: readonly Tensor[], dim = 0): Tensor {
  return wrap(native.cat(ctx, handles(ts), ts.length, dim), "cat");
}
/**
 * Joins tensors along a new dim.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, stack, zeros } from "../mod.ts";
 * using a = ones([2, 3]);
 * using b = zeros([2, 3]);
 * using c = stack([a, b], 0);
 * assert.deepEqual(c.shape, [2, 2, 3]);
 * ```
 */
export function stack(ts: readonly Tensor[], dim = 0): Tensor {
  return wrap(native.stack(ctx, handles(ts), ts.length, dim), "stack");
}
/**
 * Splits into `chunks` nearly equal parts along `dim` (the last may be smaller).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, chunk, tidy, toArray } from "../mod.ts";
 * using out = arange(0, 5);
 * assert.deepEqual(tidy(() => chunk(out, 2, 0).map(toArray)), [[0, 1, 2], [3, 4]]);
 * ```
 */
export function chunk(a: Tensor, chunks: number, dim = 0): Tensor[] {
  return wrapList(native.chunk(ctx, a.ptr, chunks, dim), "chunk");
}
/**
 * The slices along `dim`, as views: `select(a, dim, i)` for every i. Its gradient is one stack of the slices'
 * gradients, where separate selects each scatter theirs into a zero tensor of the whole shape and sum them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray, unbind } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4], [5, 6]]);
 * assert.deepEqual(tidy(() => unbind(x, 1).map(toArray)), [[1, 3, 5], [2, 4, 6]]);
 * ```
 */
export function unbind(a: Tensor, dim = 0): Tensor[] {
  return wrapList(native.unbind(ctx, a.ptr, dim), "unbind");
}
/**
 * Splits into parts of the given sizes, or of one size (the last may be smaller).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, split, tidy, toArray } from "../mod.ts";
 * using x = arange(0, 5);
 * assert.deepEqual(tidy(() => split(x, [2, 3], 0).map(toArray)), [[0, 1], [2, 3, 4]]);
 * assert.deepEqual(tidy(() => split(x, 2).map(toArray)), [[0, 1], [2, 3], [4]]);
 * ```
 */
export function split(a: Tensor, sizes: number | readonly number[], dim = 0): Tensor[] {
  let s: readonly number[];
  if (typeof sizes === "number") {
    const n = a.shape.at(dim);
    if (n === undefined) throw new RangeError(`split: dim ${dim} out of range for shape [${a.shape}]`);
    s = Array.from({ length: Math.ceil(n / sizes) }, (_, i) => Math.min(sizes, n - i * sizes));
  } else {
    s = sizes;
  }
  return wrapList(native.split(ctx, a.ptr, ints(s), s.length, dim), "split");
}
/**
 * A broadcast view with size-1 dims stretched (-1 keeps a size).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { expand, zeros } from "../mod.ts";
 * using cls = zeros([1, 1, 192]);
 * using batch = expand(cls, [8, -1, -1]);
 * assert.deepEqual(batch.shape, [8, 1, 192]);
 * ```
 */
export function expand(a: Tensor, shape: readonly number[]): Tensor {
  return wrap(native.expand(ctx, a.ptr, ints(shape), shape.length), "expand");
}
/**
 * Tiles the tensor `times[i]` times along each dim.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { repeat, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 2]]);
 * assert.deepEqual(tidy(() => toArray(repeat(x, [2, 2]))), [1, 2, 1, 2, 1, 2, 1, 2]); // [2, 4]
 * ```
 */
export function repeat(a: Tensor, times: readonly number[]): Tensor {
  return wrap(native.repeat(ctx, a.ptr, ints(times), times.length), "repeat");
}
/**
 * Reverses the order along the given dims.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { flip, tensor, tidy, toArray } from "../mod.ts";
 * using img = tensor([[[[1, 2, 3]]]]); // [B, C, H, W]
 * assert.deepEqual(tidy(() => toArray(flip(img, [3]))), [3, 2, 1]); // a mirror image
 * ```
 */
export function flip(a: Tensor, dims: readonly number[]): Tensor {
  return wrap(native.flip(ctx, a.ptr, ints(dims), dims.length), "flip");
}
/**
 * Merges dims `start`..`end` into one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { flatten, ones } from "../mod.ts";
 * using x = ones([2, 3, 4, 5]);
 * using a = flatten(x, 2);
 * using b = flatten(x);
 * assert.deepEqual([a.shape, b.shape], [[2, 3, 20], [120]]);
 * ```
 */
export function flatten(a: Tensor, start = 0, end = -1): Tensor {
  return wrap(native.flatten(ctx, a.ptr, start, end), "flatten");
}
/**
 * Removes size-1 dims: one, or all when `dim` is omitted.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, squeeze } from "../mod.ts";
 * using x = ones([1, 3, 1]);
 * using a = squeeze(x, 0);
 * using b = squeeze(x);
 * assert.deepEqual([a.shape, b.shape], [[3, 1], [3]]);
 * ```
 */
export function squeeze(a: Tensor, dim?: number): Tensor {
  return dim === undefined
    ? wrap(native.squeeze_all(ctx, a.ptr), "squeeze")
    : wrap(native.squeeze(ctx, a.ptr, dim), "squeeze");
}
/**
 * Inserts a size-1 dim at `dim`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, unsqueeze } from "../mod.ts";
 * using x = ones([3, 4]);
 * using a = unsqueeze(x, 0);
 * using b = unsqueeze(x, -1);
 * assert.deepEqual([a.shape, b.shape], [[1, 3, 4], [3, 4, 1]]);
 * ```
 */
export function unsqueeze(a: Tensor, dim: number): Tensor {
  return wrap(native.unsqueeze(ctx, a.ptr, dim), "unsqueeze");
}
/**
 * The same values laid out contiguously in memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { contiguous, tensor, tidy, toArray, transpose } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4]]);
 * assert.deepEqual(tidy(() => toArray(contiguous(transpose(x, 0, 1)))), [1, 3, 2, 4]);
 * ```
 */
export function contiguous(a: Tensor): Tensor {
  return wrap(native.contiguous(ctx, a.ptr), "contiguous");
}
/**
 * A copy with its own memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { clone, copyInto, tensor, toArray, zeros } from "../mod.ts";
 * using x = zeros([2]);
 * using y = clone(x);
 * using fill = tensor([5, 6]);
 * copyInto(y, fill); // writes y's own memory only
 * assert.deepEqual([toArray(x), toArray(y)], [[0, 0], [5, 6]]);
 * ```
 */
export function clone(a: Tensor): Tensor {
  return wrap(native.clone(ctx, a.ptr), "clone");
}
/**
 * A copy of `a` with the slices `index` of `dim` replaced by `source`, as `torch.index_copy` (out of place).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { indexCopy, tensor, tidy, toArray, zeros } from "../mod.ts";
 * using x = zeros([4]);
 * using idx = tensor([3, 0], { dtype: "i64" });
 * using y = tensor([7, 8]);
 * assert.deepEqual(tidy(() => toArray(indexCopy(x, 0, idx, y))), [8, 0, 0, 7]);
 * assert.deepEqual(toArray(x), [0, 0, 0, 0]); // unchanged
 * ```
 */
export function indexCopy(a: Tensor, dim: number, index: Tensor, source: Tensor): Tensor {
  return wrap(native.index_copy(ctx, a.ptr, dim, index.ptr, source.ptr), "indexCopy");
}
/**
 * Writes `source` (broadcast) into the memory of `target`, usually a view of a
 * tensor the caller has just made: an in-place op (as are the updates of
 * donated buffers, `adamwInto` and its kin), for filling parts of a fresh
 * result without copying the rest. No one else may hold `target`'s
 * memory, since tensors are otherwise immutable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { copyInto, narrow, ones, toArray, zeros } from "../mod.ts";
 * using y = zeros([4]);
 * using one = ones([2]);
 * using head = narrow(y, 0, 0, 2);
 * copyInto(head, one);
 * assert.deepEqual(toArray(y), [1, 1, 0, 0]);
 * ```
 */
export function copyInto(target: Tensor, source: Tensor): void {
  checked(native.copy_into(ctx, target.ptr, source.ptr), "copyInto");
}
/**
 * Writes slice k of `source` along `dim` into slice `index[k]` of `target`
 * (i64 indices), in place: {@linkcode copyInto}'s scattered form, for a
 * result its caller has just made and shared with no one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { indexCopyInto, tensor, toArray, zeros } from "../mod.ts";
 * using y = zeros([3]);
 * using at = tensor(new BigInt64Array([2n, 0n]));
 * using values = tensor([5, 7]);
 * indexCopyInto(y, 0, at, values);
 * assert.deepEqual(toArray(y), [7, 0, 5]);
 * ```
 */
export function indexCopyInto(target: Tensor, dim: number, index: Tensor, source: Tensor): void {
  checked(native.index_copy_into(ctx, target.ptr, dim, index.ptr, source.ptr), "indexCopyInto");
}
/**
 * A second handle to the same tensor, with its own owner.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { alias, ones, toArray } from "../mod.ts";
 * const x = ones([2]);
 * using mine = alias(x);
 * x.dispose(); // the data lives on while a handle does
 * assert.deepEqual(toArray(mine), [1, 1]);
 * ```
 */
export function alias(a: Tensor): Tensor {
  return wrap(native.alias(ctx, a.ptr), "alias");
}
