/**
 * Elementwise math, comparisons and reductions. Every op returns a new tensor
 * and leaves its inputs as they were.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, item, mul, sum, tensor, tidy } from "../mod.ts";
 * using s = tidy(() => sum(mul(add(tensor([1, 2]), 1), 2)));
 * assert.equal(item(s), 10); // 2 * (2 + 3)
 * ```
 * @module
 */
import { ctx, native } from "../library.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { dimList, ints } from "./args.ts";

/** A one-input elementwise op. */
export type Unary = (a: Tensor) => Tensor;
/** A two-input elementwise op; the second input may be a number. */
export type Binary = (a: Tensor, b: Tensor | number) => Tensor;

type UnaryName =
  | "neg"
  | "abs"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "sin"
  | "cos"
  | "tanh"
  | "sigmoid"
  | "erf"
  | "floor"
  | "ceil"
  | "round"
  | "sign"
  | "reciprocal"
  | "relu"
  | "logical_not"
  | "isfinite"
  | "isnan";
type BinaryName = "mul" | "div" | "pow" | "remainder" | "eq" | "ne" | "lt" | "le" | "gt" | "ge";

function unary(op: UnaryName, name: string): Unary {
  return (a) => wrap(native[op](ctx, a.ptr), name);
}
function binary(op: BinaryName, name: string): Binary {
  const withScalar = `${op}_scalar` as const;
  return (a, b) =>
    typeof b === "number" ? wrap(native[withScalar](ctx, a.ptr, b), name) : wrap(native[op](ctx, a.ptr, b.ptr), name);
}
function tensorsOnly(op: "maximum" | "minimum" | "atan2" | "logical_and" | "logical_or", name: string) {
  return (a: Tensor, b: Tensor): Tensor => wrap(native[op](ctx, a.ptr, b.ptr), name);
}

/**
 * `a + alpha * b`, broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([1, 2]);
 * using y = tensor([10, 20]);
 * assert.deepEqual(tidy(() => [add(x, y), add(x, 1), add(x, y, 0.5)].map(toArray)), [[11, 22], [2, 3], [6, 12]]);
 * ```
 */
export function add(a: Tensor, b: Tensor | number, alpha = 1): Tensor {
  return typeof b === "number"
    ? wrap(native.add_scalar(ctx, a.ptr, alpha * b), "add")
    : wrap(native.add(ctx, a.ptr, b.ptr, alpha), "add");
}
/**
 * `a - alpha * b`, broadcasting; `a` may be a number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sub, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([1, 2]);
 * using y = tensor([10, 20]);
 * assert.deepEqual(tidy(() => [sub(x, y), sub(1, x)].map(toArray)), [[-9, -18], [0, -1]]);
 * ```
 */
export function sub(a: Tensor | number, b: Tensor | number, alpha = 1): Tensor {
  if (typeof a === "number") {
    if (typeof b === "number") throw new TypeError("sub needs at least one tensor");
    return wrap(native.rsub_scalar(ctx, b.ptr, a, alpha), "sub");
  }
  return typeof b === "number"
    ? wrap(native.add_scalar(ctx, a.ptr, -alpha * b), "sub")
    : wrap(native.sub(ctx, a.ptr, b.ptr, alpha), "sub");
}
/**
 * `a + value * b * c`, as `torch.addcmul` (one rounding fewer than composing).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addcmul, tensor, tidy, toArray } from "../mod.ts";
 * const v = tidy(() => toArray(addcmul(tensor([1, 1]), tensor([2, 3]), tensor([4, 5]), 0.5)));
 * assert.deepEqual(v, [5, 8.5]);
 * ```
 */
export function addcmul(a: Tensor, b: Tensor, c: Tensor, value = 1): Tensor {
  return wrap(native.addcmul(ctx, a.ptr, b.ptr, c.ptr, value), "addcmul");
}
/**
 * `a + value * b / c`, as `torch.addcdiv`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addcdiv, tensor, tidy, toArray } from "../mod.ts";
 * const p = tidy(() => toArray(addcdiv(tensor([1, 1]), tensor([2, 3]), tensor([4, 2]), -1)));
 * assert.deepEqual(p, [0.5, -0.5]);
 * ```
 */
