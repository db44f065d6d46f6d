/**
 * The Vision Transformer backbone of DINO, as the official `vision_transformer.py`:
 * pre-norm blocks, exact GELU, LayerNorm eps 1e-6, qkv bias, a CLS token, and
 * learned position embeddings interpolated bicubically to other input sizes.
 *
 * Parameters are plain records laid out as the official module, so flattening
 * them gives the official state_dict keys (`blocks.0.attn.qkv.weight`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, vitConfig, vitForward } from "./vit.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 4, imgSize: 28, inChans: 1, depth: 2 });
 * const params = initViT(cfg, g);
 * const cls = tidy(() => vitForward(params, cfg, randn(g, [2, 1, 28, 28])));
 * assert.deepEqual(cls.shape, [2, 192]); // one CLS feature per image
 * dispose([params, cls]);
 * ```
 * @module
 */
import {
  add,
  addLayerNorm,
  cat,
  clamp,
  contiguous,
  conv2d,
  div,
  expand,
  flatten,
  floor,
  gelu,
  type Generator,
  indexSelect,
  interpolate,
  layerNorm,
  matmul,
  mul,
  normal,
  ones,
  permute,
  rand,
  reshape,
  scaledSoftmax,
  select,
  slice,
  type Tensor,
  tensor,
  tidy,
  to,
  transpose,
  unbind,
  uniform,
  unsqueeze,
  zeros,
} from "../../ffi/mod.ts";
import { fp32, low, lowConv2d, type LowDtype, lowDtype, lowLinear, lowMatmul, type Precision } from "./precision.ts";

/** The shape of a ViT. */
export interface ViTConfig {
  /** Token width D. */
  embedDim: number;
  /** Number of blocks. */
  depth: number;
  /** Attention heads; D must divide by it. */
  numHeads: number;
  /** Side of a square patch, in pixels. */
  patchSize: number;
  /** Image channels (3 for RGB, 1 for grayscale). */
  inChans: number;
  /** The image side the position embeddings are made for. */
  imgSize: number;
  /** MLP hidden width as a multiple of D (4). */
  mlpRatio: number;
  /** Highest stochastic-depth rate, reached by the last block (student only). */
  dropPathRate: number;
}

/** The official architectures. */
export const ARCHS = {
  vit_tiny: { embedDim: 192, depth: 12, numHeads: 3 },
  vit_small: { embedDim: 384, depth: 12, numHeads: 6 },
  vit_base: { embedDim: 768, depth: 12, numHeads: 12 },
} as const;

/** A named architecture. */
export type Arch = keyof typeof ARCHS;

/**
 * The configuration of a named architecture with the official defaults
 * (patch 16, 3 channels, 224 px, MLP ratio 4, no drop path), overridden by `o`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vitConfig } from "./vit.ts";
 * const cfg = vitConfig("vit_small", { patchSize: 8 });
 * assert.deepEqual([cfg.embedDim, cfg.depth, cfg.numHeads, cfg.patchSize, cfg.imgSize], [384, 12, 6, 8, 224]);
 * ```
 */
export function vitConfig(arch: Arch, o: Partial<ViTConfig> = {}): ViTConfig {
  const base = ARCHS[arch];
  if (!base) throw new Error(`unknown arch "${arch}": use one of ${Object.keys(ARCHS).join(", ")}`);
  const cfg = { patchSize: 16, inChans: 3, imgSize: 224, mlpRatio: 4, dropPathRate: 0, ...base, ...o };
  if (cfg.embedDim % cfg.numHeads !== 0) {
    throw new Error(`embed dim ${cfg.embedDim} does not divide into ${cfg.numHeads} heads`);
  }
  if (cfg.imgSize % cfg.patchSize !== 0) {
    throw new Error(`image size ${cfg.imgSize} is not a multiple of the patch size ${cfg.patchSize}`);
  }
  return cfg;
}

/** `nn.Linear` parameters: weight [out, in], bias [out]. */
export interface LinearParams {
  /** [out, in]. */
  weight: Tensor;
  /** [out]. */
  bias: Tensor;
}
/** `nn.LayerNorm` parameters. */
export interface NormParams {
  /** Scale, [D]. */
  weight: Tensor;
  /** Shift, [D]. */
  bias: Tensor;
}
/** One transformer block, with the official key names. */
export interface BlockParams {
  /** LayerNorm before attention. */
  norm1: NormParams;
  /** qkv [3D, D] and the output projection [D, D]. */
  attn: { qkv: LinearParams; proj: LinearParams };
  /** LayerNorm before the MLP. */
  norm2: NormParams;
  /** fc1 [4D, D] and fc2 [D, 4D]. */
  mlp: { fc1: LinearParams; fc2: LinearParams };
}
/** The backbone, with the official key names and order. */
export interface ViTParams {
  /** The CLS token, [1, 1, D]. */
  cls_token: Tensor;
  /** Position embeddings, [1, 1 + (img/patch)^2, D]. */
  pos_embed: Tensor;
  /** The patch-embedding conv: weight [D, C, p, p], bias [D]. */
  patch_embed: { proj: { weight: Tensor; bias: Tensor } };
  /** The transformer blocks. */
  blocks: BlockParams[];
  /** The final LayerNorm. */
  norm: NormParams;
}

