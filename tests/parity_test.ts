// Parity with the official PyTorch modules and training loop, on fixtures written by
// scripts/gen_fixtures.py (run with /usr/bin/python3, PyTorch 1.13). No Python is needed here.
import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { dinoLoss } from "../lib/loss.ts";
import { type DinoConfig, dinoConfig, type DinoParams, initDino, multiCropForward } from "../lib/model.ts";
import { readSafetensors } from "../lib/safetensors.ts";
import { dinoHyper, isTrainable, optimizerFor, type TrainState, trainStep } from "../lib/train.ts";
import { type Flat, loadStateDict, mapTree, stateDict } from "../lib/tree.ts";
import { intermediateLayers, lastSelfAttention, vitForward } from "../lib/vit.ts";
import type { AdamWState } from "../lib/optim.ts";

const fixture = readSafetensors(new URL("./fixtures/parity.safetensors", import.meta.url).pathname);
const F = fixture.tensors;
const meta = {
  cfg: JSON.parse(fixture.metadata.cfg),
  head: JSON.parse(fixture.metadata.head),
  hyper: JSON.parse(fixture.metadata.hyper),
};

const cfg: DinoConfig = dinoConfig({
  arch: "vit_tiny",
  embedDim: meta.cfg.embed_dim,
  depth: meta.cfg.depth,
  numHeads: meta.cfg.num_heads,
  patchSize: meta.cfg.patch_size,
  inChans: meta.cfg.in_chans,
  imgSize: meta.cfg.img_size,
  outDim: meta.head.out_dim,
  hiddenDim: meta.head.hidden_dim,
  bottleneckDim: meta.head.bottleneck_dim,
  nlayers: meta.head.nlayers,
  useBn: meta.head.use_bn,
  normLastLayer: meta.head.norm_last_layer,
});
const H = meta.hyper;
const hyper = dinoHyper({
  epochs: H.epochs,
  itersPerEpoch: H.iters_per_epoch,
  batchSize: H.batch,
  lr: H.lr,
  minLr: H.min_lr,
  warmupEpochs: H.warmup_epochs,
  weightDecay: H.weight_decay,
  weightDecayEnd: H.weight_decay_end,
  momentumTeacher: H.momentum_teacher,
  clipGrad: H.clip_grad,
  freezeLastLayer: H.freeze_last_layer,
  warmupTeacherTemp: H.warmup_teacher_temp,
  teacherTemp: H.teacher_temp,
  warmupTeacherTempEpochs: H.warmup_teacher_temp_epochs,
});

function prefixed(prefix: string): Flat {
  return Object.fromEntries(
    Object.entries(F).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
  );
}
function inputs(step: number): t.Tensor[] {
  const n = 2 + H.local_crops;
  return Array.from({ length: n }, (_, i) => F[`input.${step}.${i}`]);
}
function initialWeights(): DinoParams {
  using g = new t.Generator(0);
  const template = initDino(cfg, g);
  const p = loadStateDict(template, prefixed("init."));
  t.dispose(template);
  return p;
}

