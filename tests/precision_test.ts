/**
 * Mixed precision (`--precision`): a bf16 step against the fp32 step, the
 * fp16 loss scaler's skip, backoff and growth (on the CPU, in fp32, with an
 * overflow made by a NaN crop), its checkpoint round trip, and fp16 refused
 * on the CPU; and a reduced-precision step with the loss scaler on the test
 * device (fp16 on CUDA, bf16 on the CPU) against the CPU's fp32 step.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured, onTestDevice, testDevice } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { dinoConfig, multiCropForward } from "../lib/model/dino.ts";
import { attention, initViT, vitConfig } from "../lib/model/vit.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { type DinoHyper, dinoHyper, initTrainState, type TrainState, trainStep } from "../lib/training/step.ts";
import { lossScaler } from "../lib/training/scaler.ts";
import type { SGDState } from "../lib/training/optim.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { type Flat, loadStateDict, stateDict } from "../lib/weights/tree.ts";
import { dinoLoss } from "../lib/training/loss.ts";

const cfg = dinoConfig({
  arch: "vit_tiny",
  embedDim: 32,
  numHeads: 2,
  depth: 2,
  imgSize: 16,
  patchSize: 4,
  inChans: 1,
  outDim: 64,
  hiddenDim: 48,
  bottleneckDim: 16,
  dropPathRate: 0.1,
});

function views(seed: number, B = 8): t.Tensor[] {
  using g = new t.Generator(seed);
  return [t.randn(g, [B, 1, 16, 16]), t.randn(g, [B, 1, 16, 16]), t.randn(g, [B, 1, 8, 8]), t.randn(g, [B, 1, 8, 8])];
}

/** SGD without weight decay or clipping: after one step its momentum buffers are the raw gradients. */
function hyper(o: Partial<DinoHyper> = {}): DinoHyper {
  return dinoHyper({
    epochs: 1,
    itersPerEpoch: 4,
    batchSize: 8,
    warmupEpochs: 0,
    optimizer: "sgd",
    weightDecay: 0,
    weightDecayEnd: 0,
    clipGrad: 0,
    freezeLastLayer: 0,
    ...o,
  });
}

function oneStep(h: DinoHyper, state?: TrainState, v = views(1)): ReturnType<typeof trainStep> {
  const s0 = state ?? initTrainState(cfg, h, 0);
  const r = trainStep(s0, v, h, cfg);
  t.dispose([v, state ? [] : s0]);
  return r;
}