// ---- initialisation, as the official _init_weights --------------------------------

/** trunc_normal_(std) with the official absolute bounds of ±2. */
export function truncNormal(g: Generator, shape: readonly number[], std = 0.02): Tensor {
  using x = normal(g, shape, 0, std);
  return clamp(x, -2, 2);
}

/** PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
export function defaultLinearInit(g: Generator, shape: readonly number[], fanIn: number): Tensor {
  const bound = 1 / Math.sqrt(fanIn);
  return uniform(g, shape, -bound, bound);
}

function linearInit(g: Generator, inDim: number, outDim: number): LinearParams {
  return { weight: truncNormal(g, [outDim, inDim]), bias: zeros([outDim]) };
}
function normInit(dim: number): NormParams {
  return { weight: ones([dim]), bias: zeros([dim]) };
}

/**
 * Fresh parameters, initialised as the official code: trunc-normal(0.02)
 * position embedding, CLS token and Linear weights, zero biases, unit
 * LayerNorms, and PyTorch's default init for the patch-embedding conv.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initViT, vitConfig } from "./vit.ts";
 * using g = new Generator(0);
 * const vit = initViT(vitConfig("vit_tiny"), g);
 * assert.deepEqual([vit.blocks.length, vit.pos_embed.shape], [12, [1, 197, 192]]); // 14 x 14 patches + CLS
 * dispose(vit);
 * ```
 */
export function initViT(cfg: ViTConfig, g: Generator): ViTParams {
  const { embedDim: D, patchSize: P, inChans: C } = cfg;
  const numPatches = (cfg.imgSize / P) ** 2;
  const fanIn = C * P * P;
  const hidden = Math.floor(D * cfg.mlpRatio);
  return {
    cls_token: truncNormal(g, [1, 1, D]),
    pos_embed: truncNormal(g, [1, numPatches + 1, D]),
    patch_embed: {
      proj: { weight: defaultLinearInit(g, [D, C, P, P], fanIn), bias: defaultLinearInit(g, [D], fanIn) },
    },
    blocks: Array.from({ length: cfg.depth }, () => ({
      norm1: normInit(D),
      attn: { qkv: linearInit(g, D, 3 * D), proj: linearInit(g, D, D) },
      norm2: normInit(D),
      mlp: { fc1: linearInit(g, D, hidden), fc2: linearInit(g, hidden, D) },
    })),
    norm: normInit(D),
  };
}

// ---- forward ----------------------------------------------------------------------

/** Options of the forward pass. */
export interface ForwardOptions {
  /** Stochastic depth: needs a generator; off when absent or the config's rate is 0. */
  dropPath?: Generator;
  /**
   * With `dropPath`, on one rank of a data-parallel world: the masks are drawn
   * for the whole global batch (`worldSize` x `batch` samples per crop) and
   * this rank takes its rows, row k of each crop being the global batch's row
   * `rank + k * worldSize` (as the loader shards an epoch), so that a sample's
   * masks do not depend on the world size.
   */
  shard?: DropPathShard;
  /**
   * Mixed precision (see `precision.ts`): the matrix products in bf16 or fp16,
   * the residual stream, layer norms and softmax in fp32 (default fp32).
   */
  precision?: Precision;
}

/** Which rows of the global batch's drop-path masks a rank takes (see {@linkcode ForwardOptions}). */
export interface DropPathShard {
  /** This rank. */
  rank: number;
  /** How many ranks share the global batch. */
  worldSize: number;
  /** The samples per crop on this rank. */
  batch: number;
}

const EPS = 1e-6;

