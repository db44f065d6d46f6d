import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { spawnCli } from "./helpers.ts";

const TINY = [
  "--embed-dim=32",
  "--depth=1",
  "--num-heads=2",
  "--out-dim=64",
  "--hidden-dim=32",
  "--bottleneck-dim=16",
  "--batch-size=32",
  "--log-every=1",
];
const TRAIN = new URL("../cli/train.ts", import.meta.url).pathname;

/** Starts `deno task train` in a child process; `waitFor` resolves once its stdout matches. */
const spawnTrain = (args: string[]) => spawnCli(TRAIN, args);

for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  Deno.test(`${signal} during training saves a checkpoint at the step reached and exits with ${code}`, async () => {
    const dir = Deno.makeTempDirSync();
    const run = spawnTrain([...TINY, "--epochs=50", "--train-limit=512", "--test-limit=40", `--output-dir=${dir}`]);
    await run.waitFor(/step 3\//);
    run.child.kill(signal);
    const r = await run.done();
    assert.equal(r.code, code, r.err);
    const step = Number(/interrupted: checkpoint saved at step (\d+)/.exec(r.out)?.[1]);
    const { tensors, metadata } = readSafetensors(join(dir, "checkpoint.safetensors"));
    t.dispose(tensors);
    assert.equal(Number(metadata.step), step);
    Deno.removeSync(dir, { recursive: true });
  });
}

Deno.test("SIGINT during the final evaluation stops it within seconds, keeping the checkpoint", async () => {
  const dir = Deno.makeTempDirSync();
  const run = spawnTrain([...TINY, "--max-steps=1", `--output-dir=${dir}`]); // evaluates all 70,000 images
  await run.waitFor(/evaluating:/);
  const sent = performance.now();
  run.child.kill("SIGINT");
  const r = await run.done();
  assert.equal(r.code, 130, r.err);
  assert.ok(performance.now() - sent < 5000, `stopped ${performance.now() - sent} ms after the signal`);
  assert.match(r.out, /interrupted during the evaluation; the checkpoint at step 1 is kept/);
  assert.ok(t.exists(join(dir, "checkpoint.safetensors")));
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a second SIGINT exits at once", async () => {
  const dir = Deno.makeTempDirSync();
  const run = spawnTrain([...TINY, "--max-steps=1", `--output-dir=${dir}`]);
  await run.waitFor(/evaluating:/);
  run.child.kill("SIGINT");
  run.child.kill("SIGINT");
  const r = await run.done();
  assert.equal(r.code, 130, r.err);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a resumed run cuts metrics.jsonl back to its checkpoint, and removes temporary files a kill left", async () => {
  const dir = Deno.makeTempDirSync();
  const args = [...TINY, "--train-limit=256", "--test-limit=40", `--output-dir=${dir}`];
  let r = await spawnTrain([...args, "--max-steps=2"]).done();
  assert.equal(r.code, 0, r.err);
  // As a run killed after logging steps 3 and 4 (and half a row), and in the middle of writing a checkpoint.
  const metrics = join(dir, "metrics.jsonl");
  Deno.writeTextFileSync(metrics, '{"step":3,"loss":1}\n{"step":4,"loss":1}\n{"step":5,"lo', { append: true });
  const stale = join(dir, ".checkpoint.safetensors.999999999.0123abcd.tmp");
  Deno.writeTextFileSync(stale, "half a checkpoint");
  r = await spawnTrain([...args, "--max-steps=4"]).done();
  assert.equal(r.code, 0, r.err);
  assert.ok(!t.exists(stale), "the temporary file is removed");
  const steps = Deno.readTextFileSync(metrics).trim().split("\n").map((l) => JSON.parse(l))
    .filter((row) => "loss" in row).map((row) => row.step);
  assert.deepEqual(steps, [1, 2, 3, 4]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("kill -9 at random steps, then the same command again, ends bit-identical to a run never killed", async () => {
  const args = (dir: string) => [...TINY, "--epochs=3", "--train-limit=256", "--test-limit=40", `--output-dir=${dir}`];
  const straight = Deno.makeTempDirSync();
  assert.equal((await spawnTrain(args(straight)).done()).code, 0);
  const expected = readSafetensors(join(straight, "checkpoint.safetensors"));
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let trial = 0; trial < 3; trial++) {
    const dir = Deno.makeTempDirSync();
    const killed = spawnTrain(args(dir));
    const at = 1 + Math.floor(23 * random()); // a random step of the 24 (8 a epoch), printed as "epoch e/3 step s/8"
    await killed.waitFor(new RegExp(`epoch ${Math.floor((at - 1) / 8) + 1}/3 step ${((at - 1) % 8) + 1}/8`));
    killed.child.kill("SIGKILL");
    assert.notEqual((await killed.done()).code, 0, `trial ${trial}: killed before it finished`);
    const again = await spawnTrain(args(dir)).done();
    assert.equal(again.code, 0, again.err);
    const got = readSafetensors(join(dir, "checkpoint.safetensors"));
    assert.deepEqual(Object.keys(got.tensors), Object.keys(expected.tensors));
    for (const [k, v] of Object.entries(expected.tensors)) {
      assert.deepEqual(t.toArray(got.tensors[k]), t.toArray(v), `trial ${trial}: ${k}`);
    }
    t.dispose(got.tensors);
    assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".tmp")), [], "no temporary file left");
    const steps = Deno.readTextFileSync(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l))
      .filter((row) => "loss" in row).map((row) => row.step);
    assert.deepEqual(steps, [...new Set(steps)].sort((a, b) => a - b), `trial ${trial}: each step logged once`);
    Deno.removeSync(dir, { recursive: true });
  }
  t.dispose(expected.tensors);
  Deno.removeSync(straight, { recursive: true });
});

