// ResNet backbones and LARS against PyTorch, on fixtures written by scripts/gen_resnet_fixtures.py (run with
// /usr/bin/python3, PyTorch 1.13, torchvision 0.14): the key set and shapes of every depth, the forward of a ResNet-18
// (BasicBlock) and a ResNet-50 (Bottleneck) in training and evaluation mode, their gradients and moved buffers; the
// official utils.LARS over 3 steps; and three official DINO iterations on a ResNet-18 with a batch-norm head and LARS.
// The weights are made by a formula both sides compute bit for bit (see the script), so the fixtures need not hold
// them; the formula and the sizes are chosen so that PyTorch's own results move by under 1e-5 with the thread count and
// the CPU kernel set, and CI runs these tests at 1 and 2 threads on every kernel set the CPU has.
import { officialHyper } from "./helpers.ts";
import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { lars, type LARSState } from "../lib/training/optim.ts";
import { dinoHyper, initTrainState, type TrainState, trainStep } from "../lib/training/step.ts";
import { dinoConfig } from "../lib/model/dino.ts";
import { type Flat, loadStateDict, mapTree, stateDict } from "../lib/weights/tree.ts";
import {
  initResNet,
  RESNET_ARCHS,
  type ResNetArch,
  resnetConfig,
  resnetFeatures,
  resnetForward,
} from "../lib/model/resnet.ts";

const DIR = new URL("./fixtures/resnet/", import.meta.url).pathname;

/** offset + scale * u(i, k), u on [-0.5, 0.5) from 24 bits of a 32-bit hash: the generator's formula, exactly. */
export function pattern(shape: readonly number[], k: number, scale = 1, offset = 0): t.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let x = (i + k * 0x9E3779B9) >>> 0; // lowbias32
    x = Math.imul(x ^ (x >>> 16), 0x7FEB352D) >>> 0;
    x = Math.imul(x ^ (x >>> 15), 0x846CA68B) >>> 0;
    x = (x ^ (x >>> 16)) >>> 0;
    out[i] = offset + scale * ((x >>> 8) / 16777216 - 0.5);
  }
  return t.fromBytes(out, "f32", shape);
}

/** A tree shaped like `template` whose tensors named in `specs` are made by the formula; the rest are copies. */
export function patterned<T extends object>(template: T, specs: [string, number, number][]): T {
  const flat = stateDict(template);
  const made: Flat = Object.fromEntries(Object.entries(flat).map(([k, v]) => [k, t.clone(v)]));
  specs.forEach(([key, scale, offset], k) => {
    assert.ok(key in flat, `the model has no ${key}`);
    made[key].dispose();
    made[key] = pattern(flat[key].shape, k, scale, offset);
  });
  const tree = loadStateDict(template, made);
  t.dispose(made);
  return tree;
}

/** |actual - expected| <= tol * max(max|expected|, floor), elementwise; names the tensor when not. */
export function assertNear(actual: t.Tensor, expected: t.Tensor, tol: number, name: string, floor = 0): void {
  assert.deepEqual(actual.shape, expected.shape, `${name}: shape`);
  t.tidy(() => {
    const scale = Math.max(t.item(t.amax(t.abs(t.to(expected, "f64")))), floor, 1e-12);
    const diff = t.item(t.amax(t.abs(t.sub(t.to(actual, "f64"), t.to(expected, "f64")))));
    assert.ok(diff <= tol * scale, `${name}: max |diff| ${diff.toExponential(3)} > ${tol} x ${scale.toExponential(3)}`);
  });
}

/**
 * `actual` against a fixture entry that is either the whole tensor (`name`) or, for a large one, every
 * stride-th element (`name.sub`, stride ceil(n / limit)) and the sum of squares (`name.sumsq`). Returns whether
 * the name was found.
 */
export function assertSampled(
  actual: t.Tensor,
  fixture: Flat,
  name: string,
  tol: number,
  limit: number,
  floor = 0,
): boolean {
  if (name in fixture) {
    assertNear(actual, fixture[name], tol, name, floor);
    return true;
  }
  const sub = fixture[`${name}.sub`];
  if (!sub) return false;
  t.tidy(() => {
    const n = actual.shape.reduce((a, b) => a * b, 1);
    const stride = Math.ceil(n / limit);
    assertNear(t.slice(t.reshape(actual, [-1]), 0, 0, n, stride), sub, tol, `${name} (every ${stride}th)`, floor);
    const sumsq = t.item(t.sum(t.mul(t.to(actual, "f64"), t.to(actual, "f64"))));
    const expected = t.item(fixture[`${name}.sumsq`]);
    assert.ok(Math.abs(sumsq - expected) <= 2 * tol * expected, `${name}: sum of squares ${sumsq} != ${expected}`);
  });
  return true;
}