/** Per-sample stochastic depth: zero a sample's branch with probability `p`, rescale the rest by 1/(1-p). */
function dropPath(x: Tensor, p: number, g: Generator | undefined, shard?: DropPathShard): Tensor {
  if (p === 0 || g === undefined) return x;
  const keep = 1 - p;
  const n = x.shape[0];
  let u: Tensor;
  if (shard && shard.worldSize > 1) {
    const { rank, worldSize: W, batch: B } = shard;
    if (n % B !== 0) throw new Error(`drop path: ${n} rows are not whole crops of ${B} samples`);
    const rows = Array.from({ length: n }, (_, i) => Math.floor(i / B) * B * W + rank + W * (i % B));
    const all = rand(g, [n * W, 1, 1], { device: x.device }); // the global batch's draws, crop by crop
    u = indexSelect(all, 0, tensor(new BigInt64Array(rows.map(BigInt)), { device: x.device }));
  } else {
    u = rand(g, [n, 1, 1], { device: x.device });
  }
  const mask = floor(add(u, keep)); // [B, 1, 1] of 0 or 1
  return mul(div(x, keep), to(mask, x.dtype)); // in x's dtype, as the official mask is
}

/**
 * Position embeddings for a `H` x `W` input, bicubically interpolated from
 * the stored grid with the official +0.1 offset; the CLS position is kept.
 */
export function interpolatePosEncoding(posEmbed: Tensor, npatch: number, H: number, W: number, P: number): Tensor {
  const N = posEmbed.shape[1] - 1;
  if (npatch === N && H === W) return posEmbed;
  const D = posEmbed.shape[2];
  const side = Math.floor(Math.sqrt(N));
  const h0 = Math.floor(H / P) + 0.1, w0 = Math.floor(W / P) + 0.1;
  const grid = permute(reshape(slice(posEmbed, 1, 1), [1, side, side, D]), [0, 3, 1, 2]); // [1, D, s, s]
  const resized = interpolate(grid, { scaleFactor: [h0 / Math.sqrt(N), w0 / Math.sqrt(N)], mode: "bicubic" });
  if (resized.shape[2] !== Math.floor(h0) || resized.shape[3] !== Math.floor(w0)) {
    throw new Error(`position embedding interpolation gave [${resized.shape}] for a ${H}x${W} input`);
  }
  const patchPos = reshape(permute(resized, [0, 2, 3, 1]), [1, -1, D]); // [1, h0*w0, D]
  const clsPos = unsqueeze(select(posEmbed, 1, 0), 0); // [1, 1, D]
  return cat([clsPos, patchPos], 1);
}

/**
 * Patch embedding, CLS token and position embeddings: [B, C, H, W] -> [B, 1 + N, D] (fp32; with a low dtype
 * `dt`, the convolution runs in it).
 */
export function prepareTokens(p: ViTParams, cfg: ViTConfig, x: Tensor, dt?: LowDtype): Tensor {
  if (x.ndim !== 4 || x.shape[1] !== cfg.inChans) {
    throw new Error(`the ViT takes [B, ${cfg.inChans}, H, W] images, got [${x.shape}]`);
  }
  const [B, , H, W] = x.shape;
  const P = cfg.patchSize;
  // As the official patch embedding (a stride-P convolution), a side that is not a multiple of P drops its last
  // H % P rows and W % P columns.
  if (H < P || W < P) throw new Error(`image size ${H}x${W} is smaller than the patch size ${P}`);
  const embedded = dt === undefined
    ? conv2d(x, p.patch_embed.proj.weight, p.patch_embed.proj.bias, { stride: P })
    : fp32(lowConv2d(x, p.patch_embed.proj.weight, p.patch_embed.proj.bias, dt, { stride: P })); // [B, D, h, w]
  const patches = transpose(flatten(embedded, 2), 1, 2); // [B, N, D]
  const cls = expand(p.cls_token, [B, -1, -1]); // [B, 1, D]
  const tokens = cat([cls, patches], 1); // [B, 1 + N, D]
  return add(tokens, interpolatePosEncoding(p.pos_embed, patches.shape[1], H, W, P));
}

/**
 * x's q, k and v, [B, h, N, d] each, from the qkv projection. In fp32 they are views of its output (the small
 * products read strided matrices, and the backward stacks straight into the projection's layout); in a low dtype,
 * whose batched products copy any batch of matrices that are not one stride apart, they come heads-first from one
 * copy, and the projection's output is freed at once.
 */
function projectHeads(p: LinearParams, x: Tensor, numHeads: number, dt?: LowDtype): Tensor[] {
  const [B, N, C] = x.shape;
  const qkv = () => reshape(lowLinear(x, p.weight, p.bias, dt), [B, N, 3, numHeads, C / numHeads]);
  if (dt === undefined) return unbind(qkv(), 2).map((t) => transpose(t, 1, 2));
  return unbind(tidy(() => contiguous(permute(qkv(), [2, 0, 3, 1, 4]))), 0); // from [3, B, h, N, d]
}

