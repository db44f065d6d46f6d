import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { dinoConfig } from "../lib/model/dino.ts";
import { type DinoHyper, dinoHyper, initTrainState, type TrainState, trainStep } from "../lib/training/step.ts";
import { type Flat, stateDict } from "../lib/weights/tree.ts";
import { onTestDevice, relativeL2, testDevice } from "./helpers.ts";

const cfg = dinoConfig({
  arch: "vit_tiny",
  embedDim: 16,
  numHeads: 2,
  depth: 2,
  imgSize: 8,
  patchSize: 4,
  inChans: 1,
  outDim: 32,
  hiddenDim: 24,
  bottleneckDim: 8,
  dropPathRate: 0.1,
});

function views(seed: number, B = 4): t.Tensor[] {
  using g = new t.Generator(seed);
  return [t.randn(g, [B, 1, 8, 8]), t.randn(g, [B, 1, 8, 8]), t.randn(g, [B, 1, 4, 4]), t.randn(g, [B, 1, 4, 4])];
}

function run(h: DinoHyper, steps: number, c = cfg): { state: TrainState; losses: number[] } {
  let state = initTrainState(c, h, 0);
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const v = views(100 + i);
    const r = trainStep(state, v, h, c);
    t.dispose([state, v]);
    state = r.state;
    losses.push(r.metrics.loss);
  }
  return { state, losses };
}

function maxDiff(a: TrainState, b: TrainState): number {
  const fa = stateDict(a.student), fb = stateDict(b.student);
  return Math.max(
    ...Object.keys(fa).map((k) => t.tidy(() => t.item(t.amax(t.abs(t.sub(t.to(fa[k], "f32"), t.to(fb[k], "f32"))))))),
  );
}

Deno.test("the live-tensor count is the same before and after 50 steps", () => {
  const h = dinoHyper({ epochs: 2, itersPerEpoch: 25, batchSize: 4, warmupEpochs: 1 });
  const before = t.liveTensors();
  const { state, losses } = run(h, 50);
  assert.equal(losses.length, 50);
  assert.ok(losses.every(Number.isFinite));
  t.dispose(state);
  assert.equal(t.liveTensors(), before);
});

Deno.test("a step leaves the old state untouched and usable", () => {
  const h = dinoHyper({ epochs: 1, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0, freezeLastLayer: 0 });
  const s0 = initTrainState(cfg, h, 0);
  const snapshot = t.tidy(() => t.keep(t.clone(stateDict(s0.student)["backbone.blocks.0.attn.qkv.weight"])));
  const v = views(1);
  const a = trainStep(s0, v, h, cfg);
  const b = trainStep(s0, v, h, cfg); // same input state: the same result
  assert.equal(maxDiff(a.state, b.state), 0);
  assert.equal(a.state.step, 1);
  assert.equal(s0.step, 0);
  const w0 = stateDict(s0.student)["backbone.blocks.0.attn.qkv.weight"];
  assert.equal(t.tidy(() => t.item(t.amax(t.abs(t.sub(w0, snapshot))))), 0);
  assert.ok(maxDiff(a.state, s0) > 0, "the new state differs");
  t.dispose([s0, a.state, b.state, v, snapshot]);
});

Deno.test("a donating step gives the same states as a pure one, written into the donated buffers", () => {
  for (const optimizer of ["adamw", "sgd", "lars"] as const) {
    const h = dinoHyper({ epochs: 2, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0, freezeLastLayer: 0, optimizer });
    const before = t.liveTensors();
    let pure = initTrainState(cfg, h, 0), donated = initTrainState(cfg, h, 0);
    for (let i = 0; i < 3; i++) {
      const v = views(200 + i);
      const key = "backbone.blocks.0.attn.qkv.weight";
      const a = trainStep(pure, v, h, cfg);
      const b = trainStep(donated, v, h, cfg, { donate: true });
      // The donated state's buffer now holds the new weights.
      assert.deepEqual(t.toArray(stateDict(donated.student)[key]), t.toArray(stateDict(b.state.student)[key]));
      assert.notDeepEqual(t.toArray(stateDict(pure.student)[key]), t.toArray(stateDict(a.state.student)[key]));
      t.dispose([pure, donated, v]);
      [pure, donated] = [a.state, b.state];
    }
    const flat = (s: TrainState): Flat => ({
      ...stateDict(s.student),
      ...stateDict(s.teacher),
      ...stateDict(s.optimizer),
    });
    const fa = flat(pure), fb = flat(donated);
    for (const k of Object.keys(fa)) {
      if (typeof fa[k] === "object") assert.deepEqual(t.toArray(fa[k]), t.toArray(fb[k]), `${optimizer} ${k}`);
    }
    t.dispose([pure, donated]);
    assert.equal(t.liveTensors(), before, optimizer);
  }
});

