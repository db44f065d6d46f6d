/**
 * The native runtime: versions, threads, the CPU buffer cache, CUDA and the op profiler.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudaAvailable, getNumThreads, libtorchVersion, setNumThreads } from "./mod.ts";
 * setNumThreads(2);
 * assert.equal(getNumThreads(), 2);
 * console.log(libtorchVersion(), cudaAvailable());
 * ```
 * @module
 */
import { checked, ctx, messageOf, native } from "./library.ts";
import type { Tensor } from "./tensor.ts";

/**
 * The libtorch version the shim was built against, e.g. `1.13.1`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libtorchVersion } from "./mod.ts";
 * assert.match(libtorchVersion(), /^\d+\.\d+\.\d+/);
 * ```
 */
export function libtorchVersion(): string {
  checked(native.version(ctx), "libtorchVersion");
  return messageOf(ctx);
}
/**
 * The number of threads libtorch uses for intra-op parallelism.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumThreads } from "./mod.ts";
 * assert.ok(getNumThreads() >= 1);
 * ```
 */
export function getNumThreads(): number {
  return checked(native.get_num_threads(ctx), "getNumThreads");
}
/**
 * Sets how many threads an op may use: libtorch's intra-op threads and, when
 * libtorch's matrix products go through OpenBLAS, OpenBLAS's threads, which
 * libtorch's own setting does not reach. Loading the shim sets one per core;
 * their idle workers sleep rather than spin (see `ffi/library.ts`), so the two
 * pools take turns on the same cores instead of fighting over them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumThreads, setNumThreads } from "./mod.ts";
 * setNumThreads(2);
 * assert.equal(getNumThreads(), 2);
 * ```
 */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`thread count must be a positive integer, got ${n}`);
  checked(native.set_num_threads(ctx, n), "setNumThreads");
}
/**
 * How many threads OpenBLAS uses for matrix products, or -1 when libtorch's
 * BLAS is not OpenBLAS.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { blasThreads, getNumThreads, setNumThreads } from "./mod.ts";
 * const before = getNumThreads();
 * setNumThreads(1); // libtorch's threads and OpenBLAS's alike
 * assert.ok(blasThreads() === 1 || blasThreads() === -1); // -1: this libtorch's BLAS is not OpenBLAS
 * setNumThreads(before);
 * ```
 */
export function blasThreads(): number {
  return checked(native.get_blas_threads(ctx), "blasThreads");
}
/**
 * How many CUDA devices libtorch sees (0 for a CPU-only libtorch).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudaDeviceCount } from "./mod.ts";
 * assert.ok(Number.isInteger(cudaDeviceCount()) && cudaDeviceCount() >= 0);
 * ```
 */
export function cudaDeviceCount(): number {
  return checked(native.cuda_device_count(ctx), "cudaDeviceCount");
}
/**
 * Whether CUDA can be used.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudaAvailable, ones } from "./mod.ts";
 * const device = cudaAvailable() ? "cuda" : "cpu";
 * using x = ones([2], { device });
 * assert.equal(x.device, device);
 * ```
 */
export function cudaAvailable(): boolean {
  return cudaDeviceCount() > 0;
}
/**
 * Sets how many megabytes of freed CPU buffers (32 KiB and up) libtorch keeps
 * for reuse instead of returning them to the OS; 0 turns the cache off. Loading
 * the shim sets it from `DINO_CPU_CACHE_MB`, else a quarter of the memory (at
 * most 8 GiB). Reused buffers skip the page faults of fresh memory, which on
 * some machines cost more than the arithmetic.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cpuCacheStats, setCpuCache } from "./mod.ts";
 * setCpuCache(0); // off: freed buffers go back to the OS
 * assert.equal(cpuCacheStats().cachedBytes, 0);
 * setCpuCache(1024);
 * ```
 */
export function setCpuCache(megabytes: number): void {
  if (!(megabytes >= 0)) throw new RangeError(`the CPU cache size must be >= 0 MB, got ${megabytes}`);
  checked(native.set_cpu_cache(ctx, megabytes), "setCpuCache");
}
/**
 * The CPU buffer cache: bytes held now, and allocations served from it (hits) or not (misses).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cpuCacheStats, ones, setCpuCache } from "./mod.ts";
 * setCpuCache(64);
 * ones([1 << 16]).dispose(); // 256 KiB, returned to the cache
 * const { cachedBytes, hits, misses } = cpuCacheStats();
 * assert.ok(cachedBytes > 0 && hits + misses > 0);
 * ```
 */
