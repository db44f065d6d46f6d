/**
 * The torchvision ResNets (18, 34, 50, 101) as DINO trains them: the module
 * layout and `state_dict` key names of `torchvision.models.resnetNN()`
 * (`conv1`, `bn1`, `layer1.0.conv1`, ..., `layer4.2.downsample.{0,1}`), with
 * the final `fc` replaced by identity as the official `MultiCropWrapper`
 * does, so the output is the 512- or 2048-wide globally pooled feature.
 *
 * Batch norm behaves as PyTorch's `nn.BatchNorm2d` (eps 1e-5, momentum 0.1):
 * in training it normalises with the batch's statistics and moves the running
 * mean and the unbiased running variance; in evaluation it uses the running
 * ones. Forward passes are pure: the buffers a training pass moves come back
 * as new tensors under their state-dict keys (`layer1.0.bn1.running_mean`, ...),
 * never changed in place.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initResNet, resnetConfig, resnetForward } from "./resnet.ts";
 * using g = new Generator(0);
 * const cfg = resnetConfig("resnet18");
 * const params = initResNet(cfg, g);
 * const r = tidy(() => resnetForward(params, cfg, randn(g, [2, 3, 32, 32]), { training: true }));
 * assert.deepEqual(r.output.shape, [2, 512]); // one pooled feature per image
 * assert.deepEqual(r.bnStats["bn1.running_mean"].shape, [64]); // the stem's moved running mean
 * dispose([params, r]);
 * ```
 * @module
 */
import {
  adaptiveAvgPool2d,
  add,
  conv2d,
  flatten,
  type Generator,
  maxPool2d,
  normal,
  ones,
  type ProcessGroup,
  relu,
  type Tensor,
  tidy,
  zeros,
} from "../../ffi/mod.ts";
import { syncBatchNorm } from "./batch_norm.ts";
import type { BatchNormParams } from "./head.ts";

/** The torchvision ResNets: block type and blocks per stage. */
export const RESNET_ARCHS = {
  resnet18: { block: "basic", layers: [2, 2, 2, 2] },
  resnet34: { block: "basic", layers: [3, 4, 6, 3] },
  resnet50: { block: "bottleneck", layers: [3, 4, 6, 3] },
  resnet101: { block: "bottleneck", layers: [3, 4, 23, 3] },
} as const;

/** A named ResNet. */
export type ResNetArch = keyof typeof RESNET_ARCHS;

/** Whether `name` is a ResNet architecture. */
export function isResNetArch(name: string): name is ResNetArch {
  return Object.hasOwn(RESNET_ARCHS, name);
}

/** The shape of a ResNet. */
export interface ResNetConfig {
  /** Tells a ResNet's configuration from a ViT's. */
  kind: "resnet";
  /** The named architecture. */
  arch: ResNetArch;
  /** BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3, 1x1; expansion 4). */
  block: "basic" | "bottleneck";
  /** Blocks in each of the four stages. */
  layers: readonly number[];
  /** Image channels (torchvision's are 3). */
  inChans: number;
  /** Width of the pooled output: 512 (basic) or 2048 (bottleneck). */
  embedDim: number;
}

/**
 * The configuration of a named ResNet, for images of `inChans` channels (3 as torchvision's).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resnetConfig } from "./resnet.ts";
 * const cfg = resnetConfig("resnet50");
 * assert.deepEqual([cfg.block, cfg.layers, cfg.embedDim], ["bottleneck", [3, 4, 6, 3], 2048]);
 * ```
 */
export function resnetConfig(arch: ResNetArch, inChans = 3): ResNetConfig {
  const a = RESNET_ARCHS[arch];
  if (!a) throw new Error(`unknown arch "${arch}": use one of ${Object.keys(RESNET_ARCHS).join(", ")}`);
  if (!(Number.isInteger(inChans) && inChans >= 1)) throw new Error(`a ResNet needs >= 1 channel, got ${inChans}`);
  return {
    kind: "resnet",
    arch,
    block: a.block,
    layers: a.layers,
    inChans,
    embedDim: 512 * (a.block === "bottleneck" ? EXPANSION : 1),
  };
}