export function addcdiv(a: Tensor, b: Tensor, c: Tensor, value = 1): Tensor {
  return wrap(native.addcdiv(ctx, a.ptr, b.ptr, c.ptr, value), "addcdiv");
}
/**
 * `a * b`, broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mul, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([1, 2]);
 * using y = tensor([[10], [20]]); // [2, 1] broadcasts against [2]
 * assert.deepEqual(tidy(() => [mul(x, y), mul(x, 0.5)].map(toArray)), [[10, 20, 20, 40], [0.5, 1]]);
 * ```
 */
export const mul: Binary = binary("mul", "mul");
/**
 * `a / b` (true division), broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { div, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([1, 3]);
 * using y = tensor([4, 2]);
 * assert.deepEqual(tidy(() => [div(x, y), div(x, 2)].map(toArray)), [[0.25, 1.5], [0.5, 1.5]]);
 * ```
 */
export const div: Binary = binary("div", "div");
/**
 * `a ** b`, broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pow, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(pow(tensor([2, 3]), 2))), [4, 9]);
 * ```
 */
export const pow: Binary = binary("pow", "pow");
/**
 * Python-style remainder (sign of the divisor).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { remainder, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([-1.5, 2.5]);
 * assert.deepEqual(tidy(() => [remainder(x, 1), remainder(x, -2)].map(toArray)), [[0.5, 0.5], [-1.5, -1.5]]);
 * ```
 */
export const remainder: Binary = binary("remainder", "remainder");
/**
 * `a == b` as bool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eq, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(eq(tensor([-1, 0, 2]), 0))), [0, 1, 0]); // bool, read as 0 and 1
 * ```
 */
export const eq: Binary = binary("eq", "eq");
/**
 * `a != b` as bool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ne, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(ne(tensor([-1, 0, 2]), 0))), [1, 0, 1]); // bool, read as 0 and 1
 * ```
 */
export const ne: Binary = binary("ne", "ne");
/**
 * `a < b` as bool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lt, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(lt(tensor([-1, 0, 2]), 0))), [1, 0, 0]); // bool, read as 0 and 1
 * ```
 */
export const lt: Binary = binary("lt", "lt");
/**
 * `a <= b` as bool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { le, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(le(tensor([-1, 0, 2]), 0))), [1, 1, 0]); // bool, read as 0 and 1
 * ```
 */
export const le: Binary = binary("le", "le");
/**
 * `a > b` as bool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gt, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(gt(tensor([-1, 0, 2]), 0))), [0, 0, 1]); // bool, read as 0 and 1
 * ```
 */
export const gt: Binary = binary("gt", "gt");
/**
 * `a >= b` as bool.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ge, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(ge(tensor([-1, 0, 2]), 0))), [0, 1, 1]); // bool, read as 0 and 1
 * ```
 */
export const ge: Binary = binary("ge", "ge");
/**
 * Elementwise maximum of two tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { maximum, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(maximum(tensor([1, 5]), tensor([3, 2])))), [3, 5]);
 * ```
 */
export const maximum: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("maximum", "maximum");
/**
 * Elementwise minimum of two tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { minimum, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(minimum(tensor([1, 5]), tensor([3, 2])))), [1, 2]);
 * ```
 */
export const minimum: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("minimum", "minimum");
/**
 * atan2(a, b), the angle of (b, a).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { atan2, tensor, tidy, toArray } from "../mod.ts";
 * const angles = tidy(() => toArray(atan2(tensor([1, 0]), tensor([0, -1])))); // (0, 1) and (-1, 0)
 * assert.deepEqual(angles.map((a) => a.toFixed(4)), [(Math.PI / 2).toFixed(4), Math.PI.toFixed(4)]);
 * ```
 */
export const atan2: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("atan2", "atan2");
/**
 * Logical and of two tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logicalAnd, tensor, tidy, toArray } from "../mod.ts";
 * using a = tensor([1, 1, 0], { dtype: "bool" });
 * using b = tensor([1, 0, 0], { dtype: "bool" });
 * assert.deepEqual(tidy(() => toArray(logicalAnd(a, b))), [1, 0, 0]);
 * ```
 */
export const logicalAnd: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("logical_and", "logicalAnd");
/**
 * Logical or of two tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logicalOr, tensor, tidy, toArray } from "../mod.ts";
 * using a = tensor([1, 1, 0], { dtype: "bool" });
 * using b = tensor([1, 0, 0], { dtype: "bool" });
 * assert.deepEqual(tidy(() => toArray(logicalOr(a, b))), [1, 1, 0]);
 * ```
 */
