/**
 * Image retrieval and copy detection with frozen features, as the official `eval_image_retrieval.py` and
 * `eval_copy_detection.py`:
 *
 * - retrieval features: the CLS token after the final norm ({@linkcode clsFeatures}), or its average over the
 *   scales 1, 1/√2 and 1/2 ({@linkcode multiScaleFeatures}, the official `utils.multi_scale`);
 * - copy-detection features: the CLS token concatenated with the GeM (p = 4) pooling of the patch tokens
 *   ({@linkcode copyDetectionFeatures}), optionally PCA-whitened ({@linkcode learnWhitening}, the official
 *   `utils.PCA` with whitening power 0.5);
 * - cosine-similarity neighbours ({@linkcode cosineRanking}) and the scores: average precision by the trapezoid
 *   rule of the Holidays / revisited Oxford packages ({@linkcode averagePrecision}) and their mean and
 *   precision at k ({@linkcode retrievalScores}, the official `utils.compute_map`).
 *
 * Everything here is a pure function of tensors and arrays; the command (`cli/retrieve.ts`) decodes, calls these
 * and writes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { cosineRanking, retrievalScores } from "./retrieval.ts";
 * using database = tensor([[1, 0], [0, 1], [1, 1]]);
 * using queries = tensor([[0.9, 0.1]]);
 * const order = tidy(() => toArray(cosineRanking(queries, database)));
 * assert.deepEqual(order, [0, 2, 1]);
 * const s = retrievalScores([order], [new Set([0, 2])], [1, 2]);
 * assert.deepEqual([s.map, s.precision], [1, [1, 1]]);
 * ```
 * @module
 */
import {
  add,
  cat,
  clamp,
  div,
  interpolate,
  matmul,
  mean,
  narrow,
  noGrad,
  norm,
  pow,
  select,
  slice,
  sort,
  sub,
  type Tensor,
  tensor,
  tidy,
  toArray,
  transpose,
} from "../../ffi/mod.ts";
import { intermediateLayers, type ViTConfig, vitForward, type ViTParams } from "../model/vit.ts";
import { type BackboneConfig, type BackboneParams, isResNetConfig } from "../model/backbone.ts";
import { resnetFeatures, type ResNetParams } from "../model/resnet.ts";
import { symmetricEigen } from "./eigen.ts";

/** The top-left part of images [B, C, H, W] whose sides are multiples of the patch, as the official patch
 * embedding (a convolution of stride P) keeps; at least one patch each way. */
function cropToPatches(x: Tensor, P: number): Tensor {
  const [, , H, W] = x.shape;
  const h = Math.floor(H / P) * P, w = Math.floor(W / P) * P;
  if (h === 0 || w === 0) {
    throw new RangeError(`an image of ${W} x ${H} pixels is smaller than one patch of ${P}; give larger images`);
  }
  return h === H && w === W ? x : narrow(narrow(x, 2, 0, h), 3, 0, w);
}

/**
 * The retrieval features of normalised images [B, C, H, W]: the CLS token after the final norm, [B, D], as the
 * official `model(samples)`. Sides that are not multiples of the patch lose their last pixels, as the official
 * patch embedding does. A ResNet gives its pooled output in evaluation mode (`fc` as identity).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { clsFeatures } from "./retrieval.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, depth: 1 });
 * const vit = initViT(cfg, g);
 * using f = tidy(() => clsFeatures(vit, cfg, randn(g, [2, 3, 30, 41]))); // 3 x 5 patches used
 * assert.deepEqual(f.shape, [2, 192]);
 * dispose(vit);
 * ```
 */
export function clsFeatures(p: BackboneParams, cfg: BackboneConfig, x: Tensor): Tensor {
  if (isResNetConfig(cfg)) return noGrad(() => tidy(() => resnetFeatures(p as ResNetParams, cfg, x)));
  return noGrad(() => tidy(() => vitForward(p as ViTParams, cfg, cropToPatches(x, cfg.patchSize))));
}

