/**
 * Weights and checkpoints: state dicts (`tree.ts`), the safetensors format (`safetensors.ts`), PyTorch's
 * `.pth` (`pth.ts`, over a restricted pickle reader in `pickle.ts`), either read as flat tensors (`read.ts`), networks
 * and backbones in the official layouts (`weights.ts`), released or trained backbones for evaluation
 * (`pretrained.ts`) and training checkpoints (`checkpoint.ts`).
 * @module
 */
export * from "./tree.ts";
export * from "./safetensors.ts";
export * from "./pickle.ts";
export * from "./pth.ts";
export * from "./read.ts";
export * from "./weights.ts";
export * from "./pretrained.ts";
export * from "./checkpoint.ts";
