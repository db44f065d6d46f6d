/**
 * Elementwise math, comparisons and reductions. Every op returns a new tensor
 * and leaves its inputs as they were.
 *
 * @example
 * ```ts
 * import { add, mul, sum, tensor, tidy } from "./mod.ts";
 * const s = tidy(() => sum(mul(add(tensor([1, 2]), 1), 2))); // 2*(2+3) = 10
 * s.dispose();
 * ```
 * @module
 */
import { ctx, native } from "../lib.ts";
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

/** `a + alpha * b`, broadcasting. @example `add(x, y)`, `add(x, 1)` */
export function add(a: Tensor, b: Tensor | number, alpha = 1): Tensor {
  return typeof b === "number"
    ? wrap(native.add_scalar(ctx, a.ptr, alpha * b), "add")
    : wrap(native.add(ctx, a.ptr, b.ptr, alpha), "add");
}
/** `a - alpha * b`, broadcasting; `a` may be a number. @example `sub(x, y)`, `sub(1, x)` */
export function sub(a: Tensor | number, b: Tensor | number, alpha = 1): Tensor {
  if (typeof a === "number") {
    if (typeof b === "number") throw new TypeError("sub needs at least one tensor");
    return wrap(native.rsub_scalar(ctx, b.ptr, a, alpha), "sub");
  }
  return typeof b === "number"
    ? wrap(native.add_scalar(ctx, a.ptr, -alpha * b), "sub")
    : wrap(native.sub(ctx, a.ptr, b.ptr, alpha), "sub");
}
/** `a + value * b * c`, as `torch.addcmul` (one rounding fewer than composing). @example `addcmul(v, g, g, 0.001)` */
export function addcmul(a: Tensor, b: Tensor, c: Tensor, value = 1): Tensor {
  return wrap(native.addcmul(ctx, a.ptr, b.ptr, c.ptr, value), "addcmul");
}
/** `a + value * b / c`, as `torch.addcdiv`. @example `addcdiv(p, m, denom, -stepSize)` */
export function addcdiv(a: Tensor, b: Tensor, c: Tensor, value = 1): Tensor {
  return wrap(native.addcdiv(ctx, a.ptr, b.ptr, c.ptr, value), "addcdiv");
}
/** `a * b`, broadcasting. @example `mul(x, y)`, `mul(x, 0.5)` */
export const mul: Binary = binary("mul", "mul");
/** `a / b` (true division), broadcasting. @example `div(x, y)`, `div(x, 2)` */
export const div: Binary = binary("div", "div");
/** `a ** b`, broadcasting. @example `pow(x, 2)` */
export const pow: Binary = binary("pow", "pow");
/** Python-style remainder (sign of the divisor). @example `remainder(x, 1)` */
export const remainder: Binary = binary("remainder", "remainder");
/** `a == b` as bool. @example `eq(x, 0)` */
export const eq: Binary = binary("eq", "eq");
/** `a != b` as bool. @example `ne(x, 0)` */
export const ne: Binary = binary("ne", "ne");
/** `a < b` as bool. @example `lt(x, 0)` */
export const lt: Binary = binary("lt", "lt");
/** `a <= b` as bool. @example `le(x, 0)` */
export const le: Binary = binary("le", "le");
/** `a > b` as bool. @example `gt(x, 0)` */
export const gt: Binary = binary("gt", "gt");
/** `a >= b` as bool. @example `ge(x, 0)` */
export const ge: Binary = binary("ge", "ge");
/** Elementwise maximum of two tensors. @example `maximum(x, y)` */
export const maximum: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("maximum", "maximum");
/** Elementwise minimum of two tensors. @example `minimum(x, y)` */
export const minimum: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("minimum", "minimum");
/** atan2(a, b), the angle of (b, a). @example `atan2(y, x)` */
export const atan2: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("atan2", "atan2");
/** Logical and of two tensors. @example `logicalAnd(m1, m2)` */
export const logicalAnd: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("logical_and", "logicalAnd");
/** Logical or of two tensors. @example `logicalOr(m1, m2)` */
export const logicalOr: (a: Tensor, b: Tensor) => Tensor = tensorsOnly("logical_or", "logicalOr");

/** -x. @example `neg(x)` */
export const neg: Unary = unary("neg", "neg");
/** |x|. @example `abs(x)` */
export const abs: Unary = unary("abs", "abs");
/** e^x. @example `exp(x)` */
export const exp: Unary = unary("exp", "exp");
/** Natural logarithm. @example `log(x)` */
export const log: Unary = unary("log", "log");
/** Square root. @example `sqrt(x)` */
export const sqrt: Unary = unary("sqrt", "sqrt");
/** 1 / sqrt(x). @example `rsqrt(x)` */
export const rsqrt: Unary = unary("rsqrt", "rsqrt");
/** Sine. @example `sin(x)` */
export const sin: Unary = unary("sin", "sin");
/** Cosine. @example `cos(x)` */
export const cos: Unary = unary("cos", "cos");
/** Hyperbolic tangent. @example `tanh(x)` */
export const tanh: Unary = unary("tanh", "tanh");
/** Logistic sigmoid. @example `sigmoid(x)` */
export const sigmoid: Unary = unary("sigmoid", "sigmoid");
/** Gauss error function. @example `erf(x)` */
export const erf: Unary = unary("erf", "erf");
/** Round down. @example `floor(x)` */
export const floor: Unary = unary("floor", "floor");
/** Round up. @example `ceil(x)` */
export const ceil: Unary = unary("ceil", "ceil");
/** Round half to even, as PyTorch. @example `round(x)` */
export const round: Unary = unary("round", "round");
/** -1, 0 or 1. @example `sign(x)` */
export const sign: Unary = unary("sign", "sign");
/** 1 / x. @example `reciprocal(x)` */
export const reciprocal: Unary = unary("reciprocal", "reciprocal");
/** max(x, 0). @example `relu(x)` */
export const relu: Unary = unary("relu", "relu");
/** Logical not. @example `logicalNot(mask)` */
export const logicalNot: Unary = unary("logical_not", "logicalNot");
/** Whether each element is finite. @example `isfinite(x)` */
export const isfinite: Unary = unary("isfinite", "isfinite");
/** Whether each element is NaN. @example `isnan(x)` */
export const isnan: Unary = unary("isnan", "isnan");