/** The scales of the official multi-scale retrieval features. */
export const RETRIEVAL_SCALES: readonly number[] = [1, 1 / 2 ** 0.5, 1 / 2];

/**
 * The official `utils.multi_scale`: the CLS features of images [B, C, H, W] at the scales 1, 1/√2 and 1/2
 * (bilinear, half-pixel centres, the scale given to the kernel), averaged and L2-normalised per image: [B, D].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, norm, randn, tidy, toArray } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { multiScaleFeatures } from "./retrieval.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, depth: 1 });
 * const vit = initViT(cfg, g);
 * using f = tidy(() => multiScaleFeatures(vit, cfg, randn(g, [1, 3, 32, 48])));
 * assert.ok(Math.abs(tidy(() => toArray(norm(f)))[0] - 1) < 1e-5);
 * dispose(vit);
 * ```
 */
export function multiScaleFeatures(p: BackboneParams, cfg: BackboneConfig, x: Tensor): Tensor {
  return noGrad(() =>
    tidy(() => {
      let v: Tensor | undefined;
      for (const s of RETRIEVAL_SCALES) {
        const input = s === 1 ? x : interpolate(x, { scaleFactor: s, mode: "bilinear" });
        const f = clsFeatures(p, cfg, input);
        v = v ? add(v, f) : f;
      }
      const avg = div(v!, RETRIEVAL_SCALES.length);
      return div(avg, norm(avg, 2, 1, { keepdim: true }));
    })
  );
}

/**
 * The official copy-detection features of normalised images [B, C, H, W] (sides multiples of the patch): the CLS
 * token of the last block (after the final norm) concatenated with the GeM pooling (p = 4, values clamped at
 * 1e-6) of its patch tokens: [B, 2 D].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { copyDetectionFeatures } from "./retrieval.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, depth: 1 });
 * const vit = initViT(cfg, g);
 * using f = tidy(() => copyDetectionFeatures(vit, cfg, randn(g, [2, 3, 32, 32])));
 * assert.deepEqual(f.shape, [2, 384]); // CLS (192) and GeM (192)
 * dispose(vit);
 * ```
 */
export function copyDetectionFeatures(p: ViTParams, cfg: ViTConfig, x: Tensor): Tensor {
  return noGrad(() =>
    tidy(() => {
      const tokens = intermediateLayers(p, cfg, cropToPatches(x, cfg.patchSize), 1)[0]; // [B, 1 + N, D]
      const cls = select(tokens, 1, 0);
      const gem = pow(mean(pow(clamp(slice(tokens, 1, 1), 1e-6), 4), 1), 1 / 4);
      return cat([cls, gem], 1);
    })
  );
}

/** A PCA whitening: x -> (x - mean) projectionᵀ. */
export interface Whitening {
  /** f32 [D]: the whitening set's mean feature. */
  mean: Tensor;
  /** f32 [K, D]: the principal directions, each divided by its eigenvalue to the power `power` (`dvt`). */
  projection: Tensor;
  /** The share of the covariance's trace the K kept directions hold. */
  energy: number;
}

/** Options of {@linkcode learnWhitening}. */
export interface WhiteningOptions {
  /** The power of the eigenvalues the directions are divided by: 0.5 whitens fully (official 0.5). */
  power?: number;
  /** How many principal directions to keep (default all, as the official code). */
  dim?: number;
}

/**
 * Learns a PCA whitening from features [N, D], as the official copy-detection code: the mean of the features,
 * and the eigendecomposition of their second-moment matrix XᵀX / N (the official code does not centre it),
 * with eigenvalues below 1e-5 of the largest raised to that floor; the directions are sorted by eigenvalue,
 * the largest `dim` kept, and each divided by its eigenvalue to the power `power`. Apply with
 * {@linkcode applyWhitening}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor, tidy, toArray } from "../../mod.ts";
 * import { applyWhitening, learnWhitening } from "./retrieval.ts";
 * using x = tensor([[2, 0], [-2, 0], [0, 1], [0, -1]]); // variance 2 along x, 0.5 along y
 * const w = learnWhitening(x);
 * const y = tidy(() => toArray(applyWhitening(x, w)).map((v) => Math.abs(+v.toFixed(6))));
 * // each direction divided by the root of its second moment (2 along x, 0.5 along y): mean square 1 along each
 * assert.deepEqual(y, [1.414214, 0, 1.414214, 0, 0, 1.414214, 0, 1.414214]);
 * dispose(w);
 * ```
 */