export const logicalOr: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("logical_or", "logicalOr");

/**
 * -x.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { neg, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(neg(tensor([1, -2])))), [-1, 2]);
 * ```
 */
export const neg: Unary = unary("neg", "neg");
/**
 * |x|.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { abs, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(abs(tensor([-1.5, 2])))), [1.5, 2]);
 * ```
 */
export const abs: Unary = unary("abs", "abs");
/**
 * e^x.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exp, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(exp(tensor([0, 1]))));
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["1.0000", "2.7183"]);
 * ```
 */
export const exp: Unary = unary("exp", "exp");
/**
 * Natural logarithm.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { log, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(log(tensor([1, Math.E, 0]))));
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["0.0000", "1.0000", "-Infinity"]);
 * ```
 */
export const log: Unary = unary("log", "log");
/**
 * Square root.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sqrt, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(sqrt(tensor([4, 9])))), [2, 3]);
 * ```
 */
export const sqrt: Unary = unary("sqrt", "sqrt");
/**
 * 1 / sqrt(x).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rsqrt, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(rsqrt(tensor([4, 0.25])))), [0.5, 2]);
 * ```
 */
export const rsqrt: Unary = unary("rsqrt", "rsqrt");
/**
 * Sine.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sin, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(sin(tensor([0, Math.PI / 2]))));
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["0.0000", "1.0000"]);
 * ```
 */
export const sin: Unary = unary("sin", "sin");
/**
 * Cosine.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cos, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(cos(tensor([0, Math.PI]))));
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["1.0000", "-1.0000"]);
 * ```
 */
export const cos: Unary = unary("cos", "cos");
/**
 * Hyperbolic tangent.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tanh, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(tanh(tensor([-Infinity, 0, Infinity])))), [-1, 0, 1]);
 * ```
 */
export const tanh: Unary = unary("tanh", "tanh");
/**
 * Logistic sigmoid.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sigmoid, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(sigmoid(tensor([-Infinity, 0, Infinity])))), [0, 0.5, 1]);
 * ```
 */
export const sigmoid: Unary = unary("sigmoid", "sigmoid");
/**
 * Gauss error function.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { erf, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(erf(tensor([0, 1]))));
 * assert.deepEqual(y.map((v) => v.toFixed(4)), ["0.0000", "0.8427"]);
 * ```
 */
export const erf: Unary = unary("erf", "erf");
/**
 * Round down.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { floor, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(floor(tensor([-1.5, 1.5])))), [-2, 1]);
 * ```
 */
export const floor: Unary = unary("floor", "floor");
/**
 * Round up.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ceil, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(ceil(tensor([-1.5, 1.5])))), [-1, 2]);
 * ```
 */
export const ceil: Unary = unary("ceil", "ceil");
/**
 * Round half to even, as PyTorch.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { round, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(round(tensor([0.5, 1.5, 2.5, -0.7])))), [0, 2, 2, -1]);
 * ```
 */
export const round: Unary = unary("round", "round");
/**
 * -1, 0 or 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sign, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(sign(tensor([-3, 0, 2])))), [-1, 0, 1]);
 * ```
 */
export const sign: Unary = unary("sign", "sign");
/**
 * 1 / x.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { reciprocal, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(reciprocal(tensor([4, -0.5])))), [0.25, -2]);
 * ```
 */
export const reciprocal: Unary = unary("reciprocal", "reciprocal");
/**
 * max(x, 0).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { relu, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(relu(tensor([-1, 2])))), [0, 2]);
 * ```
 */
export const relu: Unary = unary("relu", "relu");
/**
 * Logical not.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logicalNot, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(logicalNot(tensor([1, 0], { dtype: "bool" })))), [0, 1]);
 * ```
 */
export const logicalNot: Unary = unary("logical_not", "logicalNot");
/**
 * Whether each element is finite.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isfinite, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(isfinite(tensor([1, Infinity, NaN])))), [1, 0, 0]);
 * ```
 */
export const isfinite: Unary = unary("isfinite", "isfinite");
/**
 * Whether each element is NaN.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isnan, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(isnan(tensor([1, Infinity, NaN])))), [0, 0, 1]);
 * ```
 */
