/**
 * Weights and checkpoints: state dicts (`tree.ts`), the safetensors format (`safetensors.ts`), networks
 * and backbones in the official layouts (`weights.ts`), released or trained backbones for evaluation
 * (`pretrained.ts`) and training checkpoints (`checkpoint.ts`).
 * @module
 */
export * from "./tree.ts";
export * from "./safetensors.ts";
export * from "./weights.ts";
export * from "./pretrained.ts";
export * from "./checkpoint.ts";
