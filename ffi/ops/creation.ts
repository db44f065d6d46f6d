/**
 * Making tensors, and reading their values back.
 *
 * @module
 */
import { checked, ctx, native } from "../library.ts";
import { type Device, deviceCode, type DType, DTYPE_CODES, type Tensor, wrap } from "../tensor.ts";
import { ints } from "./args.ts";

/** Where and of what type a new tensor is. Defaults: f32 on the CPU. */
export interface TensorOptions {
  /** The element type (default f32, i64 for arange and randint). */
  dtype?: DType;
  /** The device (default "cpu"). */
  device?: Device;
}

/** A TypedArray this project copies tensor data from and to. */
export type TypedArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Uint16Array
  | BigInt64Array;

/** Numbers (or booleans) nested in arrays, one level per dimension. */
export type Nested = number | boolean | readonly Nested[];

const ARRAY_TYPES = {
  u8: Uint8Array,
  i8: Int8Array,
  i16: Int16Array,
  i32: Int32Array,
  i64: BigInt64Array,
  f16: Uint16Array,
  f32: Float32Array,
  f64: Float64Array,
  bool: Uint8Array,
  bf16: Uint16Array,
} as const;

function dtypeOfArray(data: TypedArray): DType {
  if (data instanceof Float32Array) return "f32";
  if (data instanceof Float64Array) return "f64";
  if (data instanceof Int32Array) return "i32";
  if (data instanceof Int16Array) return "i16";
  if (data instanceof Int8Array) return "i8";
  if (data instanceof BigInt64Array) return "i64";
  if (data instanceof Uint8Array) return "u8";
  throw new TypeError("a Uint16Array is ambiguous (f16 or bf16): pass the dtype");
}

function flatten(data: Nested, shape: number[], out: number[], depth = 0): void {
  if (Array.isArray(data)) {
    if (shape.length <= depth) shape.push(data.length);
    else if (shape[depth] !== data.length) throw new TypeError("ragged nested array: every row needs the same length");
    for (const x of data) flatten(x, shape, out, depth + 1);
  } else {
    if (depth !== shape.length) throw new TypeError("ragged nested array: mixed numbers and rows at one level");
    out.push(Number(data));
  }
}

/**
 * A tensor holding a copy of `data` (a TypedArray, or nested arrays of numbers).
 * Nested arrays become f32 unless `dtype` says otherwise; a TypedArray keeps its type.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4]]);
 * using y = tensor(new Int32Array([1, 2, 3]));
 * using z = tensor([1, 2, 3, 4, 5, 6], { dtype: "u8", shape: [2, 3] });
 * assert.deepEqual([x.dtype, x.shape, y.dtype, y.shape, z.dtype, z.shape], ["f32", [2, 2], "i32", [3], "u8", [2, 3]]);
 * ```
 */
export function tensor(
  data: Nested | TypedArray,
  options: TensorOptions & { shape?: readonly number[] } = {},
): Tensor {
  let array: TypedArray;
  let shape: readonly number[];
  if (ArrayBuffer.isView(data)) {
    const dtype = options.dtype ?? dtypeOfArray(data);
    array = data;
    shape = options.shape ?? [data.length];
    if (ARRAY_TYPES[dtype].BYTES_PER_ELEMENT !== data.BYTES_PER_ELEMENT) {
      throw new TypeError(`a ${data.constructor.name} cannot hold ${dtype} data`);
    }
    return fromBytes(array, dtype, shape, options.device);
  }
  const dims: number[] = [];
  const values: number[] = [];
  flatten(data, dims, values);
  const dtype = options.dtype ?? "f32";
  shape = options.shape ?? dims;
  if (dtype === "f16" || dtype === "bf16") {
    using t = fromBytes(new Float32Array(values), "f32", shape, undefined);
    return toDtype(t, dtype, options.device);
  }
  array = dtype === "i64"
    ? BigInt64Array.from(values, (v) => BigInt(Math.trunc(v)))
    : dtype === "bool"
    ? Uint8Array.from(values, (v) => (v !== 0 ? 1 : 0)) // nonzero (NaN too) is true, as torch.tensor(..., dtype=bool)
    : (ARRAY_TYPES[dtype] as { from(values: number[]): TypedArray }).from(values);
  return fromBytes(array, dtype, shape, options.device);
}

/**
 * A tensor holding a copy of raw little-endian bytes, read as `dtype` with `shape`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fromBytes, toArray } from "../mod.ts";
 * using t = fromBytes(new Uint8Array(new Float32Array([1, 2]).buffer), "f32", [2]);
 * assert.deepEqual(toArray(t), [1, 2]);
 * ```
 */
