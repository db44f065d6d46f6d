/**
 * Finds libtorch, compiles the native shim against it, and caches the result.
 *
 * libtorch is looked for in this order:
 * 1. `LIBTORCH`: a libtorch folder with `include/` and `lib/`;
 * 2. a Python that imports torch (`DINO_PYTHON`, else `python3`, then
 *    `/usr/bin/python3`): this is how a CUDA build of PyTorch gives CUDA;
 * 3. the system install (Debian's `libtorch-dev`), under the prefixes in
 *    `DINO_SYSTEM_PREFIXES` (default `/usr:/usr/local`).
 *
 * The shim is compiled once per (shim sources, libtorch version, location, C++
 * ABI, CUDA, distributed backends: see {@linkcode distributedBuild}) into
 * `$DINO_CACHE_DIR` (default `~/.cache/dino-deno`) and reused.
 * `DINO_SHIM` names a prebuilt shim and skips all of this.
 *
 * @example Build (or find) the shim from the command line
 * ```sh
 * deno task build
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { exists, removeStaleTemporaries, stagingFolder, writeFileAtomic } from "./files.ts";

/** Where a libtorch was found and how to compile against it. */
export interface Libtorch {
  /** How it was found: `LIBTORCH`, `python:<exe>` or `system`. */
  source: string;
  /** The libtorch version, e.g. `1.13.1`. */
  version: string;
  /** Header folders, the first holding `ATen/ATen.h`. */
  include: string[];
  /** The folder holding `libtorch_cpu.so`. */
  lib: string;
  /** `_GLIBCXX_USE_CXX11_ABI`: 0 or 1. */
  abi: number;
  /** Whether this libtorch was built with CUDA (`libtorch_cuda.so` exists). */
  cuda: boolean;
  /** The CUDA toolkit PyTorch's own extension builder would use (`torch.utils.cpp_extension.CUDA_HOME`), if any. */
  cudaHome?: string;
}

/**
 * The shim's sources in `native/`: every `.cpp` file is compiled into the
 * shim, and every file (headers too) is part of its cache key. A list, not a
 * folder listing, because the sources may be fetched over HTTP.
 */
export const NATIVE_SOURCES = [
  "shim.h",
  "ops.cpp",
  "allocator.cpp",
  "images.cpp",
  "distributed.cpp",
  "augment.cpp",
  "matmul.cpp",
  "gelu.cpp",
  "softmax.cpp",
  "layer_norm.cpp",
  "avx512.h",
] as const;
const NATIVE_DIR = new URL("../native/", import.meta.url);

async function runAsync(cmd: string, args: string[]): Promise<{ ok: boolean; err: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
    return { ok: r.success, err: new TextDecoder().decode(r.stderr) };
  } catch (e) {
    return { ok: false, err: e instanceof Error ? e.message : String(e) };
  }
}

