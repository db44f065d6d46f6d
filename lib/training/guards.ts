/**
 * Checks over a run's metrics, as pure functions: a loss that is no longer a
 * number, and the two kinds of collapse DINO can fall into (a constant output,
 * where the loss sits at ln K, and a uniform teacher, whose entropy is ln K).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { collapseWarnings, divergence } from "./guards.ts";
 * assert.equal(divergence({ loss: 4.2 }), undefined);
 * assert.match(divergence({ loss: NaN }) ?? "", /the loss is NaN/);
 * const lnK = Math.log(64);
 * assert.deepEqual(collapseWarnings([lnK, lnK], [1, 1], 64, true).length, 1);
 * ```
 * @module
 */

/**
 * Why training must stop after a step with these metrics, or undefined when it may go on.
 */
export function divergence(m: { loss: number }): string | undefined {
  return Number.isFinite(m.loss) ? undefined : `the loss is ${m.loss}`;
}

/**
 * Collapse warnings for one epoch: `losses` and `teacherEntropies` are its
 * steps' values, `outDim` is K, and `fullEpoch` says whether the epoch ran to
 * its end (a constant loss over part of an epoch proves nothing).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { collapseWarnings } from "./guards.ts";
 * const lnK = Math.log(1024);
 * assert.deepEqual(collapseWarnings([3.1, 2.9], [2, 2.5], 1024, true), []); // learning
 * assert.match(collapseWarnings([4, 4], [lnK, lnK], 1024, true)[0], /the teacher's outputs are uniform/);
 * ```
 */
export function collapseWarnings(
  losses: readonly number[],
  teacherEntropies: readonly number[],
  outDim: number,
  fullEpoch: boolean,
): string[] {
  const lnK = Math.log(outDim);
  const warnings: string[] = [];
  if (fullEpoch && losses.length > 0 && losses.every((l) => Math.abs(l - lnK) < 0.01 * lnK)) {
    warnings.push(`collapse: the loss stayed within 1% of ln K = ${lnK.toFixed(3)} for the whole epoch`);
  }
  const meanEntropy = teacherEntropies.reduce((a, b) => a + b, 0) / Math.max(1, teacherEntropies.length);
  if (teacherEntropies.length > 0 && meanEntropy > 0.99 * lnK) {
    warnings.push(
      `collapse: the teacher's outputs are uniform (entropy ${meanEntropy.toFixed(3)} of ln K ${lnK.toFixed(3)})`,
    );
  }
  return warnings;
}