export function fromBytes(data: TypedArray, dtype: DType, shape: readonly number[], device?: Device): Tensor {
  if (!ArrayBuffer.isView(data) || data instanceof DataView) {
    throw new TypeError(`fromBytes: data must be a TypedArray, got ${Object.prototype.toString.call(data)}`);
  }
  if (!Object.hasOwn(ARRAY_TYPES, dtype)) throw new TypeError(`fromBytes: unknown dtype "${dtype}"`);
  if (!Array.isArray(shape) || shape.some((s) => !Number.isSafeInteger(s) || s < 0)) {
    throw new RangeError(`fromBytes: a shape is a list of integers >= 0, got [${shape}]`);
  }
  // The byte count is checked here, before the shim allocates the tensor: a shape that disagrees with the
  // data would otherwise allocate for the shape first.
  const need = shape.reduce((n, s) => n * s, ARRAY_TYPES[dtype].BYTES_PER_ELEMENT);
  if (need !== data.byteLength) {
    throw new RangeError(
      `fromBytes: the data has ${data.byteLength} bytes but shape and dtype need ${need} ` +
        `(${dtype} [${shape.join(", ")}]); pass a shape whose element count is the data's`,
    );
  }
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const t = wrap(
    native.from_data(ctx, bytes, BigInt(bytes.byteLength), DTYPE_CODES[dtype], ints(shape), shape.length),
    "tensor",
  );
  if (device === undefined || device === "cpu") return t;
  using cpu = t;
  return wrap(native.to_device(ctx, cpu.ptr, deviceCode(device)), "tensor");
}

/** Converts to another dtype and, optionally, device. */
function toDtype(t: Tensor, dtype: DType, device?: Device): Tensor {
  const d = wrap(native.to_dtype(ctx, t.ptr, DTYPE_CODES[dtype]), "to");
  if (device === undefined || device === t.device) return d;
  using tmp = d;
  return wrap(native.to_device(ctx, tmp.ptr, deviceCode(device)), "to");
}

/**
 * A copy of a tensor's elements as a TypedArray of its dtype (raw bits for
 * f16 and bf16, 0/1 bytes for bool). Works for any device and layout.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { data, ones } from "../mod.ts";
 * using x = ones([2]);
 * assert.deepEqual(data(x), new Float32Array([1, 1]));
 * ```
 */
export function data(t: Tensor): TypedArray {
  const out = new ARRAY_TYPES[t.dtype](t.size);
  const bytes = new Uint8Array(out.buffer);
  checked(native.copy_to(ctx, t.ptr, bytes, BigInt(bytes.byteLength)), "data");
  return out;
}

/**
 * The elements as plain numbers, flattened in row-major order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, toArray } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4]]);
 * assert.deepEqual(toArray(x), [1, 2, 3, 4]);
 * ```
 */
export function toArray(t: Tensor): number[] {
  if (t.dtype === "f16" || t.dtype === "bf16") {
    using f = toDtype(t, "f32");
    return Array.from(data(f) as Float32Array);
  }
  return Array.from(data(t) as ArrayLike<number | bigint>, Number);
}

/**
 * The single value of a one-element tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { item, sum, tensor } from "../mod.ts";
 * using x = tensor([1, 2, 3]);
 * using s = sum(x);
 * assert.equal(item(s), 6);
 * ```
 */
export function item(t: Tensor): number {
  return checked(native.item(ctx, t.ptr), "item");
}

function factory(op: "empty" | "zeros" | "ones", shape: readonly number[], o: TensorOptions): Tensor {
  return wrap(
    native[op](ctx, ints(shape), shape.length, DTYPE_CODES[o.dtype ?? "f32"], deviceCode(o.device ?? "cpu")),
    op,
  );
}

/**
 * A tensor whose values are whatever its memory held: only for a result that
 * {@linkcode copyInto} or {@linkcode indexCopyInto} then fill entirely, where
 * zeroing it first would be a wasted pass.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { copyInto, empty, ones, toArray } from "../mod.ts";
 * using y = empty([2, 3]);
 * using one = ones([2, 3]);
 * copyInto(y, one); // now every value is set
 * assert.deepEqual(toArray(y), [1, 1, 1, 1, 1, 1]);
 * ```
 */
export function empty(shape: readonly number[], options: TensorOptions = {}): Tensor {
  return factory("empty", shape, options);
}

/**
 * A tensor of zeros.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toArray, zeros } from "../mod.ts";
 * using z = zeros([2, 3], { dtype: "i64" });
 * assert.deepEqual([z.dtype, toArray(z)], ["i64", [0, 0, 0, 0, 0, 0]]);
 * ```
 */
export function zeros(shape: readonly number[], options: TensorOptions = {}): Tensor {
  return factory("zeros", shape, options);
}

/**
 * A tensor of ones.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, toArray } from "../mod.ts";
 * using o = ones([4]);
 * assert.deepEqual(toArray(o), [1, 1, 1, 1]);
 * ```
 */
