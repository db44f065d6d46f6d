// Data-parallel training over c10d with Gloo, on the CPU: the semantics (sharding, per-sample augmentation,
// gradient and center reduction) by equality with one process on the global batch; resume; and the faults (a rank
// killed, a port in use, ranks that do not join, mismatched flags, a backend the shim lacks).
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assertClose, captured } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { requireBackend } from "../cli/launch.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { loadCheckpoint } from "../lib/weights/checkpoint.ts";
import { batchIndices, epochOrder, shardOrder } from "../lib/data/loader.ts";
import { sampleSeed } from "../lib/training/loop.ts";
import { worldFromEnv } from "../lib/distributed/env.ts";
import { SYNC_BN_SHAPES, syncBatchNormCase } from "./sync_batch_norm_worker.ts";

const TRAIN = new URL("../cli/train.ts", import.meta.url).pathname;
const WORKER = new URL("./sync_batch_norm_worker.ts", import.meta.url).pathname;
const gloo = t.distributedBackends().includes("gloo");

// A small network with stochastic depth (depth 2: the second block drops paths) and two local crops.
const TINY = [
  "--embed-dim",
  "32",
  "--depth",
  "2",
  "--num-heads",
  "2",
  "--out-dim",
  "64",
  "--hidden-dim",
  "32",
  "--bottleneck-dim",
  "16",
  "--local-crops-number",
  "2",
  "--drop-path-rate",
  "0.2",
  "--log-every",
  "1",
  "--train-limit",
  "256",
  "--test-limit",
  "20",
  "--dist-timeout",
  "20",
];

/** A port no one listens on now. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function tensorsOf(path: string): { tensors: Record<string, number[]>; metadata: Record<string, string> } {
  const { tensors, metadata } = readSafetensors(path);
  const out = Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, t.toArray(v)]));
  t.dispose(tensors);
  return { tensors: out, metadata };
}

/** Runs the training program in child processes (the launcher and its ranks); resolves with its code and output. */
async function run(args: string[], env: Record<string, string> = {}) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TRAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("DistributedSampler semantics: one seeded order, padded to a multiple of the world, rank r every W-th", () => {
  const order = epochOrder(10, 3, { seed: 7 });
  const shards = [0, 1, 2].map((r) => shardOrder(order, r, 3));
  assert.deepEqual(shards.map((s) => s.length), [4, 4, 4]); // 10 padded to 12 with the first 2
  assert.deepEqual(shards.flat().sort((a, b) => a - b), [...order, order[0], order[1]].sort((a, b) => a - b));
  // Rank r's batch b is the global batch b's items r, r + W, ...: the ranks' batches together are the global one.
  const global = batchIndices(10, 3, { batchSize: 4, seed: 7 });
  const ranks = [0, 1].map((rank) => batchIndices(10, 3, { batchSize: 2, seed: 7, rank, worldSize: 2 }));
  for (let b = 0; b < 2; b++) {
    assert.deepEqual([...ranks[0][b], ...ranks[1][b]].sort(), [...global[b]].sort());
    assert.deepEqual(ranks[1][b], global[b].filter((_, i) => i % 2 === 1));
  }
  assert.deepEqual(batchIndices(10, 3, { batchSize: 4, seed: 7, rank: 0, worldSize: 1 }), global);
});

