/**
 * Data-parallel training over libtorch's c10d: the world a process was started
 * into (`env.ts`: torchrun's or SLURM's variables) and collectives over records
 * of tensors with an explicit process group (`collectives.ts`). The sharding of
 * the data is the loader's ({@linkcode shardOrder}), the gradient and center
 * reduction the training step's; a one-process run uses none of this.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { worldFromEnv } from "./mod.ts";
 * assert.equal(worldFromEnv({ RANK: "1", WORLD_SIZE: "2" })?.masterPort, 29500);
 * ```
 * @module
 */
export * from "./env.ts";
export * from "./collectives.ts";