/** Whether a backbone configuration is a ResNet's. */
export function isResNetConfig(cfg: object): cfg is ResNetConfig {
  return (cfg as { kind?: string }).kind === "resnet";
}

/** `nn.Conv2d(bias=False)`: the weight only. */
export interface ConvParams {
  /** [out, in, kH, kW]. */
  weight: Tensor;
}

/** A residual block (BasicBlock or Bottleneck), with torchvision's key names. */
export interface ResNetBlockParams {
  /** First conv: 3x3 (basic) or 1x1 (bottleneck). */
  conv1: ConvParams;
  /** Its batch norm. */
  bn1: BatchNormParams;
  /** Second conv: 3x3, carrying the stride. */
  conv2: ConvParams;
  /** Its batch norm. */
  bn2: BatchNormParams;
  /** Third conv, 1x1 expanding (bottleneck only). */
  conv3?: ConvParams;
  /** Its batch norm (bottleneck only). */
  bn3?: BatchNormParams;
  /** The shortcut's 1x1 conv and batch norm, where the shape changes. */
  downsample?: { "0": ConvParams; "1": BatchNormParams };
}

/** The backbone, with torchvision's keys and order (no `fc`). */
export interface ResNetParams {
  /** The 7x7 stride-2 stem conv, [64, C, 7, 7]. */
  conv1: ConvParams;
  /** The stem's batch norm. */
  bn1: BatchNormParams;
  /** Stage 1: 64 planes, stride 1. */
  layer1: ResNetBlockParams[];
  /** Stage 2: 128 planes, stride 2. */
  layer2: ResNetBlockParams[];
  /** Stage 3: 256 planes, stride 2. */
  layer3: ResNetBlockParams[];
  /** Stage 4: 512 planes, stride 2. */
  layer4: ResNetBlockParams[];
}

const EXPANSION = 4;
const STAGES = ["layer1", "layer2", "layer3", "layer4"] as const;
const PLANES = [64, 128, 256, 512];

// ---- initialisation, as torchvision's ResNet.__init__ ----------------------------

/** kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (out * kH * kW)). */
function convInit(g: Generator, out: number, inC: number, k: number): ConvParams {
  return { weight: normal(g, [out, inC, k, k], 0, Math.sqrt(2 / (out * k * k))) };
}

/** A fresh `nn.BatchNorm2d(c)`: weight 1, bias 0, running mean 0, running var 1, no batches tracked. */
export function batchNormInit(c: number): BatchNormParams {
  return {
    weight: ones([c]),
    bias: zeros([c]),
    running_mean: zeros([c]),
    running_var: ones([c]),
    num_batches_tracked: zeros([], { dtype: "i64" }),
  };
}

/**
 * Fresh parameters, initialised as torchvision: Kaiming-normal convs (fan
 * out, ReLU gain), unit batch-norm scales, zero shifts, fresh buffers. The
 * random stream is this project's, not PyTorch's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { stateDict } from "../weights/tree.ts";
 * import { initResNet, resnetConfig } from "./resnet.ts";
 * using g = new Generator(0);
 * const p = initResNet(resnetConfig("resnet50"), g);
 * const keys = Object.keys(stateDict(p));
 * assert.deepEqual(keys.slice(0, 3), ["conv1.weight", "bn1.weight", "bn1.bias"]);
 * assert.ok(keys.includes("layer4.0.downsample.0.weight") && keys.includes("layer1.2.bn3.num_batches_tracked"));
 * assert.deepEqual(p.layer4[2].conv3!.weight.shape, [2048, 512, 1, 1]);
 * dispose(p);
 * ```
 */