export const isnan: Unary = unary("isnan", "isnan");

/**
 * `cond ? a : b`, elementwise with broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gt, tensor, tidy, toArray, where, zeros } from "../mod.ts";
 * using x = tensor([-1, 2]);
 * assert.deepEqual(tidy(() => toArray(where(gt(x, 0), x, zeros([1])))), [0, 2]);
 * ```
 */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  return wrap(native.where(ctx, cond.ptr, a.ptr, b.ptr), "where");
}
/**
 * Limits values to [min, max]; either bound may be omitted.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { clamp, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([-1, 0.5, 2]);
 * assert.deepEqual(tidy(() => [clamp(x, 0, 1), clamp(x, undefined, 1)].map(toArray)), [[0, 0.5, 1], [-1, 0.5, 1]]);
 * ```
 */
export function clamp(a: Tensor, min?: number, max?: number): Tensor {
  return wrap(native.clamp(ctx, a.ptr, min ?? NaN, max ?? NaN), "clamp");
}

/** Options of the reductions. */
export interface ReduceOptions {
  /** Keep reduced dims with size 1. */
  keepdim?: boolean;
}

/**
 * Sum over `dim` (one, several, or all when omitted).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { item, sum, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4]]);
 * using rows = sum(x, -1, { keepdim: true });
 * assert.deepEqual([tidy(() => item(sum(x))), rows.shape, toArray(rows)], [10, [2, 1], [3, 7]]);
 * ```
 */
export function sum(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.sum(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "sum");
}
/**
 * Mean over `dim` (all when omitted).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mean, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 4]]);
 * assert.deepEqual(tidy(() => [mean(x, 0), mean(x)].map(toArray)), [[2, 3], [2.5]]);
 * ```
 */
export function mean(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.mean(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "mean");
}
/**
 * Variance over `dim` (all when omitted), with `correction` 1 (unbiased, PyTorch's default) or 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray, variance } from "../mod.ts";
 * using x = tensor([[1, 2], [3, 6]]);
 * assert.deepEqual(tidy(() => [variance(x, 0), variance(x, 0, { correction: 0 })].map(toArray)), [[2, 8], [1, 4]]);
 * ```
 */
export function variance(
  a: Tensor,
  dim?: number | readonly number[],
  options: ReduceOptions & { correction?: number } = {},
): Tensor {
  const d = dimList(dim);
  return wrap(native.var(ctx, a.ptr, ints(d), d.length, options.correction ?? 1, options.keepdim ?? false), "var");
}
/**
 * Maximum over `dim` (all when omitted).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { amax, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(amax(tensor([[1, 5], [3, 2]]), -1))), [5, 3]);
 * ```
 */
export function amax(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.amax(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "amax");
}
/**
 * Minimum over `dim` (all when omitted).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { amin, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(amin(tensor([[1, 5], [3, 2]]), -1))), [1, 2]);
 * ```
 */
export function amin(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.amin(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "amin");
}
/**
 * Largest values along `dim` and where they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { max, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 5], [3, 2]]);
 * const [values, indices] = tidy(() => Object.values(max(x, 1)).map(toArray));
 * assert.deepEqual([values, indices], [[5, 3], [1, 0]]);
 * ```
 */
export function max(a: Tensor, dim: number, options: ReduceOptions = {}): { values: Tensor; indices: Tensor } {
  const [values, indices] = wrapList(native.max_dim(ctx, a.ptr, dim, options.keepdim ?? false), "max");
  return { values, indices };
}
/**
 * Smallest values along `dim` and where they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { min, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[1, 5], [3, 2]]);
 * const [values, indices] = tidy(() => Object.values(min(x, 1)).map(toArray));
 * assert.deepEqual([values, indices], [[1, 2], [0, 1]]);
 * ```
 */
export function min(a: Tensor, dim: number, options: ReduceOptions = {}): { values: Tensor; indices: Tensor } {
  const [values, indices] = wrapList(native.min_dim(ctx, a.ptr, dim, options.keepdim ?? false), "min");
  return { values, indices };
}
/**
 * The p-norm over `dim` (all when omitted); p defaults to 2.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { norm, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([[3, 4], [6, -8]]);
 * assert.deepEqual(tidy(() => [norm(x, 2, -1), norm(x, 1, -1)].map(toArray)), [[5, 10], [7, 14]]);
 * ```
 */