Deno.test("a timed step says where its time went, phase by phase, and steps as an untimed one", () => {
  const h = dinoHyper({ epochs: 1, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0 });
  const s0 = initTrainState(cfg, h, 0);
  const v = views(3);
  const a = trainStep(s0, v, h, cfg, { timed: true });
  const b = trainStep(s0, v, h, cfg);
  const phases = Object.keys(a.metrics.phases!);
  assert.deepEqual(phases, [
    "teacherForward",
    "studentForward",
    "loss",
    "backward",
    "center",
    "clipping",
    "optimizer",
    "ema",
  ]);
  assert.ok(Object.values(a.metrics.phases!).every((ms) => ms >= 0));
  assert.equal(b.metrics.phases, undefined);
  assert.equal(maxDiff(a.state, b.state), 0);
  t.dispose([s0, a.state, b.state, v]);
});

Deno.test("gradient accumulation over 2 micro-batches equals the full batch", () => {
  const base = { epochs: 1, itersPerEpoch: 3, batchSize: 4, warmupEpochs: 0, freezeLastLayer: 0 };
  const cfgNoDrop = dinoConfig({ ...cfg.vit, arch: "vit_tiny", ...cfg.head, dropPathRate: 0 });
  const full = run(dinoHyper(base), 3, cfgNoDrop);
  const accum = run(dinoHyper({ ...base, accumSteps: 2 }), 3, cfgNoDrop);
  const diff = maxDiff(full.state, accum.state);
  assert.ok(diff < 1e-5, `max parameter difference ${diff}`);
  full.losses.forEach((l, i) => assert.ok(Math.abs(l - accum.losses[i]) < 1e-5));
  t.dispose([full.state, accum.state]);
  assert.throws(() => run(dinoHyper({ ...base, accumSteps: 3 }), 1), /does not divide into 3 micro-batches/);
});

Deno.test("the last layer is frozen for freezeLastLayer epochs, then trains", () => {
  const h = dinoHyper({ epochs: 2, itersPerEpoch: 1, batchSize: 4, warmupEpochs: 0, freezeLastLayer: 1 });
  let state = initTrainState(cfg, h, 0);
  const v0 = stateDict(state.student)["head.last_layer.weight_v"];
  const first = trainStep(state, views(1), h, cfg);
  const v1 = stateDict(first.state.student)["head.last_layer.weight_v"];
  assert.equal(t.tidy(() => t.item(t.amax(t.abs(t.sub(v0, v1))))), 0, "frozen in epoch 0");
  t.dispose(state);
  state = first.state;
  const second = trainStep(state, views(2), h, cfg);
  const v2 = stateDict(second.state.student)["head.last_layer.weight_v"];
  assert.ok(t.tidy(() => t.item(t.amax(t.abs(t.sub(v1, v2))))) > 0, "trained in epoch 1");
  const g = stateDict(second.state.student)["head.last_layer.weight_g"];
  assert.equal(t.tidy(() => t.item(t.amax(t.abs(t.sub(g, 1))))), 0, "weight_g stays 1 with normLastLayer");
  t.dispose([state, second.state]);
});

Deno.test("ablations: teacher = student, MSE, no centering, Sinkhorn-Knopp, predictor, SGD", () => {
  const base = { epochs: 1, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0 };
  const noMomentum = run(dinoHyper({ ...base, teacherMode: "student" }), 2);
  const fs = stateDict(noMomentum.state.student), ft = stateDict(noMomentum.state.teacher);
  for (const k of Object.keys(ft)) assert.equal(t.tidy(() => t.item(t.amax(t.abs(t.sub(fs[k], ft[k]))))), 0, k);
  t.dispose(noMomentum.state);

  for (
    const o of [{ criterion: "mse" }, { centering: "none" }, { centering: "sinkhorn" }, { optimizer: "sgd" }] as const
  ) {
    const r = run(dinoHyper({ ...base, ...o }), 2);
    assert.ok(r.losses.every(Number.isFinite), JSON.stringify(o));
    if ("centering" in o) assert.equal(t.tidy(() => t.item(t.amax(t.abs(r.state.center)))), 0);
    t.dispose(r.state);
  }

  const pred = run(dinoHyper({ ...base, predictorDim: 12 }), 2);
  assert.deepEqual(pred.state.student.predictor!["0"].weight.shape, [12, 32]);
  assert.ok(!Object.keys(stateDict(pred.state.teacher)).some((k) => k.startsWith("predictor")));
  t.dispose(pred.state);
});

