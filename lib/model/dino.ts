/**
 * The DINO network: a ViT backbone and a DINO head, as the official
 * `MultiCropWrapper(backbone, head)`. Crops of one resolution go through the
 * backbone as one batch; the head runs once on all of them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { dinoConfig, initDino, multiCropForward } from "./dino.ts";
 * using g = new Generator(0);
 * const cfg = dinoConfig({ arch: "vit_tiny", patchSize: 4, imgSize: 28, inChans: 1, depth: 2, outDim: 256 });
 * const model = initDino(cfg, g);
 * const out = tidy(() =>
 *   multiCropForward(model, cfg, [randn(g, [2, 1, 28, 28]), randn(g, [2, 1, 28, 28]), randn(g, [2, 1, 12, 12])]).output
 * );
 * assert.deepEqual(out.shape, [6, 256]); // 3 crops x 2 images
 * dispose([model, out]);
 * ```
 * @module
 */
import { cat, type Generator, type Tensor } from "../../ffi/mod.ts";
import { type HeadConfig, headConfig, headForward, type HeadParams, initHead } from "./head.ts";
import {
  type Arch,
  type DropPathShard,
  initViT,
  type ViTConfig,
  vitConfig,
  vitForward,
  type ViTParams,
} from "./vit.ts";

/** A backbone and its head, keyed as the official MultiCropWrapper (`backbone.*`, `head.*`). */
export interface DinoParams {
  /** The ViT. */
  backbone: ViTParams;
  /** The DINO head. */
  head: HeadParams;
}

/** The shape of a DINO network. */
export interface DinoConfig {
  /** The named architecture the backbone follows. */
  arch: Arch;
  /** The backbone's shape. */
  vit: ViTConfig;
  /** The head's shape. */
  head: HeadConfig;
}

/** Options of {@linkcode dinoConfig}: an arch with ViT and head overrides. */
export type DinoConfigOptions =
  & { arch?: Arch }
  & Partial<ViTConfig>
  & Partial<Omit<HeadConfig, "inDim">>;

/**
 * A network configuration: the arch's defaults with overrides for the ViT
 * (`patchSize`, `imgSize`, `depth`...) and the head (`outDim`, `hiddenDim`...).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dinoConfig } from "./dino.ts";
 * const cfg = dinoConfig({ arch: "vit_small", outDim: 65536 });
 * assert.deepEqual([cfg.vit.embedDim, cfg.vit.numHeads, cfg.head.inDim, cfg.head.outDim], [384, 6, 384, 65536]);
 * ```
 */
export function dinoConfig(o: DinoConfigOptions = {}): DinoConfig {
  const arch = o.arch ?? "vit_small";
  const { outDim, hiddenDim, bottleneckDim, nlayers, useBn, normLastLayer, ...vitOptions } = o;
  delete (vitOptions as { arch?: Arch }).arch;
  const vit = vitConfig(arch, vitOptions);
  const headOptions = Object.fromEntries(
    Object.entries({ hiddenDim, bottleneckDim, nlayers, useBn, normLastLayer }).filter(([, v]) => v !== undefined),
  );
  return { arch, vit, head: headConfig(vit.embedDim, outDim ?? 65536, headOptions) };
}

/**
 * Fresh parameters for `cfg`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { dinoConfig, initDino } from "./dino.ts";
 * using g = new Generator(0);
 * const model = initDino(dinoConfig({ arch: "vit_tiny", outDim: 512 }), g);
 * assert.deepEqual([model.backbone.blocks.length, model.head.last_layer.weight_v.shape], [12, [512, 256]]);
 * dispose(model);
 * ```
 */
export function initDino(cfg: DinoConfig, g: Generator): DinoParams {
  return { backbone: initViT(cfg.vit, g), head: initHead(cfg.head, g) };
}

/** Options of {@linkcode multiCropForward}. */
export interface MultiCropOptions {
  /** Stochastic depth (student only): a generator, with the config's drop-path rate. */
  dropPath?: Generator;
  /** On one rank of several: which rows of the global batch's drop-path masks are this rank's. */
  shard?: DropPathShard;
  /** Batch-norm mode of the head (true: batch statistics). */
  training?: boolean;
}

/**
 * The head's output for every crop, in crop order: [sum of crop batches, K].
 * Consecutive crops of equal size share one backbone pass.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { dinoConfig, initDino, multiCropForward } from "./dino.ts";
 * using g = new Generator(0);
 * const cfg = dinoConfig({ arch: "vit_tiny", imgSize: 32, patchSize: 8, depth: 1, outDim: 64 });
 * const m = initDino(cfg, g);
 * const y = tidy(() => multiCropForward(m, cfg, [randn(g, [2, 3, 32, 32])]).output);
 * assert.deepEqual(y.shape, [2, 64]);
 * dispose([m, y]);
 * ```
 */
export function multiCropForward(
  p: DinoParams,
  cfg: DinoConfig,
  crops: readonly Tensor[],
  o: MultiCropOptions = {},
): { output: Tensor; bnStats: Record<string, Tensor> } {
  if (crops.length === 0) throw new Error("multiCropForward needs at least one crop");
  const features: Tensor[] = [];
  let start = 0;
  for (let end = 1; end <= crops.length; end++) {
    if (end < crops.length && crops[end].shape.at(-1) === crops[start].shape.at(-1)) continue;
    const batch = end - start === 1 ? crops[start] : cat(crops.slice(start, end), 0); // [n*B, C, H, W]
    features.push(vitForward(p.backbone, cfg.vit, batch, { dropPath: o.dropPath, shard: o.shard }));
    start = end;
  }
  const all = features.length === 1 ? features[0] : cat(features, 0); // [crops*B, D]
  const { output, bnStats } = headForward(p.head, cfg.head, all, o.training ?? true);
  return { output, bnStats: Object.fromEntries(Object.entries(bnStats).map(([k, t]) => [`head.${k}`, t])) };
}

/**
 * Whether a parameter belongs to the head's last layer, the one frozen during the first `freeze_last_layer` epochs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isLastLayer } from "./dino.ts";
 * assert.deepEqual([isLastLayer("head.last_layer.weight_v"), isLastLayer("head.mlp.0.weight")], [true, false]);
 * ```
 */
export function isLastLayer(key: string): boolean {
  return key.startsWith("head.last_layer.");
}
