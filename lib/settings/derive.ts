/**
 * What the model, the training step and the augmentation are handed, derived
 * from a run's {@linkcode Settings}: the only place settings are renamed into
 * another module's terms.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { augmentConfig, networkConfig } from "./derive.ts";
 * import { makeSettings } from "./presets.ts";
 * const s = makeSettings("fmnist");
 * const net = networkConfig(s, 1); // 1-channel images
 * assert.deepEqual([net.vit?.inChans, net.vit?.patchSize, net.vit?.imgSize, net.head.outDim], [1, 7, 21, 1024]);
 * const aug = augmentConfig(s, { mean: [0.29], std: [0.35] });
 * assert.deepEqual([aug.globalCropsSize, aug.localCropsSize, aug.localCropsNumber], [21, 14, 2]);
 * ```
 * @module
 */
import { AUGMENT_PRESETS, type AugmentConfig, CROP_SETTINGS } from "../augment/mod.ts";
import { type DinoConfig, dinoConfig } from "../model/dino.ts";
import type { Settings } from "./settings.ts";

/**
 * The network the settings describe, for images of `channels` channels.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { networkConfig } from "./derive.ts";
 * import { makeSettings } from "./presets.ts";
 * const net = networkConfig(makeSettings("imagenet-vits16", { data: "/data" }), 3);
 * assert.deepEqual([net.vit?.embedDim, net.vit?.depth, net.head.outDim], [384, 12, 65536]);
 * const rn = networkConfig(makeSettings("fmnist", { arch: "resnet50" }), 1);
 * assert.deepEqual([rn.resnet?.inChans, rn.head.inDim], [1, 2048]);
 * ```
 */
export function networkConfig(s: Settings, channels: number): DinoConfig {
  return dinoConfig({
    arch: s.arch,
    embedDim: s.embedDim,
    depth: s.depth,
    numHeads: s.numHeads,
    patchSize: s.patchSize,
    inChans: channels,
    imgSize: s.globalCropsSize,
    dropPathRate: s.dropPathRate,
    outDim: s.outDim,
    hiddenDim: s.hiddenDim,
    bottleneckDim: s.bottleneckDim,
    useBn: s.useBnInHead,
    normLastLayer: s.normLastLayer,
  });
}

/**
 * The augmentation the settings describe: their recipe and crops, normalised
 * with the data's statistics.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { augmentConfig } from "./derive.ts";
 * import { makeSettings } from "./presets.ts";
 * const aug = augmentConfig(makeSettings("fmnist", { localCropsNumber: 0 }), { mean: [0.5], std: [0.5] });
 * assert.equal(aug.localCropsNumber, 0); // two global crops only
 * ```
 */
export function augmentConfig(s: Settings, norm: { mean: number[]; std: number[] }): AugmentConfig {
  const crops = Object.fromEntries(CROP_SETTINGS.map((k) => [k, s[k]]));
  return { ...AUGMENT_PRESETS[s.augmentation], ...crops, mean: norm.mean, std: norm.std };
}