Deno.test("every torchvision ResNet's state_dict keys, in order, and shapes (fc = Identity)", () => {
  const { tensors, metadata } = readSafetensors(`${DIR}resnet18.safetensors`);
  t.dispose(tensors);
  const table = JSON.parse(metadata.keys) as Record<string, [string, number[]][]>;
  assert.deepEqual(Object.keys(table), Object.keys(RESNET_ARCHS));
  for (const arch of Object.keys(RESNET_ARCHS) as ResNetArch[]) {
    using g = new t.Generator(0);
    const p = initResNet(resnetConfig(arch), g);
    try {
      const ours = Object.entries(stateDict(p)).map(([k, v]) => [k, v.shape]);
      assert.deepEqual(ours, table[arch], arch);
    } finally {
      t.dispose(p);
    }
  }
});

for (
  const [arch, norms, limit] of [["resnet18", 20, 2048], ["resnet50", 53, 256]] as const
) {
  Deno.test(`a ${arch}'s training forward, every gradient and moved buffer, then evaluation, equal torchvision's`, () => {
    const { tensors: F, metadata } = readSafetensors(`${DIR}${arch}.safetensors`);
    const live = t.liveTensors();
    const cfg = resnetConfig(arch);
    using g = new t.Generator(0);
    const template = initResNet(cfg, g);
    const p = patterned(template, JSON.parse(metadata.specs));
    t.dispose(template);
    try {
      t.tidy(() => {
        const x = t.requiresGrad(F.x);
        const leaves = mapTree(
          p,
          (v, k) => (k.endsWith("num_batches_tracked") || /running_/.test(k) ? v : t.requiresGrad(v)),
        );
        const { output, bnStats } = resnetForward(leaves, cfg, x, { training: true });
        assertNear(output, F["train.output"], 1e-5, "training output");
        const flat = stateDict(leaves);
        const keys = Object.keys(flat).filter((k) => flat[k].requiresGrad);
        const grads = t.grad(t.sum(t.mul(output, F.r)), [x, ...keys.map((k) => flat[k])]);
        assertNear(grads[0], F["train.grad.x"], 1e-5, "grad of the input");
        keys.forEach((k, i) =>
          assert.ok(assertSampled(grads[i + 1], F, `train.grad.${k}`, 1e-5, limit), `no gradient ${k}`)
        );
        const buffers = Object.keys(flat).filter((k) => !flat[k].requiresGrad);
        assert.equal(buffers.length, 3 * norms);
        assert.deepEqual(Object.keys(bnStats).sort(), buffers.sort());
        for (const k of buffers) {
          if (k.endsWith("num_batches_tracked")) assert.equal(t.item(bnStats[k]), 1, k);
          else assert.ok(assertSampled(bnStats[k], F, `train.buffer.${k}`, 1e-5, limit), `no buffer ${k}`);
        }
        // Evaluation mode with the moved buffers: the running statistics.
        const moved = loadStateDict(p, { ...stateDict(p), ...bnStats });
        assertNear(resnetFeatures(moved, cfg, F.x), F["eval.output"], 1e-5, "evaluation output");
      });
    } finally {
      t.dispose([p, F]);
    }
    assert.equal(t.liveTensors(), live - Object.keys(F).length, "the forward passes leave nothing behind");
  });
}

Deno.test("ResNet forward passes never change their inputs, run on 1-channel images and name a wrong shape", () => {
  using g = new t.Generator(3);
  const cfg = resnetConfig("resnet18", 1);
  const p = initResNet(cfg, g);
  try {
    const before = t.tidy(() => t.toArray(p.layer2[0].bn1.running_mean));
    t.tidy(() => {
      const r = resnetForward(p, cfg, t.randn(g, [3, 1, 28, 28]), { training: true });
      assert.deepEqual(r.output.shape, [3, 512]);
      assert.notDeepEqual(t.toArray(r.bnStats["layer2.0.bn1.running_mean"]), before);
    });
    assert.deepEqual(t.tidy(() => t.toArray(p.layer2[0].bn1.running_mean)), before);
    assert.throws(() => t.tidy(() => resnetFeatures(p, cfg, t.randn(g, [1, 3, 28, 28]))), /takes \[B, 1, H, W\]/);
  } finally {
    t.dispose(p);
  }
});

