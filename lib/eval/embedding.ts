/**
 * Two-dimensional maps of features, for looking at them: principal component analysis ({@linkcode pca}) and
 * exact t-SNE ({@linkcode tsne}, van der Maaten and Hinton 2008: perplexity-calibrated Gaussian affinities, a
 * Student-t kernel in the map, early exaggeration, momentum and adaptive gains), in double precision on plain
 * arrays. t-SNE costs O(n²) memory and time per iteration: meant for up to a few thousand points.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pca } from "./embedding.ts";
 * // points along the line y = 2x: one direction holds everything
 * const x = new Float64Array([0, 0, 1, 2, 2, 4, 3, 6]);
 * const { points, variance } = pca(x, 4, 2, 2);
 * assert.ok(variance[0] > 0.999 && Math.abs(points[1]) < 1e-9); // the second coordinate is 0
 * ```
 * @module
 */
import { symmetricEigen } from "./eigen.ts";

/** What {@linkcode pca} returns. */
export interface PcaResult {
  /** n x k, row-major: each point's coordinates along the first k principal directions. */
  points: Float64Array;
  /** The share of the total variance each of the k directions holds. */
  variance: number[];
}

/**
 * The first `k` principal components of n points of d dimensions (row-major): the data centred and projected on
 * the eigenvectors of its covariance with the largest eigenvalues (each direction's sign made so that its
 * largest coefficient is positive, for stable pictures).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pca } from "./embedding.ts";
 * const { points } = pca(new Float64Array([1, 1, -1, -1]), 2, 2, 1);
 * assert.deepEqual([...points].map((v) => +v.toFixed(6)), [1.414214, -1.414214]);
 * ```
 */
export function pca(x: ArrayLike<number>, n: number, d: number, k = 2): PcaResult {
  if (x.length !== n * d || n < 1 || d < 1) {
    throw new RangeError(`pca takes n x d values, got ${x.length} for ${n} x ${d}`);
  }
  if (!(Number.isInteger(k) && k >= 1 && k <= d)) throw new RangeError(`pca: k must be in 1..${d}, got ${k}`);
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j] / n;
  const c = new Float64Array(n * d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) c[i * d + j] = x[i * d + j] - mean[j];
  const cov = new Float64Array(d * d);
  for (let i = 0; i < n; i++) {
    const row = i * d;
    for (let a = 0; a < d; a++) {
      const v = c[row + a];
      if (v === 0) continue;
      for (let b = a; b < d; b++) cov[a * d + b] += v * c[row + b];
    }
  }
  for (let a = 0; a < d; a++) for (let b = a; b < d; b++) cov[b * d + a] = cov[a * d + b] /= Math.max(n - 1, 1);
  const { values, vectors } = symmetricEigen(cov, d);
  const total = values.reduce((s, v) => s + Math.max(v, 0), 0) || 1;
  const points = new Float64Array(n * k), variance: number[] = [];
  for (let r = 0; r < k; r++) {
    const col = d - 1 - r; // values ascend
    let big = 0;
    for (let a = 0; a < d; a++) if (Math.abs(vectors[a * d + col]) > Math.abs(big)) big = vectors[a * d + col];
    const sign = big < 0 ? -1 : 1;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let a = 0; a < d; a++) s += c[i * d + a] * vectors[a * d + col];
      points[i * k + r] = sign * s;
    }
    variance.push(Math.max(values[col], 0) / total);
  }
  return { points, variance };
}

/** Options of {@linkcode tsne}. */
export interface TsneOptions {
  /** The effective number of neighbours each point's affinities spread over (30, at most (n - 1) / 3). */
  perplexity?: number;
  /** Gradient steps (750). */
  iterations?: number;
  /** The step size (200). */
  learningRate?: number;
  /** Seeds the initial map (0). */
  seed?: number;
}

/** A small seeded generator (mulberry32) for the initial map. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Exact t-SNE of n points of d dimensions (row-major) to 2-D: n x 2, row-major, centred. The affinities are
 * calibrated to `perplexity` by a binary search per point, symmetrised; the map starts from small Gaussian
 * noise (seeded) and follows the gradient with early exaggeration (x12 for the first 250 steps), momentum (0.5,
 * then 0.8) and per-coordinate gains. Deterministic for a seed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tsne } from "./embedding.ts";
 * // two tight, far-apart clusters of 5 points in 3-D stay apart in the map
 * const x = new Float64Array(30).map((_, i) => (i < 15 ? 0 : 10) + ((i * 7919) % 13) / 100);
 * const y = tsne(x, 10, 3, { perplexity: 3, iterations: 300 });
 * const gap = Math.hypot(y[0] - y[10], y[1] - y[11]), within = Math.hypot(y[0] - y[2], y[1] - y[3]);
 * assert.ok(gap > 3 * within);
 * ```
 */
