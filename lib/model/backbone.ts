/**
 * The backbones DINO trains, by name: the Vision Transformers (`vit.ts`) and
 * the torchvision ResNets (`resnet.ts`), and what the rest of the program asks
 * of either without knowing which: the evaluation feature of a batch of
 * images, its width, and the device the weights are on.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { backboneFeatures, initBackbone } from "./backbone.ts";
 * import { resnetConfig } from "./resnet.ts";
 * using g = new Generator(0);
 * const cfg = resnetConfig("resnet18");
 * const p = initBackbone(cfg, g);
 * const y = tidy(() => backboneFeatures(p, cfg, randn(g, [2, 3, 32, 32])));
 * assert.deepEqual(y.shape, [2, 512]);
 * dispose([p, y]);
 * ```
 * @module
 */
import type { Generator, Tensor } from "../../ffi/mod.ts";
import { type Arch, ARCHS, initViT, type ViTConfig, vitForward, type ViTParams } from "./vit.ts";
import {
  initResNet,
  isResNetConfig,
  RESNET_ARCHS,
  type ResNetArch,
  type ResNetConfig,
  resnetFeatures,
  type ResNetParams,
} from "./resnet.ts";

/** A backbone's name: a ViT (`vit_small`, ...) or a ResNet (`resnet50`, ...). */
export type BackboneArch = Arch | ResNetArch;

/** Every backbone name, ViTs first. */
export const BACKBONE_ARCHS: readonly BackboneArch[] = [
  ...Object.keys(ARCHS) as Arch[],
  ...Object.keys(RESNET_ARCHS) as ResNetArch[],
];

/** A backbone's shape: a ViT's or a ResNet's (which has `kind: "resnet"`). */
export type BackboneConfig = ViTConfig | ResNetConfig;

/** A backbone's parameters (and, for a ResNet, batch-norm buffers). */
export type BackboneParams = ViTParams | ResNetParams;

/**
 * Fresh parameters of either kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initBackbone } from "./backbone.ts";
 * import { vitConfig } from "./vit.ts";
 * using g = new Generator(0);
 * const p = initBackbone(vitConfig("vit_tiny", { depth: 1 }), g);
 * assert.ok("cls_token" in p);
 * dispose(p);
 * ```
 */
export function initBackbone(cfg: BackboneConfig, g: Generator): BackboneParams {
  return isResNetConfig(cfg) ? initResNet(cfg, g) : initViT(cfg, g);
}

/**
 * The feature the evaluations use, [B, D]: a ViT's CLS token after the final
 * norm, a ResNet's pooled output in evaluation mode (running statistics), as
 * the official `eval_knn.py` and `eval_linear.py` compute them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { backboneFeatures, initBackbone } from "./backbone.ts";
 * import { vitConfig } from "./vit.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { imgSize: 16, patchSize: 8, depth: 1 });
 * const p = initBackbone(cfg, g);
 * const y = tidy(() => backboneFeatures(p, cfg, randn(g, [1, 3, 16, 16])));
 * assert.deepEqual(y.shape, [1, 192]);
 * dispose([p, y]);
 * ```
 */
export function backboneFeatures(p: BackboneParams, cfg: BackboneConfig, x: Tensor): Tensor {
  return isResNetConfig(cfg) ? resnetFeatures(p as ResNetParams, cfg, x) : vitForward(p as ViTParams, cfg, x);
}

/** Where a backbone's weights are. */
export function backboneDevice(p: BackboneParams): Tensor["device"] {
  return "cls_token" in p ? p.cls_token.device : p.conv1.weight.device;
}

/**
 * What a backbone takes and gives, in a line: `resnet50 (2048-d, 3 channels)`, `vit_small/16 (384-d, 3 channels)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeBackbone } from "./backbone.ts";
 * import { resnetConfig } from "./resnet.ts";
 * assert.equal(describeBackbone(resnetConfig("resnet50", 1)), "resnet50 (2048-d, 1 channel)");
 * ```
 */
export function describeBackbone(cfg: BackboneConfig): string {
  const channels = `${cfg.inChans} channel${cfg.inChans === 1 ? "" : "s"}`;
  if (isResNetConfig(cfg)) return `${cfg.arch} (${cfg.embedDim}-d, ${channels})`;
  return `ViT D ${cfg.embedDim}, depth ${cfg.depth}, patch ${cfg.patchSize} (${channels})`;
}

export { isResNetConfig };
