/**
 * Reverse-mode gradients, functionally: {@linkcode grad} returns the
 * gradients of a scalar with respect to a list of tensors; nothing is stored
 * on the tensors themselves.
 *
 * @example
 * ```ts
 * import { grad, mul, requiresGrad, sum, tensor, tidy, toArray } from "./mod.ts";
 * const g = tidy(() => {
 *   const x = requiresGrad(tensor([1, 2, 3]));
 *   const [dx] = grad(sum(mul(x, x)), [x]);
 *   return toArray(dx); // [2, 4, 6]
 * });
 * ```
 * @module
 */
import { checked, ctx, native } from "../lib.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { handles } from "./args.ts";

/** A new leaf sharing `t`'s data that autograd tracks (or not, with `flag` false). @example `const w = requiresGrad(w0)` */
export function requiresGrad(t: Tensor, flag = true): Tensor {
  return wrap(native.requires_grad(ctx, t.ptr, flag), "requiresGrad");
}
/** The same data cut off from the autograd graph. @example `const target = detach(teacherOut)` */
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
 * import { grad, requiresGrad, sum, exp, tensor, dispose } from "./mod.ts";
 * using x = requiresGrad(tensor([0, 1]));
 * using y = sum(exp(x));
 * const [dx] = grad(y, [x]); // exp(x)
 * dx.dispose();
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
 * import { noGrad, ones, requiresGrad, mul } from "./mod.ts";
 * using w = requiresGrad(ones([2]));
 * using y = noGrad(() => mul(w, 2));
 * console.assert(!y.requiresGrad);
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
