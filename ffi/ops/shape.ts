/**
 * Shape ops: views and copies that rearrange elements. Each returns a new
 * handle; views share memory with their input, which is safe because no op in
 * this project writes into an existing tensor.
 *
 * @example
 * ```ts
 * import { arange, reshape, transpose, tidy, toArray } from "./mod.ts";
 * const v = tidy(() => toArray(transpose(reshape(arange(0, 6), [2, 3]), 0, 1)));
 * // [0, 3, 1, 4, 2, 5]
 * ```
 * @module
 */
import { checked, ctx, native } from "../lib.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { handles, ints } from "./args.ts";

/** The same elements in a new shape (one size may be -1). @example `reshape(x, [B, -1])` */
export function reshape(a: Tensor, shape: readonly number[]): Tensor {
  return wrap(native.reshape(ctx, a.ptr, ints(shape), shape.length), "reshape");
}
/** Reorders the dims. @example `permute(x, [0, 2, 1, 3])` */
export function permute(a: Tensor, dims: readonly number[]): Tensor {
  return wrap(native.permute(ctx, a.ptr, ints(dims), dims.length), "permute");
}
/** Swaps two dims. @example `transpose(k, -2, -1)` */
export function transpose(a: Tensor, dim0: number, dim1: number): Tensor {
  return wrap(native.transpose(ctx, a.ptr, dim0, dim1), "transpose");
}
/** `length` elements of `dim` from `start`. @example `narrow(x, 1, 0, 1)` */
export function narrow(a: Tensor, dim: number, start: number, length: number): Tensor {
  return wrap(native.narrow(ctx, a.ptr, dim, start, length), "narrow");
}
/** Elements `start` to `end` (exclusive) by `step` along `dim`, as `x[start:end:step]`. @example `slice(x, 1, 1)` */
export function slice(a: Tensor, dim: number, start = 0, end = 2 ** 31 - 1, step = 1): Tensor {
  return wrap(native.slice(ctx, a.ptr, dim, start, end, step), "slice");
}
/** The slice at `index` of `dim`, with that dim removed. @example `select(x, 1, 0)` (the CLS token) */
export function select(a: Tensor, dim: number, index: number): Tensor {
  return wrap(native.select(ctx, a.ptr, dim, index), "select");
}
/** Picks entries of `dim` by an i64 index vector. @example `indexSelect(x, 0, idx)` */
export function indexSelect(a: Tensor, dim: number, index: Tensor): Tensor {
  return wrap(native.index_select(ctx, a.ptr, dim, index.ptr), "indexSelect");
}
/** out[i][j] = a[i][index[i][j]] for dim 1, and so on. @example `gather(labels, 1, idx)` */
export function gather(a: Tensor, dim: number, index: Tensor): Tensor {
  return wrap(native.gather(ctx, a.ptr, dim, index.ptr), "gather");
}
/** Joins tensors along an existing dim. @example `cat([a, b], 0)` */
export function cat(ts: readonly Tensor[], dim = 0): Tensor {
  return wrap(native.cat(ctx, handles(ts), ts.length, dim), "cat");
}
/** Joins tensors along a new dim. @example `stack([a, b], 0)` */
export function stack(ts: readonly Tensor[], dim = 0): Tensor {
  return wrap(native.stack(ctx, handles(ts), ts.length, dim), "stack");
}
/** Splits into `chunks` nearly equal parts along `dim` (the last may be smaller). @example `chunk(out, 2, 0)` */
export function chunk(a: Tensor, chunks: number, dim = 0): Tensor[] {
  return wrapList(native.chunk(ctx, a.ptr, chunks, dim), "chunk");
}
/** Splits into parts of the given sizes, or of one size (the last may be smaller). @example `split(x, [2, 6], 0)` */
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
/** A broadcast view with size-1 dims stretched (-1 keeps a size). @example `expand(cls, [B, -1, -1])` */
export function expand(a: Tensor, shape: readonly number[]): Tensor {
  return wrap(native.expand(ctx, a.ptr, ints(shape), shape.length), "expand");
}
/** Tiles the tensor `times[i]` times along each dim. @example `repeat(x, [2, 1])` */
export function repeat(a: Tensor, times: readonly number[]): Tensor {
  return wrap(native.repeat(ctx, a.ptr, ints(times), times.length), "repeat");
}
/** Reverses the order along the given dims. @example `flip(img, [3])` (mirror) */
export function flip(a: Tensor, dims: readonly number[]): Tensor {
  return wrap(native.flip(ctx, a.ptr, ints(dims), dims.length), "flip");
}
/** Merges dims `start`..`end` into one. @example `flatten(x, 2)` */
export function flatten(a: Tensor, start = 0, end = -1): Tensor {
  return wrap(native.flatten(ctx, a.ptr, start, end), "flatten");
}
/** Removes size-1 dims: one, or all when `dim` is omitted. @example `squeeze(x, 0)` */
export function squeeze(a: Tensor, dim?: number): Tensor {
  return dim === undefined
    ? wrap(native.squeeze_all(ctx, a.ptr), "squeeze")
    : wrap(native.squeeze(ctx, a.ptr, dim), "squeeze");
}
/** Inserts a size-1 dim at `dim`. @example `unsqueeze(x, 0)` */
export function unsqueeze(a: Tensor, dim: number): Tensor {
  return wrap(native.unsqueeze(ctx, a.ptr, dim), "unsqueeze");
}
/** The same values laid out contiguously in memory. @example `contiguous(transpose(x, 0, 1))` */
export function contiguous(a: Tensor): Tensor {
  return wrap(native.contiguous(ctx, a.ptr), "contiguous");
}
/** A copy with its own memory. @example `clone(x)` */
export function clone(a: Tensor): Tensor {
  return wrap(native.clone(ctx, a.ptr), "clone");
}
/** A copy of `a` with the slices `index` of `dim` replaced by `source`, as `torch.index_copy` (out of place). @example `indexCopy(x, 0, idx, y)` */
export function indexCopy(a: Tensor, dim: number, index: Tensor, source: Tensor): Tensor {
  return wrap(native.index_copy(ctx, a.ptr, dim, index.ptr, source.ptr), "indexCopy");
}
/**
 * Writes `source` (broadcast) into the memory of `target`, usually a view of a
 * tensor the caller has just made: the one in-place op, for filling parts of a
 * fresh result without copying the rest. No one else may hold `target`'s
 * memory, since tensors are otherwise immutable.
 *
 * @example
 * ```ts
 * import { copyInto, dispose, narrow, ones, zeros } from "../mod.ts";
 * const y = zeros([4]);
 * using one = ones([2]);
 * using head = narrow(y, 0, 0, 2);
 * copyInto(head, one); // y is [1, 1, 0, 0]
 * dispose(y);
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
 * import { dispose, indexCopyInto, tensor, zeros } from "../mod.ts";
 * const y = zeros([3]);
 * using at = tensor(new BigInt64Array([2n, 0n]));
 * using values = tensor([5, 7]);
 * indexCopyInto(y, 0, at, values); // y is [7, 0, 5]
 * dispose(y);
 * ```
 */
export function indexCopyInto(target: Tensor, dim: number, index: Tensor, source: Tensor): void {
  checked(native.index_copy_into(ctx, target.ptr, dim, index.ptr, source.ptr), "indexCopyInto");
}
/** A second handle to the same tensor, with its own owner. @example `const mine = alias(x)` */
export function alias(a: Tensor): Tensor {
  return wrap(native.alias(ctx, a.ptr), "alias");
}
