/**
 * The settings of a training run: one declaration per setting (name, type, default, official name, help
 * and group), the presets, and validation.
 * @module
 */
export * from "./settings.ts";