function run(cmd: string, args: string[]): { ok: boolean; out: string; err: string } {
  try {
    const r = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
    const dec = new TextDecoder();
    return { ok: r.success, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
  } catch (e) {
    return { ok: false, out: "", err: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * The libtorch version its headers declare (`TORCH_VERSION_MAJOR`, `_MINOR`,
 * `_PATCH`), or undefined. Since 2.9 `torch/version.h` only includes
 * `torch/headeronly/version.h`, which holds the numbers.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { versionFromHeaders } from "./build.ts";
 * const include = Deno.makeTempDirSync();
 * Deno.mkdirSync(join(include, "torch"));
 * Deno.writeTextFileSync(
 *   join(include, "torch/version.h"),
 *   "#define TORCH_VERSION_MAJOR 2\n#define TORCH_VERSION_MINOR 11\n#define TORCH_VERSION_PATCH 0\n",
 * );
 * assert.equal(versionFromHeaders(include), "2.11.0");
 * assert.equal(versionFromHeaders("/nonexistent"), undefined);
 * Deno.removeSync(include, { recursive: true });
 * ```
 */
export function versionFromHeaders(include: string): string | undefined {
  for (const rel of ["torch/headeronly/version.h", "torch/csrc/api/include/torch/version.h", "torch/version.h"]) {
    try {
      const text = Deno.readTextFileSync(join(include, rel));
      const m = text.match(/#define TORCH_VERSION_MAJOR (\d+)[\s\S]*?MINOR (\d+)[\s\S]*?PATCH (\d+)/);
      if (m) return `${m[1]}.${m[2]}.${m[3]}`;
    } catch { /* try the next layout */ }
  }
  return undefined;
}

/** The C++ ABI a libtorch was built with, read from its shared library's symbols. */
function abiOf(lib: string): number {
  const r = run("sh", ["-c", `nm -D --defined-only '${join(lib, "libc10.so")}' | grep -c __cxx11`]);
  return r.ok && Number(r.out.trim()) > 0 ? 1 : 0;
}

function fromFolder(root: string, source: string): Libtorch | string {
  const include = join(root, "include");
  const lib = join(root, "lib");
  if (!exists(join(include, "ATen/ATen.h"))) return `${source}: no include/ATen/ATen.h under ${root}`;
  if (!exists(join(lib, "libtorch_cpu.so"))) return `${source}: no lib/libtorch_cpu.so under ${root}`;
  return {
    source,
    version: versionFromHeaders(include) ?? "unknown",
    include: [include, join(include, "torch/csrc/api/include")],
    lib,
    abi: abiOf(lib),
    cuda: exists(join(lib, "libtorch_cuda.so")),
  };
}

// Debian's python3-torch reports a torch/lib folder that does not exist (its libraries are the system's), so
// the folder is taken from where the loaded libtorch_cpu.so actually is.
const PROBE = `
import json, os, re, torch
from torch.utils import cpp_extension as c
maps = [l.split()[-1] for l in open("/proc/self/maps") if "/libtorch_cpu.so" in l]
lib = os.path.dirname(os.path.realpath(maps[0])) if maps else c.library_paths()[0]
cuda = os.path.exists(os.path.join(lib, "libtorch_cuda.so"))
print(json.dumps({"version": re.match(r"\\d+(\\.\\d+)*", torch.__version__).group(0), "include": c.include_paths(), "lib": lib,
  "abi": int(torch._C._GLIBCXX_USE_CXX11_ABI), "cuda": cuda, **({"cudaHome": c.CUDA_HOME} if cuda and c.CUDA_HOME else {})}))
`;

function fromPython(exe: string): Libtorch | string {
  const r = run(exe, ["-c", PROBE]);
  if (!r.ok) return `python ${exe}: ${r.err.trim().split("\n").pop() || "failed, printing nothing"}`;
  let info: Omit<Libtorch, "source"> | undefined;
  try {
    info = JSON.parse(r.out.trim().split("\n").pop()!);
  } catch {
    // not JSON: said below
  }
  if (typeof info?.lib !== "string") return `python ${exe}: ran, but did not print torch's paths (is it a Python?)`;
  if (!exists(join(info.lib, "libtorch_cpu.so"))) {
    return `python ${exe}: torch imports, but no libtorch_cpu.so in ${info.lib}`;
  }
  return { source: `python:${exe}`, ...info };
}

function fromSystem(): Libtorch | string {
  const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
  const prefixes = (Deno.env.get("DINO_SYSTEM_PREFIXES") ?? "/usr:/usr/local").split(":").filter(Boolean);
  for (const prefix of prefixes) {
    const include = join(prefix, "include");
    if (!exists(join(include, "ATen/ATen.h"))) continue;
    for (const lib of [join(prefix, `lib/${arch}-linux-gnu`), join(prefix, "lib"), join(prefix, "lib64")]) {
      if (!exists(join(lib, "libtorch_cpu.so"))) continue;
      return {
        source: "system",
        version: versionFromHeaders(include) ?? "unknown",
        include: [include, join(include, "torch/csrc/api/include")],
        lib,
        abi: abiOf(lib),
        cuda: exists(join(lib, "libtorch_cuda.so")),
      };
    }
  }
  return `system: no ATen headers with libtorch_cpu.so under ${prefixes.join(", ")}`;
}

const INSTALLS: Record<LibtorchWay, string> = {
  system: "Debian/Ubuntu (CPU): sudo apt-get install libtorch-dev libopenblas0-pthread",
  python: "PyTorch with CUDA: pip install torch, then run with DINO_PYTHON=/path/to/python",
  folder: "a libtorch zip from pytorch.org: unpack it and set LIBTORCH=/path/to/libtorch",
};

/** How to install libtorch for the way forced, or for each way. */
function installHint(way?: LibtorchWay): string {
  if (way) return `Install: ${INSTALLS[way]}`;
  return ["Install one of:", ...Object.values(INSTALLS).map((h) => `  - ${h}`)].join("\n");
}

/** The ways of finding libtorch that `DINO_LIBTORCH_FROM` can force. */
export const LIBTORCH_WAYS = ["folder", "python", "system"] as const;
/** One way of finding libtorch. */
export type LibtorchWay = typeof LIBTORCH_WAYS[number];

function forcedWay(): LibtorchWay | undefined {
  const v = Deno.env.get("DINO_LIBTORCH_FROM");
  if (v === undefined || v === "") return undefined;
  if ((LIBTORCH_WAYS as readonly string[]).includes(v)) return v as LibtorchWay;
  throw new Error(`DINO_LIBTORCH_FROM=${v} is not one of ${LIBTORCH_WAYS.join(", ")}; unset it to search every way`);
}

function pythons(): string[] {
  const explicit = Deno.env.get("DINO_PYTHON");
  return explicit ? [explicit] : ["python3", "/usr/bin/python3"];
}

/**
 * Finds libtorch in the documented order, or throws an error listing every
 * place tried. `DINO_LIBTORCH_FROM=folder|python|system` forces one way; a
 * forced way that finds nothing is an error, never a fallback to another.
 */
export function findLibtorch(): Libtorch {
  const way = forcedWay();
  const env = Deno.env.get("LIBTORCH");
  if (way === "folder" && !env) {
    throw new Error(`DINO_LIBTORCH_FROM=folder needs LIBTORCH=/path/to/libtorch (a folder with include/ and lib/)`);
  }
  if (env && (way === undefined || way === "folder")) {
    const r = fromFolder(env, "LIBTORCH");
    if (typeof r !== "string") return r;
    // An explicit choice that is wrong must not silently fall through.
    throw new Error(`LIBTORCH=${env} is not a usable libtorch (${r}).\n${installHint("folder")}`);
  }
  const tried: string[] = way === undefined ? ["LIBTORCH: not set"] : [];
  if (way === undefined || way === "python") {
    for (const exe of pythons()) {
      const r = fromPython(exe);
      if (typeof r !== "string") return r;
      // As with LIBTORCH (and CXX): a Python the user named that fails is reported, not replaced by another libtorch.
      if (Deno.env.get("DINO_PYTHON") && way === undefined) {
        throw new Error(`DINO_PYTHON=${exe} gives no usable libtorch (${r}): fix it, or unset it to search every way`);
      }
      tried.push(r);
    }
  }
  if (way === undefined || way === "system") {
    const sys = fromSystem();
    if (typeof sys !== "string") return sys;
    tried.push(sys);
  }
  const what = way === undefined ? "libtorch not found" : `DINO_LIBTORCH_FROM=${way}: libtorch not found that way`;
  throw new Error(`${what}. Tried:\n  - ${tried.join("\n  - ")}\n${installHint(way)}`);
}

function findCompiler(): string {
  const chosen = Deno.env.get("CXX");
  if (chosen) {
    // A compiler the user named that does not run is a mistake to report, not a reason to build with another one.
    if (run(chosen, ["--version"]).ok) return chosen;
    throw new Error(
      `CXX=${chosen} does not run (\`${chosen} --version\` failed): CXX names one compiler, without arguments; ` +
        "fix it, or unset CXX to use c++",
    );
  }
  const candidates = ["c++", "g++", "clang++"];
  for (const cxx of candidates) {
    if (run(cxx, ["--version"]).ok) return cxx;
  }
  throw new Error(
    `no C++ compiler found (tried ${candidates.join(", ")}).\n` +
      "Install one (Debian/Ubuntu: sudo apt-get install g++) or set CXX.",
  );
}

/**
 * `-fopenmp` for GCC. libtorch's `at::parallel_for`, inlined into the shim's kernels (native/gelu.cpp, softmax.cpp,
 * layer_norm.cpp, matmul.cpp), shares their work among libtorch's threads only when compiled with OpenMP: without
 * it they run on one thread. Only the compile step gets the flag: the shim links no OpenMP runtime of its own, so its
 * OpenMP calls bind to the libgomp that libtorch loaded (Debian's, or the copy a pip wheel bundles) and share its
 * threads and thread count. Clang's OpenMP calls another runtime's entry points, so it gets none.
 */
function openmpFlags(cxx: string): string[] {
  const macros = run(cxx, ["-dM", "-E", "-x", "c++", "/dev/null"]).out;
  return /#define __GNUC__ /.test(macros) && !/#define __clang__ /.test(macros) ? ["-fopenmp"] : [];
}

/**
 * The compiler's own header folders. Passing one of them again with
 * `-isystem` reorders the search so that libstdc++'s `#include_next
 * <stdlib.h>` fails (Debian's libtorch-dev lives in `/usr/include`).
 */
function defaultIncludes(cxx: string): Set<string> {
  const r = run("sh", ["-c", `'${cxx}' -x c++ -E -v - </dev/null`]);
  const text = r.err;
  const start = text.indexOf("#include <...> search starts here:");
  const end = text.indexOf("End of search list.");
  if (start < 0 || end < start) return new Set(["/usr/include", "/usr/local/include"]);
  const dirs = text.slice(start, end).split("\n").slice(1).map((l) => l.trim()).filter(Boolean);
  return new Set([...dirs, "/usr/include", "/usr/local/include"].map(realPath));
}

function realPath(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/** The `-isystem` flags for libtorch's headers, leaving out the compiler's own folders. */
export function includeFlags(include: string[], defaults: Set<string>): string[] {
  return include.filter((dir) => !defaults.has(realPath(dir))).flatMap((dir) => ["-isystem", dir]);
}

async function readSources(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of NATIVE_SOURCES) {
    const url = new URL(name, NATIVE_DIR);
    if (url.protocol === "file:") {
      out.set(name, await Deno.readTextFile(fileURLToPath(url)));
    } else {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`cannot fetch the native shim source ${url}: HTTP ${res.status}`);
      out.set(name, await res.text());
    }
  }
  return out;
}

/** The folder where built shims are cached. */
export function cacheDir(): string {
  const explicit = Deno.env.get("DINO_CACHE_DIR");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  // $HOME first: os.homedir() needs --allow-sys, which the documented permissions leave out.
  return join(xdg ?? join(Deno.env.get("HOME") || homedir(), ".cache"), "dino-deno");
}

/** Records where libtorch was found, so later runs need not start Python. */
interface Discovery {
  key: string;
  libtorch: Libtorch;
  mtime: number;
}

function discoveryKey(): string {
  return ["DINO_LIBTORCH_FROM", "LIBTORCH", "DINO_PYTHON", "DINO_SYSTEM_PREFIXES", "PATH"].map((k) =>
    Deno.env.get(k) ?? ""
  ).join("\0");
}

function mtimeOf(path: string): number {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch {
    return -1;
  }
}

function cachedLibtorch(): Libtorch {
  const file = join(cacheDir(), "libtorch.json");
  const key = discoveryKey();
  try {
    const d: Discovery = JSON.parse(Deno.readTextFileSync(file));
    if (d.key === key && d.mtime === mtimeOf(join(d.libtorch.lib, "libtorch_cpu.so"))) return d.libtorch;
  } catch { /* no usable record: discover below */ }
  const libtorch = findLibtorch();
  const record: Discovery = { key, libtorch, mtime: mtimeOf(join(libtorch.lib, "libtorch_cpu.so")) };
  Deno.mkdirSync(cacheDir(), { recursive: true });
  writeFileAtomic(file, new TextEncoder().encode(JSON.stringify(record)));
  return libtorch;
}

/** The distributed backends a shim for `libtorch` can have, and how to compile and link them. */
export interface DistributedBuild {
  /** Gloo (CPU): libtorch's c10d headers need Gloo's (Debian's libgloo-dev). */
  gloo: boolean;
  /** NCCL (CUDA): a CUDA libtorch and NCCL's header. */
  nccl: boolean;
  /** Compiler flags. */
  compile: string[];
  /** Linker flags. */
  link: string[];
  /** The part of `compile` that is NCCL's (left out again if NCCL fails to compile). */
  ncclCompile: string[];
  /** The part of `link` that is NCCL's. */
  ncclLink: string[];
}

function firstExisting(paths: string[]): string | undefined {
  return paths.find((p) => exists(p));
}

/** The folders directly under `dir` (none when it does not exist). */
function subfolders(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => join(dir, e.name)).sort();
  } catch {
    return [];
  }
}

