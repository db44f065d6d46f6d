/**
 * The small-op round trip beside PyTorch eager, in one run with the same
 * thread settings: add two 2x2 f32 tensors, then release the result. Beside
 * them, the floor under both: libtorch's own add called from C++ (dispatch,
 * allocation and the kernel), and what each binding adds above it.
 *
 * @example
 * ```sh
 * deno run -A bench/compare_small_op.ts
 * ```
 * @module
 */
import { add, getNumThreads, nativeAddSeconds, ones, setNumThreads, tidy } from "../mod.ts";

const PYTHON = Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3";
const ROUNDS = 7;
const N = 200_000;

function ours(scoped: boolean): number {
  const a = ones([2, 2]), b = ones([2, 2]);
  const once = () => {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) add(a, b).dispose();
    return ((performance.now() - t0) / N) * 1e3;
  };
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) times.push(scoped ? tidy(once) : once());
  a.dispose();
  b.dispose();
  return Math.min(...times);
}

/** libtorch's own add from C++, in µs: the floor under both bindings. */
function floor(): number {
  using a = ones([2, 2]), b = ones([2, 2]);
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) times.push(nativeAddSeconds(a, b, N) * 1e6);
  return Math.min(...times);
}

function pytorch(threads: number): number {
  const code = `
import torch, timeit
torch.set_num_threads(${threads})
a = torch.ones(2, 2); b = torch.ones(2, 2)
def f():
    c = a + b
    del c
print(min(timeit.repeat(f, number=${N}, repeat=${ROUNDS})) / ${N} * 1e6)`;
  const r = new Deno.Command(PYTHON, { args: ["-c", code], stdout: "piped", stderr: "piped" }).outputSync();
  if (!r.success) throw new Error(`the PyTorch reference failed: ${new TextDecoder().decode(r.stderr)}`);
  return Number(new TextDecoder().decode(r.stdout).trim());
}

const threads = getNumThreads();
setNumThreads(threads);
const py = pytorch(threads);
const scoped = ours(true);
const owned = ours(false);
const native = floor();
const py2 = pytorch(threads);
const ref = Math.min(py, py2);
console.log(`small op: add two 2x2 f32 tensors + release, best of ${ROUNDS} x ${N}, ${threads} threads`);
console.log(`  PyTorch eager (${PYTHON})        ${ref.toFixed(3)} µs`);
console.log(`  this project, in a tidy scope    ${scoped.toFixed(3)} µs   ratio ${(scoped / ref).toFixed(2)}`);
console.log(`  this project, caller-owned       ${owned.toFixed(3)} µs   ratio ${(owned / ref).toFixed(2)}`);
console.log(`  libtorch's add from C++ (floor)  ${native.toFixed(3)} µs   ratio ${(native / ref).toFixed(2)}`);
console.log(
  `  binding cost above the floor: this project ${(scoped - native).toFixed(3)} µs, PyTorch ${
    (ref - native).toFixed(3)
  } µs`,
);
console.log(`  target: <= 0.6 µs (${scoped <= 0.6 ? "met" : "not met"} in a scope)`);
