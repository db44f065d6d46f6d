/**
 * Optimizers as (init, update) pairs of pure functions over flat parameter
 * records (official keys), with the official parameter groups: no weight
 * decay for biases and 1-D tensors. A parameter with no gradient this step
 * (the frozen last layer) is skipped entirely: no update, no decay, its state
 * untouched, as PyTorch does for `grad = None`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy, toArray } from "../../mod.ts";
 * import { adamw } from "./optim.ts";
 * const params = { "w": ones([2, 2]) };
 * const opt = adamw();
 * const state = opt.init(params);
 * const next = tidy(() => opt.update(params, { w: ones([2, 2]) }, state, { lr: 1e-3, weightDecay: 0.04 }));
 * // decayed by lr * wd, then a first Adam step of about lr
 * assert.deepEqual(toArray(next.params.w).map((v) => v.toFixed(5)), Array(4).fill("0.99896"));
 * assert.deepEqual(next.state.step, { w: 1 });
 * dispose([params, state, next]);
 * ```
 * @module
 */
import {
  adamwInto,
  add,
  alias,
  clamp,
  clone,
  copyInto,
  div,
  emaInto,
  gt,
  mul,
  mulInto,
  norm,
  onesLike,
  reciprocal,
  type Tensor,
  tidy,
  where,
  zerosLike,
} from "../../ffi/mod.ts";
import type { Flat } from "../weights/tree.ts";

/** The step's hyperparameters, from the schedules. */
export interface StepHyper {
  /** This step's learning rate. */
  lr: number;
  /** This step's weight decay (decayed parameters only). */
  weightDecay: number;
  /**
   * The caller donates the parameters and the state (as JAX's `donate_argnums`): their buffers receive the new
   * values, which the result holds aliases of, so a step needs no second copy of the model and its moments. The
   * donated tensors must not be read afterwards, only disposed.
   */
  donate?: boolean;
}

/** `fresh`, or with `donate` its values written into `old`'s buffer (an alias of `old` is returned). */
function settle(old: Tensor, fresh: Tensor, donate: boolean | undefined): Tensor {
  if (!donate) return fresh;
  copyInto(old, fresh);
  return alias(old);
}

/** AdamW's state: first and second moments and each parameter's own step count. */
export interface AdamWState {
  /** First moments, by parameter key. */
  exp_avg: Flat;
  /** Second moments, by parameter key. */
  exp_avg_sq: Flat;
  /** Steps each parameter has taken (a frozen one lags behind). */
  step: Record<string, number>;
}

/** SGD's state: the momentum buffers. */
export interface SGDState {
  /** Velocities, by parameter key. */
  momentum_buffer: Flat;
}

/** LARS's state: the momentum buffers (`mu`, as the official `utils.LARS` names them). */
export interface LARSState {
  /** Velocities, by parameter key. */
  mu: Flat;
}

/** An optimizer: `init` makes the state for a parameter record; `update` returns new parameters and state. */
export interface Optimizer<S> {
  /** The optimizer's name, as `--optimizer` takes it. */
  name: string;
  /** A fresh state for `params` (zeros). */
  init(params: Flat): S;
  /** One step. Parameters missing from `grads` are passed through unchanged. */
  update(params: Flat, grads: Flat, state: S, h: StepHyper): { params: Flat; state: S };
}

/** Whether a parameter is weight-decayed: not a bias, not 1-D (cls_token and pos_embed are decayed). */
export function isDecayed(key: string, t: Tensor): boolean {
  return !(key.endsWith(".bias") || t.ndim === 1);
}

/**
 * AdamW as `torch.optim.AdamW` (betas 0.9, 0.999, eps 1e-8), operation for operation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones } from "../../mod.ts";
 * import { adamw } from "./optim.ts";
 * const opt = adamw({ beta2: 0.99 });
 * using w = ones([3]);
 * const state = opt.init({ w });
 * assert.deepEqual([opt.name, Object.keys(state.exp_avg), state.step], ["adamw", ["w"], { w: 0 }]);
 * dispose(state);
 * ```
 */