Deno.test("a sample's views depend on (seed, epoch, index) alone, not on the batch it is in", () => {
  using g = new t.Generator(0);
  using images = t.tidy(() => t.to(t.randint(g, 0, 256, [4, 1, 28, 28]), "u8"));
  const cfg = t.AUGMENT_PRESETS.fmnist28;
  const seeds = [10, 11, 12, 13].map((i) => sampleSeed(0, 2, i));
  const all = t.tidy(() => t.dinoViews(images, cfg, { sampleSeeds: seeds }));
  const odd = t.tidy(() =>
    t.dinoViews(t.indexSelect(images, 0, t.tensor(new BigInt64Array([1n, 3n]))), cfg, {
      sampleSeeds: [1, 3].map((i) => seeds[i]),
    })
  );
  // The same draws and steps; only float rounding differs (a batch's blur is one convolution of its chunk).
  for (let v = 0; v < all.length; v++) {
    const whole = t.tidy(() => t.toArray(t.indexSelect(all[v], 0, t.tensor(new BigInt64Array([1n, 3n])))));
    assertClose(t.tidy(() => t.toArray(odd[v])), whole, 1e-5);
  }
  t.dispose([all, odd]);
});

Deno.test("the world comes from torchrun's or SLURM's variables; malformed ones are named", () => {
  assert.deepEqual(
    worldFromEnv({ RANK: "1", WORLD_SIZE: "4", LOCAL_RANK: "1", MASTER_ADDR: "10.0.0.2", MASTER_PORT: "1234" }),
    {
      rank: 1,
      localRank: 1,
      worldSize: 4,
      masterAddr: "10.0.0.2",
      masterPort: 1234,
      from: "RANK",
    },
  );
  const slurm = worldFromEnv({
    SLURM_PROCID: "3",
    SLURM_NTASKS: "4",
    SLURM_LOCALID: "1",
    SLURM_NODELIST: "n[003-004]",
  });
  assert.deepEqual([slurm?.rank, slurm?.localRank, slurm?.masterAddr], [3, 1, "n003"]);
  assert.throws(() => worldFromEnv({ RANK: "2", WORLD_SIZE: "2" }), /RANK="2" must be an integer in 0\.\.1/);
  assert.throws(() => worldFromEnv({ RANK: "0" }), /WORLD_SIZE is not set, but RANK is/);
  assert.throws(() => worldFromEnv({ RANK: "0", WORLD_SIZE: "2", MASTER_PORT: "x" }), /MASTER_PORT="x"/);
});

Deno.test({
  name: "rendezvous failures are clear: a port in use is named, ranks that do not join are named",
  ignore: !gloo,
  fn() {
    const busy = Deno.listen({ hostname: "0.0.0.0", port: 0 });
    const port = (busy.addr as Deno.NetAddr).port;
    try {
      assert.throws(
        () => t.ProcessGroup.join({ rank: 0, worldSize: 1, port }),
        new RegExp(`port ${port} is already in use`),
      );
    } finally {
      busy.close();
    }
    const started = performance.now();
    assert.throws(
      () => t.ProcessGroup.join({ rank: 0, worldSize: 3, port: freePort(), timeoutSeconds: 1 }),
      /ranks 1, 2 of 3 did not join the rendezvous at 127\.0\.0\.1:\d+ within 1 s/,
    );
    assert.ok(performance.now() - started < 10_000);
    assert.throws(
      () => t.ProcessGroup.join({ rank: 1, worldSize: 2, port: freePort(), timeoutSeconds: 1 }),
      /rank 1 could not reach rank 0's rendezvous at 127\.0\.0\.1:\d+ within 1 s/,
    );
  },
});

Deno.test({
  name: "allReduce refuses a mean of integers before the collective, naming the sum",
  ignore: !gloo,
  fn() {
    using group = t.ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
    using counts = t.tensor([1, 2], { dtype: "i64" });
    assert.throws(
      () => t.allReduce([counts], group, { op: "mean" }),
      /the mean needs floating-point tensors, got Long \(use the sum\)/,
    );
    const [sum] = t.allReduce([counts], group);
    assert.deepEqual(t.toArray(sum), [1, 2]);
    sum.dispose();
  },
});

