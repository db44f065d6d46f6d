/**
 * Data-parallel training beside PyTorch, on this machine, in one run:
 *
 * 1. All-reduce (mean) of the ViT-T/4 gradients of bench/compare_train_step.ts
 *    (patch 4, 28 px, 1 channel, K 4096: about 5.5 M floats in 152 tensors)
 *    between 2 processes over Gloo: this project's shim (c10d's
 *    ProcessGroupGloo, 25 MB buckets) against `torch.distributed` with Gloo
 *    doing the same bucketing as DDP. Both sides alternate; medians compared.
 * 2. End-to-end training throughput of `deno task train` (the default preset,
 *    data from Fashion-MNIST) with 1 process (batch 64) and with 2 processes
 *    (batch 32 each: the same global batch), images per second as logged.
 *
 * @example
 * ```sh
 * deno run -A bench/compare_distributed.ts --calls 10 --rounds 2 --steps 40
 * deno run -A bench/compare_distributed.ts --part allreduce   # or --part train
 * ```
 * @module
 */
import { benchFlags, positiveInt } from "./flags.ts";
import { join } from "node:path";
import { distributedBackends, Generator } from "../mod.ts";
import { dinoConfig, initDino } from "../lib/model/dino.ts";
import { stateDict } from "../lib/weights/tree.ts";
import { dispose } from "../mod.ts";

const values = benchFlags({
  calls: { type: "string", default: "10" },
  rounds: { type: "string", default: "2" },
  steps: { type: "string", default: "40" },
  part: { type: "string", default: "all" },
  python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3" },
});
const calls = positiveInt(values.calls, "--calls"),
  rounds = positiveInt(values.rounds, "--rounds"),
  steps = positiveInt(values.steps, "--steps");
if (!distributedBackends().includes("gloo")) {
  console.log("distributed benchmark skipped: this shim was built without Gloo (apt-get install libgloo-dev)");
  Deno.exit(0);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Runs `cmd args` as 2 ranks; returns rank 0's last stdout line. */
async function twoRanks(cmd: string, args: string[]): Promise<string> {
  const port = String(freePort());
  const ranks = [0, 1].map((rank) =>
    new Deno.Command(cmd, {
      args,
      env: { RANK: String(rank), WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: port, OMP_NUM_THREADS: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output()
  );
  const [r0, r1] = await Promise.all(ranks);
  for (const r of [r0, r1]) {
    if (!r.success) throw new Error(`a rank failed:\n${new TextDecoder().decode(r.stderr).slice(-2000)}`);
  }
  return new TextDecoder().decode(r0.stdout).trim().split("\n").pop()!;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// 1. All-reduce of the gradients' shapes.
if (values.part !== "train") await allreduceBench();
async function allreduceBench() {
  using g = new Generator(0);
  const net = initDino(dinoConfig({ arch: "vit_tiny", patchSize: 4, imgSize: 28, inChans: 1, outDim: 4096 }), g);
  const params = Object.entries(stateDict(net)).filter(([k]) => k !== "head.last_layer.weight_g");
  const shapes = params.map(([, t]) => [...t.shape]);
  const floats = shapes.reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
  dispose(net);
  const worker = new URL("./allreduce_worker.ts", import.meta.url).pathname;
  const script = new URL("./allreduce_torch.py", import.meta.url).pathname;
  const ours: number[] = [], theirs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    theirs.push(...JSON.parse(await twoRanks(values.python!, [script, JSON.stringify(shapes), String(calls)])));
    ours.push(
      ...JSON.parse(await twoRanks(Deno.execPath(), ["run", "-A", worker, JSON.stringify(shapes), String(calls)])),
    );
  }
  const [us, ref] = [median(ours), median(theirs)];
  console.log(
    `all-reduce (mean) of ${shapes.length} gradients, ${(floats / 1e6).toFixed(2)} M floats, 2 processes, Gloo, ` +
      `median of ${calls * rounds} calls`,
  );
  console.log(`  torch.distributed (DDP-style buckets)  ${(ref * 1000).toFixed(1)} ms`);
  console.log(`  this project (c10d through the shim)   ${(us * 1000).toFixed(1)} ms`);
  console.log(`  ratio ${(us / ref).toFixed(2)} (target <= 1.0: ${us <= ref ? "met" : "not met"})`);
}

// 2. End-to-end: the default preset, 1 process x 64 against 2 processes x 32.
async function throughput(extra: string[]): Promise<number> {
  const dir = Deno.makeTempDirSync();
  try {
    const train = new URL("../cli/train.ts", import.meta.url).pathname;
    const args = ["run", "-A", train, "--max-steps", String(steps), "--test-limit", "100", "--train-limit", "6400"];
    const r = await new Deno.Command(Deno.execPath(), {
      args: [...args, "--output-dir", dir, "--log-every", "10", "--master-port", String(freePort()), ...extra],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(`training failed:\n${new TextDecoder().decode(r.stderr).slice(-2000)}`);
    const rates = Deno.readTextFileSync(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l))
      .filter((m) => typeof m.images_per_s === "number").map((m) => m.images_per_s as number);
    return median(rates.slice(1)); // the first window holds the warmup
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}
if (values.part !== "allreduce") await trainBench();
async function trainBench() {
  const one = await throughput(["--batch-size", "64"]);
  const two = await throughput(["--batch-size", "32", "--nproc-per-node", "2"]);
  console.log(
    `training throughput, default preset (global batch 64), ${navigator.hardwareConcurrency} cores, median of ` +
      `${Math.floor(steps / 10) - 1} windows of 10 steps`,
  );
  console.log(`  1 process x 64             ${one.toFixed(0)} images/s`);
  console.log(`  2 processes x 32 (Gloo)    ${two.toFixed(0)} images/s`);
  console.log(`  speed-up ${(two / one).toFixed(2)}`);
}
