/**
 * Macrotask turns for long synchronous work: a loop of native calls never
 * yields, so a pending signal's handler (Ctrl-C, a scheduler's SIGTERM) would
 * not run until it ends. A zero timeout lets it run, but costs 2-2.5 ms in
 * Deno (2% of the default run's step), so loops take one only now and then.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { turnsEvery } from "./turns.ts";
 * const turn = turnsEvery(0); // every call (0 ms apart at least)
 * let handled = false;
 * setTimeout(() => (handled = true), 0);
 * await turn();
 * assert.ok(handled);
 * ```
 * @module
 */

/**
 * A function that takes a macrotask turn (awaits a zero timeout) when `ms`
 * milliseconds have passed since its last turn (or since it was made), and
 * otherwise returns at once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { turnsEvery } from "./turns.ts";
 * const turn = turnsEvery(60_000);
 * let handled = false;
 * setTimeout(() => (handled = true), 0);
 * await turn(); // not a minute yet: no turn
 * assert.equal(handled, false);
 * ```
 */
export function turnsEvery(ms: number): () => Promise<void> {
  let last = performance.now();
  return async () => {
    if (performance.now() - last < ms) return;
    await new Promise((r) => setTimeout(r, 0));
    last = performance.now();
  };
}