/** A head whose last layer has 2.1 M weights: its checkpoint (student, teacher, AdamW's moments) is about 34 MB. */
const BIG_HEAD = ["--out-dim=8192", "--bottleneck-dim=256", "--batch-size=16", "--train-limit=32", "--test-limit=40"];

/** The temporary files of checkpoint writes in `dir`. */
const checkpointTemporaries = (dir: string) =>
  [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.startsWith(".checkpoint") && n.endsWith(".tmp"));

for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
  Deno.test(`${signal} while a checkpoint is being written: the write completes, then the run stops at a completed step with ${code}`, async () => {
    // The writes are synchronous, so the signal is handled after the write: the run then takes at most one more
    // step, saves it, and exits. Each run sends the signal once a checkpoint's temporary file appears, and counts
    // when the file is still there after the signal was sent: the signal landed inside the write.
    let landed = false;
    for (let run = 0; run < 4 && !landed; run++) {
      const dir = Deno.makeTempDirSync();
      const p = spawnTrain([...TINY, ...BIG_HEAD, "--epochs=50", `--output-dir=${dir}`]);
      let exited = false;
      p.child.status.then(() => (exited = true));
      let writing: string[] = [];
      while (!exited && (writing = checkpointTemporaries(dir)).length === 0) await new Promise((r) => setTimeout(r, 1));
      assert.ok(!exited, "the run ended before writing a checkpoint");
      p.child.kill(signal);
      landed = checkpointTemporaries(dir).some((n) => writing.includes(n));
      const r = await p.done();
      assert.equal(r.code, code, r.err);
      const step = Number(/interrupted: checkpoint saved at step (\d+)/.exec(r.out)?.[1]);
      const checkpoint = join(dir, "checkpoint.safetensors");
      const loaded = t.loadCheckpoint(checkpoint);
      assert.equal(loaded.state.step, step, "the checkpoint holds the step the run reports");
      t.dispose(loaded.state);
      assert.deepEqual(checkpointTemporaries(dir), [], "no temporary file left");
      const steps = Deno.readTextFileSync(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l))
        .filter((row) => "loss" in row).map((row) => row.step);
      assert.deepEqual(steps, Array.from({ length: step }, (_, i) => i + 1), "each completed step logged once");
      Deno.removeSync(dir, { recursive: true });
    }
    assert.ok(landed, "in 4 runs, no signal landed while a checkpoint was being written");
  });
}