/**
 * Multi-head self-attention: the output [B, Q, D] and the attention weights [B, heads, Q, N], where the
 * queries are every token (Q = N) or, with `clsOnly`, the CLS token alone (Q = 1). With a low dtype `dt`,
 * the projections and both products run in it (the output too; in bf16, the CLS row's products in fp32 on the
 * bf16 operands, rounded after) and the softmax in fp32.
 */
export function attention(
  p: BlockParams["attn"],
  x: Tensor,
  numHeads: number,
  dt?: LowDtype,
  clsOnly = false,
): { out: Tensor; attn: Tensor } {
  const [B, , C] = x.shape;
  const headDim = C / numHeads;
  const [qAll, k, v] = projectHeads(p.qkv, x, numHeads, dt); // [B, h, N, d] each
  const q = clsOnly ? slice(qAll, 2, 0, 1) : qAll; // [B, h, Q, d]
  // libtorch 1.13's bf16 batched product of one query row by a few tokens is not correctly rounded (up to 0.2 off,
  // where the full rows' product is right): the CLS row's products run in fp32 on the low operands, rounded after.
  const product = (a: Tensor, b: Tensor) =>
    clsOnly && dt === "bf16" ? low(matmul(fp32(low(a, dt)), fp32(low(b, dt))), dt) : lowMatmul(a, b, dt);
  const scores = product(q, transpose(k, -2, -1)); // [B, h, Q, N]
  // softmax(scores / sqrt(d)) in fp32, and with a low dtype its copy in it for the product with the values
  const [attn, attnLow] = scaledSoftmax(scores, headDim ** -0.5, { low: dt !== undefined }); // [B, h, Q, N]
  const mixed = reshape(transpose(product(attnLow ?? attn, v), 1, 2), [B, q.shape[2], C]); // [B, Q, D]
  return { out: lowLinear(mixed, p.proj.weight, p.proj.bias, dt), attn };
}

/**
 * One pre-norm block: x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x))). With a low dtype `dt`,
 * the attention and the MLP (its GELU too, as autocast leaves it) run in it; the residual stream stays fp32.
 * With `clsOnly`, the block gives the CLS token alone, [B, 1, D] (the residual is then x[:, :1] + ...): every
 * token still feeds its keys and values, but no other token's output is made, and the attention is [B, heads, 1, N].
 * With `link`, blocks in a row share each residual sum's pass with the norm after it (see {@linkcode BlockLink}).
 */
export function block(
  p: BlockParams,
  x: Tensor,
  numHeads: number,
  dropRate: number,
  g: Generator | undefined,
  shard?: DropPathShard,
  dt?: LowDtype,
  clsOnly = false,
  link: BlockLink = {},
): { out: Tensor; attn: Tensor; normed?: Tensor } {
  const D = x.shape[2];
  const normed = link.normed ?? layerNorm(x, [D], p.norm1.weight, p.norm1.bias, EPS, { dtype: dt }); // [B, N, D] in dt
  const { out: y, attn } = attention(p.attn, normed, numHeads, dt, clsOnly);
  const residual = clsOnly ? slice(x, 1, 0, 1) : x; // [B, Q, D]
  const [h, normed2] = addLayerNorm(residual, dropPath(y, dropRate, g, shard), [D], p.norm2.weight, p.norm2.bias, EPS, {
    dtype: dt,
  }); // [B, Q, D] each
  const hidden = gelu(lowLinear(normed2, p.mlp.fc1.weight, p.mlp.fc1.bias, dt)); // [B, Q, 4D]
  const m = dropPath(lowLinear(hidden, p.mlp.fc2.weight, p.mlp.fc2.bias, dt), dropRate, g, shard); // [B, Q, D]
  if (!link.next) return { out: add(h, m), attn };
  const [out, normedNext] = addLayerNorm(h, m, [D], link.next.weight, link.next.bias, EPS, { dtype: dt });
  return { out, attn, normed: normedNext };
}

/**
 * How a block hands over to the next: the one before gives `normed`, this block's input already through its norm1
 * (in the low dtype), and takes `next`, the next block's norm1, to give its own output through it as `normed`.
 */
export interface BlockLink {
  /** This block's input through its norm1, from the block before. */
  normed?: Tensor;
  /** The next block's norm1. */
  next?: NormParams;
}

/** Stochastic-depth rate of block i: linspace(0, rate, depth)[i]. */
export function dropRates(cfg: ViTConfig): number[] {
  const d = cfg.depth;
  return Array.from({ length: d }, (_, i) => (d === 1 ? 0 : (cfg.dropPathRate * i) / (d - 1)));
}