export function initResNet(cfg: ResNetConfig, g: Generator): ResNetParams {
  const bottleneck = cfg.block === "bottleneck";
  const expansion = bottleneck ? EXPANSION : 1;
  let inplanes = 64;
  const stem = { conv1: convInit(g, 64, cfg.inChans, 7), bn1: batchNormInit(64) };
  const stages = STAGES.map((_, s) => {
    const planes = PLANES[s], stride = s === 0 ? 1 : 2;
    return Array.from({ length: cfg.layers[s] }, (_, b): ResNetBlockParams => {
      const inC = inplanes, out = planes * expansion;
      const first = b === 0 && (stride !== 1 || inC !== out);
      // Keys in torchvision's order: conv1, bn1, conv2, bn2, (conv3, bn3), downsample.
      const block: ResNetBlockParams = bottleneck
        ? {
          conv1: convInit(g, planes, inC, 1),
          bn1: batchNormInit(planes),
          conv2: convInit(g, planes, planes, 3),
          bn2: batchNormInit(planes),
          conv3: convInit(g, out, planes, 1),
          bn3: batchNormInit(out),
        }
        : {
          conv1: convInit(g, planes, inC, 3),
          bn1: batchNormInit(planes),
          conv2: convInit(g, planes, planes, 3),
          bn2: batchNormInit(planes),
        };
      if (first) block.downsample = { "0": convInit(g, out, inC, 1), "1": batchNormInit(out) };
      inplanes = out;
      return block;
    });
  });
  return { ...stem, layer1: stages[0], layer2: stages[1], layer3: stages[2], layer4: stages[3] };
}

// ---- forward ----------------------------------------------------------------------

/** Options of {@linkcode resnetForward}. */
export interface ResNetForwardOptions {
  /** Batch statistics, moving the running ones (true), or the running statistics (false, the default). */
  training?: boolean;
  /** In training on several ranks: batch statistics over all of them (SyncBatchNorm). */
  group?: ProcessGroup;
}

/** How the batch norms of one pass run. */
type Mode = { training: boolean; group?: ProcessGroup };

/** One `nn.(Sync)BatchNorm2d`; in training, its moved buffers go into `stats` under `key`'s prefix. */
function bn(p: BatchNormParams, x: Tensor, mode: Mode, key: string, stats: Record<string, Tensor>): Tensor {
  const r = syncBatchNorm(x, {
    weight: p.weight,
    bias: p.bias,
    runningMean: p.running_mean,
    runningVar: p.running_var,
    training: mode.training,
  }, mode.group);
  if (mode.training) {
    stats[`${key}.running_mean`] = r.runningMean!;
    stats[`${key}.running_var`] = r.runningVar!;
    stats[`${key}.num_batches_tracked`] = add(p.num_batches_tracked, 1);
  }
  return r.output;
}

/** One residual block: relu(body(x) + shortcut(x)). */
function block(
  p: ResNetBlockParams,
  x: Tensor,
  stride: number,
  mode: Mode,
  key: string,
  stats: Record<string, Tensor>,
): Tensor {
  let h: Tensor;
  if (p.conv3 && p.bn3) { // Bottleneck (torchvision v1.5: the stride on the 3x3 conv)
    h = relu(bn(p.bn1, conv2d(x, p.conv1.weight), mode, `${key}.bn1`, stats));
    h = relu(bn(p.bn2, conv2d(h, p.conv2.weight, undefined, { stride, padding: 1 }), mode, `${key}.bn2`, stats));
    h = bn(p.bn3, conv2d(h, p.conv3.weight), mode, `${key}.bn3`, stats);
  } else { // BasicBlock
    h = relu(bn(p.bn1, conv2d(x, p.conv1.weight, undefined, { stride, padding: 1 }), mode, `${key}.bn1`, stats));
    h = bn(p.bn2, conv2d(h, p.conv2.weight, undefined, { padding: 1 }), mode, `${key}.bn2`, stats);
  }
  const shortcut = p.downsample
    ? bn(
      p.downsample["1"],
      conv2d(x, p.downsample["0"].weight, undefined, { stride }),
      mode,
      `${key}.downsample.1`,
      stats,
    )
    : x;
  return relu(add(h, shortcut));
}

/**
 * The pooled feature [B, embedDim] of [B, C, H, W] images and, in training,
 * the batch-norm buffers the pass moved (new tensors, by state-dict key; the
 * parameters are never changed). Each block runs in its own scope, so its
 * temporaries are freed as it returns (autograd keeps what backward needs).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initResNet, resnetConfig, resnetForward } from "./resnet.ts";
 * using g = new Generator(0);
 * const cfg = resnetConfig("resnet18", 1);
 * const p = initResNet(cfg, g);
 * const r = tidy(() => resnetForward(p, cfg, randn(g, [2, 1, 28, 28]))); // evaluation: running statistics
 * assert.deepEqual([r.output.shape, Object.keys(r.bnStats).length], [[2, 512], 0]);
 * dispose([p, r]);
 * ```
 */
