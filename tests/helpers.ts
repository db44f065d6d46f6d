// Assertions shared by the tests.
import assert from "node:assert/strict";
import { liveTensors, type Tensor, tidy, toArray } from "../mod.ts";

/** Asserts two number lists agree elementwise within `tol` (absolute). */
export function assertClose(actual: readonly number[], expected: readonly number[], tol = 1e-6): void {
  assert.equal(actual.length, expected.length, `length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const ok = Math.abs(actual[i] - expected[i]) <= tol || (Number.isNaN(actual[i]) && Number.isNaN(expected[i]));
    if (!ok) {
      const head = (xs: readonly number[]) => xs.slice(0, 12).join(", ") + (xs.length > 12 ? ", ..." : "");
      assert.fail(
        `at ${i}: ${actual[i]} != ${expected[i]} (tol ${tol})\nactual   ${head(actual)}\nexpected ${head(expected)}`,
      );
    }
  }
}

/** Asserts a tensor's shape and values, then frees nothing: the caller owns it. */
export function assertTensor(t: Tensor, shape: readonly number[], values: readonly number[], tol = 1e-6): void {
  assert.deepEqual(t.shape, shape);
  assertClose(toArray(t), values, tol);
}

/** Runs `fn` in a scope and asserts it leaves no tensor alive. */
export function noLeak(fn: () => void): void {
  const before = liveTensors();
  tidy(fn);
  assert.equal(liveTensors(), before, "tensors leaked");
}

/** Runs `fn` with console output captured. */
export async function captured<T>(fn: () => Promise<T>): Promise<{ value: T; out: string; err: string }> {
  const log = console.log, error = console.error, warn = console.warn;
  let out = "", err = "";
  console.log = (...a: unknown[]) => void (out += a.join(" ") + "\n");
  console.error = console.warn = (...a: unknown[]) => void (err += a.join(" ") + "\n");
  try {
    return { value: await fn(), out, err };
  } finally {
    console.log = log;
    console.error = error;
    console.warn = warn;
  }
}