export function ones(shape: readonly number[], options: TensorOptions = {}): Tensor {
  return factory("ones", shape, options);
}

/**
 * A tensor filled with `value`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, toArray } from "../mod.ts";
 * using t = full([2, 2], 0.5);
 * assert.deepEqual(toArray(t), [0.5, 0.5, 0.5, 0.5]);
 * ```
 */
export function full(shape: readonly number[], value: number, options: TensorOptions = {}): Tensor {
  const o = options;
  return wrap(
    native.full(ctx, ints(shape), shape.length, value, DTYPE_CODES[o.dtype ?? "f32"], deviceCode(o.device ?? "cpu")),
    "full",
  );
}

/**
 * Values from `start` up to (not including) `end` by `step`; i64 unless a dtype is given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, toArray } from "../mod.ts";
 * using r = arange(0, 5);
 * using odd = arange(1, 8, 2);
 * assert.deepEqual([r.dtype, toArray(r), toArray(odd)], ["i64", [0, 1, 2, 3, 4], [1, 3, 5, 7]]);
 * ```
 */
export function arange(start: number, end: number, step = 1, options: TensorOptions = {}): Tensor {
  const dtype = options.dtype ?? "i64";
  return wrap(native.arange(ctx, start, end, step, DTYPE_CODES[dtype], deviceCode(options.device ?? "cpu")), "arange");
}

/**
 * `steps` evenly spaced values from `start` to `end`, both included.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { linspace, toArray } from "../mod.ts";
 * using l = linspace(0, 1, 5);
 * assert.deepEqual(toArray(l), [0, 0.25, 0.5, 0.75, 1]);
 * ```
 */
export function linspace(start: number, end: number, steps: number, options: TensorOptions = {}): Tensor {
  return wrap(
    native.linspace(ctx, start, end, steps, DTYPE_CODES[options.dtype ?? "f32"], deviceCode(options.device ?? "cpu")),
    "linspace",
  );
}

/**
 * The n x n identity matrix.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eye, toArray } from "../mod.ts";
 * using i = eye(3);
 * assert.deepEqual(toArray(i), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
 * ```
 */
export function eye(n: number, options: TensorOptions = {}): Tensor {
  return wrap(native.eye(ctx, n, DTYPE_CODES[options.dtype ?? "f32"], deviceCode(options.device ?? "cpu")), "eye");
}

/**
 * Zeros with the shape, dtype and device of `t`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, toArray, zerosLike } from "../mod.ts";
 * using o = ones([2], { dtype: "i32" });
 * using z = zerosLike(o);
 * assert.deepEqual([z.dtype, toArray(z)], ["i32", [0, 0]]);
 * ```
 */
export function zerosLike(t: Tensor): Tensor {
  return wrap(native.zeros_like(ctx, t.ptr), "zerosLike");
}

/**
 * Ones with the shape, dtype and device of `t`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { onesLike, toArray, zeros } from "../mod.ts";
 * using z = zeros([2]);
 * using o = onesLike(z);
 * assert.deepEqual(toArray(o), [1, 1]);
 * ```
 */
export function onesLike(t: Tensor): Tensor {
  return wrap(native.ones_like(ctx, t.ptr), "onesLike");
}

/**
 * `value` with the shape, dtype and device of `t`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fullLike, toArray, zeros } from "../mod.ts";
 * using z = zeros([2]);
 * using h = fullLike(z, 0.5);
 * assert.deepEqual(toArray(h), [0.5, 0.5]);
 * ```
 */
export function fullLike(t: Tensor, value: number): Tensor {
  return wrap(native.full_like(ctx, t.ptr, value), "fullLike");
}

/**
 * The tensor converted to another dtype: a copy, or the input's own storage
 * when it already has that dtype (as PyTorch's `.to`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, to, toArray } from "../mod.ts";
 * using x = tensor([1.7, -2.2]);
 * using i = to(x, "i64"); // truncates toward zero
 * assert.deepEqual([i.dtype, toArray(i)], ["i64", [1, -2]]);
 * ```
 */
export function to(t: Tensor, dtype: DType): Tensor {
  return wrap(native.to_dtype(ctx, t.ptr, DTYPE_CODES[dtype]), "to");
}

/**
 * The tensor on another device (`"cpu"`, `"cuda"`, `"cuda:1"`...): a copy, or
 * the input's own storage when it is already there (as PyTorch's `.to`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudaAvailable, ones, toDevice } from "../mod.ts";
 * using x = ones([2]);
 * using y = toDevice(x, cudaAvailable() ? "cuda" : "cpu");
 * assert.equal(y.device, cudaAvailable() ? "cuda" : "cpu");
 * ```
 */
export function toDevice(t: Tensor, device: Device): Tensor {
  return wrap(native.to_device(ctx, t.ptr, deviceCode(device)), "toDevice");
}
