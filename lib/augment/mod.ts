/**
 * The DINO augmentation (the official `DataAugmentationDINO`) as batched tensor transforms: presets,
 * image functions, per-sample random plans, and the multi-crop views.
 * @module
 */
export * from "./presets.ts";
export * from "./image.ts";
export { cropBoxes, type ViewSpec, viewSpecs } from "./plans.ts";
export * from "./views.ts";
