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
import { cat, type Generator, type ProcessGroup, type Tensor } from "../../ffi/mod.ts";
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
import {
  initResNet,
  isResNetArch,
  type ResNetArch,
  type ResNetConfig,
  resnetConfig,
  resnetForward,
  type ResNetParams,
  withRunningStats,
} from "./resnet.ts";
import type { BackboneArch, BackboneConfig } from "./backbone.ts";
import { lowDtype, type Precision } from "./precision.ts";

/**
 * A backbone and its head, keyed as the official MultiCropWrapper (`backbone.*`, `head.*`); `B` narrows the
 * backbone's kind where it is known.
 */
export interface DinoParams<B extends ViTParams | ResNetParams = ViTParams | ResNetParams> {
  /** The ViT or the ResNet. */
  backbone: B;
  /** The DINO head. */
  head: HeadParams;
}

/** The shape of a DINO network on a ViT. */
export interface ViTDinoConfig {
  /** The named architecture the backbone follows. */
  arch: Arch;
  /** The backbone's shape. */
  vit: ViTConfig;
  /** None: the backbone is a ViT. */
  resnet?: undefined;
  /** The head's shape. */
  head: HeadConfig;
}

/** The shape of a DINO network on a ResNet (`torchvision.models.resnetNN` with `fc` as identity). */
export interface ResNetDinoConfig {
  /** The named ResNet. */
  arch: ResNetArch;
  /** None: the backbone is a ResNet. */
  vit?: undefined;
  /** The backbone's shape. */
  resnet: ResNetConfig;
  /** The head's shape. */
  head: HeadConfig;
}

/** The shape of a DINO network: a ViT or a ResNet backbone, and a DINO head. */
export type DinoConfig = ViTDinoConfig | ResNetDinoConfig;

/** Options of {@linkcode dinoConfig}: an arch with ViT (ignored for a ResNet, but `inChans`) and head overrides. */
export type DinoConfigOptions =
  & { arch?: BackboneArch }
  & Partial<ViTConfig>
  & Partial<Omit<HeadConfig, "inDim">>;

/**
 * The backbone's shape, whichever kind it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { backboneConfig, dinoConfig } from "./dino.ts";
 * assert.equal(backboneConfig(dinoConfig({ arch: "resnet50" })).embedDim, 2048);
 * ```
 */
export function backboneConfig(cfg: DinoConfig): BackboneConfig {
  return cfg.resnet ?? cfg.vit;
}

/**
 * A network configuration: the arch's defaults with overrides for the ViT
 * (`patchSize`, `imgSize`, `depth`...) and the head (`outDim`, `hiddenDim`...).
 * A ResNet takes only `inChans` of the backbone options (3 by default, as
 * torchvision's); its head's input is its 512- or 2048-wide pooled feature.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dinoConfig } from "./dino.ts";
 * const cfg = dinoConfig({ arch: "vit_small", outDim: 65536 });
 * assert.deepEqual([cfg.vit.embedDim, cfg.vit.numHeads, cfg.head.inDim, cfg.head.outDim], [384, 6, 384, 65536]);
 * const rn = dinoConfig({ arch: "resnet50", useBn: true });
 * assert.deepEqual([rn.resnet.embedDim, rn.head.inDim, rn.head.useBn], [2048, 2048, true]);
 * ```
 */
