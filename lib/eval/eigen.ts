/**
 * The eigendecomposition of a real symmetric matrix, in double precision, as `numpy.linalg.eigh` gives it
 * (eigenvalues ascending, eigenvectors in columns): Householder reduction to tridiagonal form, then the implicit
 * QL algorithm (the EISPACK routines tred2 and tql2, as in the public-domain JAMA). The shim has no `eigh`, so
 * this runs in JavaScript: O(n³), about 0.3 s for n = 256 and several seconds for n = 768 on one core.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { symmetricEigen } from "./eigen.ts";
 * const { values, vectors } = symmetricEigen(new Float64Array([2, 1, 1, 2]), 2);
 * assert.deepEqual([...values].map((v) => +v.toFixed(12)), [1, 3]);
 * assert.ok(Math.abs(Math.abs(vectors[0]) - Math.SQRT1_2) < 1e-12); // (1, -1) / sqrt 2 for 1
 * ```
 * @module
 */

/** What {@linkcode symmetricEigen} returns. */
export interface Eigen {
  /** The n eigenvalues, ascending. */
  values: Float64Array;
  /** n x n, row-major: column j is the unit eigenvector of `values[j]`. */
  vectors: Float64Array;
}

/**
 * The eigenvalues (ascending) and unit eigenvectors (columns) of the symmetric n x n matrix `a` (row-major; only
 * read). Throws when `a` is not n x n or holds a non-finite value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { symmetricEigen } from "./eigen.ts";
 * const a = new Float64Array([4, 1, 0, 1, 3, 1, 0, 1, 2]);
 * const { values, vectors: v } = symmetricEigen(a, 3);
 * // A v = lambda v for each column
 * for (let j = 0; j < 3; j++) {
 *   for (let i = 0; i < 3; i++) {
 *     const av = a[3 * i] * v[j] + a[3 * i + 1] * v[3 + j] + a[3 * i + 2] * v[6 + j];
 *     assert.ok(Math.abs(av - values[j] * v[3 * i + j]) < 1e-12);
 *   }
 * }
 * ```
 */
export function symmetricEigen(a: Float64Array | Float32Array | readonly number[], n: number): Eigen {
  if (!Number.isInteger(n) || n < 1 || a.length !== n * n) {
    throw new RangeError(`symmetricEigen takes an n x n matrix, got ${a.length} values for n = ${n}`);
  }
  // The routines run on W, the transpose of EISPACK's V (W[c][r] = V[r][c]), so that their inner loops walk
  // memory in order; W starts as A (symmetric) and ends holding the eigenvectors in rows.
  const W = Float64Array.from(a);
  for (const x of W) {
    if (!Number.isFinite(x)) throw new RangeError("symmetricEigen: the matrix holds a non-finite value");
  }
  const d = new Float64Array(n), e = new Float64Array(n);
  tred2(W, d, e, n);
  tql2(W, d, e, n);
  const vectors = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vectors[i * n + j] = W[j * n + i];
  return { values: d, vectors };
}

/** Householder reduction of the symmetric matrix (W, transposed) to tridiagonal form: d the diagonal, e the off-diagonal. */
function tred2(W: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) d[j] = W[j * n + (n - 1)];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0, h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = W[j * n + (i - 1)];
        W[j * n + i] = 0;
        W[i * n + j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        W[i * n + j] = f;
        g = e[j] + W[j * n + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          g += W[j * n + k] * d[k];
          e[k] += W[j * n + k] * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        for (let k = j; k <= i - 1; k++) W[j * n + k] -= f * e[k] + g * d[k];
        d[j] = W[j * n + (i - 1)];
        W[j * n + i] = 0;
      }
    }
    d[i] = h;
  }
  for (let i = 0; i < n - 1; i++) {
    W[i * n + (n - 1)] = W[i * n + i];
    W[i * n + i] = 1;
    const h = d[i + 1];
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = W[(i + 1) * n + k] / h;
      for (let j = 0; j <= i; j++) {
        let g = 0;
        for (let k = 0; k <= i; k++) g += W[(i + 1) * n + k] * W[j * n + k];
        for (let k = 0; k <= i; k++) W[j * n + k] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) W[(i + 1) * n + k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = W[j * n + (n - 1)];
    W[j * n + (n - 1)] = 0;
  }
  W[(n - 1) * n + (n - 1)] = 1;
  e[0] = 0;
}

/** The implicit QL algorithm on the tridiagonal (d, e), accumulating into W (transposed); then sorted ascending. */
function tql2(W: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0, tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 300) throw new Error("symmetricEigen: the QL iteration did not converge");
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1, c2 = c, c3 = c, s = 0, s2 = 0;
        const el1 = e[l + 1];
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          const ri = i * n, rj = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            h = W[rj + k];
            W[rj + k] = s * W[ri + k] + c * h;
            W[ri + k] = c * W[ri + k] - s * h;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
  for (let i = 0; i < n - 1; i++) {
    let k = i, p = d[i];
    for (let j = i + 1; j < n; j++) {
      if (d[j] < p) {
        k = j;
        p = d[j];
      }
    }
    if (k !== i) {
      d[k] = d[i];
      d[i] = p;
      for (let j = 0; j < n; j++) {
        const t = W[i * n + j];
        W[i * n + j] = W[k * n + j];
        W[k * n + j] = t;
      }
    }
  }
}