Deno.test("a batch-norm head trains, and its running statistics move", () => {
  const bnCfg = dinoConfig({ ...cfg.vit, arch: "vit_tiny", ...cfg.head, useBn: true, normLastLayer: false });
  const h = dinoHyper({ epochs: 1, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0 });
  const { state, losses } = run(h, 2, bnCfg);
  assert.ok(losses.every(Number.isFinite));
  const f = stateDict(state.student);
  assert.equal(t.item(f["head.mlp.1.num_batches_tracked"]), 2);
  assert.ok(t.tidy(() => t.item(t.amax(t.abs(f["head.mlp.1.running_mean"])))) > 0);
  t.dispose(state);
});

Deno.test("metrics report the schedules and the entropies", () => {
  const h = dinoHyper({
    epochs: 2,
    itersPerEpoch: 1,
    batchSize: 4,
    warmupEpochs: 1,
    warmupTeacherTempEpochs: 2,
    teacherTemp: 0.07,
  });
  const s0 = initTrainState(cfg, h, 0);
  const v = views(3);
  const { state, metrics } = trainStep(s0, v, h, cfg);
  assert.equal(metrics.lr, 0, "the warmup starts at 0");
  assert.equal(metrics.teacherTemp, 0.04);
  assert.equal(metrics.momentum, 0.996);
  assert.ok(metrics.teacherEntropy > 0 && metrics.teacherEntropy <= Math.log(32) + 1e-6);
  assert.ok(metrics.studentEntropy > 0 && metrics.studentEntropy <= Math.log(32) + 1e-6);
  t.dispose([s0, state, v]);
});

Deno.test("two steps on the test device equal the CPU's: student, teacher, center, optimizer and metrics", () => {
  const before = t.liveTensors();
  const h = dinoHyper({ epochs: 1, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0, freezeLastLayer: 0 });
  let cpu = initTrainState(cfg, h, 0), dev = onTestDevice(cpu);
  const losses: [number, number][] = [];
  for (let i = 0; i < 2; i++) {
    const v = views(300 + i), dv = onTestDevice(v);
    const a = trainStep(cpu, v, h, cfg), b = trainStep(dev, dv, h, cfg);
    losses.push([a.metrics.loss, b.metrics.loss]);
    t.dispose([cpu, dev, v, dv]);
    [cpu, dev] = [a.state, b.state];
  }
  assert.equal(dev.step, 2);
  for (const x of t.tensorsIn(dev)) assert.ok(x.device.startsWith(testDevice), `a state tensor on ${x.device}`);
  // On the CPU: the same steps twice, bit for bit. On CUDA: fp32 matrix products, cuDNN's convolutions possibly in
  // TF32 (see lib_test.ts's forward and backward on the test device), another summation order; drop path draws the
  // same masks on any device. 1e-2 relative L2 per tensor is ten TF32 roundings.
  const tol = testDevice === "cpu" ? 0 : 1e-2;
  const flat = (s: TrainState): Flat => ({
    ...stateDict({ student: s.student, teacher: s.teacher, optimizer: s.optimizer }),
    center: s.center,
  });
  const fa = flat(cpu), fb = flat(dev);
  assert.deepEqual(Object.keys(fb), Object.keys(fa));
  for (const k of Object.keys(fa)) {
    if (typeof fa[k] !== "object") continue;
    const e = t.tidy(() => relativeL2(t.to(fb[k], "f32"), t.to(fa[k], "f32")));
    assert.ok(e <= tol, `${k}: relative error ${e} > ${tol}`);
  }
  for (const [a, b] of losses) assert.ok(Math.abs(a - b) <= tol * a, `loss ${b} on the device, ${a} on the CPU`);
  t.dispose([cpu, dev]);
  assert.equal(t.liveTensors(), before);
});
