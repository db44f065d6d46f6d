/**
 * DINO self-supervised Vision Transformers for Deno, with libtorch doing the
 * math through a thin C shim loaded with Deno FFI.
 *
 * Importing this module finds libtorch, builds the shim on first use (cached
 * afterwards) and loads it; run with `--allow-ffi --allow-run --allow-env
 * --allow-read --allow-write` (or `-A`), plus `--allow-net --allow-import`
 * when importing from a URL.
 *
 * Tensors are handles with one owner each: see {@linkcode tidy} for the rule.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, tensor, tidy, toArray } from "./mod.ts";
 * const out = tidy(() => toArray(add(tensor([1, 2]), tensor([3, 4]))));
 * assert.deepEqual(out, [4, 6]);
 * ```
 * @module
 */
export * from "./ffi/mod.ts";
export * from "./lib/model/mod.ts";
export * from "./lib/training/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/augment/mod.ts";
export * from "./lib/weights/mod.ts";
export * from "./lib/eval/mod.ts";
export * from "./lib/settings/mod.ts";
export * from "./lib/distributed/mod.ts";
