/**
 * The FFI layer in one import: tensor handles, ownership scopes and typed ops.
 *
 * @module
 */
export { type Device, dispose, type DType, keep, liveTensors, Tensor, tensorsIn, tidy } from "./tensor.ts";
export { TorchError } from "./library.ts";
export { findLibtorch, type Libtorch } from "./build.ts";
export { exists, removeStaleTemporaries, stagingFolder, writeFileAtomic } from "./files.ts";
export * from "./runtime.ts";
export * from "./ops/creation.ts";
export * from "./ops/math.ts";
export * from "./ops/shape.ts";
export * from "./ops/nn.ts";
export * from "./ops/random.ts";
export * from "./ops/autograd.ts";
export * from "./ops/image.ts";
export * from "./ops/augment.ts";
export * from "./ops/distributed.ts";
export * from "./ops/update.ts";
