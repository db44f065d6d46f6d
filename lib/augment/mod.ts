/**
 * The DINO augmentation (the official `DataAugmentationDINO`) as batched tensor transforms: presets,
 * image functions, per-sample random plans, and the multi-crop views.
 * @module
 */
export * from "./augment.ts";
