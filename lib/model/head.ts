/**
 * The DINO projection head, as the official `DINOHead`: an MLP (hidden 2048,
 * bottleneck 256, GELU, optional batch norm), L2 normalisation, then a
 * weight-normalised linear layer to K outputs whose scale `weight_g` is fixed
 * at 1 when `normLastLayer`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { headConfig, headForward, initHead } from "./head.ts";
 * using g = new Generator(0);
 * const cfg = headConfig(192, 4096);
 * const p = initHead(cfg, g);
 * const out = tidy(() => headForward(p, cfg, randn(g, [8, 192])).output);
 * assert.deepEqual(out.shape, [8, 4096]);
 * dispose([p, out]);
 * ```
 * @module
 */
import {
  add,
  clamp,
  div,
  gelu,
  type Generator,
  linear,
  norm,
  ones,
  type ProcessGroup,
  type Tensor,
  weightNorm,
  zeros,
} from "../../ffi/mod.ts";
import { defaultLinearInit, type LinearParams, truncNormal } from "./vit.ts";
import { fp32, type LowDtype, lowLinear } from "./precision.ts";
import { syncBatchNorm } from "./batch_norm.ts";

/** The shape of a DINO head. */
export interface HeadConfig {
  /** Input width: the backbone's D. */
  inDim: number;
  /** K, the number of prototypes. */
  outDim: number;
  /** MLP hidden width (2048). */
  hiddenDim: number;
  /** Width before the last layer (256). */
  bottleneckDim: number;
  /** Linear layers in the MLP (3). */
  nlayers: number;
  /** Batch norm after each hidden Linear (false). */
  useBn: boolean;
  /** Fix the last layer's weight_g at 1 (true). */
  normLastLayer: boolean;
}

/**
 * The official defaults for a head on a `inDim`-wide backbone with `outDim` outputs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { headConfig } from "./head.ts";
 * const cfg = headConfig(384, 65536, { normLastLayer: false });
 * assert.deepEqual([cfg.hiddenDim, cfg.bottleneckDim, cfg.nlayers, cfg.normLastLayer], [2048, 256, 3, false]);
 * ```
 */
export function headConfig(inDim: number, outDim: number, o: Partial<HeadConfig> = {}): HeadConfig {
  return { inDim, outDim, hiddenDim: 2048, bottleneckDim: 256, nlayers: 3, useBn: false, normLastLayer: true, ...o };
}

/** `nn.BatchNorm1d` parameters and buffers. */
export interface BatchNormParams {
  /** Scale. */
  weight: Tensor;
  /** Shift. */
  bias: Tensor;
  /** Running mean (a buffer). */
  running_mean: Tensor;
  /** Running variance (a buffer). */
  running_var: Tensor;
  /** Forward passes in training (a buffer, i64). */
  num_batches_tracked: Tensor;
}

/**
 * The head's parameters with the official keys: `mlp.{0,2,4}` are the Linears
 * (`mlp.{0,3,6}` with batch norm at `mlp.{1,4}`), `mlp` itself a Linear when
 * nlayers is 1, and `last_layer.{weight_g, weight_v}`.
 */
export interface HeadParams {
  /** The MLP's layers by Sequential index (a single Linear when nlayers is 1). */
  mlp: LinearParams | Record<string, LinearParams | BatchNormParams>;
  /** The weight-normalised last layer: weight_g [K, 1], weight_v [K, bottleneck]. */
  last_layer: { weight_g: Tensor; weight_v: Tensor };
}

/** The Sequential indices of the head's layers, as the official module numbers them. */
function layout(cfg: HeadConfig): { linear: number[]; bn: number[] } {
  const linear: number[] = [], bn: number[] = [];
  let i = 0;
  for (let l = 0; l < cfg.nlayers; l++) {
    linear.push(i++);
    if (l === cfg.nlayers - 1) break;
    if (cfg.useBn) bn.push(i++);
    i++; // GELU
  }
  return { linear, bn };
}

function dims(cfg: HeadConfig): [number, number][] {
  const out: [number, number][] = [];
  for (let l = 0; l < cfg.nlayers; l++) {
    const inD = l === 0 ? cfg.inDim : cfg.hiddenDim;
    const outD = l === cfg.nlayers - 1 ? cfg.bottleneckDim : cfg.hiddenDim;
    out.push([inD, outD]);
  }
  return out;
}

/**
 * Fresh head parameters, as the official init: trunc-normal(0.02) MLP weights,
 * zero biases, PyTorch's default init for `weight_v`, and `weight_g` = 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, toArray } from "../../mod.ts";
 * import { headConfig, initHead } from "./head.ts";
 * using g = new Generator(0);
 * const head = initHead(headConfig(192, 1024), g);
 * assert.deepEqual(head.last_layer.weight_v.shape, [1024, 256]);
 * assert.ok(toArray(head.last_layer.weight_g).every((v) => v === 1));
 * dispose(head);
 * ```
 */