/**
 * Runs the blocks; returns the last `keep` blocks' outputs (before the final norm) and the last block's attention.
 * Each block runs in its own scope, so its temporaries are freed as soon as it returns (autograd keeps what
 * the backward pass needs): peak memory stays that of PyTorch's eager mode. With `clsOnly`, the last block
 * makes the CLS token's output alone and its attention row alone, [B, heads, 1, N] (see {@linkcode block}).
 */
function runBlocks(
  p: ViTParams,
  cfg: ViTConfig,
  x: Tensor,
  o: ForwardOptions,
  keep = 1,
  clsOnly = false,
): { outs: Tensor[]; attn: Tensor } {
  const rates = dropRates(cfg);
  const dt = lowDtype(o.precision);
  let h = tidy(() => prepareTokens(p, cfg, x, dt)); // [B, 1 + N, D]
  const outs: Tensor[] = [];
  let attn: Tensor | undefined, normed: Tensor | undefined;
  p.blocks.forEach((bp, i) => {
    const last = i === p.blocks.length - 1;
    const link = { normed, next: p.blocks[i + 1]?.norm1 };
    const r = tidy(() => block(bp, h, cfg.numHeads, rates[i], o.dropPath, o.shard, dt, clsOnly && last, link));
    attn?.dispose();
    normed?.dispose();
    if (i < p.blocks.length - keep) h.dispose();
    ({ out: h, attn, normed } = r);
    if (i >= p.blocks.length - keep) outs.push(h);
  });
  return { outs, attn: attn! };
}

/**
 * The CLS token after the final LayerNorm: [B, C, H, W] -> [B, D].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, vitConfig, vitForward } from "./vit.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { imgSize: 32, patchSize: 8, depth: 1 });
 * const p = initViT(cfg, g);
 * const y = tidy(() => vitForward(p, cfg, randn(g, [1, 3, 32, 32])));
 * assert.deepEqual(y.shape, [1, 192]);
 * dispose([p, y]);
 * ```
 */
export function vitForward(p: ViTParams, cfg: ViTConfig, x: Tensor, o: ForwardOptions = {}): Tensor {
  // Only the CLS token leaves, and every op after the last attention is per token, so the last block makes
  // the CLS token's output alone: the official full block's numbers up to rounding, ~6% fewer FLOPs in 12 blocks.
  const { outs } = runBlocks(p, cfg, x, o, 1, true);
  return tidy(() => select(layerNorm(outs[0], [cfg.embedDim], p.norm.weight, p.norm.bias, EPS), 1, 0)); // [B, D]
}

/**
 * The last block's attention weights [B, heads, N, N], as `get_last_selfattention`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, lastSelfAttention, vitConfig } from "./vit.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { imgSize: 32, patchSize: 8, depth: 1 });
 * const p = initViT(cfg, g);
 * const a = tidy(() => lastSelfAttention(p, cfg, randn(g, [1, 3, 32, 32])));
 * assert.deepEqual(a.shape, [1, 3, 17, 17]); // [B, heads, 1 + 16 patches, 1 + 16 patches]
 * dispose([p, a]);
 * ```
 */
export function lastSelfAttention(p: ViTParams, cfg: ViTConfig, x: Tensor): Tensor {
  return runBlocks(p, cfg, x, {}).attn;
}

/**
 * The outputs of the last `n` blocks, each after the final LayerNorm: n x [B, 1 + N, D],
 * as `get_intermediate_layers`. With `clsOnly`, for callers that read no other token of
 * the last block, that one is its CLS token alone, [B, 1, D] (the same numbers up to rounding, fewer FLOPs).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, intermediateLayers, vitConfig } from "./vit.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { imgSize: 32, patchSize: 8, depth: 2 });
 * const p = initViT(cfg, g);
 * const layers = tidy(() => intermediateLayers(p, cfg, randn(g, [1, 3, 32, 32]), 2));
 * assert.deepEqual(layers.map((l) => l.shape), [[1, 17, 192], [1, 17, 192]]); // every token of the last 2 blocks
 * const cls = tidy(() => intermediateLayers(p, cfg, randn(g, [1, 3, 32, 32]), 2, true));
 * assert.deepEqual(cls.map((l) => l.shape), [[1, 17, 192], [1, 1, 192]]); // the last block's CLS token alone
 * dispose([p, layers, cls]);
 * ```
 */
export function intermediateLayers(p: ViTParams, cfg: ViTConfig, x: Tensor, n = 1, clsOnly = false): Tensor[] {
  const { outs } = runBlocks(p, cfg, x, {}, n, clsOnly);
  return outs.map((h) => layerNorm(h, [cfg.embedDim], p.norm.weight, p.norm.bias, EPS));
}