export function dinoConfig(o?: DinoConfigOptions & { arch?: Arch }): ViTDinoConfig;
/** A ResNet's network configuration. */
export function dinoConfig(o: DinoConfigOptions & { arch: ResNetArch }): ResNetDinoConfig;
/** A network configuration of either kind, as the arch says. */
export function dinoConfig(o?: DinoConfigOptions): DinoConfig;
export function dinoConfig(o: DinoConfigOptions = {}): DinoConfig {
  const arch = o.arch ?? "vit_small";
  const { outDim, hiddenDim, bottleneckDim, nlayers, useBn, normLastLayer, ...vitOptions } = o;
  delete (vitOptions as { arch?: Arch }).arch;
  const headOptions = Object.fromEntries(
    Object.entries({ hiddenDim, bottleneckDim, nlayers, useBn, normLastLayer }).filter(([, v]) => v !== undefined),
  );
  if (isResNetArch(arch)) {
    const resnet = resnetConfig(arch, vitOptions.inChans ?? 3);
    return { arch, resnet, head: headConfig(resnet.embedDim, outDim ?? 65536, headOptions) };
  }
  const vit = vitConfig(arch, vitOptions);
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
export function initDino(cfg: ViTDinoConfig, g: Generator): DinoParams<ViTParams>;
/** Fresh parameters for a ResNet network. */
export function initDino(cfg: ResNetDinoConfig, g: Generator): DinoParams<ResNetParams>;
/** Fresh parameters for either kind of network. */
export function initDino(cfg: DinoConfig, g: Generator): DinoParams;
export function initDino(cfg: DinoConfig, g: Generator): DinoParams {
  const backbone = cfg.resnet ? initResNet(cfg.resnet, g) : initViT(cfg.vit, g);
  return { backbone, head: initHead(cfg.head, g) };
}

/** Options of {@linkcode multiCropForward}. */
export interface MultiCropOptions {
  /** Stochastic depth (student only): a generator, with the config's drop-path rate. */
  dropPath?: Generator;
  /** On one rank of several: which rows of the global batch's drop-path masks are this rank's. */
  shard?: DropPathShard;
  /** Batch-norm mode of the head and of a ResNet backbone (true, the default: batch statistics). */
  training?: boolean;
  /**
   * On one rank of several: batch norm in training normalises with the
   * statistics of every rank's batch, as the official code's SyncBatchNorm.
   */
  group?: ProcessGroup;
  /**
   * Mixed precision of a ViT network (see `precision.ts`; default fp32): the
   * matrix products in bf16 or fp16, the output in fp32. ResNets take fp32 only.
   */
  precision?: Precision;
}

/**
 * The head's output for every crop, in crop order: [sum of crop batches, K].
 * Consecutive crops of equal size share one backbone pass. In training, the
 * batch-norm buffers the passes moved come back under their keys
 * (`head.mlp.1.running_mean`, `backbone.layer1.0.bn1.running_var`, ...): a
 * ResNet's move once per backbone pass (the global crops', then the local
 * crops'), each pass starting from the last one's, as PyTorch's in-place
 * buffers do.
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
  const training = o.training ?? true;
  const dt = lowDtype(o.precision);
  if (dt && cfg.resnet) {
    throw new Error(`precision ${o.precision} is implemented for ViTs; a ResNet (${cfg.arch}) trains in fp32`);
  }
  const features: Tensor[] = [];
  const backboneStats: Record<string, Tensor> = {};
  let start = 0;
  for (let end = 1; end <= crops.length; end++) {
    if (end < crops.length && crops[end].shape.at(-1) === crops[start].shape.at(-1)) continue;
    const batch = end - start === 1 ? crops[start] : cat(crops.slice(start, end), 0); // [n*B, C, H, W]
    if (cfg.resnet) {
      const net = withRunningStats(p.backbone as ResNetParams, backboneStats);
      const r = resnetForward(net, cfg.resnet, batch, { training, group: o.group });
      Object.assign(backboneStats, r.bnStats);
      features.push(r.output);
    } else {
      const vo = { dropPath: o.dropPath, shard: o.shard, precision: o.precision };
      features.push(vitForward(p.backbone as ViTParams, cfg.vit, batch, vo));
    }
    start = end;
  }
  const all = features.length === 1 ? features[0] : cat(features, 0); // [crops*B, D]
  const { output, bnStats } = headForward(p.head, cfg.head, all, training, dt, o.group);
  const moved = Object.entries(backboneStats).map(([k, t]) => [`backbone.${k}`, t]);
  return {
    output,
    bnStats: Object.fromEntries([...moved, ...Object.entries(bnStats).map(([k, t]) => [`head.${k}`, t])]),
  };
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