/**
 * Where a CUDA libtorch's CUDA headers and libraries may be: the toolkit
 * PyTorch names (`cudaHome`), `CUDA_HOME`, `/usr/local/cuda`, and the NVIDIA
 * wheels beside a pip torch (`site-packages/nvidia/<name>/` as the CUDA 12
 * wheels lay them out, `site-packages/nvidia/cu13/` as CUDA 13's do). The
 * folders are returned whether or not they exist; callers test for the file
 * they need.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cudaRoots } from "./build.ts";
 * const roots = cudaRoots({ lib: "/venv/site-packages/torch/lib", cudaHome: "/opt/cuda" });
 * assert.equal(roots[0], "/opt/cuda");
 * ```
 */
export function cudaRoots(libtorch: { lib: string; cudaHome?: string }): string[] {
  const nvidia = join(libtorch.lib, "../../nvidia");
  const roots = [
    libtorch.cudaHome,
    Deno.env.get("CUDA_HOME"),
    Deno.env.get("CUDA_PATH"),
    "/usr/local/cuda",
    ...subfolders(nvidia),
  ].filter((d): d is string => !!d);
  const withTargets = roots.flatMap((d) => [d, join(d, "targets/x86_64-linux"), join(d, "targets/sbsa-linux")]);
  return [...new Set(withTargets)];
}

