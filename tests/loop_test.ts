import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { AUGMENT_PRESETS, dinoViews } from "../lib/augment/mod.ts";
import { tensorDataset } from "../lib/data/dataset.ts";
import { batches, batchIndices } from "../lib/data/loader.ts";
import { dinoConfig } from "../lib/model/dino.ts";
import { dinoHyper, initTrainState, type TrainState, trainStep } from "../lib/training/step.ts";
import { sampleSeed, trainLoop } from "../lib/training/loop.ts";
import { onTestDevice, relativeL2, testDevice } from "./helpers.ts";

const net = dinoConfig({ arch: "vit_tiny", imgSize: 16, patchSize: 8, depth: 1, inChans: 1, outDim: 32 });
const hyper = dinoHyper({ epochs: 2, itersPerEpoch: 3, batchSize: 4, warmupEpochs: 0 });
const augment = { ...AUGMENT_PRESETS.fmnist28, globalCropsSize: 16, localCropsSize: 8, localCropsNumber: 2 };

function images(): t.Tensor {
  return t.tidy(() => t.to(t.randint(new t.Generator(3), 0, 256, [12, 1, 20, 20]), "u8"));
}

Deno.test("the loop makes each batch's views during the previous step and trains exactly as views made between steps", async () => {
  const before = t.liveTensors();
  const x = images();
  const data = tensorDataset(x);
  // The loop, whose views of batch n + 1 are made while step n runs.
  let state = initTrainState(net, hyper, 0);
  const waits: number[] = [];
  for await (const e of trainLoop(state, { data, net, hyper, augment, seed: 7 })) {
    state = e.state;
    if (e.type === "step") waits.push(e.dataWaitMs);
  }
  // The same run with every batch's views made right before its step.
  let reference: TrainState = initTrainState(net, hyper, 0);
  for (let epoch = 0; epoch < hyper.epochs; epoch++) {
    for await (const b of batches(data, epoch, { batchSize: hyper.batchSize, seed: 7 })) {
      const sampleSeeds = b.indices.map((i) => sampleSeed(7, epoch, i));
      const views = dinoViews(b.images, augment, { sampleSeeds });
      t.dispose([b.images, b.labels]);
      const { state: next } = trainStep(reference, views, hyper, net);
      t.dispose([views, reference]);
      reference = next;
    }
  }
  assert.equal(state.step, 6);
  assert.equal(waits.length, 6);
  assert.ok(waits.every((ms) => Number.isFinite(ms) && ms >= 0), `waits ${waits}`);
  const params = t.tensorsIn(state.student), expected = t.tensorsIn(reference.student);
  assert.equal(params.length, expected.length);
  params.forEach((p, i) => assert.deepEqual(t.tidy(() => t.toArray(p)), t.tidy(() => t.toArray(expected[i]))));
  t.dispose([state, reference]);
  data[Symbol.dispose]();
  x.dispose();
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

Deno.test("a batch that lost every image is a skipped step, one short a whole number of micro-batches: epochs keep their steps", async () => {
  const before = t.liveTensors();
  const x = images();
  const data = tensorDataset(x);
  const accum = { ...hyper, accumSteps: 2 };
  // Each epoch's first batch unreadable as a whole; item 5 too (a batch of 3 is cut to 2).
  let loads = 0;
  const damaged = {
    ...data,
    load(indices: readonly number[]) {
      const lost = new Set(loads++ % 3 === 0 ? indices : [5]);
      const kept = indices.filter((i) => !lost.has(i));
      const images = t.tidy(() =>
        kept.length
          ? t.indexSelect(x, 0, t.tensor(BigInt64Array.from(kept, BigInt)))
          : t.zeros([0, 1, 20, 20], { dtype: "u8" })
      );
      const failed = indices.filter((i) => lost.has(i)).map(String);
      return Promise.resolve({ images, indices: kept, failed, firstError: "lost" });
    },
  };
  let state = initTrainState(net, accum, 0);
  const steps: number[][] = [[], []], trained: number[] = [];
  for await (const e of trainLoop(state, { data: damaged, net, hyper: accum, augment, seed: 7, onSkipped: () => {} })) {
    state = e.state;
    if (e.type === "step") {
      steps[e.epoch].push(e.state.step);
      trained.push(e.images);
    }
  }
  assert.equal(state.step, 6, "each epoch took its 3 steps");
  // Each epoch's first step was skipped, its number taken.
  assert.deepEqual(steps, [[2, 3], [5, 6]]);
  // The same run by hand: the loader's batches, the first of each epoch a skipped step, item 5 dropped and a batch
  // left odd cut to its first images.
  let reference: TrainState = initTrainState(net, accum, 0);
  const expected: number[] = [];
  for (let epoch = 0; epoch < hyper.epochs; epoch++) {
    batchIndices(12, epoch, { batchSize: hyper.batchSize, seed: 7 }).forEach((indices, b) => {
      if (b === 0) {
        reference = { ...reference, step: reference.step + 1 };
        return;
      }
      const read = indices.filter((i) => i !== 5), kept = read.slice(0, read.length - read.length % 2);
      expected.push(kept.length);
      const batch = t.tidy(() => t.indexSelect(x, 0, t.tensor(BigInt64Array.from(kept, BigInt))));
      const views = dinoViews(batch, augment, { sampleSeeds: kept.map((i) => sampleSeed(7, epoch, i)) });
      batch.dispose();
      const { state: next } = trainStep(reference, views, accum, net);
      t.dispose([views, reference]);
      reference = next;
    });
  }
  assert.deepEqual(trained, expected);
  assert.ok(expected.includes(2), `item 5 left a batch of 3, cut to 2: ${expected}`);
  const params = t.tensorsIn(state.student), want = t.tensorsIn(reference.student);
  params.forEach((p, i) => assert.deepEqual(t.tidy(() => t.toArray(p)), t.tidy(() => t.toArray(want[i]))));
  t.dispose([state, reference]);
  data[Symbol.dispose]();
  x.dispose();
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

Deno.test("breaking out of the loop while the next batch's views are being made leaks nothing", async () => {
  const before = t.liveTensors();
  const x = images();
  const data = tensorDataset(x);
  let state = initTrainState(net, hyper, 0);
  for await (const e of trainLoop(state, { data, net, hyper, augment, seed: 1 })) {
    state = e.state;
    if (e.type === "step" && e.state.step === 2) break; // batch 3's views are in flight
  }
  assert.equal(state.step, 2);
  // stopAt mid-epoch: the loop reads no batch past the last step's.
  for await (const e of trainLoop(state, { data, net, hyper, augment, seed: 1, stopAt: 4 })) state = e.state;
  assert.equal(state.step, 4);
  t.dispose(state);
  data[Symbol.dispose]();
  x.dispose();
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

Deno.test("the loop on the test device trains as the loop on the CPU, views made on the CPU or there, state kept there", async () => {
  const before = t.liveTensors();
  const x = images();
  const data = tensorDataset(x);
  const stopAt = 4; // an epoch and a third: the second epoch's views too
  const run = async (device: t.Device, augmentOn?: "cpu" | "device") => {
    const init = initTrainState(net, hyper, 0);
    let state = onTestDevice(init, device); // the loop takes it over
    t.dispose(init);
    const losses: number[] = [];
    for await (const e of trainLoop(state, { data, net, hyper, augment, seed: 5, device, stopAt, augmentOn })) {
      state = e.state;
      if (e.type === "step") losses.push(e.metrics.loss);
    }
    return { state, losses };
  };
  const cpu = await run("cpu");
  for (const augmentOn of ["cpu", "device"] as const) {
    const dev = await run(testDevice, augmentOn);
    assert.deepEqual([dev.state.step, dev.losses.length], [stopAt, stopAt]);
    for (const p of t.tensorsIn(dev.state)) assert.ok(p.device.startsWith(testDevice), `a state tensor on ${p.device}`);
    // On the CPU: the same run twice, bit for bit. On CUDA: the step's convolutions possibly in TF32, and views
    // made there op by op (see augment_test.ts and lib_test.ts on the test device): 1e-2 relative L2 per tensor and
    // per loss.
    const tol = testDevice === "cpu" ? 0 : 1e-2;
    const got = t.tensorsIn(dev.state.student), want = t.tensorsIn(cpu.state.student);
    assert.equal(got.length, want.length);
    got.forEach((p, i) => {
      const e = relativeL2(p, want[i]);
      assert.ok(e <= tol, `views on ${augmentOn}, parameter ${i}: relative error ${e} > ${tol}`);
    });
    cpu.losses.forEach((l, i) =>
      assert.ok(Math.abs(dev.losses[i] - l) <= tol * l, `loss ${i}: ${dev.losses[i]}, ${l}`)
    );
    t.dispose(dev.state);
  }
  t.dispose(cpu.state);
  data[Symbol.dispose]();
  x.dispose();
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

Deno.test("trainStep refuses views that hold no image", () => {
  const before = t.liveTensors();
  const state = initTrainState(net, hyper, 0);
  const views = [16, 16, 8, 8].map((s) => t.zeros([0, 1, s, s]));
  try {
    assert.throws(() => trainStep(state, views, hyper, net), /the views hold no image/);
  } finally {
    t.dispose([state, views]);
  }
  assert.equal(t.liveTensors(), before);
});