Deno.test({
  name:
    "allReduce over 3 ranks: sums exact across buckets and dtypes; a mean is DDP's, each share times 1/3 on its way in",
  ignore: !gloo,
  async fn() {
    // Per element, what ranks 0, 1 and 2 hold (as f32). DDP's mean rounds each share times fround(1/3) and sums those;
    // dividing the sum afterwards rounds differently: 0.1 against 0.10000001. Gloo's ring may add the three in any
    // order, so the values are ones where every order gives the same.
    const f = Math.fround, third = f(1 / 3);
    const shares = [[0.1, 0.1, 0.1], [0.1, 0.2, 0.3], [0.1, 0.1, 7]].map((s) => s.map(f));
    const orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    const summed = (xs: number[]) => {
      const all = orders.map(([i, j, k]) => f(f(xs[i] + xs[j]) + xs[k]));
      assert.ok(all.every((x) => x === all[0]), `${xs}: the order of the sum matters`);
      return all[0];
    };
    const ddp = shares.map((s) => summed(s.map((x) => f(x * third))));
    const sums = shares.map(summed);
    assert.notDeepEqual(ddp, sums.map((x) => f(x / 3)), "the two ways differ here");
    const port = freePort();
    // f32 tensors side by side share a bucket (a transposed view and an empty one among them); then other dtypes.
    const code = `import * as t from "./mod.ts";
const rank = Number(Deno.env.get("RANK"));
using g = t.ProcessGroup.join({ rank, worldSize: 3, port: ${port}, timeoutSeconds: 20 });
const mine = ${JSON.stringify(shares)}.map((s) => s[rank]);
using rows = t.tensor([mine, mine]);
const inputs = [
  t.tensor(mine),
  t.transpose(rows, 0, 1),
  t.zeros([0]),
  t.tensor([mine, mine]),
  t.tensor([3 * (rank + 1), 6 * rank], { dtype: "f64" }),
  t.tensor([1.5, 3, 4.5, 6], { dtype: "f16" }),
  t.tensor([rank + 1], { dtype: "i64" }),
];
const out = {};
const read = (xs) => xs.map((x) => [x.dtype, x.shape, t.toArray(x)]);
for (const [name, bucketMb] of [["shared", 25], ["own", 1e-6]]) {
  const sums = t.allReduce(inputs, g, { bucketMb });
  const means = t.allReduce(inputs.slice(0, -1), g, { op: "mean", bucketMb });
  out[name] = { sums: read(sums), means: read(means) };
  t.dispose([sums, means]);
}
out.inputs = read(inputs);
t.dispose(inputs);
console.log(JSON.stringify(out));`;
    const ranks = await Promise.all([0, 1, 2].map((rank) =>
      new Deno.Command(Deno.execPath(), {
        args: ["eval", code],
        cwd: new URL("..", import.meta.url).pathname,
        env: { RANK: String(rank) },
        stdout: "piped",
        stderr: "piped",
      }).output()
    ));
    const f32s = (v: number[]) => [
      ["f32", [3], v],
      ["f32", [3, 2], v.flatMap((x) => [x, x])],
      ["f32", [0], []],
      ["f32", [2, 3], [...v, ...v]],
    ];
    for (const [rank, r] of ranks.entries()) {
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      const out = JSON.parse(new TextDecoder().decode(r.stdout));
      for (const buckets of ["shared", "own"]) {
        const where = `rank ${rank}, ${buckets} buckets`;
        assert.deepEqual(out[buckets].sums, [
          ...f32s(sums),
          ["f64", [2], [18, 18]],
          ["f16", [4], [4.5, 9, 13.5, 18]],
          ["i64", [1], [6]],
        ], where);
        assert.deepEqual(out[buckets].means, [
          ...f32s(ddp),
          ["f64", [2], [6, 6]],
          ["f16", [4], [1.5, 3, 4.5, 6]],
        ], where);
      }
      const mine = shares.map((s) => s[rank]);
      assert.deepEqual(out.inputs, [
        ...f32s(mine),
        ["f64", [2], [3 * (rank + 1), 6 * rank]],
        ["f16", [4], [1.5, 3, 4.5, 6]],
        ["i64", [1], [rank + 1]],
      ], "the inputs are left as they were");
    }
  },
});

