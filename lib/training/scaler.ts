/**
 * Dynamic loss scaling for fp16 training, as `torch.cuda.amp.GradScaler`
 * (which the official `main_dino.py` uses with `--use_fp16`): the loss is
 * multiplied by the scale before backward so that small fp16 gradients do not
 * flush to zero; the gradients are divided by it (unscaled) before clipping;
 * a step whose gradients hold an inf or a NaN is skipped (the parameters and
 * the optimizer state stay as they were) and the scale is multiplied by the
 * backoff factor; after `growth_interval` finite steps in a row, it is
 * multiplied by the growth factor.
 *
 * A scaler is an `(init, update)` pair over a plain record of numbers laid out
 * as GradScaler's `state_dict()` (`scale`, `growth_factor`, `backoff_factor`,
 * `growth_interval`, `_growth_tracker`): the training state holds it, and a
 * checkpoint saves it under the official key `fp16_scaler`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lossScaler } from "./scaler.ts";
 * const scaler = lossScaler({ growthInterval: 2 });
 * let s = scaler.init();
 * s = scaler.update(s, false); // an overflow: the step was skipped
 * assert.deepEqual([s.scale, s._growth_tracker], [32768, 0]);
 * s = scaler.update(scaler.update(s, true), true); // two finite steps: grown back
 * assert.deepEqual([s.scale, s._growth_tracker], [65536, 0]);
 * ```
 * @module
 */
import { all, isfinite, item, mul, stack, type Tensor, tidy } from "../../ffi/mod.ts";
import type { Flat } from "../weights/tree.ts";

/** A loss scaler's state: GradScaler's `state_dict()`, field for field. */
export interface LossScalerState {
  /** The factor the loss is multiplied by (a power of two with the defaults). */
  scale: number;
  /** What the scale is multiplied by after `growth_interval` finite steps in a row (2). */
  growth_factor: number;
  /** What the scale is multiplied by after a step with non-finite gradients (0.5). */
  backoff_factor: number;
  /** Finite steps in a row before the scale grows (2000). */
  growth_interval: number;
  /** Finite steps in a row since the last growth or overflow. */
  _growth_tracker: number;
}

/** Options of {@linkcode lossScaler}: GradScaler's constructor arguments, with its defaults. */
export interface LossScalerOptions {
  /** The first scale (2^16). */
  initScale?: number;
  /** Growth factor (2). */
  growthFactor?: number;
  /** Backoff factor (0.5). */
  backoffFactor?: number;
  /** Finite steps before growing (2000). */
  growthInterval?: number;
}

/** A loss scaler: a fresh state, and the state after a step whose gradients were finite or not. */
export interface LossScaler {
  /** The state before the first step. */
  init(): LossScalerState;
  /** The state after a step: backed off when its gradients were not all finite, else counted (and grown). */
  update(state: LossScalerState, finite: boolean): LossScalerState;
}

/**
 * The loss scaler of `torch.cuda.amp.GradScaler(init_scale, growth_factor, backoff_factor, growth_interval)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lossScaler } from "./scaler.ts";
 * assert.deepEqual(lossScaler().init(), {
 *   scale: 65536,
 *   growth_factor: 2,
 *   backoff_factor: 0.5,
 *   growth_interval: 2000,
 *   _growth_tracker: 0,
 * });
 * ```
 */
export function lossScaler(o: LossScalerOptions = {}): LossScaler {
  const init = {
    scale: o.initScale ?? 2 ** 16,
    growth_factor: o.growthFactor ?? 2,
    backoff_factor: o.backoffFactor ?? 0.5,
    growth_interval: o.growthInterval ?? 2000,
    _growth_tracker: 0,
  };
  if (!(init.scale > 0 && Number.isFinite(init.scale))) throw new Error("the initial loss scale must be positive");
  if (!(init.growth_factor > 1)) throw new Error("the loss scale's growth factor must exceed 1");
  if (!(init.backoff_factor > 0 && init.backoff_factor < 1)) {
    throw new Error("the loss scale's backoff factor must be in (0, 1)");
  }
  if (!(Number.isInteger(init.growth_interval) && init.growth_interval > 0)) {
    throw new Error("the loss scale's growth interval must be a positive integer");
  }
  return {
    init: () => ({ ...init }),
    update: (s, finite) => updateScale(s, finite),
  };
}

/**
 * GradScaler's `update()` (`_amp_update_scale_`): back off and reset the count
 * after an overflow; otherwise count the step, and grow the scale (if the grown
 * scale is finite in fp32) when the count reaches the interval.
 */
function updateScale(s: LossScalerState, finite: boolean): LossScalerState {
  if (!finite) return { ...s, scale: Math.fround(s.scale * s.backoff_factor), _growth_tracker: 0 };
  const good = s._growth_tracker + 1;
  if (good < s.growth_interval) return { ...s, _growth_tracker: good };
  const grown = Math.fround(s.scale * s.growth_factor);
  return { ...s, scale: Number.isFinite(grown) ? grown : s.scale, _growth_tracker: 0 };
}

/**
 * The loss times the scale: what backward starts from.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, item, tensor } from "../../mod.ts";
 * import { lossScaler, scaleLoss } from "./scaler.ts";
 * using loss = tensor([0.5]);
 * const scaled = scaleLoss(loss, lossScaler().init());
 * assert.equal(item(scaled), 32768);
 * dispose(scaled);
 * ```
 */
export function scaleLoss(loss: Tensor, s: LossScalerState): Tensor {
  return mul(loss, s.scale);
}

/**
 * The gradients divided by the scale (multiplied by its fp32 reciprocal, as
 * GradScaler's `unscale_`), and whether every one of their elements is finite.
 * The input record is left as it was; the result's tensors are new.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor, toArray } from "../../mod.ts";
 * import { lossScaler, unscaleGradients } from "./scaler.ts";
 * const s = lossScaler().init();
 * const grads = { w: tensor([65536, -131072]), b: tensor([Infinity]) };
 * const r = unscaleGradients(grads, s);
 * assert.deepEqual([toArray(r.grads.w), r.finite], [[1, -2], false]); // b overflowed: skip the step
 * dispose([grads, r.grads]);
 * ```
 */
export function unscaleGradients(grads: Flat, s: LossScalerState): { grads: Flat; finite: boolean } {
  const inverse = Math.fround(1 / s.scale);
  const unscaled = Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, mul(g, inverse)]));
  return { grads: unscaled, finite: allFinite(Object.values(unscaled)) };
}

/**
 * Whether every element of every tensor is finite (one native read for all of them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../../mod.ts";
 * import { allFinite } from "./scaler.ts";
 * const ts = [tensor([1, 2]), tensor([NaN])];
 * assert.deepEqual([allFinite(ts.slice(0, 1)), allFinite(ts)], [true, false]);
 * dispose(ts);
 * ```
 */
export function allFinite(tensors: readonly Tensor[]): boolean {
  if (tensors.length === 0) return true;
  return tidy(() => item(all(stack(tensors.map((t) => all(isfinite(t))), 0))) !== 0);
}