/**
 * The header folders that hold `cuda_runtime_api.h` and the CUDA math
 * libraries' headers that libtorch's CUDA headers include (cuBLAS, cuSPARSE,
 * cuSOLVER: `ATen/cuda/CUDAContext.h`, which `ProcessGroupNCCL.hpp` includes).
 * Empty for a CPU libtorch.
 */
export function cudaIncludeDirs(libtorch: { lib: string; cuda: boolean; cudaHome?: string }): string[] {
  if (!libtorch.cuda) return [];
  const wanted = ["cuda_runtime_api.h", "cublas_v2.h", "cusparse.h", "cusolverDn.h", "nvml.h"];
  return cudaRoots(libtorch).map((d) => join(d, "include")).filter((d) => wanted.some((h) => exists(join(d, h))));
}

/**
 * Which of libtorch's c10d backends the shim compiles in: Gloo where its
 * headers are found (beside libtorch's or in the system's include folders),
 * NCCL where libtorch has CUDA and both `nccl.h` and the CUDA runtime's
 * headers are found (libtorch's folders, the CUDA toolkit, or the NVIDIA
 * wheels beside a pip torch: see {@linkcode cudaRoots}). Without either, the
 * shim still builds, with no distributed engine; and a backend whose
 * compilation fails is left out with a warning (see {@linkcode buildShim}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { distributedBuild } from "./build.ts";
 * const cpu = { source: "system", version: "0", include: [], lib: "/nonexistent", abi: 1, cuda: false };
 * const d = distributedBuild(cpu);
 * assert.equal(d.nccl, false); // NCCL only with a CUDA libtorch
 * // Gloo where its headers and libtorch's c10d ones are found, and then its define in the compile flags
 * assert.equal(d.compile.includes("-DDINO_GLOO"), d.gloo);
 * ```
 */
