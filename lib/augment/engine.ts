/**
 * The batching engine of the augmentation: samples that take the same steps are gathered into groups
 * ({@linkcode batches}), taken a cache-sized chunk at a time ({@linkcode chunkOf}), put through their
 * steps together ({@linkcode pipe}) and written straight to their rows of the result
 * ({@linkcode scatter}). So per-sample randomness costs a few dozen batched calls, not a masked pass of
 * every op over the whole batch. Nothing here draws or knows the ops.
 * @module
 */
import { copyInto, type Device, indexCopyInto, narrow, type Tensor, tensor, tidy } from "../../ffi/mod.ts";

/** Whether `ids` are consecutive rows, so that a narrow view reaches them without an index. */
const consecutive = (ids: readonly number[]) => ids.every((b, k) => b === ids[0] + k);
/** `ids` as an i64 index tensor on `device`. */
const indexOf = (ids: readonly number[], device: Device) => tensor(new BigInt64Array(ids.map(BigInt)), { device });

/**
 * The samples of each group (samples with equal keys), at most `chunk` at a
 * time, in group order: per-sample random choices become a few batched calls.
 * With `powersOfTwo`, every chunk has a power of two of samples, so that calls
 * see few distinct shapes (oneDNN compiles a convolution for each input shape
 * and reuses it). With `by`, each group is in increasing order of it.
 */
export function batches(
  keys: readonly string[],
  chunk: number,
  powersOfTwo = false,
  by?: readonly number[],
): number[][] {
  const groups = new Map<string, number[]>();
  keys.forEach((key, b) => groups.get(key)?.push(b) ?? groups.set(key, [b]));
  const out: number[][] = [];
  for (const idx of groups.values()) {
    if (by) idx.sort((p, q) => by[p] - by[q]);
    for (let start = 0, size = 0; start < idx.length; start += size) {
      size = Math.min(chunk, idx.length - start);
      if (powersOfTwo) size = 2 ** Math.floor(Math.log2(size));
      out.push(idx.slice(start, start + size));
    }
  }
  return out;
}

/** Writes the samples of `source` to rows `at` of `target`, a tensor its caller has just made. */
export function scatter(target: Tensor, at: readonly number[], source: Tensor): void {
  if (consecutive(at)) copyInto(narrow(target, 0, at[0], at.length), source);
  else indexCopyInto(target, 0, indexOf(at, target.device), source);
}

/** Applies `steps` in turn, freeing each intermediate result as soon as the next one exists. */
export function pipe(x: Tensor, steps: readonly ((y: Tensor) => Tensor)[]): Tensor {
  return steps.reduce((y, step) => {
    const z = tidy(() => step(y));
    if (y !== x && z !== y) y.dispose();
    return z;
  }, x);
}

/**
 * How many samples of C x H x W one call takes on `device`: on the CPU about
 * `values` values (at least one sample), elsewhere all of them, since a GPU
 * wants few, large kernels.
 */
export function chunkOf(values: number, [, C, H, W]: readonly number[], device: Device): number {
  return device === "cpu" ? Math.max(1, Math.floor(values / (C * H * W))) : Infinity;
}

/**
 * About how many values one colour-jitter call works on: the hue's dozen
 * temporaries then stay in a core's cache (a 224 px image alone, several 96 px
 * ones together), which halves its time against whole-batch calls.
 */
export const JITTER_CHUNK = 1 << 18;
/**
 * How many samples one grayscale/blur/solarize/normalise call takes at least
 * on the CPU: 16 RGB samples are 48 planes, three whole blocks of oneDNN's
 * depthwise convolution (which works on 16 planes at a time); fewer waste a
 * block's work. More only for small images, up to about FINISH_CHUNK values:
 * 16 96 px images are already as many as stay in cache.
 */
export const FINISH_SAMPLES = 16, FINISH_CHUNK = 1 << 19;
