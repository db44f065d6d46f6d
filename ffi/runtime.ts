/**
 * The native runtime: versions, threads, seeds and CUDA.
 *
 * @example
 * ```ts
 * import { cudaAvailable, libtorchVersion, setNumThreads } from "./mod.ts";
 * setNumThreads(2);
 * console.log(libtorchVersion(), cudaAvailable());
 * ```
 * @module
 */
import { checked, ctx, messageOf, native } from "./lib.ts";

/** The libtorch version the shim was built against, e.g. `1.13.1`. @example `libtorchVersion()` */
export function libtorchVersion(): string {
  checked(native.version(ctx), "libtorchVersion");
  return messageOf(ctx);
}
/** Seeds libtorch's global generator (only used by code outside this project's explicit generators). @example `manualSeed(0)` */
export function manualSeed(seed: number): void {
  checked(native.manual_seed(ctx, BigInt(seed)), "manualSeed");
}
/** The number of threads libtorch uses for intra-op parallelism. @example `getNumThreads()` */
export function getNumThreads(): number {
  return checked(native.get_num_threads(ctx), "getNumThreads");
}
/** Sets the number of intra-op threads. @example `setNumThreads(2)` */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`thread count must be a positive integer, got ${n}`);
  checked(native.set_num_threads(ctx, n), "setNumThreads");
}
/** How many CUDA devices libtorch sees (0 for a CPU-only libtorch). @example `cudaDeviceCount()` */
export function cudaDeviceCount(): number {
  return checked(native.cuda_device_count(ctx), "cudaDeviceCount");
}
/** Whether CUDA can be used. @example `const device = cudaAvailable() ? "cuda" : "cpu"` */
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
 * import { setCpuCache } from "./mod.ts";
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
 * import { cpuCacheStats } from "./mod.ts";
 * const { cachedBytes, hits, misses } = cpuCacheStats();
 * ```
 */
export function cpuCacheStats(): { cachedBytes: number; hits: number; misses: number } {
  return {
    cachedBytes: checked(native.cpu_cache_stat(ctx, 0), "cpuCacheStats"),
    hits: checked(native.cpu_cache_stat(ctx, 1), "cpuCacheStats"),
    misses: checked(native.cpu_cache_stat(ctx, 2), "cpuCacheStats"),
  };
}
/** Waits for all queued CUDA work (a no-op without CUDA), for honest timings. @example `cudaSynchronize()` */
export function cudaSynchronize(): void {
  checked(native.cuda_synchronize(ctx), "cudaSynchronize");
}