export function distributedBuild(libtorch: Libtorch): DistributedBuild {
  const includes = [...libtorch.include, "/usr/include", "/usr/local/include"];
  const glooDir = includes.find((dir) => exists(join(dir, "gloo/config.h")));
  const c10d = includes.some((dir) => exists(join(dir, "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")));
  const gloo = glooDir !== undefined && c10d;
  const compile: string[] = [], link: string[] = [];
  if (gloo) {
    compile.push("-DUSE_C10D_GLOO", "-DDINO_GLOO");
    const lib = firstExisting([libtorch.lib, "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"]
      .map((d) => join(d, "libgloo.so")));
    if (lib) link.push(lib);
  }
  let nccl = false;
  const ncclCompile: string[] = [], ncclLink: string[] = [];
  if (libtorch.cuda) {
    const roots = cudaRoots(libtorch);
    const header = firstExisting([...includes, ...roots.map((d) => join(d, "include"))].map((d) => join(d, "nccl.h")));
    const lib = firstExisting(
      [libtorch.lib, ...roots.flatMap((d) => [join(d, "lib64"), join(d, "lib")]), "/usr/lib/x86_64-linux-gnu"]
        .flatMap((d) => [join(d, "libnccl.so"), join(d, "libnccl.so.2")]),
    );
    const cudaIncludes = cudaIncludeDirs(libtorch);
    const ncclHeaders = c10d ||
      includes.some((d) => exists(join(d, "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp")));
    if (header && lib && cudaIncludes.length > 0 && ncclHeaders) {
      nccl = true;
      ncclCompile.push("-DUSE_C10D_NCCL", "-DDINO_NCCL", "-isystem", join(header, ".."));
      for (const d of cudaIncludes) if (d !== join(header, "..")) ncclCompile.push("-isystem", d);
      ncclLink.push(lib, `-Wl,-rpath,${join(lib, "..")}`);
    }
  }
  return { gloo, nccl, compile: [...compile, ...ncclCompile], link: [...link, ...ncclLink], ncclCompile, ncclLink };
}

