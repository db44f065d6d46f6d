/**
 * Reverse-mode gradients, functionally: {@linkcode grad} returns the
 * gradients of a scalar with respect to a list of tensors; nothing is stored
 * on the tensors themselves.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { grad, mul, requiresGrad, sum, tensor, tidy, toArray } from "../mod.ts";
 * const g = tidy(() => {
 *   const x = requiresGrad(tensor([1, 2, 3]));
 *   const [dx] = grad(sum(mul(x, x)), [x]);
 *   return toArray(dx);
 * });
 * assert.deepEqual(g, [2, 4, 6]); // d/dx sum(x^2) = 2x
 * ```
 * @module
 */
import { checked, ctx, native } from "../library.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { handles } from "./args.ts";

/**
 * A new leaf sharing `t`'s data that autograd tracks (or not, with `flag` false).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones, requiresGrad } from "../mod.ts";
 * using w0 = ones([2]);
 * using w = requiresGrad(w0);
 * assert.deepEqual([w0.requiresGrad, w.requiresGrad], [false, true]);
 * ```
 */
export function requiresGrad(t: Tensor, flag = true): Tensor {
  return wrap(native.requires_grad(ctx, t.ptr, flag), "requiresGrad");
}
/**
 * The same data cut off from the autograd graph.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { detach, mul, ones, requiresGrad } from "../mod.ts";
 * using w0 = ones([2]);
 * using w = requiresGrad(w0);
 * using teacherOut = mul(w, 2);
 * using target = detach(teacherOut);
 * assert.deepEqual([teacherOut.requiresGrad, target.requiresGrad], [true, false]);
 * ```
 */
export function detach(t: Tensor): Tensor {
  return wrap(native.detach(ctx, t.ptr), "detach");
}
/**
 * Gradients of the scalar `y` with respect to each of `xs` (zeros for an
 * input `y` does not depend on). The graph is freed unless `retainGraph`;
 * `createGraph` makes the gradients differentiable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exp, grad, requiresGrad, sum, tensor, tidy, toArray } from "../mod.ts";
 * const dx = tidy(() => {
 *   const x = requiresGrad(tensor([0, 1]));
 *   return toArray(grad(sum(exp(x)), [x])[0]);
 * });
 * assert.deepEqual(dx.map((v) => v.toFixed(4)), ["1.0000", "2.7183"]); // exp(x)
 * ```
 */
export function grad(
  y: Tensor,
  xs: readonly Tensor[],
  options: { retainGraph?: boolean; createGraph?: boolean } = {},
): Tensor[] {
  if (y.size !== 1) throw new RangeError(`grad needs a scalar output, got shape [${y.shape}]`);
  const create = options.createGraph ?? false;
  return wrapList(native.grad(ctx, y.ptr, handles(xs), xs.length, options.retainGraph ?? create, create), "grad");
}
/**
 * Runs `fn` with gradient recording off (on this thread), as `torch.no_grad()`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mul, noGrad, ones, requiresGrad } from "../mod.ts";
 * using w0 = ones([2]);
 * using w = requiresGrad(w0);
 * using y = noGrad(() => mul(w, 2));
 * assert.equal(y.requiresGrad, false);
 * ```
 */
export function noGrad<R>(fn: () => R): R {
  const was = checked(native.set_grad_enabled(ctx, false), "noGrad") !== 0;
  try {
    const r = fn();
    if (r instanceof Promise) throw new Error("noGrad() takes a synchronous function");
    return r;
  } finally {
    native.set_grad_enabled(ctx, was);
  }
}
