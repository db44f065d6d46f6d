/**
 * The settings of a training run: one declaration per setting (name, type,
 * default, official name, help and group: `settings.ts`), the presets
 * (`presets.ts`), their checks (`validate.ts`), and what the model, training step and augmentation are
 * handed, derived from them (`derive.ts`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeSettings, networkConfig } from "./mod.ts";
 * const s = makeSettings("fmnist", { depth: 2 });
 * assert.equal(networkConfig(s, 1).vit?.depth, 2);
 * ```
 * @module
 */
export * from "./settings.ts";
export * from "./presets.ts";
export * from "./validate.ts";
export * from "./derive.ts";
