/**
 * The augmentation's parameters ({@linkcode AugmentConfig}, named as in the official code and
 * torchvision) and its presets ({@linkcode AUGMENT_PRESETS}): plain data, apart from the code that
 * reads it, so that a run's settings can name and override them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS } from "./presets.ts";
 * import { viewSpecs } from "../../mod.ts";
 * const { imagenet, fmnist28 } = AUGMENT_PRESETS;
 * assert.deepEqual([imagenet.globalCropsSize, imagenet.localCropsSize, imagenet.localCropsNumber], [224, 96, 8]); // the official recipe
 * assert.deepEqual(viewSpecs(fmnist28).map((s) => s.size), [28, 28, 12, 12, 12, 12, 12, 12]);
 * ```
 * @module
 */
import { type SettingName, SETTINGS, type Settings } from "../settings/settings.ts";

/** The crop settings: declared (with their official defaults) in `lib/settings`, read here. */
export const CROP_SETTINGS = [
  "globalCropsSize",
  "globalCropsScale",
  "localCropsSize",
  "localCropsScale",
  "localCropsNumber",
] as const satisfies readonly SettingName[];
/** The name of a crop setting. */
export type CropSetting = typeof CROP_SETTINGS[number];

/** The augmentation's parameters: the crop settings, then the recipe, named after torchvision. */
export interface AugmentConfig extends Pick<Settings, CropSetting> {
  /** Aspect-ratio range of the crops ((3/4, 4/3)). */
  ratio: [number, number];
  /** Horizontal flip probability (0.5). */
  flipP: number;
  /** Probability of color jitter (0.8) and its strengths. */
  jitterP: number;
  /** Brightness factor range 1 +- this (0.4). */
  brightness: number;
  /** Contrast factor range 1 +- this (0.4). */
  contrast: number;
  /** Saturation factor range 1 +- this (0.2). */
  saturation: number;
  /** Hue shift range +- this, in turns (0.1). */
  hue: number;
  /** Grayscale probability (0.2). */
  grayP: number;
  /** Blur probability of global 1, global 2 and each local crop ((1, 0.1, 0.5)). */
  blurP: [number, number, number];
  /** Range of the blur's sigma, in pixels ((0.1, 2)). */
  blurSigma: [number, number];
  /** Solarization probability of global 2 (0.2). */
  solarizeP: number;
  /** Per-channel normalisation. */
  mean: number[];
  /** Per-channel standard deviation of the normalisation. */
  std: number[];
  /** Crop resampling: bicubic (the official) or bilinear. */
  interpolation: "bicubic" | "bilinear";
}

const IMAGENET_MEAN = [0.485, 0.456, 0.406], IMAGENET_STD = [0.229, 0.224, 0.225];

const OFFICIAL: AugmentConfig = {
  globalCropsSize: SETTINGS.globalCropsSize.default,
  globalCropsScale: SETTINGS.globalCropsScale.default,
  localCropsSize: SETTINGS.localCropsSize.default,
  localCropsScale: SETTINGS.localCropsScale.default,
  localCropsNumber: SETTINGS.localCropsNumber.default,
  ratio: [3 / 4, 4 / 3],
  flipP: 0.5,
  jitterP: 0.8,
  brightness: 0.4,
  contrast: 0.4,
  saturation: 0.2,
  hue: 0.1,
  grayP: 0.2,
  blurP: [1, 0.1, 0.5],
  blurSigma: [0.1, 2],
  solarizeP: 0.2,
  mean: IMAGENET_MEAN,
  std: IMAGENET_STD,
  interpolation: "bicubic",
};
/** Small images: 6 local crops and no blur (blurring 16 px crops erases them), as small-data recipes do. */
const SMALL_IMAGES = { localCropsNumber: 6, blurP: [0, 0, 0] as [number, number, number] };

/**
 * Presets: the official ImageNet recipe (2 x 224 + 8 x 96), CIFAR at 32 px and
 * Fashion-MNIST at 28 px (no blur at these sizes, as small-data recipes do).
 */
export const AUGMENT_PRESETS: Record<"imagenet" | "cifar32" | "fmnist28", AugmentConfig> = {
  imagenet: OFFICIAL,
  cifar32: {
    ...OFFICIAL,
    ...SMALL_IMAGES,
    globalCropsSize: 32,
    localCropsSize: 16,
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.2435, 0.2616],
  },
  fmnist28: { ...OFFICIAL, ...SMALL_IMAGES, globalCropsSize: 28, localCropsSize: 12, mean: [0.286], std: [0.353] },
};
