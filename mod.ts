/**
 * DINO self-supervised Vision Transformers for Deno, with libtorch doing the
 * math through a thin C shim loaded with Deno FFI.
 *
 * Importing this module finds libtorch, builds the shim on first use (cached
 * afterwards) and loads it; run with `--allow-ffi --allow-run --allow-env
 * --allow-read --allow-write` (or `-A`), plus `--allow-net` when importing
 * from a URL.
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
export * from "./lib/vit.ts";
export * from "./lib/head.ts";
export * from "./lib/model.ts";
export * from "./lib/loss.ts";
export * from "./lib/schedules.ts";
export * from "./lib/optim.ts";
export * from "./lib/train.ts";
export * from "./lib/rng.ts";
export * from "./lib/tree.ts";
export * from "./lib/safetensors.ts";
export * from "./lib/weights.ts";
export * from "./lib/augment.ts";
export * from "./lib/data/dataset.ts";
export * from "./lib/data/idx.ts";
export * from "./lib/data/cifar.ts";
export * from "./lib/data/folder.ts";
export * from "./lib/data/loader.ts";
export * from "./lib/data/open.ts";
export * from "./lib/config.ts";
export * from "./lib/checkpoint.ts";
export * from "./lib/knn.ts";
export * from "./lib/pretrained.ts";