export function cpuCacheStats(): { cachedBytes: number; hits: number; misses: number } {
  return {
    cachedBytes: checked(native.cpu_cache_stat(ctx, 0), "cpuCacheStats"),
    hits: checked(native.cpu_cache_stat(ctx, 1), "cpuCacheStats"),
    misses: checked(native.cpu_cache_stat(ctx, 2), "cpuCacheStats"),
  };
}
/**
 * Waits for all queued CUDA work (a no-op without CUDA), for honest timings.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudaAvailable, cudaSynchronize, item, matmul, ones, sum } from "./mod.ts";
 * using x = ones([256, 256], { device: cudaAvailable() ? "cuda" : "cpu" });
 * const start = performance.now();
 * using y = matmul(x, x); // on a GPU, queued: the call returns before the work is done
 * cudaSynchronize(); // now it is
 * const ms = performance.now() - start; // the product's time, not only its launch
 * using total = sum(y);
 * assert.ok(ms >= 0 && item(total) === 256 ** 3); // each of the 256 x 256 entries is 256
 * ```
 */
export function cudaSynchronize(): void {
  checked(native.cuda_synchronize(ctx), "cudaSynchronize");
}
/**
 * Whether CUDA convolutions and batch norms may use cuDNN (`torch.backends.cudnn.enabled`; on by default). Returns
 * what it was, so that a caller can put it back. Without cuDNN, libtorch's own CUDA kernels run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { setCudnnEnabled } from "./mod.ts";
 * const was = setCudnnEnabled(false);
 * assert.equal(setCudnnEnabled(was), false);
 * ```
 */
export function setCudnnEnabled(on: boolean): boolean {
  return checked(native.set_cudnn_enabled(ctx, on), "setCudnnEnabled") === 1;
}
/**
 * Whether CUDA convolutions and batch norms use cuDNN now. On by default, except on a GPU machine where libstdc++ was
 * not preloaded (under Deno cuDNN 9 crashed the process unless it was: start with `LD_PRELOAD=libstdc++.so.6`);
 * `DINO_CUDNN=1` or `0` overrides the default.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudnnEnabled, setCudnnEnabled } from "./mod.ts";
 * const was = setCudnnEnabled(false);
 * assert.equal(cudnnEnabled(), false);
 * setCudnnEnabled(was);
 * assert.equal(cudnnEnabled(), was);
 * ```
 */
export function cudnnEnabled(): boolean {
  return checked(native.get_cudnn_enabled(ctx), "cudnnEnabled") === 1;
}
/**
 * Runs `fn` under libtorch's op profiler (the one `torch.autograd.profiler.profile(use_kineto=False)` runs) and
 * writes every op it ran, autograd's backward ops included, to `path` as a Chrome trace (a JSON list of events
 * with name, start and duration in microseconds, and thread; chrome://tracing and Perfetto open it). Returns what
 * `fn` returns. One profile at a time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmul, ones, recordProfile, tidy } from "./mod.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".json" });
 * using a = ones([8, 8]);
 * recordProfile(path, () => tidy(() => matmul(a, a)).dispose());
 * const events: { name: string }[] = JSON.parse(Deno.readTextFileSync(path));
 * assert.ok(events.some((e) => e.name === "aten::matmul"));
 * Deno.removeSync(path);
 * ```
 */
export function recordProfile<T>(path: string, fn: () => T): T {
  if (path.includes("\0")) {
    throw new TypeError(`recordProfile: the path holds a NUL character: ${JSON.stringify(path)}`);
  }
  checked(native.profile_start(ctx, new TextEncoder().encode(path + "\0")), "recordProfile");
  try {
    return fn();
  } finally {
    checked(native.profile_stop(ctx), "recordProfile");
  }
}

/**
 * Seconds per call of libtorch's own `add(a, b)` run `n` times from C++, each result freed: the floor under any
 * binding's small op (what `add(a, b).dispose()` costs here less the crossings between TypeScript and C, and what a
 * Python `a + b` costs less the interpreter's).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nativeAddSeconds, ones } from "./mod.ts";
 * using a = ones([2, 2]);
 * const seconds = nativeAddSeconds(a, a, 1000);
 * assert.ok(seconds > 0 && seconds < 1e-3);
 * ```
 */
export function nativeAddSeconds(a: Tensor, b: Tensor, n: number): number {
  return checked(native.add_seconds(ctx, a.ptr, b.ptr, n), "nativeAddSeconds");
}