/** |actual - expected| <= tol * max|expected|, elementwise; names the tensor when not. */
function assertNear(actual: t.Tensor, expected: t.Tensor, tol: number, name: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${name}: shape`);
  t.tidy(() => {
    const scale = Math.max(t.item(t.amax(t.abs(expected))), 1e-12);
    const diff = t.item(t.amax(t.abs(t.sub(t.to(actual, "f32"), t.to(expected, "f32")))));
    assert.ok(diff <= tol * scale, `${name}: max |diff| ${diff.toExponential(3)} > ${tol} x ${scale.toExponential(3)}`);
  });
}

function assertState(s: TrainState, tag: string, tol: number): void {
  const student = stateDict(s.student), teacher = stateDict(s.teacher);
  let compared = 0;
  for (const [k, v] of Object.entries(prefixed(`${tag}.student.`))) {
    assertNear(student[k], v, tol, `${tag} student ${k}`), compared++;
  }
  for (const [k, v] of Object.entries(prefixed(`${tag}.teacher.`))) {
    assertNear(teacher[k], v, tol, `${tag} teacher ${k}`), compared++;
  }
  assertNear(s.center, F[`${tag}.center`], tol, `${tag} center`);
  const opt = s.optimizer as AdamWState;
  for (const [k, v] of Object.entries(prefixed(`${tag}.exp_avg.`))) {
    assertNear(opt.exp_avg[k], v, tol, `${tag} exp_avg ${k}`);
  }
  for (const [k, v] of Object.entries(prefixed(`${tag}.exp_avg_sq.`))) {
    assertNear(opt.exp_avg_sq[k], v, tol, `${tag} exp_avg_sq ${k}`);
  }
  for (const [k, v] of Object.entries(prefixed(`${tag}.step.`))) {
    assert.equal(opt.step[k], t.item(v), `${tag} step ${k}`);
  }
  // Parameters PyTorch never stepped (the frozen last layer) have untouched, zero moments here.
  for (const k of Object.keys(opt.step).filter((k) => !(`${tag}.step.${k}` in F))) {
    assert.equal(opt.step[k], 0, `${k} was never stepped`);
    assert.equal(t.tidy(() => t.item(t.amax(t.abs(opt.exp_avg[k])))), 0);
  }
  assert.ok(compared > 70, `compared ${compared} tensors`);
}

Deno.test("backbone forward equals PyTorch: CLS after the final norm, global and local (interpolated) crops", () => {
  const p = initialWeights();
  try {
    t.tidy(() => {
      const [g1, g2, l1, l2] = inputs(0);
      assertNear(vitForward(p.backbone, cfg.vit, t.cat([g1, g2])), F["forward.backbone_global"], 1e-5, "global CLS");
      assertNear(vitForward(p.backbone, cfg.vit, t.cat([l1, l2])), F["forward.backbone_local"], 1e-5, "local CLS");
    });
  } finally {
    t.dispose(p);
  }
});

Deno.test("last-block attention and intermediate layers equal PyTorch", () => {
  const p = initialWeights();
  try {
    t.tidy(() => {
      const [g1, , l1] = inputs(0);
      const attn = lastSelfAttention(p.backbone, cfg.vit, g1);
      assert.deepEqual(attn.shape, [H.batch, cfg.vit.numHeads, 17, 17]);
      assertNear(attn, F["forward.attention"], 1e-5, "attention");
      const layers = intermediateLayers(p.backbone, cfg.vit, l1, 2);
      layers.forEach((x, i) => assertNear(x, F[`forward.intermediate.${i}`], 1e-5, `intermediate ${i}`));
    });
  } finally {
    t.dispose(p);
  }
});

Deno.test("multi-crop head outputs, DINO loss and every gradient equal PyTorch", () => {
  const p = initialWeights();
  try {
    t.tidy(() => {
      const crops = inputs(0);
      const teacherOut = t.noGrad(() => multiCropForward(p, cfg, crops.slice(0, 2)).output);
      assertNear(teacherOut, F["step0.teacher_output"], 1e-5, "teacher output");
      const leaves = mapTree(p, (x, k) => (isTrainable(k, cfg) ? t.requiresGrad(x) : x));
      const studentOut = multiCropForward(leaves, cfg, crops).output;
      assertNear(studentOut, F["step0.student_output"], 1e-5, "student output");
      const epoch = Math.floor(H.first_iteration / H.iters_per_epoch);
      const teacherTemp = epoch < H.warmup_teacher_temp_epochs
        ? H.warmup_teacher_temp + (H.teacher_temp - H.warmup_teacher_temp) * epoch / (H.warmup_teacher_temp_epochs - 1)
        : H.teacher_temp;
      const { loss } = dinoLoss(studentOut, teacherOut, t.zeros([1, cfg.head.outDim]), {
        ncrops: crops.length,
        teacherTemp,
      });
      assertNear(loss, F["step0.loss"], 1e-5, "loss");
      const flat = stateDict(leaves);
      const keys = Object.keys(flat).filter((k) => isTrainable(k, cfg));
      const grads = t.grad(loss, keys.map((k) => flat[k]));
      const expected = prefixed("step0.grad.");
      assert.deepEqual([...keys].sort(), Object.keys(expected).sort(), "the same parameters get gradients");
      keys.forEach((k, i) => assertNear(grads[i], expected[k], 1e-5, `grad ${k}`));
    });
  } finally {
    t.dispose(p);
  }
});

Deno.test("one full step, and three, equal PyTorch: student, teacher, center and AdamW moments", () => {
  const student = initialWeights();
  const teacher = mapTree(student, (x) => t.clone(x));
  const opt = optimizerFor(hyper);
  const trainableFlat = Object.fromEntries(Object.entries(stateDict(student)).filter(([k]) => isTrainable(k, cfg)));
  let state: TrainState = {
    student,
    teacher,
    optimizer: (opt as ReturnType<typeof optimizerFor>).init(trainableFlat as Flat) as AdamWState,
    center: t.zeros([1, cfg.head.outDim]),
    step: H.first_iteration,
    rng: { seed: 0, counter: 0 },
  };
  const before = t.liveTensors();
  try {
    for (let s = 0; s < H.steps; s++) {
      const { state: next, metrics } = trainStep(state, inputs(s), hyper, cfg);
      t.dispose(state);
      state = next;
      if (s === 0) {
        assert.ok(Math.abs(metrics.loss - t.item(F["after1.loss"])) <= 1e-5 * Math.abs(t.item(F["after1.loss"])));
        assertState(state, "after1", 1e-5);
      }
    }
    assertState(state, `after${H.steps}`, 1e-4);
    assert.equal(t.liveTensors(), before, "a step keeps exactly as many tensors as it frees");
  } finally {
    t.dispose(state);
  }
});
