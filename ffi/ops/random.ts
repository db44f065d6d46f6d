/**
 * Seeded random numbers from explicit generators. Values are always drawn on
 * the CPU (PyTorch's mt19937 generator, so a seed gives the same numbers as
 * `torch.Generator().manual_seed(seed)`) and then moved to the asked device:
 * the same seed gives the same tensor on every device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, rand } from "../mod.ts";
 * using g = new Generator(42);
 * using u = rand(g, [2, 3]); // U[0, 1)
 * assert.deepEqual(u.shape, [2, 3]);
 * ```
 * @module
 */
import { ctx, messageOf, native, TorchError } from "../library.ts";
import { deviceCode, DTYPE_CODES, type Tensor, wrap } from "../tensor.ts";
import { ints } from "./args.ts";
import type { TensorOptions } from "./creation.ts";

const registry = new FinalizationRegistry<Deno.PointerObject>((ptr) => native.generator_free(ptr));

/**
 * A random-number generator. Drawing from it advances it: pass it explicitly
 * to every random op. Its state can be saved and restored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, randn, toArray } from "../mod.ts";
 * using g = new Generator(0);
 * using state = g.state();
 * using a = randn(g, [3]);
 * using g2 = Generator.fromState(state);
 * using b = randn(g2, [3]);
 * assert.deepEqual(toArray(b), toArray(a));
 * ```
 */
export class Generator {
  #ptr: Deno.PointerObject | null;

  static #adopt: Deno.PointerObject | null = null;

  /** A generator seeded with `seed` (an integer of at most 2^53 in size, or a 64-bit bigint). */
  constructor(seed: number | bigint) {
    const adopted = Generator.#adopt;
    Generator.#adopt = null;
    // The FFI takes 64 bits, and would not say that it dropped the rest of a larger seed.
    if (!adopted && (typeof seed === "number" ? !Number.isSafeInteger(seed) : BigInt.asIntN(64, seed) !== seed)) {
      throw new RangeError(
        `Generator: the seed must be an integer of at most 2^53 in size (or a 64-bit bigint), got ${seed}`,
      );
    }
    this.#ptr = adopted ?? Generator.#check(native.generator_new(ctx, BigInt(seed)));
    registry.register(this, this.#ptr, this);
  }

  static #check(ptr: Deno.PointerValue): Deno.PointerObject {
    if (ptr === null) throw new TorchError("Generator", messageOf(ctx));
    return ptr;
  }

  /** A generator continuing from a saved state. */
  static fromState(state: Tensor): Generator {
    Generator.#adopt = Generator.#check(native.generator_from_state(ctx, state.ptr));
    return new Generator(0);
  }