const pythonTorch = new Deno.Command("/usr/bin/python3", { args: ["-c", "import torch.distributed"], stderr: "null" })
  .outputSync().success;

Deno.test({
  name: "under torchrun's static rendezvous (its agent hosts the store) every rank joins as a client",
  ignore: !gloo || !pythonTorch,
  async fn() {
    const port = freePort();
    // The agent: a TCPStore server, as torchrun's LocalElasticAgent starts on MASTER_PORT.
    const agent = new Deno.Command("/usr/bin/python3", {
      args: [
        "-c",
        `import datetime, sys, time, torch.distributed as d
s = d.TCPStore("127.0.0.1", ${port}, 3, True, datetime.timedelta(seconds=30), wait_for_workers=False)
print("up", flush=True)
sys.stdin.read()`,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = agent.stdout.getReader();
    await reader.read(); // "up"
    reader.releaseLock();
    const code = `import * as t from "./mod.ts";
using g = t.ProcessGroup.join({ rank: Number(Deno.env.get("RANK")), worldSize: 2, port: ${port}, timeoutSeconds: 20 });
using x = t.tensor([Number(Deno.env.get("RANK")) + 1]);
const [y] = t.allReduce([x], g);
console.log(t.toArray(y)[0]);`;
    try {
      const ranks = await Promise.all([0, 1].map((rank) =>
        new Deno.Command(Deno.execPath(), {
          args: ["eval", code],
          cwd: new URL("..", import.meta.url).pathname,
          env: { RANK: String(rank), TORCHELASTIC_USE_AGENT_STORE: "True", TORCHELASTIC_RESTART_COUNT: "0" },
          stdout: "piped",
          stderr: "piped",
        }).output()
      ));
      for (const r of ranks) {
        assert.ok(r.success, new TextDecoder().decode(r.stderr));
        assert.equal(new TextDecoder().decode(r.stdout).trim(), "3");
      }
    } finally {
      await agent.stdin.close();
      await agent.output();
    }
  },
});

Deno.test("a backend the shim lacks is a usage error saying how to get one", () => {
  if (t.distributedBackends().includes("nccl")) return;
  assert.throws(
    () => requireBackend("nccl", "--nproc-per-node 2"),
    /--dist-backend nccl needs a shim built against a CUDA libtorch/,
  );
});

Deno.test({
  name:
    "2 processes x batch 16 equal 1 process x batch 32 after 4 steps; a resumed 2-process run equals an uninterrupted one",
  ignore: !gloo,
  async fn() {
    const one = Deno.makeTempDirSync(), two = Deno.makeTempDirSync(), resumed = Deno.makeTempDirSync();
    try {
      const single = await captured(() =>
        train([...TINY, "--batch-size", "32", "--max-steps", "4", "--output-dir", one])
      );
      assert.equal(single.value, 0, single.err);
      const base = [...TINY, "--batch-size", "16", "--nproc-per-node", "2"];
      const parallel = await run([
        ...base,
        "--max-steps",
        "4",
        "--output-dir",
        two,
        "--master-port",
        String(freePort()),
      ]);
      assert.equal(parallel.code, 0, parallel.out + parallel.err);
      assert.match(parallel.out, /\[rank 0\] .*2 processes \(gloo\), global batch 32/);
      assert.doesNotMatch(parallel.out, /\[rank 1\] epoch/, "rank 1 does not log");
      assert.deepEqual([...Deno.readDirSync(two)].map((e) => e.name).sort(), [
        "checkpoint.safetensors",
        "config.json",
        "metrics.jsonl",
        "report.html",
        "summary.json",
      ]);

      // Equality with one process on the same samples: student, teacher, center and AdamW's moments and counts.
      const a = tensorsOf(join(one, "checkpoint.safetensors")), b = tensorsOf(join(two, "checkpoint.safetensors"));
      assert.deepEqual(Object.keys(b.tensors).sort(), Object.keys(a.tensors).sort());
      assert.deepEqual([b.metadata.step, b.metadata.optimizer_steps, b.metadata.rng], [
        a.metadata.step,
        a.metadata.optimizer_steps,
        a.metadata.rng,
      ]);
      // Float summation differs (32 rows at once, or 16 + 16 averaged), so the gradients agree to rounding. AdamW
      // scales each step by 1 / sqrt(v): where a gradient is zero up to rounding (the attention's key biases, which
      // softmax ignores), rounding noise becomes a step of up to +-lr, so there the bound is 2 x the lr summed.
      const D = 32, lrSum = 4 * (0.003 * 32) / 256;
      const keyBias = (k: string, i: number) => /attn\.qkv\.bias$/.test(k) && i >= D && i < 2 * D;
      let worst = 0, where = "", worstKey = 0;
      for (const [k, x] of Object.entries(a.tensors)) {
        const y = b.tensors[k], scale = Math.max(...x.map(Math.abs));
        for (let i = 0; i < x.length; i++) {
          const d = Math.abs(x[i] - y[i]);
          if (keyBias(k, i) && !k.startsWith("optimizer.exp_avg_sq")) {
            worstKey = Math.max(worstKey, d);
            assert.ok(d <= 2 * lrSum, `${k}[${i}] differs by ${d}`);
            continue;
          }
          assert.ok(d <= 1e-5 * scale + 1e-7, `${k}[${i}]: ${x[i]} and ${y[i]} (largest value ${scale})`);
          if (d / (scale + 1e-3) > worst) [worst, where] = [d / (scale + 1e-3), k];
        }
      }
      console.log(
        `2 x 16 vs 1 x 32 after 4 steps: largest difference ${worst.toExponential(2)} of the largest value ` +
          `(${where}); attention key biases ${worstKey.toExponential(2)} absolute (bound ${(2 * lrSum).toFixed(4)})`,
      );

      // Resume: 2 steps, then 2 more from the checkpoint, bit-identical to 4 uninterrupted steps.
      const r1 = await run([...base, "--max-steps", "2", "--output-dir", resumed, "--master-port", String(freePort())]);
      assert.equal(r1.code, 0, r1.out + r1.err);
      const r2 = await run([...base, "--max-steps", "4", "--output-dir", resumed, "--master-port", String(freePort())]);
      assert.equal(r2.code, 0, r2.out + r2.err);
      assert.match(r2.out, /resuming at step 2/);
      const c = tensorsOf(join(resumed, "checkpoint.safetensors"));
      for (const k of Object.keys(b.tensors)) {
        assert.deepEqual(c.tensors[k], b.tensors[k], `${k} differs after resuming`);
      }
      // The checkpoint says how many processes trained it; resuming it with another number is said.
      assert.deepEqual([a.metadata.world_size, c.metadata.world_size], ["1", "2"]);
      const other = await captured(() =>
        train([...TINY, "--batch-size", "16", "--max-steps", "5", "--output-dir", resumed])
      );
      assert.equal(other.value, 0, other.err);
      assert.match(other.err, /was trained by 2 process\(es\), this run has 1: from here the global batch/);
    } finally {
      for (const d of [one, two, resumed]) Deno.removeSync(d, { recursive: true });
    }
  },
});

Deno.test({
  name: "ranks started with different flags are refused at start, before anything is written",
  ignore: !gloo,
  async fn() {
    const dir = Deno.makeTempDirSync();
    Deno.removeSync(dir);
    const port = String(freePort());
    const env = (rank: number) => ({ RANK: String(rank), WORLD_SIZE: "2", MASTER_PORT: port, GLOG_minloglevel: "2" });
    const [r0, r1] = await Promise.all([
      run([...TINY, "--output-dir", dir], env(0)),
      run([...TINY, "--output-dir", dir, "--lr", "0.01"], env(1)),
    ]);
    assert.equal(r0.code, 2, r0.err);
    assert.equal(r1.code, 2, r1.err);
    for (const r of [r0, r1]) assert.match(r.err, /rank 1 of 2 was started with other settings than rank 0/);
    assert.ok(!t.exists(dir), "nothing is written");
  },
});

/** The pid of the rank `rank` child whose command line holds `marker`. */
function rankPid(marker: string, rank: number): number | undefined {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`);
      if (!cmd.includes(marker) || !cmd.includes("train.ts")) continue;
      const env = Deno.readTextFileSync(`/proc/${e.name}/environ`).split("\0");
      if (env.includes(`RANK=${rank}`)) return Number(e.name);
    } catch { /* gone */ }
  }
  return undefined;
}

async function waitForSteps(dir: string, steps: number): Promise<void> {
  const metrics = join(dir, "metrics.jsonl");
  while (!t.exists(metrics) || Deno.readTextFileSync(metrics).split("\n").length <= steps) {
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name:
    "a rank killed with -9: the others stop within --dist-timeout naming it, exit non-zero, the checkpoint is whole",
  ignore: !gloo,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const args = [...TINY, "--batch-size", "16", "--epochs", "500", "--nproc-per-node", "2"];
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", TRAIN, ...args, "--output-dir", dir, "--master-port", String(freePort())],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      await waitForSteps(dir, 20); // past the first epochs' checkpoints
      const pid = rankPid(dir, 1);
      assert.ok(pid, "rank 1's process");
      const killed = performance.now();
      Deno.kill(pid, "SIGKILL");
      const { code, stdout, stderr } = await child.output();
      const seconds = (performance.now() - killed) / 1000;
      const out = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
      assert.notEqual(code, 0, out);
      assert.ok(seconds < 20 + 15, `the run took ${seconds} s to stop`);
      assert.match(out, /\[rank 0\] error: training stopped: .*rank 1 is lost/);
      assert.match(out, /the last checkpoint is kept at/);
      assert.match(out, /launcher: rank 0 exited with code 1, rank 1 was killed by SIGKILL/);
      const { state, epoch } = loadCheckpoint(join(dir, "checkpoint.safetensors")); // whole: it loads
      assert.ok(state.step > 0 && epoch > 0);
      t.dispose(state);
      assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.includes(".tmp")), []);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "when the launcher is killed, its ranks stop as on SIGTERM: rank 0 saves a checkpoint, none runs on",
  ignore: !gloo,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const args = [...TINY, "--batch-size", "16", "--epochs", "500", "--nproc-per-node", "2"];
    const launcher = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", TRAIN, ...args, "--output-dir", dir, "--master-port", String(freePort())],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitForSteps(dir, 3);
      const ranks = [rankPid(dir, 0), rankPid(dir, 1)];
      assert.ok(ranks.every((p) => p !== undefined), "both ranks' processes");
      launcher.kill("SIGKILL");
      await launcher.status;
      const alive = () =>
        ranks.filter((p) => t.exists(`/proc/${p}`) && !/\) Z /.test(Deno.readTextFileSync(`/proc/${p}/stat`)));
      const started = performance.now();
      while (alive().length > 0 && performance.now() - started < 40_000) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(alive(), [], "the ranks stopped");
      const { tensors, metadata } = readSafetensors(join(dir, "checkpoint.safetensors"));
      t.dispose(tensors);
      assert.ok(Number(metadata.step) >= 3);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "SIGINT to the launcher reaches every rank once: all stop at the same step, rank 0 saves, exit code 130",
  ignore: !gloo,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const args = [...TINY, "--batch-size", "16", "--epochs", "500", "--nproc-per-node", "2"];
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", TRAIN, ...args, "--output-dir", dir, "--master-port", String(freePort())],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      await waitForSteps(dir, 3);
      child.kill("SIGINT");
      const { code, stdout, stderr } = await child.output();
      const out = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
      assert.equal(code, 130, out);
      const step = Number(/\[rank 0\] interrupted: checkpoint saved at step (\d+)/.exec(out)?.[1]);
      assert.ok(step >= 3, out);
      const { tensors, metadata } = readSafetensors(join(dir, "checkpoint.safetensors"));
      t.dispose(tensors);
      assert.equal(Number(metadata.step), step);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a port in use, Sinkhorn centering or a backend the shim lacks stops the launcher before any rank starts",
  ignore: !gloo,
  async fn() {
    const busy = Deno.listen({ hostname: "0.0.0.0", port: 0 });
    const port = (busy.addr as Deno.NetAddr).port;
    try {
      const r = await run([
        ...TINY,
        "--nproc-per-node",
        "2",
        "--master-port",
        String(port),
        "--output-dir",
        "/nonexistent/x",
      ]);
      assert.equal(r.code, 2);
      assert.match(r.err, new RegExp(`port ${port} is already in use .*--master-port`));
    } finally {
      busy.close();
    }
    const sinkhorn = await run([...TINY, "--nproc-per-node", "2", "--centering", "sinkhorn"]);
    assert.equal(sinkhorn.code, 2);
    assert.match(sinkhorn.err, /^error: --centering sinkhorn normalises over the batch/);
    assert.doesNotMatch(sinkhorn.out + sinkhorn.err, /\[rank \d\]|launching/); // refused before any rank starts
    if (!t.distributedBackends().includes("nccl")) {
      const r = await run([...TINY, "--nproc-per-node", "2", "--dist-backend", "nccl"]);
      assert.equal(r.code, 2);
      assert.match(r.err, /--dist-backend nccl needs a shim built against a CUDA libtorch/);
    }
  },
});

Deno.test("without Gloo's headers, native/distributed.cpp compiles with no distributed engine", async () => {
  const { findLibtorch, includeFlags } = await import("../ffi/build.ts");
  const libtorch = findLibtorch();
  const r = await new Deno.Command("c++", {
    args: [
      "-std=gnu++17",
      "-fsyntax-only",
      `-D_GLIBCXX_USE_CXX11_ABI=${libtorch.abi}`,
      ...includeFlags(libtorch.include, new Set(["/usr/include", "/usr/local/include"])),
      new URL("../native/distributed.cpp", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
});

Deno.test({
  name: "SyncBatchNorm: 2 ranks of 4 + 3 and 3 + 6 rows equal batch norm on all 7 and 9 (output, gradients, buffers)",
  ignore: !gloo,
  async fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const port = String(freePort());
      const ranks = await Promise.all([0, 1].map((rank) =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", WORKER, String(rank), port, join(dir, `${rank}.safetensors`)],
          stdout: "piped",
          stderr: "piped",
        }).output()
      ));
      for (const r of ranks) assert.ok(r.success, new TextDecoder().decode(r.stderr));
      const [r0, r1] = [0, 1].map((rank) => tensorsOf(join(dir, `${rank}.safetensors`)).tensors);
      for (const [i, { shape, split }] of SYNC_BN_SHAPES.entries()) {
        // One process, the whole batch: the plain batch norm that PyTorch's parity tests pin down.
        const want = t.tidy(() => {
          const c = syncBatchNormCase(shape);
          const x = t.requiresGrad(c.x), weight = t.requiresGrad(c.weight), bias = t.requiresGrad(c.bias);
          const { runningMean, runningVar } = c;
          const r = t.batchNorm(x, { weight, bias, runningMean, runningVar, training: true });
          const [gx, gw, gb] = t.grad(t.sum(t.mul(r.output, c.upstream)), [x, weight, bias]);
          return [r.output, r.runningMean!, r.runningVar!, gx, gw, gb].map(t.toArray);
        });
        const rows = (a: number[], b: number[]) => [...a, ...b]; // rank 0's rows, then rank 1's
        const sums = (a: number[], b: number[]) => a.map((v, j) => v + b[j]); // a loss summed over the ranks
        const got = [
          rows(r0[`${i}.output`], r1[`${i}.output`]),
          r0[`${i}.running_mean`],
          r0[`${i}.running_var`],
          rows(r0[`${i}.grad_x`], r1[`${i}.grad_x`]),
          sums(r0[`${i}.grad_weight`], r1[`${i}.grad_weight`]),
          sums(r0[`${i}.grad_bias`], r1[`${i}.grad_bias`]),
        ];
        ["output", "running mean", "running var", "grad x", "grad weight", "grad bias"].forEach((what, j) => {
          const scale = Math.max(1, ...want[j].map(Math.abs));
          const worst = Math.max(...got[j].map((v, k) => Math.abs(v - want[j][k])));
          assert.equal(got[j].length, want[j].length);
          assert.ok(worst <= 1e-5 * scale, `[${shape}] split ${split}: ${what} differs by ${worst} (largest ${scale})`);
        });
        assert.deepEqual(r1[`${i}.running_mean`], r0[`${i}.running_mean`], "every rank moves the same statistics");
        assert.deepEqual(r1[`${i}.running_var`], r0[`${i}.running_var`]);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a ResNet-18 with a batch-norm head: 2 processes x batch 4 equal 1 process x batch 8 after 2 steps (SyncBatchNorm)",
  ignore: !gloo,
  async fn() {
    const one = Deno.makeTempDirSync(), two = Deno.makeTempDirSync();
    try {
      const flags = [
        "--arch resnet18 --use-bn-in-head true --optimizer sgd --lr 0.3 --local-crops-number 2",
        "--out-dim 64 --hidden-dim 32 --bottleneck-dim 16 --max-steps 2 --dist-timeout 20",
        "--train-limit 64 --test-limit 20 --log-every 1",
      ].join(" ").split(" ");
      const single = await captured(() => train([...flags, "--batch-size", "8", "--output-dir", one]));
      assert.equal(single.value, 0, single.err);
      const parallel = await run([
        ...flags,
        ...["--batch-size", "4", "--nproc-per-node", "2", "--output-dir", two, "--master-port", String(freePort())],
      ]);
      assert.equal(parallel.code, 0, parallel.out + parallel.err);
      const a = tensorsOf(join(one, "checkpoint.safetensors")).tensors;
      const b = tensorsOf(join(two, "checkpoint.safetensors")).tensors;
      assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
      // Every weight, the momentum buffers, the center, and the running statistics of both networks' batch norms
      // (which would follow each rank's half batch without SyncBatchNorm). The sums differ in order (8 rows at once,
      // or 4 + 4 over the ranks) and batch norm's backward subtracts nearly equal sums, so they agree to 5e-5 of
      // each tensor's largest value, plus 5e-6 where the gradient is zero but for rounding (the head's linear biases
      // that a batch norm follows).
      assert.ok(Object.keys(a).some((k) => /^teacher\.backbone\.layer4\.1\.bn2\.running_var$/.test(k)));
      let worst = 0, where = "";
      for (const [k, x] of Object.entries(a)) {
        const scale = x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const d = x.reduce((m, v, i) => Math.max(m, Math.abs(v - b[k][i])), 0);
        assert.ok(d <= 5e-5 * scale + 5e-6, `${k} differs by ${d} (largest value ${scale})`);
        if (d / (5e-5 * scale + 5e-6) > worst) [worst, where] = [d / (5e-5 * scale + 5e-6), k];
      }
      console.log(`ResNet-18, 2 x 4 vs 1 x 8 after 2 steps: at most ${worst.toFixed(2)} of the bound (${where})`);
    } finally {
      for (const d of [one, two]) Deno.removeSync(d, { recursive: true });
    }
  },
});