/** ||a - b|| / ||b|| over a tensor's elements. */
function relativeError(a: t.Tensor, b: t.Tensor): number {
  const x = t.toArray(a) as number[], y = t.toArray(b) as number[];
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function bitEqual(a: Flat, b: Flat): boolean {
  return Object.keys(a).every((k) => {
    const y = t.toArray(b[k]);
    return t.toArray(a[k]).every((x, i) => Object.is(x, y[i]));
  });
}

/** A checkpoint's metadata (its tensors freed). */
function metadataOf(path: string): Record<string, string> {
  const { tensors, metadata } = t.readSafetensors(path);
  t.dispose(tensors);
  return metadata;
}

Deno.test("a bf16 step's gradients, loss and center are within bf16 tolerance of the fp32 step's", () => {
  const before = t.liveTensors();
  const f = oneStep(hyper({ precision: "fp32" })), b = oneStep(hyper({ precision: "bf16" }));
  // bf16 keeps 8 significant bits: each rounding of a product's inputs or output is off by at most 2^-9 relatively.
  // A gradient passes through a few such roundings per layer, forward and backward, and they mostly average out:
  // measured 0.4% to 1.3% (relative L2 error per tensor) on this network. The bound is 10 x bf16's spacing, 2^-8:
  // wide of the measurement, and far below what a wrong cast (a product left out, a softmax in bf16 fed to the
  // loss, a gradient lost at a cast) gives, 10% and more.
  const tolerance = 10 * 2 ** -8;
  const gf = stateDict((f.state.optimizer as SGDState).momentum_buffer);
  const gb = stateDict((b.state.optimizer as SGDState).momentum_buffer);
  assert.deepEqual(Object.keys(gb), Object.keys(gf));
  let worst = 0;
  for (const k of Object.keys(gf)) {
    assert.equal(gb[k].dtype, "f32", `${k}: the gradient reaching the fp32 master is fp32`);
    const e = relativeError(gb[k], gf[k]);
    assert.ok(e <= tolerance, `${k}: relative error ${e} > ${tolerance}`);
    worst = Math.max(worst, e);
  }
  assert.ok(worst > 0, "the bf16 step computed something in bf16"); // not an fp32 step in disguise
  assert.ok(Math.abs(b.metrics.loss - f.metrics.loss) <= 2 ** -8 * f.metrics.loss, "loss");
  assert.ok(relativeError(b.state.center, f.state.center) <= tolerance, "center");
  // Everything the state keeps is fp32: masters, teacher, center, optimizer.
  for (const x of t.tensorsIn(b.state)) assert.equal(x.dtype === "i64" ? "f32" : x.dtype, "f32");
  t.dispose([f.state, b.state]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("under bf16 the network's output is fp32 and differs from fp32's only by bf16 rounding", () => {
  const before = t.liveTensors();
  const s = initTrainState(cfg, hyper(), 0);
  const v = views(2);
  const [f, b] = t.tidy(() =>
    t.noGrad(() => [
      multiCropForward(s.student, cfg, v).output,
      multiCropForward(s.student, cfg, v, { precision: "bf16" }).output,
    ])
  );
  assert.deepEqual([f.dtype, b.dtype, b.shape], ["f32", "f32", [32, 64]]);
  const e = relativeError(b, f);
  assert.ok(e > 0 && e <= 10 * 2 ** -8, `relative error ${e}`);
  t.dispose([s, v, f, b]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("the loss scaler backs off by half on an overflow and doubles after growth_interval finite steps", () => {
  const scaler = lossScaler({ growthInterval: 3 });
  const seen: [number, number][] = [];
  let s = scaler.init();
  for (const finite of [true, true, false, true, true, true, true]) {
    s = scaler.update(s, finite);
    seen.push([s.scale, s._growth_tracker]);
  }
  assert.deepEqual(seen, [[65536, 1], [65536, 2], [32768, 0], [32768, 1], [32768, 2], [65536, 0], [65536, 1]]);
  // GradScaler's defaults, and a grown scale that would overflow fp32 is not taken.
  assert.deepEqual(lossScaler().init(), {
    scale: 65536,
    growth_factor: 2,
    backoff_factor: 0.5,
    growth_interval: 2000,
    _growth_tracker: 0,
  });
  const top = lossScaler({ initScale: 2 ** 127, growthInterval: 1 });
  assert.equal(top.update(top.init(), true).scale, 2 ** 127);
  assert.throws(() => lossScaler({ backoffFactor: 1 }), /backoff factor/);
});

Deno.test("with a loss scaler, a step whose gradients overflow is skipped and the scale backs off", () => {
  const before = t.liveTensors();
  const h = hyper({ optimizer: "adamw", weightDecay: 0.04, clipGrad: 3 });
  const s0 = { ...initTrainState(cfg, h, 0), scaler: lossScaler({ growthInterval: 2 }).init() };
  // A NaN in a local crop: only the student sees it, so its gradients are NaN, as an fp16 overflow makes them.
  const bad = views(3);
  const poisoned = t.tidy(() => t.mul(bad[2], t.tensor([NaN])));
  const r1 = trainStep(s0, [bad[0], bad[1], poisoned, bad[3]], h, cfg);
  assert.deepEqual([r1.metrics.skipped, r1.metrics.lossScale, r1.state.scaler], [true, 65536, {
    ...s0.scaler,
    scale: 32768,
    _growth_tracker: 0,
  }]);
  assert.ok(bitEqual(stateDict(r1.state.student), stateDict(s0.student)), "the student is unchanged");
  assert.ok(bitEqual(stateDict(r1.state.optimizer), stateDict(s0.optimizer)), "the optimizer is unchanged");
  assert.deepEqual((r1.state.optimizer as { step: Record<string, number> }).step, (s0.optimizer as never)["step"]);
  assert.equal(r1.state.step, 1); // the iteration counts (the schedules move on), as the official loop's
  // The next finite step is taken; the second finite one in a row grows the scale back.
  const more = [views(4), views(5)];
  const r2 = trainStep(r1.state, more[0], h, cfg);
  assert.deepEqual([r2.metrics.skipped, r2.state.scaler?.scale, r2.state.scaler?._growth_tracker], [false, 32768, 1]);
  assert.ok(!bitEqual(stateDict(r2.state.student), stateDict(r1.state.student)), "the student moved");
  const r3 = trainStep(r2.state, more[1], h, cfg);
  assert.deepEqual([r3.state.scaler?.scale, r3.state.scaler?._growth_tracker], [65536, 0]);
  t.dispose([s0, bad, poisoned, more, r1.state, r2.state, r3.state]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("a finite step with a power-of-two loss scale equals the unscaled step bit for bit in fp32", () => {
  const before = t.liveTensors();
  const h = hyper({ optimizer: "adamw", weightDecay: 0.04, clipGrad: 3 });
  const plain = oneStep(h);
  const s0 = { ...initTrainState(cfg, h, 0), scaler: lossScaler().init() };
  const scaled = oneStep(h, s0);
  assert.equal(scaled.metrics.skipped, false);
  assert.equal(scaled.metrics.loss, plain.metrics.loss);
  assert.ok(bitEqual(stateDict(scaled.state.student), stateDict(plain.state.student)));
  assert.ok(bitEqual(stateDict(scaled.state.optimizer), stateDict(plain.state.optimizer)));
  t.dispose([plain.state, s0, scaled.state]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("a checkpoint keeps the loss scaler as fp16_scaler, GradScaler's state_dict", () => {
  const before = t.liveTensors();
  const dir = Deno.makeTempDirSync();
  const config = makeSettings("fmnist", { depth: 1, embedDim: 32, numHeads: 2, outDim: 64, precision: "fp16" });
  const state = initTrainState(networkConfig(config, 1), dinoHyper(config), 0);
  assert.deepEqual(state.scaler, lossScaler().init()); // fp16 starts a scaler
  const moved = { ...state, scaler: { ...state.scaler!, scale: 1024, _growth_tracker: 17 } };
  const path = join(dir, "c.safetensors");
  saveCheckpoint(path, moved, { config, channels: 1, epoch: 0, normalization: { mean: [0.5], std: [0.5] } });
  const saved = JSON.parse(metadataOf(path).fp16_scaler);
  assert.deepEqual(saved, {
    scale: 1024,
    growth_factor: 2,
    backoff_factor: 0.5,
    growth_interval: 2000,
    _growth_tracker: 17,
  });
  const loaded = loadCheckpoint(path);
  assert.deepEqual(loaded.state.scaler, moved.scaler);
  // Without a scaler (fp32), none is written and none comes back.
  const config32 = { ...config, precision: "fp32" as const };
  const plain = initTrainState(networkConfig(config32, 1), dinoHyper(config32), 0);
  assert.equal(plain.scaler, undefined);
  saveCheckpoint(path, plain, { config: config32, channels: 1, epoch: 0, normalization: { mean: [0], std: [1] } });
  assert.equal(metadataOf(path).fp16_scaler, undefined);
  const loaded32 = loadCheckpoint(path);
  assert.equal(loaded32.state.scaler, undefined);
  t.dispose([state, loaded.state, plain, loaded32.state]);
  Deno.removeSync(dir, { recursive: true });
  assert.equal(t.liveTensors(), before);
});

Deno.test("fp16 on the CPU is refused, naming bf16 and CUDA as the fixes", async () => {
  const before = t.liveTensors();
  const h = hyper({ precision: "fp16" });
  const s = initTrainState(cfg, h, 0);
  const v = views(6);
  assert.throws(() => trainStep(s, v, h, cfg), /fp16 needs a CUDA device.*use bf16 on the CPU/);
  t.dispose([s, v]);
  assert.equal(t.liveTensors(), before);
  const out = join(Deno.makeTempDirSync(), "run");
  const r = await captured(() => train(["--precision", "fp16", "--device", "cpu", "--output-dir", out]));
  assert.equal(r.value, 2);
  assert.match(r.err, /^error: --precision fp16 needs a CUDA device.*--precision bf16 on the CPU/);
  assert.ok(!t.exists(out), "nothing written");
});

Deno.test("bf16 is refused for ResNets with a message naming the settings", async () => {
  const out = join(Deno.makeTempDirSync(), "run");
  const r = await captured(() => train(["--arch", "resnet18", "--precision", "bf16", "--output-dir", out]));
  assert.equal(r.value, 2);
  assert.match(r.err, /--precision bf16 is implemented for ViTs; --arch resnet18 trains in fp32/);
});

Deno.test("a bf16 step's gradients are within bf16 tolerance of the fp32 step's, and no further from them than PyTorch's CPU autocast's", () => {
  const before = t.liveTensors();
  // The parity scenario's first step (scripts/gen_fixtures.py), and PyTorch's autocast gradients of it
  // (scripts/gen_precision_fixtures.py).
  const parity = t.readSafetensors(new URL("./fixtures/parity.safetensors", import.meta.url).pathname);
  const amp = t.readSafetensors(new URL("./fixtures/precision.safetensors", import.meta.url).pathname);
  const c = JSON.parse(parity.metadata.cfg),
    hd = JSON.parse(parity.metadata.head),
    H = JSON.parse(parity.metadata.hyper);
  const net = dinoConfig({
    arch: "vit_tiny",
    embedDim: c.embed_dim,
    depth: c.depth,
    numHeads: c.num_heads,
    patchSize: c.patch_size,
    inChans: c.in_chans,
    imgSize: c.img_size,
    outDim: hd.out_dim,
    hiddenDim: hd.hidden_dim,
    bottleneckDim: hd.bottleneck_dim,
  });
  const template = initTrainState(net, hyper(), 0);
  const init = Object.fromEntries(
    Object.entries(parity.tensors).filter(([k]) => k.startsWith("init.")).map(([k, v]) => [k.slice(5), v]),
  );
  const student = loadStateDict(template.student, init);
  const crops = Array.from({ length: 2 + H.local_crops }, (_, i) => parity.tensors[`input.0.${i}`]);
  const keys = Object.keys(stateDict(student)).filter((k) => !k.endsWith("weight_g"));
  const ours = t.tidy(() => {
    const teacherOut = t.noGrad(() => multiCropForward(student, net, crops.slice(0, 2), { precision: "bf16" }).output);
    const flat = stateDict(student);
    const leaves: Flat = { ...flat };
    for (const k of keys) leaves[k] = t.requiresGrad(flat[k]);
    const out = multiCropForward(loadStateDict(template.student, leaves), net, crops, { precision: "bf16" }).output;
    const center = t.zeros([1, hd.out_dim]);
    const { loss } = dinoLoss(out, teacherOut, center, {
      ncrops: crops.length,
      teacherTemp: Number(amp.metadata.teacher_temp),
    });
    const grads = t.grad(loss, keys.map((k) => leaves[k]));
    return Object.fromEntries(keys.map((k, i) => [k, grads[i]]));
  });
  // Errors against the fp32 gradients, pooled over every tensor (relative L2), and per tensor against PyTorch's.
  let oursSq = 0, torchSq = 0, refSq = 0;
  for (const k of keys) {
    const f = amp.tensors[`fp32.grad.${k}`], b = amp.tensors[`bf16.grad.${k}`];
    const norm = Math.hypot(...(t.toArray(f) as number[]));
    refSq += norm ** 2;
    oursSq += (relativeError(ours[k], f) * norm) ** 2;
    torchSq += (relativeError(b, f) * norm) ** 2;
    // Within bf16's rounding of the fp32 gradient, or as far as PyTorch's own (give or take a quarter).
    const e = relativeError(ours[k], f), theirs = relativeError(b, f);
    assert.ok(e <= Math.max(10 * 2 ** -8, 1.25 * theirs), `${k}: ${e} from the fp32 gradient, PyTorch's ${theirs}`);
  }
  const oursError = Math.sqrt(oursSq / refSq), torchError = Math.sqrt(torchSq / refSq);
  // Measured: 3.63% here, 3.57% for PyTorch (whose softmaxes run in bf16 where these run in fp32). A few roundings
  // dominate (the CLS features', which the temperatures magnify), so the error moves with the kernels that round
  // them: 1.52% here while libtorch's bf16 product rounded the CLS-only last block's row wrongly. The bound says: no
  // further from fp32 than PyTorch's autocast, give or take a quarter.
  assert.ok(oursError > 0 && oursError <= 1.25 * torchError, `${oursError} vs PyTorch's ${torchError}`);
  t.dispose([parity.tensors, amp.tensors, template, student, ours]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("a scaled reduced-precision step on the test device (fp16 on CUDA, bf16 on the CPU) is within its rounding of the CPU's fp32 step", () => {
  const before = t.liveTensors();
  const low = testDevice === "cpu" ? "bf16" : "fp16"; // libtorch's CPU kernels have no fp16 matrix products
  const f = oneStep(hyper({ precision: "fp32" }));
  const h = hyper({ precision: low });
  // fp16 starts a scaler at GradScaler's defaults; bf16 gets the same one, so the CPU runs the scaled path too.
  const init = initTrainState(cfg, h, 0);
  const s0 = onTestDevice({ ...init, scaler: init.scaler ?? lossScaler().init() });
  t.dispose(init);
  const cpuViews = views(1), v = onTestDevice(cpuViews);
  t.dispose(cpuViews);
  // 65536 x the loss may overflow fp16 in the backward pass: GradScaler's answer is to skip the step and halve the
  // scale, so a skipped step is retried from the same state with the halved scale (a few times at most).
  let r = trainStep(s0, v, h, cfg);
  let scale = 65536;
  while (r.metrics.skipped && scale > 1) {
    assert.equal(low, "fp16", "bf16 has fp32's range: no overflow");
    assert.deepEqual([r.metrics.lossScale, r.state.scaler?.scale], [scale, scale / 2]);
    scale /= 2;
    const retry = { ...s0, scaler: r.state.scaler };
    t.dispose(r.state);
    r = trainStep(retry, v, h, cfg);
  }
  assert.deepEqual([r.metrics.skipped, r.metrics.lossScale, r.state.scaler?._growth_tracker], [false, scale, 1]);
  for (const x of t.tensorsIn(r.state)) assert.ok(x.device.startsWith(testDevice), `a state tensor on ${x.device}`);
  // fp16 keeps 11 significant bits, bf16 8: the bf16 step's bound (10 x 2^-8, see above) holds for both.
  const tolerance = 10 * 2 ** -8;
  const gf = stateDict((f.state.optimizer as SGDState).momentum_buffer);
  const gl = stateDict((r.state.optimizer as SGDState).momentum_buffer);
  assert.deepEqual(Object.keys(gl), Object.keys(gf));
  let worst = 0;
  for (const k of Object.keys(gf)) {
    assert.equal(gl[k].dtype, "f32", `${k}: the unscaled gradient reaching the fp32 master is fp32`);
    const e = t.tidy(() => relativeError(t.toDevice(gl[k], "cpu"), gf[k]));
    assert.ok(e <= tolerance, `${low} ${k}: relative error ${e} > ${tolerance}`);
    worst = Math.max(worst, e);
  }
  assert.ok(worst > 0, `the ${low} step computed something in ${low}`);
  assert.ok(Math.abs(r.metrics.loss - f.metrics.loss) <= 2 ** -8 * f.metrics.loss, "loss");
  for (const x of t.tensorsIn(r.state)) assert.equal(x.dtype === "i64" ? "f32" : x.dtype, "f32");
  t.dispose([f.state, s0, v, r.state]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("in bf16 the CLS-only attention row equals the full attention's CLS row (few tokens, small batches)", () => {
  // libtorch 1.13's bf16 product of one query row by a few tokens is not correctly rounded (measured: up to 1.8e-4 off
  // in these probabilities when the CLS row's products ran in bf16; 0.2 in the scores of other shapes).
  const before = t.liveTensors();
  using g = new t.Generator(3);
  for (const [D, H, N] of [[64, 2, 5], [192, 3, 17], [128, 4, 10]]) {
    const vit = vitConfig("vit_tiny", { imgSize: 16, patchSize: 8, inChans: 1, depth: 1, embedDim: D, numHeads: H });
    const p = initViT(vit, g);
    t.tidy(() => {
      for (const B of [1, 3, 16]) {
        const x = t.to(t.randn(g, [B, N, D]), "bf16"); // [B, 1 + patches, D], as norm1 gives it
        const full = t.select(attention(p.blocks[0].attn, x, H, "bf16").attn, 2, 0); // [B, h, N]
        const cls = t.select(attention(p.blocks[0].attn, x, H, "bf16", true).attn, 2, 0);
        const d = Math.max(...t.toArray(t.abs(t.sub(full, cls))) as number[]);
        assert.ok(d <= 1e-6, `D ${D}, ${H} heads, ${N} tokens, batch ${B}: ${d}`);
      }
    });
    t.dispose(p);
  }
  assert.equal(t.liveTensors(), before);
});