  /** The native handle; throws after dispose. */
  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("use of a disposed Generator");
    return this.#ptr;
  }

  /** The full state, as a u8 tensor (to store in checkpoints). */
  state(): Tensor {
    return wrap(native.generator_state(ctx, this.ptr), "Generator.state");
  }

  /** Frees the generator. */
  dispose(): void {
    if (this.#ptr === null) return;
    registry.unregister(this);
    native.generator_free(this.#ptr);
    this.#ptr = null;
  }

  /** Lets `using g = new Generator(seed)` free it at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function dev(o: TensorOptions): number {
  return deviceCode(o.device ?? "cpu");
}

/**
 * Uniform on [low, high).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, toArray, uniform } from "../mod.ts";
 * using g = new Generator(0);
 * using scales = uniform(g, [100], 0.4, 1);
 * assert.ok(toArray(scales).every((s) => s >= 0.4 && s < 1));
 * ```
 */
export function uniform(g: Generator, shape: readonly number[], low = 0, high = 1, o: TensorOptions = {}): Tensor {
  const dtype = DTYPE_CODES[o.dtype ?? "f32"];
  return wrap(native.uniform(ctx, g.ptr, ints(shape), shape.length, low, high, dtype, dev(o)), "uniform");
}
/**
 * Uniform on [0, 1), as `torch.rand`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, rand, toArray } from "../mod.ts";
 * using g = new Generator(0);
 * using u = rand(g, [2, 2]);
 * assert.ok(u.shape.length === 2 && toArray(u).every((v) => v >= 0 && v < 1));
 * ```
 */
export function rand(g: Generator, shape: readonly number[], o: TensorOptions = {}): Tensor {
  return uniform(g, shape, 0, 1, o);
}
/**
 * `count` uniforms on [0, 1) from each seed's own generator: row i holds what
 * `rand(new Generator(seeds[i]), [count], o)` draws, for many samples' own
 * random streams in one call.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, rand, randRows, tidy, toArray } from "../mod.ts";
 * using rows = randRows([7, 8], 3, { dtype: "f64" });
 * using g = new Generator(8);
 * assert.deepEqual(tidy(() => toArray(rows).slice(3)), tidy(() => toArray(rand(g, [3], { dtype: "f64" }))));
 * ```
 */
export function randRows(
  seeds: readonly (number | bigint)[],
  count: number,
  o: Pick<TensorOptions, "dtype"> = {},
): Tensor {
  const bits = BigInt64Array.from(seeds, (seed) => {
    const b = typeof seed === "bigint" ? seed : Number.isInteger(seed) ? BigInt(seed) : undefined;
    if (b === undefined || BigInt.asIntN(64, b) !== b) {
      throw new RangeError(`randRows: a seed is a 64-bit integer, as a Generator's, got ${seed}`);
    }
    return b;
  });
  const dtype = DTYPE_CODES[o.dtype ?? "f32"];
  return wrap(native.uniform_rows(ctx, bits, seeds.length, count, dtype), "randRows");
}
/**
 * Normal with `mean` and `std`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, item, normal, tidy, variance } from "../mod.ts";
 * using g = new Generator(0);
 * using w = normal(g, [10000], 0, 0.02);
 * const std = Math.sqrt(tidy(() => item(variance(w))));
 * assert.ok(Math.abs(std - 0.02) < 0.001);
 * ```
 */
export function normal(g: Generator, shape: readonly number[], mean = 0, std = 1, o: TensorOptions = {}): Tensor {
  const dtype = DTYPE_CODES[o.dtype ?? "f32"];
  return wrap(native.normal(ctx, g.ptr, ints(shape), shape.length, mean, std, dtype, dev(o)), "normal");
}
/**
 * Standard normal, as `torch.randn`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, randn, toArray } from "../mod.ts";
 * using g1 = new Generator(7);
 * using g2 = new Generator(7);
 * using a = randn(g1, [4, 8]);
 * using b = randn(g2, [4, 8]);
 * assert.deepEqual(toArray(a), toArray(b)); // the same seed, the same numbers
 * ```
 */
export function randn(g: Generator, shape: readonly number[], o: TensorOptions = {}): Tensor {
  return normal(g, shape, 0, 1, o);
}
/**
 * Bernoulli draws: 1 with probability `p`, a number or a tensor of
 * probabilities (whose shape, dtype and device the result takes).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bernoulli, Generator, toArray } from "../mod.ts";
 * using g = new Generator(3);
 * using flips = bernoulli(g, 0.5, [16]);
 * assert.ok(toArray(flips).every((v) => v === 0 || v === 1));
 * ```
 */
export function bernoulli(g: Generator, p: number | Tensor, shape?: readonly number[], o: TensorOptions = {}): Tensor {
  if (typeof p !== "number") return wrap(native.bernoulli(ctx, g.ptr, p.ptr), "bernoulli");
  if (!shape) throw new TypeError("bernoulli with a scalar p needs a shape");
  const dtype = DTYPE_CODES[o.dtype ?? "f32"];
  return wrap(native.bernoulli_scalar(ctx, g.ptr, ints(shape), shape.length, p, dtype, dev(o)), "bernoulli");
}
/**
 * Integers uniform on [low, high); i64 unless a dtype is given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, randint, toArray } from "../mod.ts";
 * using g = new Generator(0);
 * using r = randint(g, 0, 10, [5]);
 * assert.equal(r.dtype, "i64");
 * assert.ok(toArray(r).every((v) => Number.isInteger(v) && v >= 0 && v < 10));
 * ```
 */
export function randint(
  g: Generator,
  low: number,
  high: number,
  shape: readonly number[],
  o: TensorOptions = {},
): Tensor {
  if (!Number.isSafeInteger(low) || !Number.isSafeInteger(high)) {
    throw new RangeError(`randint takes integer bounds, got [${low}, ${high})`);
  }
  const dtype = DTYPE_CODES[o.dtype ?? "i64"];
  return wrap(native.randint(ctx, g.ptr, low, high, ints(shape), shape.length, dtype, dev(o)), "randint");
}
/**
 * A random permutation of 0..n-1 (i64).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Generator, randperm, toArray } from "../mod.ts";
 * using g = new Generator(0);
 * using order = randperm(g, 6);
 * assert.deepEqual(toArray(order).sort(), [0, 1, 2, 3, 4, 5]);
 * ```
 */
export function randperm(g: Generator, n: number, o: TensorOptions = {}): Tensor {
  return wrap(native.randperm(ctx, g.ptr, n, DTYPE_CODES[o.dtype ?? "i64"], dev(o)), "randperm");
}
/**
 * Zeroes each element with probability `p` and scales the rest by 1/(1-p); the identity (a copy) unless `train`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dropout, Generator, ones, tidy, toArray } from "../mod.ts";
 * using g = new Generator(0);
 * using x = ones([100]);
 * const [train, evaluation] = tidy(() => [dropout(g, x, 0.5, true), dropout(g, x, 0.5, false)].map(toArray));
 * assert.ok(train.every((v) => v === 0 || v === 2) && train.includes(0) && train.includes(2));
 * assert.deepEqual(evaluation, toArray(x));
 * ```
 */
export function dropout(g: Generator, x: Tensor, p: number, train = true): Tensor {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`dropout probability must be in [0, 1], got ${p}`);
  return wrap(native.dropout(ctx, g.ptr, x.ptr, p, train), "dropout");
}

/**
 * A 53-bit seed for the generator of step `counter` of stream `seed` (splitmix64):
 * any step's numbers can be drawn again without the steps before it, so a
 * resumed run draws exactly what an uninterrupted one would.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { streamSeed } from "./random.ts";
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