/**
 * The C++ standard to compile against `include` (libtorch's header folders):
 * C++20 where `ATen/ATen.h` demands it (libtorch 2.14 and later refuse
 * anything older), else C++17 (which 1.13 to 2.13 need).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { cxxStandard } from "./build.ts";
 * const include = Deno.makeTempDirSync();
 * Deno.mkdirSync(join(include, "ATen"));
 * Deno.writeTextFileSync(join(include, "ATen/ATen.h"), '#if !defined(_MSC_VER) && __cplusplus < 202002L\n#error "C++20"\n#endif\n');
 * assert.equal(cxxStandard(["/nonexistent", include]), "gnu++20"); // libtorch 2.10+ asks for C++20
 * Deno.writeTextFileSync(join(include, "ATen/ATen.h"), '#if !defined(_MSC_VER) && __cplusplus < 201703L\n#error "C++17"\n#endif\n');
 * assert.equal(cxxStandard([include]), "gnu++17");
 * Deno.removeSync(include, { recursive: true });
 * ```
 */
export function cxxStandard(include: string[]): string {
  for (const dir of include) {
    try {
      const text = Deno.readTextFileSync(join(dir, "ATen/ATen.h"));
      return /__cplusplus\s*<\s*202002L/.test(text) ? "gnu++20" : "gnu++17";
    } catch { /* the next folder */ }
  }
  return "gnu++17";
}

/** Whether `flags[i]` belongs to the run `part` where that run occurs in `flags`. */
function isPartOf(flags: string[], i: number, part: string[]): boolean {
  if (part.length === 0) return false;
  for (let start = Math.max(0, i - part.length + 1); start <= i; start++) {
    if (part.every((p, k) => flags[start + k] === p)) return true;
  }
  return false;
}

/** Where libjpeg's headers and library are, from one install, and its version (from `jconfig.h`). */
interface JpegBuild {
  include: string;
  lib: string;
  version: string;
}

/**
 * libjpeg where its headers and its library are installed under one prefix (Debian: libjpeg-dev; `/usr/local`
 * first), else undefined. A build that then fails to compile or link with it is retried without it.
 */
