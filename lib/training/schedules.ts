/**
 * Schedules as pure functions of the iteration (or epoch), equal to the
 * official numpy arrays value for value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cosineSchedule } from "./schedules.ts";
 * const lr = cosineSchedule(5e-4, 1e-6, 100, 1000, 10); // 100 epochs of 1000 steps, 10 of them warmup
 * assert.equal(lr(0), 0);
 * assert.ok(Math.abs(lr(10_000) - 5e-4) < 1e-12); // the peak, after the warmup
 * assert.ok(Math.abs(lr(99_999) - 1e-6) < 1e-9); // the end
 * ```
 * @module
 */

/** numpy.linspace(start, stop, num)[i], with numpy's rounding. */
export function linspaceAt(start: number, stop: number, num: number, i: number): number {
  if (num === 1) return start;
  if (i === num - 1) return stop;
  const step = (stop - start) / (num - 1);
  return i * step + start;
}

/**
 * The official `cosine_scheduler(base, final, epochs, iters_per_epoch, warmup_epochs, start_warmup)`
 * as a function of the iteration: a linear warmup from `startWarmup` to `base`,
 * then `final + 0.5 (base - final) (1 + cos(pi i / n))`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cosineSchedule } from "./schedules.ts";
 * const momentum = cosineSchedule(0.996, 1, 100, 500);
 * assert.equal(momentum(0), 0.996);
 * assert.equal(momentum(25_000).toFixed(6), "0.998000"); // halfway
 * assert.ok(momentum(49_999) > 0.99999); // the last step
 * assert.throws(() => momentum(50_000), RangeError);
 * ```
 */
export function cosineSchedule(
  base: number,
  final: number,
  epochs: number,
  itersPerEpoch: number,
  warmupEpochs = 0,
  startWarmup = 0,
): (it: number) => number {
  const total = epochs * itersPerEpoch;
  const warmup = Math.round(warmupEpochs * itersPerEpoch); // fractional warmup epochs round to whole steps
  const n = total - warmup;
  return (it: number) => {
    if (!(it >= 0 && it < total)) throw new RangeError(`iteration ${it} is outside the schedule's 0..${total - 1}`);
    if (it < warmup) return linspaceAt(startWarmup, base, warmup, it);
    const i = it - warmup;
    return final + 0.5 * (base - final) * (1 + Math.cos((Math.PI * i) / n));
  };
}

/**
 * The teacher temperature of an epoch: linear from `warmup` to `temp` over
 * `warmupEpochs`, then constant, as the official DINOLoss.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { teacherTempSchedule } from "./schedules.ts";
 * const tau = teacherTempSchedule(0.04, 0.07, 30, 100);
 * assert.deepEqual([tau(0), tau(29), tau(50)], [0.04, 0.07, 0.07]);
 * ```
 */
export function teacherTempSchedule(
  warmup: number,
  temp: number,
  warmupEpochs: number,
  epochs: number,
): (epoch: number) => number {
  if (warmupEpochs > epochs) {
    throw new RangeError(`teacher temperature warmup (${warmupEpochs}) exceeds the epochs (${epochs})`);
  }
  return (epoch: number) => {
    if (!(epoch >= 0 && epoch < epochs)) throw new RangeError(`epoch ${epoch} is outside 0..${epochs - 1}`);
    return epoch < warmupEpochs ? linspaceAt(warmup, temp, warmupEpochs, epoch) : temp;
  };
}
