/**
 * The `Tensor` handle and its ownership rules.
 *
 * Ownership: every tensor has exactly one owner. A tensor made while a
 * {@linkcode tidy} scope is open belongs to the innermost such scope, which
 * frees it when the scope's function returns, unless the function returns it
 * (then it passes to the enclosing scope, or to the caller outside any scope)
 * or it was {@linkcode keep}-ed (then the caller owns it). A tensor made
 * outside any scope belongs to the code that made it, which must `dispose()`
 * it, or declare it with `using`. Ops never take ownership of their inputs and
 * never change them: each op returns a new handle that the current owner
 * receives (`copyInto` and `indexCopyInto` fill a tensor their caller has just
 * made). Disposing twice is harmless; using a disposed tensor throws. A
 * `FinalizationRegistry` frees tensors that become unreachable undisposed, but
 * only as a safety net: garbage collection is late and unpredictable.
 *
 * @module
 */
import { type Context, ctx, messageOf, meta, native, TorchError } from "./library.ts";

/** An element type name. */
export type DType = "u8" | "i8" | "i16" | "i32" | "i64" | "f16" | "f32" | "f64" | "bool" | "bf16";
/** Element types, with the codes of `c10::ScalarType`. */
export const DTYPE_CODES: Readonly<Record<DType, number>> = {
  u8: 0,
  i8: 1,
  i16: 2,
  i32: 3,
  i64: 4,
  f16: 5,
  f32: 6,
  f64: 7,
  bool: 11,
  bf16: 15,
};
const DTYPE_NAMES: DType[] = [];
for (const [name, code] of Object.entries(DTYPE_CODES)) DTYPE_NAMES[code] = name as DType;

/** A device: `"cpu"`, or `"cuda"` / `"cuda:N"`. */
export type Device = "cpu" | "cuda" | `cuda:${number}`;

/** The shim's device code: -1 for the CPU, N for cuda:N. */
export function deviceCode(device: Device): number {
  if (device === "cpu") return -1;
  if (device === "cuda") return 0;
  const m = /^cuda:(\d+)$/.exec(device);
  if (!m) throw new Error(`unknown device "${device}": use "cpu", "cuda" or "cuda:N"`);
  return Number(m[1]);
}

/** The dtype name of a shim dtype code. */
export function dtypeName(code: number): DType {
  const name = DTYPE_NAMES[code];
  if (!name) throw new Error(`unsupported dtype code ${code}`);
  return name;
}

type Scope = Tensor[];
const scopes: Scope[] = [];

const registry = new FinalizationRegistry<Deno.PointerObject>((ptr) => native.free(ptr));

/** A handle to a libtorch tensor. Its shape and dtype are plain fields: reading them needs no native call. */
export class Tensor {
  /** The sizes of each dimension. */
  readonly shape: readonly number[];
  /** The element type. */
  readonly dtype: DType;
  /** Where the data lives. */
  readonly device: Device;
  /** Whether autograd tracks this tensor. */
  readonly requiresGrad: boolean;
  #ptr: Deno.PointerObject | null;

  /** Wraps a handle that the shim just returned; the call's shape and dtype are in `fields`. */
  constructor(ptr: Deno.PointerObject, fields: Float64Array = meta) {
    this.#ptr = ptr;
    this.dtype = DTYPE_NAMES[fields[1]] ?? dtypeName(fields[1]);
    const dev = fields[2];
    this.device = dev < 0 ? "cpu" : `cuda:${dev}`;
    this.requiresGrad = fields[3] !== 0;
    const ndim = fields[5];
    const shape = new Array<number>(ndim);
    for (let i = 0; i < ndim; i++) shape[i] = fields[6 + i];
    this.shape = shape;
    // A scope frees what it owns, so only tensors outside scopes need the safety net.
    if (scopes.length > 0) scopes[scopes.length - 1].push(this);
    else this.#guard();
  }

  #guarded = false;
  #guard(): void {
    registry.register(this, this.#ptr!, this);
    this.#guarded = true;
  }

  /** Marks a tensor that left every scope: the caller now owns it. */
  static released(t: Tensor): void {
    if (!t.#guarded && t.#ptr !== null) t.#guard();
  }

  /** The native handle; throws if the tensor was disposed. */
  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error(`use of a disposed tensor (shape [${this.shape}], ${this.dtype})`);
    return this.#ptr;
  }

  /** Whether `dispose()` has run. */
  get disposed(): boolean {
    return this.#ptr === null;
  }

  /** The number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }

  /** The number of elements. */
  get size(): number {
    let n = 1;
    for (const s of this.shape) n *= s;
    return n;
  }

