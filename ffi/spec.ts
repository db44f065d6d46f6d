/**
 * The symbol table of the native shim: one line per entry point of
 * `native/*.cpp`, in the order of `native/ops.cpp` (images from `images.cpp`,
 * the CPU cache from `allocator.cpp`, collectives from `distributed.cpp`). Every op takes the call's context
 * buffer first; the helpers below add it. `tests/spec_test.ts` checks this
 * table against the C sources.
 *
 * @module
 */

const CTX = "buffer";
/** A tensor handle (`at::Tensor*`); null for an absent optional tensor. */
const T = "pointer";
/** A generator handle. */
const G = "pointer";
/** A list handle, returned by ops with several results. */
const L = "pointer";
const F = "f64";
const I = "i32";
/** 64-bit ints (byte counts, seeds): bigint on the TypeScript side. */
const I64 = "i64";
/** A position or count along a dim (index, start, end, length, n), which may pass 2^31: checked whole in C. */
const N = "f64";
const B = "bool";
/** An int list: a Float64Array and its length. */
const INTS = ["buffer", "i32"] as const;
/** A tensor list: a BigUint64Array of handles and its length. */
const TENSORS = ["buffer", "i32"] as const;

function tensor<const P extends readonly Deno.NativeType[]>(...parameters: P) {
  return { parameters: [CTX, ...parameters], result: "pointer" } as const;
}
const list = tensor;
function scalar<const P extends readonly Deno.NativeType[]>(...parameters: P) {
  return { parameters: [CTX, ...parameters], result: "f64" } as const;
}