export function adamw(o: { beta1?: number; beta2?: number; eps?: number } = {}): Optimizer<AdamWState> {
  const b1 = o.beta1 ?? 0.9, b2 = o.beta2 ?? 0.999, eps = o.eps ?? 1e-8;
  return {
    name: "adamw",
    init(params) {
      const s: AdamWState = { exp_avg: {}, exp_avg_sq: {}, step: {} };
      for (const [k, p] of Object.entries(params)) {
        s.exp_avg[k] = zerosLike(p);
        s.exp_avg_sq[k] = zerosLike(p);
        s.step[k] = 0;
      }
      return s;
    },
    update(params, grads, state, h) {
      const out: Flat = {};
      const s: AdamWState = { exp_avg: {}, exp_avg_sq: {}, step: { ...state.step } };
      // torch.optim.AdamW's kernels in place, into the donated buffers or into copies.
      const fresh = (t: Tensor) => h.donate ? alias(t) : clone(t);
      for (const [k, p] of Object.entries(params)) {
        const g = grads[k];
        if (g === undefined) {
          out[k] = alias(p);
          s.exp_avg[k] = alias(state.exp_avg[k]);
          s.exp_avg_sq[k] = alias(state.exp_avg_sq[k]);
          continue;
        }
        const step = (s.step[k] ?? 0) + 1;
        s.step[k] = step;
        const wd = isDecayed(k, p) ? h.weightDecay : 0;
        [out[k], s.exp_avg[k], s.exp_avg_sq[k]] = [fresh(p), fresh(state.exp_avg[k]), fresh(state.exp_avg_sq[k])];
        adamwInto(out[k], g, s.exp_avg[k], s.exp_avg_sq[k], {
          decay: 1 - h.lr * wd,
          beta1: b1,
          beta2: b2,
          eps,
          bc2Sqrt: Math.sqrt(1 - b2 ** step),
          stepSize: -h.lr / (1 - b1 ** step),
        });
      }
      return { params: out, state: s };
    },
  };
}

/**
 * SGD with momentum as `torch.optim.SGD(momentum=0.9)`, weight decay added to the gradient.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy, toArray } from "../../mod.ts";
 * import { sgd } from "./optim.ts";
 * const opt = sgd({ momentum: 0.9 });
 * using w = ones([2]);
 * const state = opt.init({ w });
 * const next = tidy(() => opt.update({ w }, { w: ones([2]) }, state, { lr: 0.5, weightDecay: 0 }));
 * assert.deepEqual(toArray(next.params.w), [0.5, 0.5]); // w - lr * g
 * dispose([state, next]);
 * ```
 */
export function sgd(o: { momentum?: number } = {}): Optimizer<SGDState> {
  const mom = o.momentum ?? 0.9;
  return {
    name: "sgd",
    init(params) {
      const s: SGDState = { momentum_buffer: {} };
      for (const [k, p] of Object.entries(params)) s.momentum_buffer[k] = zerosLike(p);
      return s;
    },
    update(params, grads, state, h) {
      const out: Flat = {};
      const s: SGDState = { momentum_buffer: {} };
      for (const [k, p] of Object.entries(params)) {
        const g = grads[k];
        if (g === undefined) {
          out[k] = alias(p);
          s.momentum_buffer[k] = alias(state.momentum_buffer[k]);
          continue;
        }
        const wd = isDecayed(k, p) ? h.weightDecay : 0;
        ({ p: out[k], buf: s.momentum_buffer[k] } = tidy(() => {
          const d = wd === 0 ? g : add(g, p, wd);
          // The first step's buffer is d itself in PyTorch; 0 * momentum + d is the same number.
          const buf = mom === 0 ? d : add(mul(state.momentum_buffer[k], mom), d);
          const kept = mom === 0 ? alias(state.momentum_buffer[k]) : settle(state.momentum_buffer[k], buf, h.donate);
          return { p: settle(p, add(p, buf, -h.lr), h.donate), buf: kept };
        }));
      }
      return { params: out, state: s };
    },
  };
}

/**
 * LARS as the official `utils.LARS` (from Barlow Twins), the optimizer the
 * official code offers for convnets and large batches: for a weight of more
 * than one dimension, the weight decay is added to the gradient, then the sum
 * is rescaled to `eta` ||w|| / ||g + wd w|| (trust ratio; 1 where either norm
 * is 0); one-dimensional weights (biases, norm scales) take their gradient as
 * it is. Then mu = momentum mu + update, w -= lr mu. Weight decay follows the
 * official parameter groups (none for biases and 1-D tensors), so it applies
 * exactly where the adaptation does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tensor, tidy, toArray } from "../../mod.ts";
 * import { lars } from "./optim.ts";
 * const opt = lars();
 * const params = { "w": tensor([[3, 4]]), "b": ones([2]) };
 * const state = opt.init(params);
 * const next = tidy(() => opt.update(params, { w: tensor([[0, 10]]), b: ones([2]) }, state, { lr: 1, weightDecay: 0 }));
 * // w: the gradient rescaled to 0.001 x ||w|| = 0.005 in norm; b: its gradient as it is
 * assert.deepEqual(toArray(next.params.w).map((v) => v.toFixed(4)), ["3.0000", "3.9950"]);
 * assert.deepEqual(toArray(next.params.b), [0, 0]);
 * assert.deepEqual(Object.keys(next.state.mu), ["w", "b"]);
 * dispose([params, state, next]);
 * ```
 */