export function learnWhitening(features: Tensor, o: WhiteningOptions = {}): Whitening {
  if (features.ndim !== 2 || features.shape[0] < 1) {
    throw new RangeError(`learnWhitening takes features [N, D] of at least one row, got [${features.shape}]`);
  }
  const [N, D] = features.shape;
  const power = o.power ?? 0.5, dim = o.dim ?? D;
  if (!(Number.isInteger(dim) && dim >= 1 && dim <= D)) {
    throw new RangeError(`learnWhitening: dim must be a whole number in 1..${D}, got ${dim}`);
  }
  const [cov, meanF] = tidy(() => {
    const x = features.dtype === "f32" ? features : add(features, 0);
    return [toArray(div(matmul(transpose(x, 0, 1), x), N)), mean(x, 0)];
  });
  const { values, vectors } = symmetricEigen(Float64Array.from(cov), D);
  let top = -Infinity;
  for (const v of values) top = Math.max(top, v);
  const floor = top * 1e-5;
  const d = Float64Array.from(values, (v) => (v < floor ? floor : v));
  const total = d.reduce((a, b) => a + b, 0);
  // descending by eigenvalue (values come ascending)
  const order = [...d.keys()].sort((a, b) => d[b] - d[a]).slice(0, dim);
  const dvt = new Float32Array(dim * D);
  let kept = 0;
  order.forEach((j, r) => {
    kept += d[j];
    const scale = 1 / d[j] ** power;
    for (let i = 0; i < D; i++) dvt[r * D + i] = vectors[i * D + j] * scale;
  });
  return { mean: meanF, projection: tensor(dvt, { shape: [dim, D] }), energy: kept / total };
}

/**
 * A learned {@linkcode Whitening} applied to features [N, D]: (x - mean) projectionᵀ, [N, K].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, randn, Generator, tidy } from "../../mod.ts";
 * import { applyWhitening, learnWhitening } from "./retrieval.ts";
 * using g = new Generator(0);
 * using x = randn(g, [50, 6]);
 * const w = learnWhitening(x, { dim: 4 });
 * assert.deepEqual(tidy(() => applyWhitening(x, w).shape), [50, 4]);
 * dispose(w);
 * ```
 */
export function applyWhitening(features: Tensor, w: Whitening): Tensor {
  if (features.ndim !== 2 || features.shape[1] !== w.mean.shape[0]) {
    throw new RangeError(`applyWhitening: the features must be [N, ${w.mean.shape[0]}], got [${features.shape}]`);
  }
  return tidy(() => matmul(sub(features, w.mean), transpose(w.projection, 0, 1)));
}

/** L2-normalised rows, as `F.normalize(x, dim=1)` (eps 1e-12). */
export function normalizeRows(x: Tensor): Tensor {
  return tidy(() => div(x, clamp(norm(x, 2, 1, { keepdim: true }), 1e-12)));
}

/**
 * Cosine similarities of queries [Q, D] to a database [N, D] (each row L2-normalised first, as the official
 * code): f32 [Q, N].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { cosineSimilarities } from "./retrieval.ts";
 * using a = tensor([[3, 4]]);
 * using b = tensor([[3, 4], [-4, 3]]);
 * assert.deepEqual(tidy(() => toArray(cosineSimilarities(a, b)).map((v) => +v.toFixed(6))), [1, 0]);
 * ```
 */