export function resnetForward(
  p: ResNetParams,
  cfg: ResNetConfig,
  x: Tensor,
  o: ResNetForwardOptions = {},
): { output: Tensor; bnStats: Record<string, Tensor> } {
  if (x.ndim !== 4 || x.shape[1] !== cfg.inChans) {
    throw new Error(`the ResNet takes [B, ${cfg.inChans}, H, W] images, got [${x.shape}]`);
  }
  const mode: Mode = { training: o.training ?? false, group: o.group };
  const bnStats: Record<string, Tensor> = {};
  const stem = tidy(() => {
    const stats: Record<string, Tensor> = {};
    const y = relu(bn(p.bn1, conv2d(x, p.conv1.weight, undefined, { stride: 2, padding: 3 }), mode, "bn1", stats));
    return { out: maxPool2d(y, 3, { stride: 2, padding: 1 }), stats };
  });
  let h = stem.out; // [B, 64, H/4, W/4]
  Object.assign(bnStats, stem.stats);
  STAGES.forEach((stage, s) => {
    p[stage].forEach((bp, b) => {
      const stride = s > 0 && b === 0 ? 2 : 1;
      const r = tidy(() => {
        const stats: Record<string, Tensor> = {};
        return { out: block(bp, h, stride, mode, `${stage}.${b}`, stats), stats };
      });
      h.dispose();
      h = r.out;
      Object.assign(bnStats, r.stats);
    });
  }); // [B, embedDim, H/32, W/32]
  const output = tidy(() => flatten(adaptiveAvgPool2d(h, 1), 1)); // [B, embedDim]
  h.dispose();
  return { output, bnStats };
}

/**
 * The evaluation-mode feature [B, embedDim] (running statistics), as `model.eval(); model(x)` with `fc = Identity`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initResNet, resnetConfig, resnetFeatures } from "./resnet.ts";
 * using g = new Generator(0);
 * const cfg = resnetConfig("resnet34");
 * const p = initResNet(cfg, g);
 * const y = tidy(() => resnetFeatures(p, cfg, randn(g, [1, 3, 64, 64])));
 * assert.deepEqual(y.shape, [1, 512]);
 * dispose([p, y]);
 * ```
 */
export function resnetFeatures(p: ResNetParams, cfg: ResNetConfig, x: Tensor): Tensor {
  return resnetForward(p, cfg, x, { training: false }).output;
}

/**
 * The same network with the running statistics in `stats` (by state-dict key) in place of its own: the same
 * handles, nothing copied. Keys that are not batch-norm buffers of the network are an error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, zeros } from "../../mod.ts";
 * import { initResNet, resnetConfig, withRunningStats } from "./resnet.ts";
 * using g = new Generator(0);
 * const p = initResNet(resnetConfig("resnet18"), g);
 * using mean = zeros([64]);
 * const q = withRunningStats(p, { "bn1.running_mean": mean });
 * assert.equal(q.bn1.running_mean, mean);
 * assert.equal(q.layer1, p.layer1); // untouched parts are shared
 * dispose(p);
 * ```
 */
export function withRunningStats(p: ResNetParams, stats: Record<string, Tensor>): ResNetParams {
  const keys = Object.keys(stats);
  if (keys.length === 0) return p;
  const out: ResNetParams = { ...p };
  for (const key of keys) {
    const path = key.split(".");
    const field = path.pop()!;
    if (!/^(running_mean|running_var|num_batches_tracked)$/.test(field)) {
      throw new Error(`${key} is not a batch-norm buffer`);
    }
    let node = out as unknown as Record<string, unknown>;
    for (const part of path) {
      const child = node[part];
      if (child === undefined || child === null || typeof child !== "object") {
        throw new Error(`the ResNet has no ${key}`);
      }
      const copy = Array.isArray(child) ? [...child] : { ...child };
      node[part] = copy;
      node = copy as Record<string, unknown>;
    }
    if (!(field in node)) throw new Error(`the ResNet has no ${key}`);
    node[field] = stats[key];
  }
  return out;
}