export function initHead(cfg: HeadConfig, g: Generator): HeadParams {
  if (cfg.nlayers < 1) throw new Error(`a head needs at least one layer, got ${cfg.nlayers}`);
  const lin = ([inD, outD]: [number, number]): LinearParams => ({
    weight: truncNormal(g, [outD, inD]),
    bias: zeros([outD]),
  });
  const ds = dims(cfg);
  let mlp: HeadParams["mlp"];
  if (cfg.nlayers === 1) {
    mlp = lin(ds[0]);
  } else {
    const { linear: li, bn } = layout(cfg);
    const layers: Record<string, LinearParams | BatchNormParams> = {};
    li.forEach((idx, l) => {
      layers[idx] = lin(ds[l]);
      if (bn[l] !== undefined) {
        const h = cfg.hiddenDim;
        layers[bn[l]] = {
          weight: ones([h]),
          bias: zeros([h]),
          running_mean: zeros([h]),
          running_var: ones([h]),
          num_batches_tracked: zeros([], { dtype: "i64" }),
        };
      }
    });
    mlp = layers;
  }
  return {
    mlp,
    last_layer: {
      weight_g: ones([cfg.outDim, 1]),
      weight_v: defaultLinearInit(g, [cfg.outDim, cfg.bottleneckDim], cfg.bottleneckDim),
    },
  };
}

/** The weight-normalised last layer's effective weight: row k is g_k v_k / ||v_k||. */
export function lastLayerWeight(p: HeadParams["last_layer"]): Tensor {
  return weightNorm(p.weight_v, p.weight_g, 0); // [K, bottleneck]
}

/** x / max(||x||, 1e-12) along the last dim, as `F.normalize`. */
export function l2Normalize(x: Tensor): Tensor {
  return div(x, clamp(norm(x, 2, -1, { keepdim: true }), 1e-12));
}

/**
 * The head's output [B, K] and, with batch norm in training, the updated
 * running statistics (keyed by layer index); the inputs are never changed.
 * With a low dtype `dt` (mixed precision), the linear layers and GELUs run in
 * it, batch norm and the L2 normalisation in fp32, and the output is fp32.
 * With a `group` of several ranks, batch norm in training uses the statistics
 * of every rank's batch (SyncBatchNorm).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { headConfig, headForward, initHead } from "./head.ts";
 * using g = new Generator(0);
 * const cfg = headConfig(16, 64, { hiddenDim: 32, bottleneckDim: 8 });
 * const p = initHead(cfg, g);
 * const y = tidy(() => headForward(p, cfg, randn(g, [4, 16])).output);
 * assert.deepEqual(y.shape, [4, 64]);
 * dispose([p, y]);
 * ```
 */
export function headForward(
  p: HeadParams,
  cfg: HeadConfig,
  x: Tensor,
  training = true,
  dt?: LowDtype,
  group?: ProcessGroup,
): { output: Tensor; bnStats: Record<string, Tensor> } {
  // The batch-norm buffers a training pass moves, under their state-dict keys (`mlp.1.running_mean`, ...).
  const bnStats: Record<string, Tensor> = {};
  let h = x; // [B, D]
  if (cfg.nlayers === 1) {
    const l = p.mlp as LinearParams;
    h = lowLinear(h, l.weight, l.bias, dt);
  } else {
    const layers = p.mlp as Record<string, LinearParams | BatchNormParams>;
    const { linear: li, bn } = layout(cfg);
    li.forEach((idx, l) => {
      const lp = layers[idx] as LinearParams;
      h = lowLinear(h, lp.weight, lp.bias, dt);
      if (l === li.length - 1) return;
      if (bn[l] !== undefined) {
        const b = layers[bn[l]] as BatchNormParams;
        const r = syncBatchNorm(fp32(h), {
          weight: b.weight,
          bias: b.bias,
          runningMean: b.running_mean,
          runningVar: b.running_var,
          training,
        }, group);
        h = r.output;
        if (training) {
          bnStats[`mlp.${bn[l]}.running_mean`] = r.runningMean!;
          bnStats[`mlp.${bn[l]}.running_var`] = r.runningVar!;
          bnStats[`mlp.${bn[l]}.num_batches_tracked`] = add(b.num_batches_tracked, 1);
        }
      }
      h = gelu(h);
    });
  }
  if (dt === undefined) {
    const z = l2Normalize(h); // [B, bottleneck]
    return { output: linear(z, lastLayerWeight(p.last_layer)), bnStats }; // [B, K]
  }
  const z = l2Normalize(fp32(h)); // [B, bottleneck], fp32
  return { output: fp32(lowLinear(z, lastLayerWeight(p.last_layer), undefined, dt)), bnStats }; // [B, K], fp32
}