Deno.test("LARS equals the official utils.LARS over 3 steps: trust ratio, the zero-norm branch, 1-d weights, no gradient", () => {
  const { tensors: F, metadata } = readSafetensors(`${DIR}lars.safetensors`);
  const lrs = JSON.parse(metadata.lr) as number[], wds = JSON.parse(metadata.weight_decay) as number[];
  const live = t.liveTensors();
  const opt = lars();
  let params: Flat = Object.fromEntries(
    Object.entries(F).filter(([k]) => k.startsWith("init.")).map(([k, v]) => [
      k.slice("init.".length),
      t.clone(v),
    ]),
  );
  assert.deepEqual(Object.keys(params), [
    "zero", // all zeros: its trust ratio is 1 at the first step
    "frozen", // no gradient at the first step: skipped
    "fc.weight",
    "fc.bias",
    "conv.weight",
    "conv.bias",
    "norm.weight",
    "norm.bias",
  ]);
  let state = opt.init(params);
  try {
    for (let s = 0; s < 3; s++) {
      const grads: Flat = {};
      for (const k of Object.keys(params)) if (!(s === 0 && k === "frozen")) grads[k] = F[`step${s}.grad.${k}`];
      const next = t.tidy(() => opt.update(params, grads, state, { lr: lrs[s], weightDecay: wds[s] }));
      t.dispose([params, state]);
      ({ params, state } = next);
      for (const k of Object.keys(params)) {
        assertNear(params[k], F[`step${s}.param.${k}`], 1e-6, `step ${s} ${k}`);
        if (`step${s}.mu.${k}` in F) assertNear(state.mu[k], F[`step${s}.mu.${k}`], 1e-6, `step ${s} mu ${k}`);
        else assert.equal(t.tidy(() => t.item(t.amax(t.abs(state.mu[k])))), 0, `${k} never stepped`);
      }
    }
  } finally {
    t.dispose([params, state, F]);
  }
  assert.equal(t.liveTensors(), live - Object.keys(F).length);
});

Deno.test("three official DINO iterations on a ResNet-18 with a batch-norm head and LARS: loss, center, buffers, weights", () => {
  const { tensors: F, metadata } = readSafetensors(`${DIR}dino_resnet18.safetensors`);
  const H = JSON.parse(metadata.hyper), head = JSON.parse(metadata.head);
  const cfg = dinoConfig({
    arch: "resnet18",
    inChans: 3,
    outDim: head.out_dim,
    hiddenDim: head.hidden_dim,
    bottleneckDim: head.bottleneck_dim,
    useBn: head.use_bn,
    normLastLayer: head.norm_last_layer,
  });
  const hyper = dinoHyper({
    ...officialHyper(H),
    optimizer: "lars",
  });
  const fresh = initTrainState(cfg, hyper, 0);
  const student = patterned(fresh.student, JSON.parse(metadata.specs));
  let state: TrainState = {
    ...fresh,
    student,
    teacher: mapTree(student, (v) => t.clone(v)), // teacher.load_state_dict(student.state_dict()): buffers too
    step: H.first_iteration,
  };
  t.dispose([fresh.student, fresh.teacher]);
  const sizes = [H.global_size, H.global_size, ...Array(H.local_crops).fill(H.local_size)];
  try {
    for (let s = 0; s < H.steps; s++) {
      const tag = `after${s + 1}`;
      const views = sizes.map((z, i) => pattern([H.batch, 3, z, z], 2000 + 10 * s + i, Math.sqrt(12)));
      const { state: next, metrics } = trainStep(state, views, hyper, cfg);
      t.dispose([state, views]);
      state = next;
      const loss = t.item(F[`${tag}.loss`]);
      assert.ok(Math.abs(metrics.loss - loss) <= 1e-5 * loss, `${tag} loss ${metrics.loss} != ${loss}`);
      assertNear(state.center, F[`${tag}.center`], 1e-5, `${tag} center`);
      let compared = 0;
      for (const [net, tree] of [["student", state.student], ["teacher", state.teacher]] as const) {
        for (const [k, v] of Object.entries(stateDict(tree))) {
          if (k.endsWith("num_batches_tracked")) {
            assert.equal(t.item(v), t.item(F[`${tag}.${net}.${k}`]), `${tag} ${net} ${k}`);
          } else {
            assert.ok(assertSampled(v, F, `${tag}.${net}.${k}`, 1e-5, 512), `${tag}: no ${net} ${k} in the fixture`);
          }
          compared++;
        }
      }
      const mu = (state.optimizer as LARSState).mu;
      for (const [k, v] of Object.entries(mu)) {
        // A Linear's bias just before batch norm has a zero gradient in exact arithmetic (the norm subtracts the
        // batch mean): its momentum is rounding, ~1e-6 of the norm's own bias's, and is held to that scale.
        const norm = /^(head\.mlp\.)(\d+)\.bias$/.exec(k);
        const next = norm && `${norm[1]}${Number(norm[2]) + 1}`;
        const floor = next && `${next}.running_mean` in stateDict(state.student)
          ? t.tidy(() => t.item(t.amax(t.abs(F[`${tag}.mu.${next}.bias`]))))
          : 0;
        if (!assertSampled(v, F, `${tag}.mu.${k}`, 1e-5, 512, floor)) {
          assert.equal(t.tidy(() => t.item(t.amax(t.abs(v)))), 0, `${tag}: ${k} never stepped, yet has momentum`);
        }
      }
      assert.ok(compared > 2 * 120, `compared ${compared} tensors`);
    }
  } finally {
    t.dispose([state, F]);
  }
});