export function norm(a: Tensor, p = 2, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.norm(ctx, a.ptr, p, ints(d), d.length, options.keepdim ?? false), "norm");
}
/**
 * log(sum(exp(x))) over `dim`, computed stably.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logsumexp, tensor, tidy, toArray } from "../mod.ts";
 * const y = tidy(() => toArray(logsumexp(tensor([[0, 0], [1000, 1000]]), -1))); // exp(1000) overflows f32
 * assert.deepEqual(y.map((v) => v.toFixed(2)), ["0.69", "1000.69"]);
 * ```
 */
export function logsumexp(a: Tensor, dim: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.logsumexp(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "logsumexp");
}
/**
 * Index of the largest value along `dim`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { argmax, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(argmax(tensor([[1, 3, 2], [5, 0, 1]]), -1))), [1, 0]); // i64
 * ```
 */
export function argmax(a: Tensor, dim: number, options: ReduceOptions = {}): Tensor {
  return wrap(native.argmax(ctx, a.ptr, dim, options.keepdim ?? false), "argmax");
}
/**
 * Index of the smallest value along `dim`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { argmin, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(argmin(tensor([[1, 3, 2], [5, 0, 1]]), -1))), [0, 1]); // i64
 * ```
 */
export function argmin(a: Tensor, dim: number, options: ReduceOptions = {}): Tensor {
  return wrap(native.argmin(ctx, a.ptr, dim, options.keepdim ?? false), "argmin");
}
/**
 * The k largest (or smallest) values along `dim`, sorted, and their indices.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray, topk } from "../mod.ts";
 * using sim = tensor([[0.1, 0.9, 0.5, 0.7]]);
 * const [values, indices] = tidy(() => Object.values(topk(sim, 2, 1)).map(toArray));
 * assert.deepEqual(indices, [1, 3]); // values 0.9 and 0.7 (as f32)
 * assert.deepEqual(tidy(() => toArray(topk(sim, 1, 1, { largest: false }).indices)), [0]);
 * ```
 */
export function topk(
  a: Tensor,
  k: number,
  dim = -1,
  options: { largest?: boolean; sorted?: boolean } = {},
): { values: Tensor; indices: Tensor } {
  const list = native.topk(ctx, a.ptr, k, dim, options.largest ?? true, options.sorted ?? true);
  const [values, indices] = wrapList(list, "topk");
  return { values, indices };
}
/**
 * Sorts along `dim`; returns the sorted values and their original indices.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sort, tensor, tidy, toArray } from "../mod.ts";
 * using x = tensor([3, 1, 2]);
 * const [values, indices] = tidy(() => Object.values(sort(x, -1, true)).map(toArray));
 * assert.deepEqual([values, indices], [[3, 2, 1], [0, 2, 1]]);
 * ```
 */
export function sort(a: Tensor, dim = -1, descending = false): { values: Tensor; indices: Tensor } {
  const [values, indices] = wrapList(native.sort(ctx, a.ptr, dim, descending), "sort");
  return { values, indices };
}
/**
 * Running sum along `dim`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cumsum, tensor, tidy, toArray } from "../mod.ts";
 * assert.deepEqual(tidy(() => toArray(cumsum(tensor([1, 2, 3]), 0))), [1, 3, 6]);
 * ```
 */
export function cumsum(a: Tensor, dim: number): Tensor {
  return wrap(native.cumsum(ctx, a.ptr, dim), "cumsum");
}
/**
 * Whether every element is true (non-zero).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { all, isfinite, item, tensor, tidy } from "../mod.ts";
 * using x = tensor([1, NaN]);
 * assert.equal(tidy(() => item(all(isfinite(x)))), 0);
 * ```
 */
export function all(a: Tensor): Tensor {
  return wrap(native.all(ctx, a.ptr), "all");
}
/**
 * Whether any element is true (non-zero).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { any, isnan, item, tensor, tidy } from "../mod.ts";
 * using x = tensor([1, NaN]);
 * assert.equal(tidy(() => item(any(isnan(x)))), 1);
 * ```
 */
export function any(a: Tensor): Tensor {
  return wrap(native.any(ctx, a.ptr), "any");
}