  /** Frees the native tensor now. Safe to call twice. */
  dispose(): void {
    const ptr = this.#ptr;
    if (ptr === null) return;
    this.#ptr = null;
    if (this.#guarded) registry.unregister(this);
    else {
      // Tensors are mostly freed in reverse order of making: keep the scope short.
      const scope = scopes[scopes.length - 1];
      if (scope !== undefined && scope[scope.length - 1] === this) scope.pop();
    }
    native.free(ptr);
  }

  /** Lets `using t = ...` free the tensor at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** A short description for logs. */
  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(", ")}]${this.device === "cpu" ? "" : `, ${this.device}`})`;
  }
}

/** Wraps the result of a tensor-returning native call, throwing the shim's message when it failed. */
export function wrap(ptr: Deno.PointerValue, op: string): Tensor {
  if (ptr === null) throw new TorchError(op, messageOf(ctx));
  return new Tensor(ptr);
}

/**
 * Unpacks a list handle returned by a native call into its tensors. `c` is the
 * call's context (a nonblocking call has its own).
 */
export function wrapList(list: Deno.PointerValue, op: string, c: Context = ctx): Tensor[] {
  if (list === null) throw new TorchError(op, messageOf(c));
  try {
    const n = new Float64Array(c.buffer, 0, 32)[4];
    const out: Tensor[] = [];
    for (let i = 0; i < n; i++) out.push(wrap(native.list_take(ctx, list, i), op));
    return out;
  } finally {
    native.list_free(list);
  }
}

/** Anything that may hold tensors: a tensor, or arrays and plain records of them. */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [key: string]: TensorTree } | unknown;

function collect(tree: unknown, into: Set<Tensor>, seen: Set<unknown> = new Set()): void {
  if (tree instanceof Tensor) {
    into.add(tree);
  } else if (tree !== null && typeof tree === "object" && !seen.has(tree)) {
    seen.add(tree);
    for (const v of Array.isArray(tree) ? tree : Object.values(tree)) collect(v, into, seen);
  }
}

/** Every tensor in a tree (arrays and plain records are walked). */
export function tensorsIn(tree: unknown): Tensor[] {
  const out = new Set<Tensor>();
  collect(tree, out);
  return [...out];
}

/**
 * Runs `fn` and frees every tensor made inside it except those it returns
 * (found in returned arrays and records too) and those passed to
 * {@linkcode keep}. Scopes nest: returned tensors pass to the enclosing scope.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, liveTensors, ones, tidy, toArray } from "./mod.ts";
 * const before = liveTensors();
 * const y = tidy(() => {
 *   const a = ones([2, 2]); // freed when the scope ends
 *   return add(a, a); // returned: survives
 * });
 * assert.equal(liveTensors(), before + 1);
 * assert.deepEqual(toArray(y), [2, 2, 2, 2]);
 * y.dispose();
 * ```
 */
export function tidy<R>(fn: () => R): R {
  const scope: Scope = [];
  scopes.push(scope);
  let result: R;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw new Error("tidy() takes a synchronous function; await outside the scope and tidy each step");
  }
  const survivors = new Set<Tensor>();
  collect(result, survivors);
  const parent = scopes.length > 0 ? scopes[scopes.length - 1] : undefined;
  for (const t of scope) {
    if (!survivors.has(t)) t.dispose();
    else if (parent) parent.push(t);
    else Tensor.released(t);
  }
  return result;
}

/**
 * Takes tensors out of every enclosing scope: the caller now owns them and
 * must dispose them. Returns its argument.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keep, ones, type Tensor, tidy, toArray } from "./mod.ts";
 * let kept: Tensor | undefined;
 * tidy(() => {
 *   kept = keep(ones([3]));
 * });
 * assert.deepEqual(toArray(kept!), [1, 1, 1]); // still alive after the scope
 * kept!.dispose();
 * ```
 */
export function keep<T>(tree: T): T {
  const ts = new Set<Tensor>();
  collect(tree, ts);
  for (const scope of scopes) {
    for (let i = scope.length - 1; i >= 0; i--) {
      if (ts.has(scope[i])) scope.splice(i, 1);
    }
  }
  for (const t of ts) Tensor.released(t);
  return tree;
}

/**
 * Frees every tensor in a tree of arrays and records.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, liveTensors, ones, zeros } from "./mod.ts";
 * const before = liveTensors();
 * dispose({ w: ones([2]), b: [zeros([2])] });
 * assert.equal(liveTensors(), before);
 * ```
 */
export function dispose(tree: unknown): void {
  for (const t of tensorsIn(tree)) t.dispose();
}

/**
 * The number of tensors alive in the native library, for leak checks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { liveTensors, ones } from "./mod.ts";
 * const before = liveTensors();
 * ones([2]).dispose();
 * assert.equal(liveTensors(), before);
 * ```
 */
export function liveTensors(): number {
  return native.live_tensors();
}