/** Symbols for `Deno.dlopen`; names drop the `dn_` prefix of the C side. */
export const symbols = {
  // handles: no context, cannot fail
  free: { name: "dn_free", parameters: [T], result: "void" },
  list_free: { name: "dn_list_free", parameters: [L], result: "void" },
  generator_free: { name: "dn_generator_free", parameters: [G], result: "void" },
  live_tensors: { name: "dn_live_tensors", parameters: [], result: "f64" },
  list_take: tensor(L, I),
  alias: tensor(T),
  // data in and out
  from_data: tensor("buffer", I64, I, ...INTS),
  copy_to: scalar(T, "buffer", I64),
  item: scalar(T),
  // creation
  empty: tensor(...INTS, I, I),
  zeros: tensor(...INTS, I, I),
  ones: tensor(...INTS, I, I),
  full: tensor(...INTS, F, I, I),
  arange: tensor(F, F, F, I, I),
  linspace: tensor(F, F, N, I, I),
  eye: tensor(N, I, I),
  zeros_like: tensor(T),
  ones_like: tensor(T),
  full_like: tensor(T, F),
  // random
  generator_new: { parameters: [CTX, I64], result: "pointer" },
  generator_from_state: { parameters: [CTX, T], result: "pointer" },
  generator_state: tensor(G),
  uniform: tensor(G, ...INTS, F, F, I, I),
  normal: tensor(G, ...INTS, F, F, I, I),
  bernoulli: tensor(G, T),
  bernoulli_scalar: tensor(G, ...INTS, F, I, I),
  randint: tensor(G, F, F, ...INTS, I, I),
  randperm: tensor(G, N, I, I),
  uniform_rows: tensor("buffer", I, N, I), // the seeds as i64, their count
  dropout: tensor(G, T, F, B),
  // dtype and device
  to_dtype: tensor(T, I),
  to_device: tensor(T, I),
  // shape
  reshape: tensor(T, ...INTS),
  permute: tensor(T, ...INTS),
  transpose: tensor(T, I, I),
  narrow: tensor(T, I, N, N),
  slice: tensor(T, I, N, N, N),
  select: tensor(T, I, N),
  index_select: tensor(T, I, T),
  gather: tensor(T, I, T),
  cat: tensor(...TENSORS, I),
  stack: tensor(...TENSORS, I),
  chunk: list(T, N, I),
  unbind: list(T, I),
  split: list(T, ...INTS, I),
  expand: tensor(T, ...INTS),
  repeat: tensor(T, ...INTS),
  flip: tensor(T, ...INTS),
  flatten: tensor(T, I, I),
  squeeze: tensor(T, I),
  squeeze_all: tensor(T),
  unsqueeze: tensor(T, I),
  contiguous: tensor(T),
  clone: tensor(T),
  // elementwise
  add: tensor(T, T, F),
  sub: tensor(T, T, F),
  mul: tensor(T, T),
  div: tensor(T, T),
  pow: tensor(T, T),
  maximum: tensor(T, T),
  minimum: tensor(T, T),
  remainder: tensor(T, T),
  atan2: tensor(T, T),
  eq: tensor(T, T),
  ne: tensor(T, T),
  lt: tensor(T, T),
  le: tensor(T, T),
  gt: tensor(T, T),
  ge: tensor(T, T),
  logical_and: tensor(T, T),
  logical_or: tensor(T, T),
  add_scalar: tensor(T, F),
  mul_scalar: tensor(T, F),
  div_scalar: tensor(T, F),
  pow_scalar: tensor(T, F),
  remainder_scalar: tensor(T, F),
  eq_scalar: tensor(T, F),
  ne_scalar: tensor(T, F),
  lt_scalar: tensor(T, F),
  le_scalar: tensor(T, F),
  gt_scalar: tensor(T, F),
  ge_scalar: tensor(T, F),
  addcmul: tensor(T, T, T, F),
  addcdiv: tensor(T, T, T, F),
  rsub_scalar: tensor(T, F, F),
  neg: tensor(T),
  abs: tensor(T),
  exp: tensor(T),
  log: tensor(T),
  sqrt: tensor(T),
  rsqrt: tensor(T),
  sin: tensor(T),
  cos: tensor(T),
  tanh: tensor(T),
  sigmoid: tensor(T),
  erf: tensor(T),
  floor: tensor(T),
  ceil: tensor(T),
  round: tensor(T),
  sign: tensor(T),
  reciprocal: tensor(T),
  relu: tensor(T),
  logical_not: tensor(T),
  isfinite: tensor(T),
  isnan: tensor(T),
  where: tensor(T, T, T),
  clamp: tensor(T, F, F),
  // reductions
  sum: tensor(T, ...INTS, B),
  mean: tensor(T, ...INTS, B),
  var: tensor(T, ...INTS, I, B),
  amax: tensor(T, ...INTS, B),
  amin: tensor(T, ...INTS, B),
  max_dim: list(T, I, B),
  min_dim: list(T, I, B),
  norm: tensor(T, F, ...INTS, B),
  logsumexp: tensor(T, ...INTS, B),
  argmax: tensor(T, I, B),
  argmin: tensor(T, I, B),
  topk: list(T, N, I, B, B),
  sort: list(T, I, B),
  cumsum: tensor(T, I),
  all: tensor(T),
  any: tensor(T),
  // linear algebra and neural-network ops
  matmul: tensor(T, T),
  bmm: tensor(T, T),
  linear: tensor(T, T, T),
  conv2d: tensor(T, T, T, ...INTS, ...INTS, ...INTS, I),
  max_pool2d: tensor(T, ...INTS, ...INTS, ...INTS, ...INTS, B),
  adaptive_avg_pool2d: tensor(T, ...INTS),
  layer_norm: tensor(T, ...INTS, T, T, F, I),
  add_layer_norm: list(T, T, ...INTS, T, T, F, I),
  batch_norm: list(T, T, T, T, T, B, F, F),
  gelu: tensor(T, B),
  softmax: tensor(T, I),
  log_softmax: tensor(T, I),
  scaled_softmax: list(T, F, B),
  interpolate: tensor(T, ...INTS, I, B, B, F, F),
  affine_grid: tensor(T, ...INTS, B),
  grid_sample: tensor(T, T, I, I, B),
  pad: tensor(T, ...INTS, I, F),
  one_hot: tensor(T, I),
  weight_norm: tensor(T, T, I),
  index_copy: tensor(T, I, T, T),
  copy_into: scalar(T, T),
  index_copy_into: scalar(T, I, T, T),
  adamw_into: scalar(T, T, T, T, F, F, F, F, F, F),
  ema_into: scalar(T, T, F),
  mul_into: scalar(T, T),
  // images (stb); decoding runs on its own threads, off the JavaScript thread
  decode_images: { parameters: [CTX, "buffer", I, I, I, I, I, F], result: "pointer", nonblocking: true },
  decode_image: { parameters: [CTX, "buffer", I, I, I, F, I], result: "pointer", nonblocking: true },
  write_image: scalar("buffer", T, I, I),
  pil_resize: tensor(T, I, I, I, F),
  // augmentation (augment.cpp): a batch's views in one call, on its own threads; the nonblocking twin overlaps a step
  augment_views: list(T, "buffer", I, ...INTS, "buffer", I, I),
  augment_views_async: {
    name: "dn_augment_views_background",
    ...list(T, "buffer", I, ...INTS, "buffer", I, I),
    nonblocking: true,
  },
  // autograd
  requires_grad: tensor(T, B),
  detach: tensor(T),
  grad: list(T, ...TENSORS, B, B),
  set_grad_enabled: scalar(B),
  // runtime
  get_num_threads: scalar(),
  set_num_threads: scalar(I),
  get_blas_threads: scalar(),
  cuda_device_count: scalar(),
  cuda_synchronize: scalar(),
  set_cudnn_enabled: scalar(B),
  get_cudnn_enabled: scalar(),
  version: scalar(),
  profile_start: scalar("buffer"),
  profile_stop: scalar(),
  add_seconds: scalar(T, T, N),
  set_cpu_cache: scalar(F),
  physical_memory_mb: scalar(),
  cpu_cache_stat: scalar(I),
  // distributed (c10d): a process group handle; collectives block until done, failed or timed out
  dist_backends: scalar(),
  dist_new: { parameters: [CTX, "buffer", "buffer", I, I, I, F], result: "pointer" },
  dist_free: { parameters: ["pointer"], result: "void" },
  dist_allreduce: list("pointer", ...TENSORS, I, F),
  dist_broadcast: list("pointer", ...TENSORS, I, F),
  dist_barrier: scalar("pointer"),
  dist_sum_grad: tensor("pointer", T),
} as const;
