/**
 * Where a training step's wall time goes in the default run (`deno task
 * train`'s settings on Fashion-MNIST): the training loop as the CLI drives it,
 * each step timed by phase (waiting for data, forward, loss, backward,
 * clipping, optimizer, EMA, and the caller's logging between steps), then the
 * same number of steps on views made beforehand (the step alone). The loop
 * makes batch n + 1's views on a native thread while step n runs, so it should
 * reach the step-only images/s; the augmentation's own time is measured apart,
 * on the same batches, since it overlaps the step. The two take turns for
 * `--rounds` rounds, which of them goes first alternating (the machine's speed
 * drifts between windows of a few seconds, and one slow window in three rounds
 * moved the median by 10 points), and the median of the rounds' ratios
 * counts. With `--device cuda` the phases are timed to the GPU's completion
 * (a synchronisation after each), and the step alone is timed twice: until
 * its calls return (the host's share: CUDA queues the kernels) and until the
 * GPU has finished them.
 *
 * @example
 * ```sh
 * deno run -A bench/step_time.ts --steps 20
 * deno run -A bench/step_time.ts --preset fmnist-gpu --device cuda --steps 50
 * ```
 * @module
 */
import { benchFlags, positiveInt } from "./flags.ts";
import { cudaSynchronize, type Device, dispose, getNumThreads, tidy, toDevice } from "../mod.ts";
import { moveTree } from "../lib/weights/mod.ts";
import { augmentConfig, makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { openDataset } from "../lib/data/open.ts";
import { channelStats } from "../lib/data/stats.ts";
import { batches } from "../lib/data/loader.ts";
import { dinoViews } from "../lib/augment/mod.ts";
import { dinoHyper, initTrainState, type StepPhases, trainStep } from "../lib/training/step.ts";
import { sampleSeed, trainLoop } from "../lib/training/loop.ts";
import { turnsEvery } from "../lib/training/turns.ts";

const values = benchFlags({
  steps: { type: "string", default: "20" },
  rounds: { type: "string", default: "7" },
  preset: { type: "string", default: "fmnist" },
  device: { type: "string", default: "cpu" },
});
const steps = positiveInt(values.steps, "--steps"), rounds = positiveInt(values.rounds, "--rounds");
if (values.device !== "cpu" && values.device !== "cuda") {
  console.error(`error: --device must be cpu or cuda, got "${values.device}"`);
  Deno.exit(2);
}
const device = values.device as Device;
const s = makeSettings(values.preset!);
using data = openDataset(s.data, "train", { side: s.imageSize });
const norm = await channelStats(data);
const net = networkConfig(s, data.channels), augment = augmentConfig(s, norm);
const itersPerEpoch = Math.floor(data.length / s.batchSize);
const hyper = dinoHyper({ ...s, itersPerEpoch });
const warmup = 3; // the first steps fill the buffer cache and compile oneDNN's kernels
const images = (n: number) => n * s.batchSize;

// 1. The loop, as `deno task train` runs it, with a consumer that logs as the CLI does; its phases summed into `totals`.
const totals: Record<string, number> = {};
const add = (phase: string, ms: number) => (totals[phase] = (totals[phase] ?? 0) + ms);
async function loopWindow(): Promise<number> {
  let loopMs = 0, stepsSeen = 0, last = performance.now();
  const turn = turnsEvery(250); // as the CLI
  const log = await Deno.makeTempFile({ suffix: ".jsonl" });
  let state = moveTree(initTrainState(net, hyper, s.seed), device);
  for await (const e of trainLoop(state, { data, net, hyper, augment, seed: s.seed, timed: true, device })) {
    state = e.state;
    if (e.type !== "step") continue;
    const now = performance.now();
    if (++stepsSeen > warmup) {
      loopMs += now - last; // from the previous step's event: its logging, then this step
      add("waiting for data", e.dataWaitMs);
      for (const [phase, ms] of Object.entries(e.metrics.phases as StepPhases)) add(phase, ms);
    }
    const logged = performance.now();
    Deno.writeTextFileSync(log, JSON.stringify({ step: e.state.step, ...e.metrics, phases: undefined }) + "\n", {
      append: true,
    });
    await turn();
    if (stepsSeen > warmup) add("logging", performance.now() - logged);
    last = now;
    if (stepsSeen === warmup + steps) break;
  }
  dispose(state);
  Deno.removeSync(log);
  return loopMs;
}

// 2. The same steps on views made beforehand: the step alone. 3. The augmentation alone, on the same batches.
async function stepAlone(): Promise<{ stepOnlyMs: number; hostMs: number; augmentMs: number }> {
  const made: { views: ReturnType<typeof dinoViews>; ms: number }[] = [];
  for await (const batch of batches(data, 0, { batchSize: s.batchSize, seed: s.seed })) {
    const t0 = performance.now();
    const sampleSeeds = batch.indices.map((i) => sampleSeed(s.seed, 0, i));
    const views = tidy(() =>
      dinoViews(batch.images, augment, { sampleSeeds }).map((v) => device === "cpu" ? v : toDevice(v, device))
    );
    made.push({ views, ms: performance.now() - t0 });
    dispose([batch.images, batch.labels]);
    if (made.length === warmup + steps) break;
  }
  let state = moveTree(initTrainState(net, hyper, s.seed), device);
  let stepOnlyMs = 0, hostMs = 0;
  made.forEach(({ views }, i) => {
    const t0 = performance.now();
    const r = trainStep(state, views, hyper, net, { donate: true });
    const returned = performance.now();
    if (device !== "cpu") cudaSynchronize();
    if (i >= warmup) (stepOnlyMs += performance.now() - t0), (hostMs += returned - t0);
    dispose(state);
    state = r.state;
  });
  dispose([state, made.map((m) => m.views)]);
  return { stepOnlyMs, hostMs, augmentMs: made.slice(warmup).reduce((a, m) => a + m.ms, 0) };
}

let loopMs = 0, stepOnlyMs = 0, hostMs = 0, augmentMs = 0;
const ratios: number[] = [];
for (let round = 0; round < rounds; round++) {
  // which goes first alternates, so that a drift within a round favours neither
  let loop: number, alone: Awaited<ReturnType<typeof stepAlone>>;
  if (round % 2 === 0) {
    loop = await loopWindow();
    alone = await stepAlone();
  } else {
    alone = await stepAlone();
    loop = await loopWindow();
  }
  ratios.push(alone.stepOnlyMs / loop);
  loopMs += loop;
  stepOnlyMs += alone.stepOnlyMs;
  hostMs += alone.hostMs;
  augmentMs += alone.augmentMs;
}
const median = [...ratios].sort((a, b) => a - b)[Math.floor(ratios.length / 2)];

const perStep = (ms: number) => `${(ms / steps / rounds).toFixed(1).padStart(8)} ms`;
console.log(
  `Training step, ${values.preset} preset (${s.arch}/${s.patchSize}, batch ${s.batchSize}, ${getNumThreads()} threads, ` +
    `${device}), mean of ${rounds} x ${steps} steps, each window after ${warmup}:`,
);
const accounted = Object.values(totals).reduce((a, b) => a + b, 0);
for (const [phase, ms] of Object.entries(totals)) {
  console.log(`  ${phase.padEnd(18)}${perStep(ms)}  ${(100 * ms / loopMs).toFixed(1).padStart(5)}%`);
}
console.log(
  `  ${"other".padEnd(18)}${perStep(loopMs - accounted)}  ${(100 * (loopMs - accounted) / loopMs).toFixed(1)}%`,
);
console.log(`  ${"loop step".padEnd(18)}${perStep(loopMs)}`);
console.log(
  `  augmentation alone${
    perStep(augmentMs)
  }  (made on a native thread during the previous step, not in the loop's time)`,
);
const loopRate = images(steps * rounds) / (loopMs / 1000), stepRate = images(steps * rounds) / (stepOnlyMs / 1000);
console.log(
  `  images/s: loop ${loopRate.toFixed(1)}, step alone ${stepRate.toFixed(1)}; by round, the loop reaches ${
    ratios.map((r) => (100 * r).toFixed(1)).join(", ")
  }% of the step-only rate: median ${(100 * median).toFixed(1)}% (target >= 90%)`,
);
if (device !== "cpu") {
  console.log(
    `  the step alone: its calls return after ${perStep(hostMs).trim()}, the GPU is done after ${
      perStep(stepOnlyMs).trim()
    } (${(100 * hostMs / stepOnlyMs).toFixed(1)}%: near 100% when the host's calls, not the GPU, set the pace)`,
  );
}