Deno.test("a second SIGINT while the interrupted run writes its checkpoint: the write completes, exit 130", async () => {
  // As above, a run counts when the checkpoint's temporary file is still there after the second signal was sent. On a
  // fast machine the save can finish and the run exit between seeing the file and signalling: that run is retried.
  let landed = false;
  for (let run = 0; run < 4 && !landed; run++) {
    const dir = Deno.makeTempDirSync();
    const p = spawnTrain([...TINY, ...BIG_HEAD, "--epochs=50", `--output-dir=${dir}`]);
    await p.waitFor(/epoch 1\/50 step 1\//);
    p.child.kill("SIGINT");
    let exited = false;
    p.child.status.then(() => (exited = true));
    let writing: string[] = [];
    while (!exited && (writing = checkpointTemporaries(dir)).length === 0) await new Promise((r) => setTimeout(r, 1));
    try {
      p.child.kill("SIGINT"); // during the interrupted run's save
      landed = checkpointTemporaries(dir).some((n) => writing.includes(n));
    } catch (e) {
      if (!(e instanceof TypeError && /already terminated/.test(e.message))) throw e;
    }
    const r = await p.done();
    assert.equal(r.code, 130, r.err);
    const loaded = t.loadCheckpoint(join(dir, "checkpoint.safetensors"));
    assert.ok(loaded.state.step >= 1);
    t.dispose(loaded.state);
    assert.deepEqual(checkpointTemporaries(dir), []);
    Deno.removeSync(dir, { recursive: true });
  }
  assert.ok(landed, "in 4 runs, no second signal landed while the checkpoint was being written");
});

Deno.test("a rank's own signal after it adopted another rank's stop is its first request: it saves, not exits", async () => {
  // The launcher forwards one signal to every rank; a rank can learn of it from the others first.
  const stop = new URL("../cli/stop.ts", import.meta.url).href;
  const code = `
    import { listenForStop } from "${stop}";
    using stop = listenForStop();
    stop.adopt(130);
    Deno.kill(Deno.pid, "SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    console.log("still running, code", stop.code);`;
  const r = await new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped", stderr: "piped" })
    .output();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, out);
  assert.match(out, /still running, code 130/);
});

for (const threads of [1, 2]) {
  Deno.test(`signals that arrive during linear layers' matrix products do not corrupt the heap (${threads} thread${threads > 1 ? "s" : ""})`, async () => {
    // oneDNN's f32 gemm (the linear layers' path on AVX-512 CPUs) ran with its stack pointer in the heap, where a
    // signal's frame landed: before the fix this aborted within a second ("corrupted size vs. prev_size").
    const worker = new URL("./signal_storm_worker.ts", import.meta.url).pathname;
    const p = spawnCli(worker, ["3", String(threads)]);
    await p.waitFor(/ready/);
    let exited = false, sent = 0;
    p.child.status.then(() => (exited = true));
    while (!exited) {
      try {
        p.child.kill("SIGWINCH");
        sent++;
      } catch (e) {
        if (!(e instanceof TypeError && /already terminated/.test(e.message))) throw e;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const r = await p.done();
    assert.equal(r.code, 0, `the worker exited with ${r.code} after ${sent} signals:\n${r.err}`);
    const [, steps, signals] = r.out.match(/steps (\d+) signals (\d+)/)!.map(Number);
    assert.ok(steps > 0 && signals > 0 && sent > 100, `steps ${steps}, signals taken ${signals} of ${sent} sent`);
  });
}
