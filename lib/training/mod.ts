/**
 * Training: the DINO loss (`loss.ts`), optimizers as (init, update) pairs
 * (`optim.ts`), schedules as pure functions of the step (`schedules.ts`), one
 * training step over an immutable state (`step.ts`), fp16's dynamic loss
 * scaler (`scaler.ts`), the loop that drives it
 * (`loop.ts`), the checks over its metrics (`guards.ts`) and the macrotask
 * turns that let signal handlers run during long loops (`turns.ts`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cosineSchedule } from "./mod.ts";
 * const lr = cosineSchedule(1e-3, 1e-6, 10, 100, 1); // 10 epochs of 100 steps, 1 of linear warmup
 * assert.equal(lr(0), 0);
 * ```
 * @module
 */
export * from "./loss.ts";
export * from "./optim.ts";
export * from "./schedules.ts";
export * from "./step.ts";
export * from "./scaler.ts";
export * from "./loop.ts";
export * from "./guards.ts";
export * from "./turns.ts";
