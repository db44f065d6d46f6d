/**
 * Loads the native shim. This is the only module that calls `Deno.dlopen`.
 *
 * Each call passes a context buffer through which the shim reports the
 * outcome: the result's dtype, device and shape, or an error message. Sync
 * calls share one buffer (JavaScript runs them one at a time); a nonblocking
 * call must bring its own, from {@linkcode newContext}.
 *
 * @module
 */
import { shimPath } from "./build.ts";
import { symbols } from "./spec.ts";

/** A call's context buffer: 32 float64 fields, then a NUL-terminated message. */
export type Context = Uint8Array<ArrayBuffer>;

/** Field offsets (in float64s) of the context, as laid out by `struct Ctx`. */
export const Field = { status: 0, dtype: 1, device: 2, requiresGrad: 3, count: 4, ndim: 5, sizes: 6 } as const;
const MESSAGE_OFFSET = 256;

/** A fresh context buffer, for a call that may overlap others. */
export function newContext(): Context {
  return new Uint8Array(1024);
}

function withNames<S extends Record<string, Deno.ForeignFunction>>(table: S): S {
  return Object.fromEntries(
    Object.entries(table).map(([key, def]) => [key, { ...def, name: def.name ?? `dn_${key}` }]),
  ) as S;
}

/**
 * Idle worker threads must not spin for long. libtorch's OpenMP team and
 * OpenBLAS's own pthreads take turns on the same cores, and either team
 * spinning between its calls for long (OpenMP's default 300,000 rounds,
 * OpenBLAS's `sched_yield` loop) takes the core from the other's work: on two
 * cores the DINO step was slower with two threads than with one, and the
 * kernel's share of the time was a third. Sleeping at once (OpenMP's passive
 * wait) cures that but makes every parallel region wake its team from sleep:
 * a short spin of 30,000 rounds keeps the team awake between the small ops of
 * one step (measured on 2 AMD cores: the default run's loop step 183 -> 127
 * ms, the bf16 ViT-T/4 step ~20% faster, the fp32 one unchanged). Both
 * libraries read these when they load; what the user set wins
 * (`OMP_WAIT_POLICY` included, which `GOMP_SPINCOUNT` would override).
 */
const WORKER_WAITS = { GOMP_SPINCOUNT: "30000", OPENBLAS_THREAD_TIMEOUT: "4" };
for (const [name, value] of Object.entries(WORKER_WAITS)) {
  if (name === "GOMP_SPINCOUNT" && Deno.env.get("OMP_WAIT_POLICY") !== undefined) continue;
  if (Deno.env.get(name) === undefined) Deno.env.set(name, value);
}

const library = open(await shimPath());

/** The shim loaded; one that will not load (not a library, or built from other sources) names the fix. */
function open(path: string) {
  try {
    return Deno.dlopen(path, withNames(symbols));
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) throw e; // Deno's own message names the flag
    const why = e instanceof Error ? e.message.replace(/^(Could not open library: )+/, "") : String(e);
    const fix = Deno.env.get("DINO_SHIM")
      ? "unset DINO_SHIM to build the shim, or point it at one built from these sources (deno task build)"
      : `delete ${path} to have it built again`;
    throw new Error(`the native shim ${path} could not be loaded (${why}): ${fix}`);
  }
}

/**
 * Each entry point wrapped to name itself on stderr before it runs: with `DINO_TRACE_FFI=1`, the last name printed
 * before a crash in native code is the call that crashed.
 */
function traced<S extends Record<string, unknown>>(table: S): S {
  const encoder = new TextEncoder();
  return Object.fromEntries(
    Object.entries(table).map(([key, fn]) => [
      key,
      typeof fn === "function"
        ? (...args: unknown[]) => (Deno.stderr.writeSync(encoder.encode(`dn_${key}\n`)), fn(...args))
        : fn,
    ]),
  ) as S;
}

/** The shim's entry points. */
export const native = Deno.env.get("DINO_TRACE_FFI") ? traced(library.symbols) : library.symbols;
/** The context shared by sync calls. */
export const ctx: Context = newContext();
/** The shared context's fields, as float64s. */
export const meta = new Float64Array(ctx.buffer, 0, 32);

function defaultCacheMegabytes(): number {
  const env = Deno.env.get("DINO_CPU_CACHE_MB");
  if (env !== undefined && env !== "") {
    const mb = Number(env);
    if (!(mb >= 0)) throw new Error(`DINO_CPU_CACHE_MB must be a number of megabytes >= 0, got "${env}"`);
    return mb;
  }
  return Math.min(native.physical_memory_mb(ctx) / 4, 8 * 2 ** 10);
}
native.set_cpu_cache(ctx, defaultCacheMegabytes());
/** One thread per core, in libtorch and OpenBLAS alike, unless a launcher said otherwise (as torchrun does). */
function defaultThreads(): number {
  const env = Number(Deno.env.get("OMP_NUM_THREADS"));
  return Number.isInteger(env) && env >= 1 ? env : navigator.hardwareConcurrency;
}
native.set_num_threads(ctx, defaultThreads());
// cuDNN 9 (PyTorch 2.11's, on an H100) crashed a Deno process in its first call, jumping to address 0 in
// `std::call_once` as it loads its sub-libraries, unless libstdc++ had been loaded when the process started
// (`LD_PRELOAD=libstdc++.so.6`): Deno does not link it, and making it global once the shim had loaded it did not help.
// So where there is a GPU, cuDNN starts off unless libstdc++ was preloaded; DINO_CUDNN=1 or 0 decides otherwise.
const cudnnSetting = Deno.env.get("DINO_CUDNN");
const cxxPreloaded = /libstdc\+\+/.test(Deno.env.get("LD_PRELOAD") ?? "");
if (cudnnSetting === "0" || (cudnnSetting !== "1" && !cxxPreloaded && native.cuda_device_count(ctx) > 0)) {
  native.set_cudnn_enabled(ctx, false);
}

const decoder = new TextDecoder();

/** The message the shim left in a context. */
export function messageOf(c: Context): string {
  const bytes = c.subarray(MESSAGE_OFFSET);
  const end = bytes.indexOf(0);
  return decoder.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** An error raised by libtorch, with the op that raised it. */
export class TorchError extends Error {
  /** The failing op's name. */
  readonly op: string;
  /** An error of `op` with libtorch's `message`. */
  constructor(op: string, message: string) {
    super(`${op}: ${message}`);
    this.name = "TorchError";
    this.op = op;
  }
}

/** Throws the context's error if the last scalar-returning call failed; returns its value. */
export function checked(value: number, op: string, c: Context = ctx): number {
  if (Number.isNaN(value) && new Float64Array(c.buffer, 0, 1)[0] !== 0) throw new TorchError(op, messageOf(c));
  return value;
}