export function cosineSimilarities(queries: Tensor, database: Tensor): Tensor {
  if (queries.ndim !== 2 || database.ndim !== 2 || queries.shape[1] !== database.shape[1]) {
    throw new RangeError(
      `cosineSimilarities takes [Q, D] and [N, D] features of one width, got [${queries.shape}] and [${database.shape}]`,
    );
  }
  return tidy(() => matmul(normalizeRows(queries), transpose(normalizeRows(database), 0, 1)));
}

/**
 * The database indices in order of decreasing cosine similarity, per query: i64 [Q, N].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { cosineRanking } from "./retrieval.ts";
 * using q = tensor([[0, 1]]);
 * using db = tensor([[1, 0], [0, 2], [1, 1]]);
 * assert.deepEqual(tidy(() => toArray(cosineRanking(q, db))), [1, 2, 0]);
 * ```
 */
export function cosineRanking(queries: Tensor, database: Tensor): Tensor {
  return tidy(() => sort(cosineSimilarities(queries, database), 1, true).indices);
}

/**
 * The average precision of one search by the trapezoid rule of the Holidays and revisited Oxford evaluation
 * packages (`score_ap_from_ranks_1`, `compute_ap`): `ranks` are the 0-based positions of the true positives
 * in the ranked list (ascending), `positives` how many there are in all (those never retrieved count as
 * missed).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { averagePrecision } from "./retrieval.ts";
 * assert.equal(averagePrecision([0], 1), 1); // found first
 * assert.equal(averagePrecision([1], 1), 0.25); // second: (0 / 1 + 1 / 2) / 2
 * assert.equal(averagePrecision([0], 2), 0.5); // one of two found
 * ```
 */
export function averagePrecision(ranks: readonly number[], positives: number): number {
  if (positives < 1) throw new RangeError(`averagePrecision needs at least one positive, got ${positives}`);
  let ap = 0;
  const step = 1 / positives;
  ranks.forEach((rank, ntp) => {
    const p0 = rank === 0 ? 1 : ntp / rank;
    const p1 = (ntp + 1) / (rank + 1);
    ap += ((p0 + p1) * step) / 2;
  });
  return ap;
}

/** What {@linkcode retrievalScores} returns. */
export interface RetrievalScores {
  /** The mean average precision over the queries that have a positive. */
  map: number;
  /** The mean precision at each k, as the official `compute_map` (see {@linkcode retrievalScores}). */
  precision: number[];
  /** Each query's average precision (NaN when it has no positive). */
  aps: number[];
  /** Each query's precision at each k (NaN when it has no positive). */
  precisions: number[][];
  /** The ks. */
  ks: number[];
  /** The 0-based rank of each query's first positive (-1 when none). */
  firstHit: number[];
}

/**
 * The official `utils.compute_map` (revisited Oxford and Paris) without junk images: for each query, its
 * ranking (database indices, most similar first) and the set of its positives give its average precision
 * ({@linkcode averagePrecision}) and its precision at each k, where k is capped at the rank of its last positive
 * (min(k, last), the official definition); queries without positives are left out of the means. With a
 * `depth`, only each ranking's first `depth` count, as eval_copy_detection.py scores its `topk(20)`: a positive
 * ranked lower adds nothing to the average precision.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { retrievalScores } from "./retrieval.ts";
 * const s = retrievalScores([[2, 0, 1], [0, 1, 2]], [new Set([0]), new Set()], [1, 2]);
 * assert.deepEqual([s.map, s.precision, s.firstHit], [0.25, [0, 0.5], [1, -1]]);
 * assert.equal(retrievalScores([[2, 0, 1]], [new Set([0])], [1], 1).map, 0); // the positive is past depth 1
 * ```
 */
