/**
 * Random streams as values: the generator of step `counter` of a run seeded
 * with `seed` is derived from the two numbers alone, so that any step can be
 * replayed (a resumed run draws exactly what an uninterrupted one would).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, rand, toArray } from "../mod.ts";
 * import { streamSeed } from "./rng.ts";
 * using g = new Generator(streamSeed(0, 42)); // step 42 of seed 0
 * using again = new Generator(streamSeed(0, 42));
 * using a = rand(g, [4]);
 * using b = rand(again, [4]);
 * assert.deepEqual(toArray(a), toArray(b)); // any step's numbers can be drawn again, without the steps before it
 * ```
 * @module
 */

/**
 * A 53-bit seed for the generator of step `counter` of stream `seed` (splitmix64).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { streamSeed } from "./rng.ts";
 * assert.equal(streamSeed(0, 7), streamSeed(0, 7));
 * assert.notEqual(streamSeed(0, 0), streamSeed(0, 1));
 * assert.notEqual(streamSeed(0, 1), streamSeed(1, 0));
 * ```
 */
export function streamSeed(seed: number, counter: number): bigint {
  let z = (BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(counter) + 1n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return (z ^ (z >> 31n)) & 0x1fffffffffffffn;
}
