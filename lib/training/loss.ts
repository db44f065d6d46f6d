/**
 * The DINO loss, as the official `DINOLoss`, as pure functions: the loss
 * ({@linkcode dinoLoss}) and the new center ({@linkcode updateCenter}) are
 * returned, not stored. Also the paper's ablations: MSE instead of
 * cross-entropy, no centering, and Sinkhorn-Knopp instead of centering.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, item, randn, tidy, zeros } from "../../mod.ts";
 * import { dinoLoss, updateCenter } from "./loss.ts";
 * using g = new Generator(0);
 * const K = 64, B = 4;
 * using teacher = randn(g, [2 * B, K]);
 * using center = zeros([1, K]);
 * const r = tidy(() => dinoLoss(randn(g, [4 * B, K]), teacher, center, { ncrops: 4, teacherTemp: 0.04 }));
 * using next = updateCenter(center, teacher, {}); // 0.9 center + 0.1 mean of the teacher's outputs
 * assert.ok(item(r.loss) > 0 && next.shape[1] === K);
 * dispose(r);
 * ```
 * @module
 */
import {
  add,
  chunk,
  detach,
  div,
  exp,
  log,
  logSoftmax,
  mean,
  mul,
  neg,
  noGrad,
  pow,
  softmax,
  sub,
  sum,
  type Tensor,
  tidy,
  transpose,
} from "../../ffi/mod.ts";

/** How the teacher's targets are made. */
export type Centering = "center" | "none" | "sinkhorn";

/** Options of {@linkcode dinoLoss}. */
export interface LossOptions {
  /** Crops per image: 2 global + the locals. */
  ncrops: number;
  /** The teacher temperature for this epoch. */
  teacherTemp: number;
  /** The student temperature (0.1). */
  studentTemp?: number;
  /** The center's momentum (0.9). */
  centerMomentum?: number;
  /** Cross-entropy (the paper) or MSE between the two distributions (an ablation). */
  criterion?: "ce" | "mse";
  /** Centering (the paper), none, or Sinkhorn-Knopp (ablations). */
  centering?: Centering;
  /** Sinkhorn-Knopp iterations (3). */
  sinkhornIterations?: number;
}

/** The teacher's target distributions: softmax((t - center) / tau), or Sinkhorn-Knopp. */
export function teacherTargets(teacherOut: Tensor, center: Tensor, o: LossOptions): Tensor {
  const centering = o.centering ?? "center";
  if (centering === "sinkhorn") return sinkhornKnopp(teacherOut, o.teacherTemp, o.sinkhornIterations ?? 3);
  const centered = centering === "center" ? sub(teacherOut, center) : teacherOut;
  return detach(softmax(div(centered, o.teacherTemp), -1)); // [2B, K]
}

/** Sinkhorn-Knopp normalisation of exp(t / tau), as used for the paper's ablation (and DINOv2): rows sum to 1. */
export function sinkhornKnopp(teacherOut: Tensor, temp: number, iterations: number): Tensor {
  return noGrad(() => {
    let q = transpose(exp(div(teacherOut, temp)), 0, 1); // [K, B]
    const [K, B] = q.shape;
    q = div(q, sum(q));
    for (let i = 0; i < iterations; i++) {
      q = div(div(q, sum(q, 1, { keepdim: true })), K);
      q = div(div(q, sum(q, 0, { keepdim: true })), B);
    }
    return transpose(mul(q, B), 0, 1); // [B, K]
  });
}

/**
 * The loss over every (teacher global crop i, student crop v != i) pair,
 * averaged over pairs, and the teacher's target distributions [2B, K]. The
 * new center is {@linkcode updateCenter}'s: a step with several micro-batches
 * updates it once, from all of them.
 *
 * `studentOut` is [ncrops * B, K] in crop order; `teacherOut` is [2B, K].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn, tidy, zeros } from "../../mod.ts";
 * import { dinoLoss } from "./loss.ts";
 * using g = new Generator(0);
 * const r = tidy(() => dinoLoss(randn(g, [4, 8]), randn(g, [4, 8]), zeros([1, 8]), { ncrops: 2, teacherTemp: 0.04 }));
 * assert.deepEqual([r.loss.shape, r.targets.shape], [[], [4, 8]]);
 * dispose(r);
 * ```
 */
export function dinoLoss(
  studentOut: Tensor,
  teacherOut: Tensor,
  center: Tensor,
  o: LossOptions,
): { loss: Tensor; targets: Tensor } {
  const studentTemp = o.studentTemp ?? 0.1;
  const criterion = o.criterion ?? "ce";
  if (studentOut.shape[0] % o.ncrops !== 0) {
    throw new Error(`student output has ${studentOut.shape[0]} rows, not a multiple of ${o.ncrops} crops`);
  }
  const student = chunk(div(studentOut, studentTemp), o.ncrops); // ncrops x [B, K]
  const probs = teacherTargets(teacherOut, center, o); // [2B, K]
  const targets = chunk(probs, 2); // 2 x [B, K]
  let total: Tensor | undefined;
  let terms = 0;
  targets.forEach((q, iq) => {
    student.forEach((s, v) => {
      if (v === iq) return;
      // One scope per pair: only the running total outlives it (autograd keeps what backward needs).
      total = tidy(() => {
        const perSample = criterion === "ce"
          ? sum(mul(neg(q), logSoftmax(s, -1)), -1) // [B]
          : sum(pow(sub(q, softmax(s, -1)), 2), -1);
        const term = mean(perSample);
        return total === undefined ? term : add(total, term);
      });
      terms++;
    });
  });
  const loss = div(total!, terms);
  return { loss, targets: probs };
}

/** center * m + mean(teacher outputs) * (1 - m); unchanged (a copy) without centering. */
export function updateCenter(
  center: Tensor,
  teacherOut: Tensor,
  o: Pick<LossOptions, "centerMomentum" | "centering">,
): Tensor {
  return noGrad(() => centerFromSum(center, sum(teacherOut, 0, { keepdim: true }), teacherOut.shape[0], o));
}

/**
 * center * m + (batchSum / count) * (1 - m): the center update from the
 * teacher outputs' sum over rows, [1, K], and their number. Data-parallel
 * training passes the sum over every rank's rows and the global count, as the
 * official `update_center` all-reduces the batch sum.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, toArray } from "../../mod.ts";
 * import { centerFromSum } from "./loss.ts";
 * using center = tensor([[1, 1]]);
 * using sums = tensor([[4, 8]]); // 4 rows over the ranks
 * using next = centerFromSum(center, sums, 4, { centerMomentum: 0.5 });
 * assert.deepEqual(toArray(next), [1, 1.5]);
 * ```
 */
export function centerFromSum(
  center: Tensor,
  batchSum: Tensor,
  count: number,
  o: Pick<LossOptions, "centerMomentum" | "centering">,
): Tensor {
  return noGrad(() => {
    if ((o.centering ?? "center") !== "center") return add(center, 0);
    const m = o.centerMomentum ?? 0.9;
    const batchCenter = div(batchSum, count); // [1, K]
    return add(mul(center, m), mul(batchCenter, 1 - m));
  });
}

/** Mean entropy (nats) of the rows of a probability matrix, for monitoring collapse. */
export function meanEntropy(probs: Tensor): Tensor {
  return noGrad(() => mean(neg(sum(mul(probs, log(add(probs, 1e-12))), -1))));
}