export function tsne(x: ArrayLike<number>, n: number, d: number, o: TsneOptions = {}): Float64Array {
  if (x.length !== n * d || n < 2 || d < 1) {
    throw new RangeError(`tsne takes n x d values (n >= 2), got ${x.length} for ${n} x ${d}`);
  }
  const perplexity = Math.min(o.perplexity ?? 30, Math.max((n - 1) / 3, 1));
  const iterations = o.iterations ?? 750, eta = o.learningRate ?? 200;
  // squared distances
  const D = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) {
        const t = x[i * d + k] - x[j * d + k];
        s += t * t;
      }
      D[i * n + j] = D[j * n + i] = s;
    }
  }
  // conditional affinities by binary search on the precision, to the perplexity's entropy
  const P = new Float64Array(n * n), target = Math.log(perplexity);
  for (let i = 0; i < n; i++) {
    let beta = 1, lo = -Infinity, hi = Infinity;
    for (let it = 0; it < 64; it++) {
      let sum = 0, dp = 0;
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const p = Math.exp(-D[i * n + j] * beta);
        P[i * n + j] = p;
        sum += p;
        dp += D[i * n + j] * p;
      }
      if (sum === 0) sum = 1e-300;
      const H = Math.log(sum) + (beta * dp) / sum;
      for (let j = 0; j < n; j++) P[i * n + j] /= sum;
      if (Math.abs(H - target) < 1e-5) break;
      if (H > target) {
        lo = beta;
        beta = hi === Infinity ? beta * 2 : (beta + hi) / 2;
      } else {
        hi = beta;
        beta = lo === -Infinity ? beta / 2 : (beta + lo) / 2;
      }
    }
  }
  // symmetric joint affinities
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const p = Math.max((P[i * n + j] + P[j * n + i]) / (2 * n), 1e-12);
      P[i * n + j] = P[j * n + i] = p;
    }
    P[i * n + i] = 0;
  }
  const rand = mulberry32(o.seed ?? 0);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const Y = Float64Array.from({ length: 2 * n }, () => 1e-4 * gauss());
  const update = new Float64Array(2 * n), gains = new Float64Array(2 * n).fill(1);
  const num = new Float64Array(n * n), grad = new Float64Array(2 * n);
  for (let it = 0; it < iterations; it++) {
    const exaggeration = it < 250 ? 12 : 1, momentum = it < 250 ? 0.5 : 0.8;
    let sumQ = 0;
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const dx = Y[2 * i] - Y[2 * j], dy = Y[2 * i + 1] - Y[2 * j + 1];
        const q = 1 / (1 + dx * dx + dy * dy);
        num[i * n + j] = num[j * n + i] = q;
        sumQ += 2 * q;
      }
    }
    grad.fill(0);
    for (let i = 0; i < n; i++) {
      let gx = 0, gy = 0;
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const q = num[i * n + j];
        const m = (exaggeration * P[i * n + j] - q / sumQ) * q;
        gx += m * (Y[2 * i] - Y[2 * j]);
        gy += m * (Y[2 * i + 1] - Y[2 * j + 1]);
      }
      grad[2 * i] = 4 * gx;
      grad[2 * i + 1] = 4 * gy;
    }
    for (let k = 0; k < 2 * n; k++) {
      gains[k] = Math.sign(grad[k]) !== Math.sign(update[k]) ? gains[k] + 0.2 : Math.max(gains[k] * 0.8, 0.01);
      update[k] = momentum * update[k] - eta * gains[k] * grad[k];
      Y[k] += update[k];
    }
    let mx = 0, my = 0;
    for (let i = 0; i < n; i++) {
      mx += Y[2 * i] / n;
      my += Y[2 * i + 1] / n;
    }
    for (let i = 0; i < n; i++) {
      Y[2 * i] -= mx;
      Y[2 * i + 1] -= my;
    }
  }
  return Y;
}
