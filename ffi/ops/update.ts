/**
 * Updates written into buffers their caller donated (see `donate` in the
 * training step): AdamW, the teacher's EMA and gradient scaling, with
 * PyTorch's in-place kernels, so the numbers are those of the same ops with
 * fresh results, without copying those into the donated buffers. Like
 * `copyInto`, for tensors no one else holds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { emaInto, ones, toArray, zeros } from "../mod.ts";
 * using teacher = zeros([2]);
 * using student = ones([2]);
 * emaInto(teacher, student, 0.75);
 * assert.deepEqual(toArray(teacher), [0.25, 0.25]); // 0.75 * 0 + 0.25 * 1
 * ```
 * @module
 */
import { checked, ctx, native } from "../library.ts";
import type { Tensor } from "../tensor.ts";

/** The scalars of one AdamW step, as `torch.optim.AdamW` computes them from its hyperparameters and step count. */
export interface AdamWScalars {
  /** `1 - lr * weight_decay` (1: no decay). */
  decay: number;
  /** The first moment's decay rate (0.9). */
  beta1: number;
  /** The second moment's decay rate (0.999). */
  beta2: number;
  /** Added to the denominator (1e-8). */
  eps: number;
  /** `sqrt(1 - beta2 ** step)`. */
  bc2Sqrt: number;
  /** `-lr / (1 - beta1 ** step)`. */
  stepSize: number;
}

/**
 * One AdamW step in place: `p *= decay`, `m = beta1 m + (1 - beta1) g`,
 * `v = beta2 v + (1 - beta2) g²`, `p += stepSize · m / (sqrt(v) / bc2Sqrt + eps)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { adamwInto, ones, toArray, zeros } from "../mod.ts";
 * using p = ones([1]);
 * using g = ones([1]);
 * using m = zeros([1]);
 * using v = zeros([1]);
 * const [beta1, beta2] = [0.9, 0.999];
 * adamwInto(p, g, m, v, { decay: 1, beta1, beta2, eps: 0, bc2Sqrt: Math.sqrt(1 - beta2), stepSize: -0.1 / (1 - beta1) });
 * assert.ok(Math.abs(toArray(p)[0] - 0.9) < 1e-6); // Adam's first step moves by lr
 * ```
 */
export function adamwInto(p: Tensor, g: Tensor, m: Tensor, v: Tensor, s: AdamWScalars): void {
  checked(
    native.adamw_into(ctx, p.ptr, g.ptr, m.ptr, v.ptr, s.decay, s.beta1, s.beta2, s.eps, s.bc2Sqrt, s.stepSize),
    "adamwInto",
  );
}

/**
 * The teacher's EMA in place: `teacher = teacher · momentum + student · (1 - momentum)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { emaInto, full, toArray } from "../mod.ts";
 * using t = full([1], 2);
 * using s = full([1], 4);
 * emaInto(t, s, 0.5);
 * assert.deepEqual(toArray(t), [3]);
 * ```
 */
export function emaInto(teacher: Tensor, student: Tensor, momentum: number): void {
  checked(native.ema_into(ctx, teacher.ptr, student.ptr, momentum), "emaInto");
}

/**
 * `target *= factor` in place (a factor broadcast to its shape).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mulInto, ones, tensor, toArray } from "../mod.ts";
 * using g = ones([2]);
 * using half = tensor(0.5);
 * mulInto(g, half);
 * assert.deepEqual(toArray(g), [0.5, 0.5]);
 * ```
 */
export function mulInto(target: Tensor, factor: Tensor): void {
  checked(native.mul_into(ctx, target.ptr, factor.ptr), "mulInto");
}
