/**
 * Where one training step's time goes, op by op, on both sides: the benchmark step (`bench_step.ts`: ViT-T/4 at
 * 28 px, batch 64, 2 x 28 + 6 x 12 crops, K 4096) under libtorch's op profiler here (`recordProfile`) and under
 * `torch.autograd.profiler.profile(use_kineto=False)` in PyTorch eager (`train_step_torch.py`, the official-layout
 * modules) with this project's thread arrangement, each in its own process after two unprofiled steps, at
 * `--threads` and `--precision` (fp32 or bf16). Prints the ops by self time (time in the op less the ops it called;
 * autograd's backward nodes and the kernels under them each count their own), the two sides side by side with their
 * ratio, then every op's self time summed and the profiled step's wall time.
 *
 * Read the heavy ops: the profiler costs a few microseconds per recorded op, and the CPU `bmm` makes about a
 * million tiny calls a step (`select`, `as_strided`, `resolve_conj` per matrix), so a profiled step takes about
 * twice an unprofiled one on both sides, that cost landing on those rows and on `bmm` (PyTorch's trace rounds each
 * op to whole microseconds, which books it to the callers there). `mm`, `addmm` and the elementwise kernels compare
 * like with like.
 *
 * @example
 * ```sh
 * deno run -A bench/profile_step.ts --threads 2 --top 30
 * ```
 * @module
 */
import { benchFlags, positiveInt } from "./flags.ts";
import { join } from "node:path";
import { dispose, recordProfile, setNumThreads } from "../mod.ts";
import { trainStep } from "../lib/training/step.ts";
import { arranged, B, benchPrecision, benchStep, K, spawnSide } from "./bench_step.ts";
import { type OpTime, opTimes } from "./trace.ts";

const values = benchFlags({
  threads: { type: "string", default: String(navigator.hardwareConcurrency) },
  top: { type: "string", default: "25" },
  precision: { type: "string", default: "fp32" },
  python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3" },
  side: { type: "string" }, // internal: profile this project's step into --trace
  trace: { type: "string" },
});
const threads = positiveInt(values.threads, "--threads"), top = positiveInt(values.top, "--top");
const precision = benchPrecision(values.precision);

if (values.side === "ours") {
  setNumThreads(threads);
  const { cfg, h, views, ...fresh } = benchStep(precision);
  let state = fresh.state;
  const step = () => {
    const r = trainStep(state, views, h, cfg, { donate: true });
    dispose(state);
    state = r.state;
  };
  step();
  step();
  let seconds = 0;
  recordProfile(values.trace!, () => {
    const t0 = performance.now();
    step();
    seconds = (performance.now() - t0) / 1000;
  });
  dispose([state, views]);
  console.log(JSON.stringify({ seconds }));
  Deno.exit(0);
}

const dir = Deno.makeTempDirSync({ prefix: "profile-step-" });
const torchTrace = join(dir, "pytorch.json"), ourTrace = join(dir, "ours.json");
const torchRun = spawnSide<{ profiled: number }>(
  values.python!,
  [new URL("./train_step_torch.py", import.meta.url).pathname, String(threads), "1", precision, torchTrace],
  arranged(threads),
);
const ourRun = spawnSide<{ seconds: number }>(Deno.execPath(), [
  "run",
  "-A",
  new URL(import.meta.url).pathname,
  "--side",
  "ours",
  "--threads",
  String(threads),
  "--trace",
  ourTrace,
  "--precision",
  precision,
], {});
const ours = opTimes(JSON.parse(Deno.readTextFileSync(ourTrace)));
const theirs = opTimes(JSON.parse(Deno.readTextFileSync(torchTrace)));
Deno.removeSync(dir, { recursive: true });

const none: OpTime = { calls: 0, totalUs: 0, selfUs: 0 };
const names = [...new Set([...ours.keys(), ...theirs.keys()])];
const selfOf = (m: Map<string, OpTime>, n: string) => (m.get(n) ?? none).selfUs;
names.sort((a, b) => Math.max(selfOf(ours, b), selfOf(theirs, b)) - Math.max(selfOf(ours, a), selfOf(theirs, a)));
const ms = (us: number) => (us / 1000).toFixed(1).padStart(9);
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : "-").padStart(7);
const sum = (m: Map<string, OpTime>) => [...m.values()].reduce((s, o) => s + o.selfUs, 0);
console.log(
  `DINO step ops by self time: ViT-T/4 28px, batch ${B}, 2x28 + 6x12 crops, K ${K}, ${precision}, ${threads} thread(s); ` +
    "PyTorch eager with this project's thread arrangement",
);
console.log(
  `  ${"op".padEnd(46)}${"calls".padStart(13)}${"ours ms".padStart(9)}${"torch ms".padStart(9)}${"ratio".padStart(7)}`,
);
for (const n of names.slice(0, top)) {
  const a = ours.get(n) ?? none, b = theirs.get(n) ?? none;
  console.log(
    `  ${n.slice(0, 45).padEnd(46)}${`${a.calls}/${b.calls}`.padStart(13)}${ms(a.selfUs)}${ms(b.selfUs)}${
      ratio(a.selfUs, b.selfUs)
    }`,
  );
}
const rest = names.slice(top);
const restOf = (m: Map<string, OpTime>) => rest.reduce((s, n) => s + selfOf(m, n), 0);
console.log(
  `  ${`the other ${rest.length} ops`.padEnd(59)}${ms(restOf(ours))}${ms(restOf(theirs))}${
    ratio(restOf(ours), restOf(theirs))
  }`,
);
console.log(
  `  ${"every op, self time summed".padEnd(59)}${ms(sum(ours))}${ms(sum(theirs))}${ratio(sum(ours), sum(theirs))}`,
);
console.log(
  `  the profiled step's wall time: this project ${ourRun.seconds.toFixed(3)} s, PyTorch ${
    torchRun.profiled.toFixed(3)
  } s (${ratio(ourRun.seconds, torchRun.profiled).trim()})`,
);