export function retrievalScores(
  rankings: readonly (readonly number[])[],
  positives: readonly ReadonlySet<number>[],
  ks: readonly number[] = [1, 5, 10],
  depth = Infinity,
): RetrievalScores {
  if (rankings.length !== positives.length) {
    throw new RangeError(`retrievalScores: ${rankings.length} rankings but ${positives.length} sets of positives`);
  }
  if (depth < Infinity) rankings = rankings.map((r) => r.slice(0, depth));
  const aps: number[] = [], precisions: number[][] = [], firstHit: number[] = [];
  let sum = 0, counted = 0;
  const prSum = ks.map(() => 0);
  rankings.forEach((ranking, q) => {
    const pos: number[] = [];
    ranking.forEach((j, r) => positives[q].has(j) && pos.push(r));
    firstHit.push(pos.length ? pos[0] : -1);
    if (positives[q].size === 0) {
      aps.push(NaN);
      precisions.push(ks.map(() => NaN));
      return;
    }
    const ap = averagePrecision(pos, positives[q].size);
    aps.push(ap);
    sum += ap;
    counted++;
    const oneBased = pos.map((r) => r + 1);
    const last = oneBased.length ? oneBased[oneBased.length - 1] : 0;
    const pr = ks.map((k) => {
      const kq = Math.min(last, k);
      return kq === 0 ? 0 : oneBased.filter((r) => r <= kq).length / kq;
    });
    pr.forEach((v, i) => (prSum[i] += v));
    precisions.push(pr);
  });
  return {
    map: counted ? sum / counted : NaN,
    precision: prSum.map((v) => (counted ? v / counted : NaN)),
    aps,
    precisions,
    ks: [...ks],
    firstHit,
  };
}

/**
 * The rows of a ranking tensor i64 [Q, N] (from {@linkcode cosineRanking}) as number arrays.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../../mod.ts";
 * import { rankingRows } from "./retrieval.ts";
 * using r = tensor(new BigInt64Array([1n, 0n, 0n, 1n]), { shape: [2, 2] });
 * assert.deepEqual(rankingRows(r), [[1, 0], [0, 1]]);
 * ```
 */
export function rankingRows(ranking: Tensor): number[][] {
  const [Q, N] = ranking.shape;
  const flat = toArray(ranking);
  return Array.from({ length: Q }, (_, q) => flat.slice(q * N, (q + 1) * N).map(Number));
}

/**
 * The size PIL's `Image.thumbnail((size, size))` gives a `width` x `height` image, as the official retrieval
 * loader: the aspect kept, the long side `size` at most (never enlarged), each side rounded the way that keeps
 * the aspect best, at least 1. Returns [height, width].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { thumbnailSize } from "./retrieval.ts";
 * assert.deepEqual(thumbnailSize(768, 1024, 224), [168, 224]);
 * assert.deepEqual(thumbnailSize(100, 80, 224), [100, 80]); // smaller already: unchanged
 * ```
 */
export function thumbnailSize(height: number, width: number, size: number): [number, number] {
  if (size >= width && size >= height) return [height, width];
  const roundAspect = (v: number, key: (n: number) => number) => {
    const a = Math.floor(v), b = Math.ceil(v);
    return Math.max(key(b) < key(a) ? b : a, 1);
  };
  const aspect = width / height;
  let x = size, y = size;
  if (x / y >= aspect) x = roundAspect(y * aspect, (n) => Math.abs(aspect - n / y));
  else y = roundAspect(x / aspect, (n) => (n === 0 ? 0 : Math.abs(aspect - x / n)));
  return [y, x];
}

/** A thumbnail on the page of {@linkcode neighboursHtml}: a data: URL and its size in pixels. */
export interface PageImage {
  /** A data: URL (a base64 PNG). */
  url: string;
  /** Its width. */
  width: number;
  /** Its height. */
  height: number;
}

/** One neighbour on the page of {@linkcode neighboursHtml}. */
export interface PageNeighbour {
  /** The image's name (its path under the database folder). */
  name: string;
  /** Its cosine similarity to the query. */
  score: number;
  /** Whether it is a true match, when the labels say. */
  relevant?: boolean;
  /** Its thumbnail: a key of the page's images. */
  image: string;
}

