/**
 * The model: the Vision Transformer backbone (`vit.ts`), the torchvision ResNets (`resnet.ts`), the DINO
 * projection head (`head.ts`) and the multi-crop wrapper that runs both over every crop (`dino.ts`), with mixed
 * precision as autocast (`precision.ts`) and batch norm over every rank of a data-parallel run (`batch_norm.ts`). Parameters are plain records of tensors under the official `state_dict`
 * key names.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dinoConfig } from "./mod.ts";
 * const cfg = dinoConfig({ arch: "vit_tiny", depth: 1, outDim: 64 });
 * assert.deepEqual([cfg.vit.embedDim, cfg.head.outDim], [192, 64]);
 * ```
 * @module
 */
export * from "./vit.ts";
export * from "./resnet.ts";
export * from "./backbone.ts";
export * from "./head.ts";
export * from "./dino.ts";
export * from "./precision.ts";
export * from "./batch_norm.ts";
