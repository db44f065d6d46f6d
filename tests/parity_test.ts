// Parity with the official PyTorch modules and training loop, on fixtures written by
// scripts/gen_fixtures.py (run with /usr/bin/python3, PyTorch 1.13). No Python is needed here.
import { officialHyper } from "./helpers.ts";
import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { dinoLoss } from "../lib/training/loss.ts";
import { dinoConfig, type DinoParams, initDino, multiCropForward, type ViTDinoConfig } from "../lib/model/dino.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { dinoHyper, isTrainable, type TrainState, trainStep } from "../lib/training/step.ts";
import { type Flat, loadStateDict, mapTree, stateDict } from "../lib/weights/tree.ts";
import { intermediateLayers, lastSelfAttention, vitForward, type ViTParams } from "../lib/model/vit.ts";
import type { AdamWState } from "../lib/training/optim.ts";

const fixture = readSafetensors(new URL("./fixtures/parity.safetensors", import.meta.url).pathname);
const F = fixture.tensors;
const meta = {
  cfg: JSON.parse(fixture.metadata.cfg),
  head: JSON.parse(fixture.metadata.head),
  hyper: JSON.parse(fixture.metadata.hyper),
};

const cfg: ViTDinoConfig = dinoConfig({
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
const hyper = dinoHyper(officialHyper(H));

function prefixed(prefix: string): Flat {
  return Object.fromEntries(
    Object.entries(F).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
  );
}
function inputs(step: number): t.Tensor[] {
  const n = 2 + H.local_crops;
  return Array.from({ length: n }, (_, i) => F[`input.${step}.${i}`]);
}
/** The module layout the fixture's weights are loaded into (its values are never used). */
const initialTemplate: DinoParams<ViTParams> = (() => {
  using g = new t.Generator(0);
  return initDino(cfg, g);
})();
function initialWeights(): DinoParams<ViTParams> {
  return loadStateDict(initialTemplate, prefixed("init."));
}

/**
 * |actual - expected| <= tol * max|expected| + slack, elementwise (slack: a tensor of per-element
 * allowances, or 0); names the tensor when not.
 */
function assertNear(actual: t.Tensor, expected: t.Tensor, tol: number, name: string, slack?: t.Tensor): void {
  assert.deepEqual(actual.shape, expected.shape, `${name}: shape`);
  t.tidy(() => {
    const scale = Math.max(t.item(t.amax(t.abs(expected))), 1e-12);
    const diff = t.abs(t.sub(t.to(actual, "f64"), t.to(expected, "f64")));
    const excess = t.item(t.amax(slack ? t.sub(diff, slack) : diff));
    assert.ok(
      excess <= tol * scale,
      `${name}: max |diff| ${excess.toExponential(3)} > ${tol} x ${scale.toExponential(3)}`,
    );
  });
}

/** The optimizer state saved after `tag` (init: none), in this project's layout. */
function fixtureOptimizer(tag: string, trainable: string[]): AdamWState {
  const m = prefixed(`${tag}.exp_avg.`), v = prefixed(`${tag}.exp_avg_sq.`), n = prefixed(`${tag}.step.`);
  const like = stateDict(initialTemplate);
  const moment = (src: Flat, k: string) => k in src ? t.clone(src[k]) : t.zerosLike(like[k]);
  return {
    exp_avg: Object.fromEntries(trainable.map((k) => [k, moment(m, k)])),
    exp_avg_sq: Object.fromEntries(trainable.map((k) => [k, moment(v, k)])),
    step: Object.fromEntries(trainable.map((k) => [k, k in n ? t.item(n[k]) : 0])),
  };
}

/** PyTorch's training state after `tag` ("init": before the first step). */
function fixtureState(tag: string): TrainState {
  const student = loadStateDict(initialTemplate, prefixed(tag === "init" ? "init." : `${tag}.student.`));
  const teacher = loadStateDict(initialTemplate, prefixed(tag === "init" ? "init." : `${tag}.teacher.`));
  const trainable = Object.keys(stateDict(student)).filter((k) => isTrainable(k, cfg));
  return {
    student,
    teacher,
    optimizer: fixtureOptimizer(tag, trainable),
    center: tag === "init" ? t.zeros([1, cfg.head.outDim]) : t.clone(F[`${tag}.center`]),
    step: H.first_iteration + (tag === "init" ? 0 : Number(tag.slice("after".length))),
    rng: { seed: 0, counter: 0 },
  };
}

/**
 * How far each weight may differ after one AdamW step. The gradients match PyTorch's to 1e-5 of their
 * largest element (the test above), but AdamW divides by the gradient's own size: where a gradient is within
 * rounding of zero, m / (sqrt(v) + eps) can take any value between -1 and 1, so that weight can move by up to
 * 2 lr. The allowance is how far PyTorch's own update moves when the gradient moves within that precision
 * (sampled across the interval); where the gradient is well above rounding it is negligible.
 */
function adamSlack(before: AdamWState, after: Flat, k: string, steps: number, lr: number): t.Tensor {
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  const m0 = t.to(before.exp_avg[k], "f64"), v0 = t.to(before.exp_avg_sq[k], "f64");
  const g = t.div(t.sub(t.to(after[k], "f64"), t.mul(m0, beta1)), 1 - beta1); // PyTorch's (clipped) gradient
  const precision = 1e-5 * t.item(t.amax(t.abs(g)));
  const update = (dg: number) => {
    const gi = t.add(g, dg);
    const m = t.add(t.mul(m0, beta1), t.mul(gi, 1 - beta1));
    const v = t.add(t.mul(v0, beta2), t.mul(t.mul(gi, gi), 1 - beta2));
    const denom = t.add(t.sqrt(t.div(v, 1 - beta2 ** steps)), eps);
    return t.mul(t.div(t.div(m, 1 - beta1 ** steps), denom), lr);
  };
  const u0 = update(0);
  let slack = t.zerosLike(u0);
  for (let j = -8; j <= 8; j++) slack = t.maximum(slack, t.abs(t.sub(update((j / 8) * precision), u0)));
  return slack;
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

Deno.test("each training step from PyTorch's state equals PyTorch's: student, teacher, center, AdamW moments", () => {
  for (let s = 0; s < H.steps; s++) {
    const before = s === 0 ? "init" : `after${s}`, tag = `after${s + 1}`;
    const state = fixtureState(before);
    const live = t.liveTensors();
    const { state: next, metrics } = trainStep(state, inputs(s), hyper, cfg);
    try {
      const loss = t.item(F[`${tag}.loss`]);
      assert.ok(Math.abs(metrics.loss - loss) <= 1e-5 * Math.abs(loss), `${tag} loss ${metrics.loss} != ${loss}`);
      assert.equal(next.step, state.step + 1);
      t.tidy(() => assertStep(state, next, tag, metrics.lr, metrics.momentum));
    } finally {
      t.dispose(next);
    }
    assert.equal(t.liveTensors(), live, "a step keeps exactly as many tensors as it frees");
    t.dispose(state);
  }
});

function assertStep(before: TrainState, s: TrainState, tag: string, lr: number, momentum: number): void {
  const student = stateDict(s.student), teacher = stateDict(s.teacher);
  const opt = s.optimizer as AdamWState, prev = before.optimizer as AdamWState;
  const m = prefixed(`${tag}.exp_avg.`), v = prefixed(`${tag}.exp_avg_sq.`), n = prefixed(`${tag}.step.`);
  let compared = 0;
  for (const [k, expected] of Object.entries(prefixed(`${tag}.student.`))) {
    const stepped = k in n;
    const slack = stepped ? adamSlack(prev, m, k, t.item(n[k]), lr) : undefined;
    assertNear(student[k], expected, 1e-5, `${tag} student ${k}`, slack);
    // The teacher moves (1 - momentum) of the way to the student, and so does its allowance.
    const teacherSlack = slack ? t.mul(slack, 1 - momentum) : undefined;
    assertNear(teacher[k], F[`${tag}.teacher.${k}`], 1e-5, `${tag} teacher ${k}`, teacherSlack);
    compared++;
  }
  assertNear(s.center, F[`${tag}.center`], 1e-5, `${tag} center`);
  for (const [k, expected] of Object.entries(m)) assertNear(opt.exp_avg[k], expected, 1e-5, `${tag} exp_avg ${k}`);
  for (const [k, expected] of Object.entries(v)) {
    assertNear(opt.exp_avg_sq[k], expected, 1e-5, `${tag} exp_avg_sq ${k}`);
  }
  for (const [k, count] of Object.entries(n)) assert.equal(opt.step[k], t.item(count), `${tag} step ${k}`);
  // Parameters PyTorch never stepped (the frozen last layer) have untouched, zero moments here.
  for (const k of Object.keys(opt.step).filter((k) => !(k in n))) {
    assert.equal(opt.step[k], 0, `${k} was never stepped`);
    assert.equal(t.item(t.amax(t.abs(opt.exp_avg[k]))), 0);
  }
  assert.ok(compared > 35, `compared ${compared} tensors`);
}