/** One query on the page of {@linkcode neighboursHtml}. */
export interface PageQuery {
  /** The query's name (its path under the queries folder). */
  name: string;
  /** Its thumbnail: a key of the page's images. */
  image: string;
  /** Its average precision, when known. */
  ap?: number;
  /** Its nearest neighbours, most similar first. */
  neighbours: PageNeighbour[];
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/**
 * A self-contained HTML page of retrieval results (no network access needed: each thumbnail is inlined once, as
 * a data: URL in a CSS class, however often it is shown): a title, lines of summary, then one row per query:
 * its thumbnail, and its neighbours' thumbnails with rank, similarity and name, framed green when a true match
 * and red when not (grey when unknown).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { neighboursHtml } from "./retrieval.ts";
 * const images = { a: { url: "data:image/png;base64,iVBORw0KGgo=", width: 4, height: 3 } };
 * const html = neighboursHtml("copies", ["mAP 1.000"], images, [
 *   { name: "q<1>.jpg", image: "a", ap: 1, neighbours: [{ name: "a.png", score: 0.93, relevant: true, image: "a" }] },
 * ]);
 * assert.match(html, /^<!DOCTYPE html>/);
 * assert.match(html, /q&lt;1&gt;\.jpg/); // names escaped
 * assert.equal(html.split("base64,").length, 2); // the thumbnail inlined once
 * assert.ok(!/https?:/.test(html)); // nothing fetched
 * ```
 */
export function neighboursHtml(
  title: string,
  summary: readonly string[],
  images: Readonly<Record<string, PageImage>>,
  queries: readonly PageQuery[],
): string {
  const keys = Object.keys(images);
  const cls = new Map(keys.map((k, i) => [k, `i${i}`]));
  const styles = keys.map((k) => {
    const im = images[k];
    return `.${cls.get(k)}{width:${im.width}px;height:${im.height}px;background-image:url(${im.url})}`;
  }).join("\n");
  const thumb = (key: string, alt: string) => {
    if (!cls.has(key)) throw new RangeError(`neighboursHtml: no image "${key}" among the page's images`);
    return `<div class="t ${cls.get(key)}" role="img" aria-label="${escapeHtml(alt)}"></div>`;
  };
  const frame = (r?: boolean) => (r === undefined ? "#999" : r ? "#1a9641" : "#d7191c");
  const rows = queries.map((q) => {
    const cells = q.neighbours.map((n, i) =>
      `<figure style="border-color:${frame(n.relevant)}">${thumb(n.image, n.name)}` +
      `<figcaption>${i + 1}. ${n.score.toFixed(3)}<br>${escapeHtml(n.name)}</figcaption></figure>`
    ).join("");
    const ap = q.ap === undefined || Number.isNaN(q.ap) ? "" : `<br>AP ${q.ap.toFixed(3)}`;
    return `<tr><th><figure class="query">${thumb(q.image, q.name)}` +
      `<figcaption>${escapeHtml(q.name)}${ap}</figcaption></figure></th><td>${cells}</td></tr>`;
  }).join("\n");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; } th, td { vertical-align: top; padding: 6px; border-top: 1px solid #ddd; }
th { text-align: left; }
figure { display: inline-block; margin: 0 6px 6px 0; padding: 3px; border: 3px solid #999; border-radius: 4px;
  width: 120px; vertical-align: top; }
figure.query { border-color: #2b83ba; }
.t { margin: 0 auto; background-size: contain; background-repeat: no-repeat; }
figcaption { font-size: 11px; word-break: break-all; margin-top: 2px; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
${styles}
</style></head><body>
<h1>${escapeHtml(title)}</h1>
${summary.map((s) => `<p>${escapeHtml(s)}</p>`).join("\n")}
<p class="legend">frames:<span style="background:#1a9641"></span>true match<span style="background:#d7191c"></span>` +
    `not a match<span style="background:#999"></span>unknown</p>
<table>
${rows}
</table>
</body></html>
`;
}