export function lars(o: { momentum?: number; eta?: number } = {}): Optimizer<LARSState> {
  const mom = o.momentum ?? 0.9, eta = o.eta ?? 0.001;
  return {
    name: "lars",
    init(params) {
      const s: LARSState = { mu: {} };
      for (const [k, p] of Object.entries(params)) s.mu[k] = zerosLike(p);
      return s;
    },
    update(params, grads, state, h) {
      const out: Flat = {};
      const s: LARSState = { mu: {} };
      for (const [k, p] of Object.entries(params)) {
        const g = grads[k];
        if (g === undefined) {
          out[k] = alias(p);
          s.mu[k] = alias(state.mu[k]);
          continue;
        }
        ({ p: out[k], mu: s.mu[k] } = tidy(() => {
          let dp = g;
          if (p.ndim !== 1) {
            dp = add(g, p, isDecayed(k, p) ? h.weightDecay : 0); // dp.add(p, alpha=weight_decay) of p's group
            const paramNorm = norm(p), updateNorm = norm(dp);
            const one = onesLike(paramNorm), zero = zerosLike(paramNorm);
            const trust = div(mul(paramNorm, eta), updateNorm); // eta * param_norm / update_norm
            dp = mul(dp, where(gt(paramNorm, zero), where(gt(updateNorm, zero), trust, one), one));
          }
          const mu = add(mul(state.mu[k], mom), dp); // mu.mul_(momentum).add_(dp)
          return { p: settle(p, add(p, mu, -h.lr), h.donate), mu: settle(state.mu[k], mu, h.donate) };
        }));
      }
      return { params: out, state: s };
    },
  };
}

/**
 * Per-parameter gradient clipping, as the official `clip_gradients`: each
 * gradient is scaled by clip / (||g|| + 1e-6) when that is below 1. Returns
 * the clipped gradients and each gradient's norm before clipping. With
 * `donate`, into the given gradients' buffers (distinct buffers: `grad` gives
 * each input its own).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, item, ones, tidy, toArray } from "../../mod.ts";
 * import { clipGradients } from "./optim.ts";
 * const r = tidy(() => clipGradients({ w: ones([4]) }, 1));
 * assert.equal(item(r.norms.w), 2); // the norm before clipping
 * assert.ok(toArray(r.grads.w).every((v) => Math.abs(v - 0.5) < 1e-6)); // scaled by 1 / 2 (and 1e-6)
 * dispose(r);
 * ```
 */
export function clipGradients(
  grads: Flat,
  clip: number,
  o: { donate?: boolean } = {},
): { grads: Flat; norms: Record<string, Tensor> } {
  const out: Flat = {}, norms: Record<string, Tensor> = {};
  for (const [k, g] of Object.entries(grads)) {
    ({ g: out[k], n: norms[k] } = tidy(() => {
      const n = norm(g); // []
      const coef = mul(reciprocal(add(n, 1e-6)), clip); // Python's `clip / tensor` is reciprocal() * clip
      // Multiplying by min(coef, 1) equals the official "scale if coef < 1" (g * 1 is exact) without a device sync.
      const scale = clamp(coef, undefined, 1);
      if (!o.donate) return { g: mul(g, scale), n };
      mulInto(g, scale);
      return { g: alias(g), n };
    }));
  }
  return { grads: out, norms };
}

/**
 * The teacher's EMA update over the parameters the two networks share:
 * teacher * m + (1 - m) * student. With `donate`, into the teacher's
 * buffers (see {@linkcode StepHyper.donate}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, tidy, toArray, zeros } from "../../mod.ts";
 * import { emaUpdate } from "./optim.ts";
 * const t = tidy(() => emaUpdate({ w: zeros([2]) }, { w: ones([2]) }, 0.9));
 * assert.deepEqual(toArray(t.w).map((v) => v.toFixed(6)), ["0.100000", "0.100000"]); // 0.9 * 0 + 0.1 * 1
 * dispose(t);
 * ```
 */
export function emaUpdate(teacher: Flat, student: Flat, momentum: number, o: { donate?: boolean } = {}): Flat {
  const out: Flat = {};
  for (const [k, t] of Object.entries(teacher)) {
    const s = student[k];
    if (s === undefined) {
      out[k] = alias(t);
      continue;
    }
    out[k] = o.donate ? alias(t) : clone(t);
    emaInto(out[k], s, momentum); // param_k.mul_(m).add_((1 - m) * param_q), as the official code
  }
  return out;
}
