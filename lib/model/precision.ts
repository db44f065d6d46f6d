/**
 * Mixed precision as PyTorch's CUDA autocast applies it to DINO: the
 * parameters stay fp32 (the masters); the inputs, weights and biases of the
 * matrix products (linear layers, the patch-embedding convolution, the
 * attention's two batched products) are cast to the low dtype where they are
 * used, and the products come out in it; softmax, layer norm, batch norm, the
 * L2 normalisation of the head and everything after the network (the loss,
 * the center, the optimizer) run in fp32. The casts are differentiable, so the
 * gradients reach the fp32 parameters in fp32.
 *
 * PyTorch 1.13's CPU autocast is narrower: it runs softmax, log-softmax and
 * GELU in whatever dtype reaches them (bf16 after a product), the loss
 * included. This project follows the CUDA lists on both devices, so a bf16
 * step on the CPU keeps the softmaxes and the loss in fp32.
 *
 * `fp32` changes nothing: no cast is made, and the results are those of a
 * network written without this module.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy } from "../../mod.ts";
 * import { lowDtype, lowLinear } from "./precision.ts";
 * const dt = lowDtype("bf16");
 * const [x, w, b] = [ones([2, 4]), ones([3, 4]), ones([3])]; // fp32 masters
 * const y = tidy(() => lowLinear(x, w, b, dt));
 * assert.deepEqual([dt, y.dtype, w.dtype], ["bf16", "bf16", "f32"]);
 * dispose([x, w, b, y]);
 * ```
 * @module
 */
import { conv2d, type Conv2dOptions, type Device, linear, matmul, type Tensor, to } from "../../ffi/mod.ts";

/** The precisions of a training step: fp32, bf16 autocast, or fp16 autocast with loss scaling (CUDA only). */
export const PRECISIONS = ["fp32", "bf16", "fp16"] as const;

/** A training step's precision. */
export type Precision = typeof PRECISIONS[number];

/** The dtype matrix products run in under a low precision. */
export type LowDtype = "bf16" | "f16";

/**
 * The dtype of the matrix products under `precision`: none for fp32 (nothing is cast).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lowDtype } from "./precision.ts";
 * assert.deepEqual([lowDtype("fp32"), lowDtype("bf16"), lowDtype("fp16")], [undefined, "bf16", "f16"]);
 * ```
 */
export function lowDtype(precision: Precision | undefined): LowDtype | undefined {
  return precision === "bf16" ? "bf16" : precision === "fp16" ? "f16" : undefined;
}

/**
 * Throws unless `precision` can run on `device`: fp16 needs CUDA, because
 * libtorch's CPU kernels have no float16 matrix products (nor softmax, layer
 * norm or GELU); bf16 and fp32 run anywhere.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkPrecision } from "./precision.ts";
 * checkPrecision("bf16", "cpu");
 * assert.throws(() => checkPrecision("fp16", "cpu"), /use bf16 on the CPU/);
 * ```
 */
export function checkPrecision(precision: Precision | undefined, device: Device): void {
  if (precision === "fp16" && !device.startsWith("cuda")) {
    throw new Error(
      "precision fp16 needs a CUDA device: libtorch's CPU kernels have no float16 matrix products " +
        "(use bf16 on the CPU, or fp16 on a CUDA device)",
    );
  }
}

/**
 * `t` in the compute dtype `dt` (a differentiable copy), or `t` itself when
 * there is no low dtype or it has it already.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones } from "../../mod.ts";
 * import { low } from "./precision.ts";
 * using x = ones([2]);
 * assert.equal(low(x, undefined), x); // fp32: no copy
 * const y = low(x, "bf16");
 * assert.equal(y.dtype, "bf16");
 * dispose(y);
 * ```
 */
export function low(t: Tensor, dt: LowDtype | undefined): Tensor {
  return dt === undefined || t.dtype === dt ? t : to(t, dt);
}

/**
 * `t` in fp32 (a differentiable copy), or `t` itself when it is fp32 already.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, to } from "../../mod.ts";
 * import { fp32 } from "./precision.ts";
 * using x = ones([2], { dtype: "bf16" });
 * const y = fp32(x);
 * assert.equal(y.dtype, "f32");
 * assert.equal(fp32(y), y);
 * dispose(y);
 * ```
 */
export function fp32(t: Tensor): Tensor {
  return t.dtype === "f32" ? t : to(t, "f32");
}

/**
 * `linear(x, w, b)` with all three in `dt` (the output in `dt`); the plain fp32 call without one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy, toArray } from "../../mod.ts";
 * import { lowLinear } from "./precision.ts";
 * const [x, w] = [ones([1, 3]), ones([2, 3])];
 * const y = tidy(() => lowLinear(x, w, undefined, "bf16"));
 * assert.deepEqual([y.dtype, toArray(y)], ["bf16", [3, 3]]);
 * dispose([x, w, y]);
 * ```
 */
export function lowLinear(x: Tensor, w: Tensor, b: Tensor | undefined, dt: LowDtype | undefined): Tensor {
  if (dt === undefined) return linear(x, w, b);
  return linear(low(x, dt), low(w, dt), b && low(b, dt));
}

/**
 * `matmul(a, b)` with both in `dt`; the plain call without one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy } from "../../mod.ts";
 * import { lowMatmul } from "./precision.ts";
 * const [a, b] = [ones([2, 3]), ones([3, 4])];
 * const y = tidy(() => lowMatmul(a, b, "bf16"));
 * assert.deepEqual([y.dtype, y.shape], ["bf16", [2, 4]]);
 * dispose([a, b, y]);
 * ```
 */
export function lowMatmul(a: Tensor, b: Tensor, dt: LowDtype | undefined): Tensor {
  return dt === undefined ? matmul(a, b) : matmul(low(a, dt), low(b, dt));
}

/**
 * `conv2d(x, w, b, o)` with its tensors in `dt`; the plain call without one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy } from "../../mod.ts";
 * import { lowConv2d } from "./precision.ts";
 * const [x, w] = [ones([1, 1, 4, 4]), ones([2, 1, 2, 2])];
 * const y = tidy(() => lowConv2d(x, w, undefined, "bf16", { stride: 2 }));
 * assert.deepEqual([y.dtype, y.shape], ["bf16", [1, 2, 2, 2]]);
 * dispose([x, w, y]);
 * ```
 */
export function lowConv2d(
  x: Tensor,
  w: Tensor,
  b: Tensor | undefined,
  dt: LowDtype | undefined,
  o?: Conv2dOptions,
): Tensor {
  if (dt === undefined) return conv2d(x, w, b, o);
  return conv2d(low(x, dt), low(w, dt), b && low(b, dt), o);
}