/** `cond ? a : b`, elementwise with broadcasting. @example `where(gt(x, 0), x, y)` */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  return wrap(native.where(ctx, cond.ptr, a.ptr, b.ptr), "where");
}
/** Limits values to [min, max]; either bound may be omitted. @example `clamp(x, 0, 1)` */
export function clamp(a: Tensor, min?: number, max?: number): Tensor {
  return wrap(native.clamp(ctx, a.ptr, min ?? NaN, max ?? NaN), "clamp");
}

/** Options of the reductions. */
export interface ReduceOptions {
  /** Keep reduced dims with size 1. */
  keepdim?: boolean;
}

/** Sum over `dim` (one, several, or all when omitted). @example `sum(x)`, `sum(x, -1, { keepdim: true })` */
export function sum(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.sum(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "sum");
}
/** Mean over `dim` (all when omitted). @example `mean(x, 0)` */
export function mean(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.mean(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "mean");
}
/** Variance over `dim` (all when omitted), with `correction` 1 (unbiased, PyTorch's default) or 0. @example `variance(x, 0)` */
export function variance(
  a: Tensor,
  dim?: number | readonly number[],
  options: ReduceOptions & { correction?: number } = {},
): Tensor {
  const d = dimList(dim);
  return wrap(native.var(ctx, a.ptr, ints(d), d.length, options.correction ?? 1, options.keepdim ?? false), "var");
}
/** Maximum over `dim` (all when omitted). @example `amax(x, -1)` */
export function amax(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.amax(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "amax");
}
/** Minimum over `dim` (all when omitted). @example `amin(x, -1)` */
export function amin(a: Tensor, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.amin(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "amin");
}
/** Largest values along `dim` and where they are. @example `const { values, indices } = max(x, 1)` */
export function max(a: Tensor, dim: number, options: ReduceOptions = {}): { values: Tensor; indices: Tensor } {
  const [values, indices] = wrapList(native.max_dim(ctx, a.ptr, dim, options.keepdim ?? false), "max");
  return { values, indices };
}
/** Smallest values along `dim` and where they are. @example `const { values, indices } = min(x, 1)` */
export function min(a: Tensor, dim: number, options: ReduceOptions = {}): { values: Tensor; indices: Tensor } {
  const [values, indices] = wrapList(native.min_dim(ctx, a.ptr, dim, options.keepdim ?? false), "min");
  return { values, indices };
}
/** The p-norm over `dim` (all when omitted); p defaults to 2. @example `norm(x, 2, -1)` */
export function norm(a: Tensor, p = 2, dim?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.norm(ctx, a.ptr, p, ints(d), d.length, options.keepdim ?? false), "norm");
}
/** log(sum(exp(x))) over `dim`, computed stably. @example `logsumexp(x, -1)` */
export function logsumexp(a: Tensor, dim: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const d = dimList(dim);
  return wrap(native.logsumexp(ctx, a.ptr, ints(d), d.length, options.keepdim ?? false), "logsumexp");
}
/** Index of the largest value along `dim`. @example `argmax(logits, -1)` */
export function argmax(a: Tensor, dim: number, options: ReduceOptions = {}): Tensor {
  return wrap(native.argmax(ctx, a.ptr, dim, options.keepdim ?? false), "argmax");
}
/** Index of the smallest value along `dim`. @example `argmin(x, -1)` */
export function argmin(a: Tensor, dim: number, options: ReduceOptions = {}): Tensor {
  return wrap(native.argmin(ctx, a.ptr, dim, options.keepdim ?? false), "argmin");
}
/** The k largest (or smallest) values along `dim`, sorted, and their indices. @example `topk(sim, 20, 1)` */
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
/** Sorts along `dim`; returns the sorted values and their original indices. @example `sort(x, -1, true)` */
export function sort(a: Tensor, dim = -1, descending = false): { values: Tensor; indices: Tensor } {
  const [values, indices] = wrapList(native.sort(ctx, a.ptr, dim, descending), "sort");
  return { values, indices };
}
/** Running sum along `dim`. @example `cumsum(x, 0)` */
export function cumsum(a: Tensor, dim: number): Tensor {
  return wrap(native.cumsum(ctx, a.ptr, dim), "cumsum");
}
/** Whether every element is true (non-zero). @example `item(all(isfinite(x)))` */
export function all(a: Tensor): Tensor {
  return wrap(native.all(ctx, a.ptr), "all");
}
/** Whether any element is true (non-zero). @example `item(any(isnan(x)))` */
export function any(a: Tensor): Tensor {
  return wrap(native.any(ctx, a.ptr), "any");
}
