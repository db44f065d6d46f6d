/**
 * Random streams as values: the generator of step `counter` of a run seeded
 * with `seed` is derived from the two numbers alone, so that any step can be
 * replayed (a resumed run draws exactly what an uninterrupted one would).
 *
 * @example
 * ```ts
 * import { Generator } from "../mod.ts";
 * import { streamSeed } from "./rng.ts";
 * using g = new Generator(streamSeed(0, 42)); // step 42 of seed 0
 * ```
 * @module
 */

/**
 * A 53-bit seed for the generator of step `counter` of stream `seed` (splitmix64).
 *
 * @example
 * ```ts
 * import { streamSeed } from "./rng.ts";
 * console.log(streamSeed(0, 0) !== streamSeed(0, 1)); // true
 * ```
 */
export function streamSeed(seed: number, counter: number): bigint {
  let z = (BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(counter) + 1n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return (z ^ (z >> 31n)) & 0x1fffffffffffffn;
}