function jpegBuild(): JpegBuild | undefined {
  const multiarch = `${Deno.build.arch}-linux-gnu`; // Debian's folder for this machine's libraries and jconfig.h
  for (const prefix of ["/usr/local", "/usr"]) {
    const include = join(prefix, "include");
    const lib = [join(prefix, "lib", multiarch), join(prefix, "lib64"), join(prefix, "lib")]
      .find((d) => exists(join(d, "libjpeg.so")));
    if (!exists(join(include, "jpeglib.h")) || !lib) continue;
    const config = [join(include, "jconfig.h"), join(include, multiarch, "jconfig.h")].find((p) => exists(p));
    const text = config ? Deno.readTextFileSync(config) : "";
    const version = /LIBJPEG_TURBO_VERSION\s+(\S+)/.exec(text)?.[1] ?? /JPEG_LIB_VERSION\s+(\d+)/.exec(text)?.[1];
    return { include, lib, version: version ?? "libjpeg" };
  }
  return undefined;
}

/** Compiles the shim for `libtorch` unless a cached build exists; returns its path. */
export async function buildShim(libtorch: Libtorch = cachedLibtorch()): Promise<string> {
  const sources = await readSources();
  const hash = createHash("sha256");
  for (const [name, text] of sources) hash.update(name).update("\0").update(text).update("\0");
  // Image decoding needs stb's headers: its implementations are compiled into native/images.cpp (not linked
  // from libstb), so installing or upgrading them must give a new build.
  const stbHeaders = ["stb_image.h", "stb_image_write.h"].map((h) => `/usr/include/stb/${h}`);
  const stb = stbHeaders.every((h) => exists(h));
  hash.update(JSON.stringify(libtorch)).update(stb ? "stb" : "no-stb");
  // The distributed engine is compiled in where Gloo's (or NCCL's) headers are: installing them gives a new build.
  const dist = distributedBuild(libtorch);
  hash.update(JSON.stringify(dist));
  hash.update("openmp with GCC"); // shims built before openmpFlags ran their kernels on one thread
  if (stb) { for (const h of stbHeaders) hash.update(Deno.readFileSync(h)); }
  // JPEGs are decoded with libjpeg, as PIL decodes them, where its headers and library are (else with stb's own).
  const jpeg = jpegBuild();
  hash.update(jpeg ? JSON.stringify(jpeg) : "no-libjpeg");
  const dir = cacheDir();
  const out = join(dir, `shim-${libtorch.version}-${hash.digest("hex").slice(0, 16)}.so`);
  // A build that fell back to stb for JPEGs says so each time it is loaded, not only when it was built.
  const fallback = `${out}.warning`;
  if (exists(out)) {
    if (exists(fallback)) console.error(Deno.readTextFileSync(fallback).trim());
    return out;
  }

  const cxx = findCompiler();
  // The build's folder sits in the cache, locked while in use: an interrupted build's is removed by the next one.
  Deno.mkdirSync(dir, { recursive: true });
  removeStaleTemporaries(dir);
  using staging = stagingFolder(dir, "build");
  const work = staging.path;
  for (const [name, text] of sources) Deno.writeTextFileSync(join(work, name), text);
  const tmp = join(work, "shim.so");
  const compile = [
    `-std=${cxxStandard(libtorch.include)}`,
    "-O2",
    "-fPIC",
    ...openmpFlags(cxx),
    `-D_GLIBCXX_USE_CXX11_ABI=${libtorch.abi}`,
    ...(libtorch.cuda ? ["-DDINO_CUDA"] : []),
    ...(stb ? ["-DDINO_STB"] : []),
    // (no -I: both prefixes' include folders are the compiler's own, /usr/local's first, as searched above)
    ...(stb && jpeg ? ["-DDINO_JPEG"] : []),
    ...dist.compile,
    ...includeFlags(libtorch.include, defaultIncludes(cxx)),
  ];
  // Each source compiles on its own core (libtorch's headers and stb's implementations are the slow parts).
  const units = NATIVE_SOURCES.filter((name) => name.endsWith(".cpp"));
  const compileUnit = async (name: string, flags: string[]) => {
    const args = [...flags, "-c", join(work, name), "-o", join(work, `${name}.o`)];
    return { name, args, ...await runAsync(cxx, args) };
  };
  const compiled = await Promise.all(units.map((name) => compileUnit(name, compile)));
  // NCCL's headers pull in much of CUDA's (cuBLAS, cuSPARSE, cuSOLVER, NVML): where those are not all there, the
  // shim is built without NCCL, with a warning, rather than not at all.
  let link = dist.link;
  const ncclFailed = compiled.findIndex((r) => !r.ok && r.name === "distributed.cpp");
  if (ncclFailed >= 0 && dist.nccl) {
    const without = compile.filter((_, i) => !isPartOf(compile, i, dist.ncclCompile));
    const again = await compileUnit("distributed.cpp", without);
    if (again.ok) {
      const why = compiled[ncclFailed].err.split("\n").find((l) => /error/.test(l)) ?? "";
      console.error(
        `warning: the shim is built without NCCL: distributed.cpp did not compile with it (${why.trim()})`,
      );
      compiled[ncclFailed] = again;
      link = dist.link.filter((f) => !dist.ncclLink.includes(f));
    }
  }
  // libjpeg's headers that the compiler cannot use (another sysroot, a mismatched version): JPEGs through stb.
  let jpegLink = stb && jpeg ? [`-L${jpeg.lib}`, "-ljpeg"] : [];
  let jpegWarning = "";
  const withoutJpeg = async (why: string) => {
    const again = await compileUnit("images.cpp", compile.filter((f) => f !== "-DDINO_JPEG"));
    if (!again.ok) return false;
    jpegWarning = `warning: the shim decodes JPEGs with stb, not with libjpeg as PIL does: ${why}`;
    console.error(jpegWarning);
    compiled[units.indexOf("images.cpp")] = again;
    jpegLink = [];
    return true;
  };
  const jpegFailed = compiled.find((r) => !r.ok && r.name === "images.cpp");
  if (jpegFailed && jpegLink.length > 0 && /jpeg|jconfig|jmorecfg/i.test(jpegFailed.err)) {
    const line = jpegFailed.err.split("\n").find((l) => /error/.test(l))?.trim() ?? "";
    await withoutJpeg(`images.cpp did not compile with ${jpeg!.include}/jpeglib.h (${line})`);
  }
  const failed = compiled.find((r) => !r.ok);
  if (failed) {
    throw new Error(
      `compiling the native shim failed (${cxx} ${failed.args.join(" ")}):\n${failed.err.slice(-4000)}`,
    );
  }
  const linkArgs = () => [
    "-shared",
    ...units.map((name) => join(work, `${name}.o`)),
    "-o",
    tmp,
    `-L${libtorch.lib}`,
    `-Wl,-rpath,${libtorch.lib}`,
    // CUDA kernels register themselves when libtorch_cuda loads: keep it linked.
    "-Wl,--no-as-needed",
    ...(libtorch.cuda ? ["-ltorch_cuda", "-lc10_cuda"] : []),
    ...link,
    ...jpegLink,
    "-ltorch",
    "-ltorch_cpu",
    "-lc10",
    "-lpthread",
  ];
  let args = linkArgs();
  let r = run(cxx, args);
  if (!r.ok && jpegLink.length > 0 && /jpeg/.test(r.err) && await withoutJpeg(`it did not link with ${jpeg!.lib}`)) {
    args = linkArgs();
    r = run(cxx, args);
  }
  if (!r.ok) {
    throw new Error(`linking the native shim failed (${cxx} ${args.join(" ")}):\n${r.err.slice(-4000)}`);
  }
  if (jpegWarning) writeFileAtomic(fallback, new TextEncoder().encode(jpegWarning));
  writeFileAtomic(out, Deno.readFileSync(tmp));
  return out;
}

/** The shim to load: `DINO_SHIM` when set, else a cached or freshly compiled build. */
export async function shimPath(): Promise<string> {
  const prebuilt = Deno.env.get("DINO_SHIM");
  if (prebuilt) {
    if (!exists(prebuilt)) throw new Error(`DINO_SHIM=${prebuilt} does not exist; unset it to build the shim`);
    if (!Deno.statSync(prebuilt).isFile) {
      throw new Error(`DINO_SHIM=${prebuilt} is not a file; unset it to build the shim`);
    }
    return prebuilt;
  }
  return await buildShim();
}

if (import.meta.main) {
  const libtorch = findLibtorch();
  console.log(`libtorch ${libtorch.version} (${libtorch.source}, ABI ${libtorch.abi}, CUDA ${libtorch.cuda})`);
  console.log(await buildShim(libtorch));
}
