import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { headConfig, headForward, initHead } from "../lib/model/head.ts";
import { dinoLoss, sinkhornKnopp, updateCenter } from "../lib/training/loss.ts";
import { dinoConfig, initDino, multiCropForward } from "../lib/model/dino.ts";
import { adamw, clipGradients, emaUpdate, isDecayed, sgd } from "../lib/training/optim.ts";
import { cosineSchedule, linspaceAt, teacherTempSchedule } from "../lib/training/schedules.ts";
import { loadStateDict, mapTree, stateDict } from "../lib/weights/tree.ts";
import { block, dropRates, initViT, intermediateLayers, truncNormal, vitConfig, vitForward } from "../lib/model/vit.ts";
import { assertClose, noLeak, onTestDevice, relativeL2, testDevice } from "./helpers.ts";

Deno.test("cosineSchedule matches the official numpy schedule value for value", () => {
  // numpy: cosine_scheduler(0.1, 0.001, 3, 4, warmup_epochs=1), computed by hand from the formula
  const s = cosineSchedule(0.1, 0.001, 3, 4, 1);
  const warm = [0, 0.1 / 3, 0.2 / 3, 0.1];
  const cos = Array.from({ length: 8 }, (_, i) => 0.001 + 0.5 * (0.1 - 0.001) * (1 + Math.cos(Math.PI * i / 8)));
  assertClose(Array.from({ length: 12 }, (_, i) => s(i)), [...warm, ...cos], 1e-15);
  assert.notEqual(s(11), 0.001, "the last value is not exactly final, as the official schedule");
  assert.throws(() => s(12), /outside the schedule/);
  assert.equal(linspaceAt(0.04, 0.07, 30, 29), 0.07);
});

Deno.test("a warmup longer than the schedule climbs for its whole length, as DeiT's (timm) scheduler does", () => {
  // fine-tuning's default 5 warmup epochs in a 1-epoch run of 4 steps: lr = base x it / 19, never the peak
  const s = cosineSchedule(1, 0, 1, 4, 5);
  assertClose([0, 1, 2, 3].map(s), [0, 1 / 19, 2 / 19, 3 / 19], 1e-15);
});

Deno.test("the teacher temperature warms up linearly by epoch, then stays", () => {
  const tau = teacherTempSchedule(0.04, 0.07, 30, 100);
  assertClose([tau(0), tau(15), tau(29), tau(30), tau(99)], [0.04, 0.04 + 0.03 * 15 / 29, 0.07, 0.07, 0.07], 1e-15);
  assert.throws(() => teacherTempSchedule(0.04, 0.07, 30, 10), /exceeds the epochs/);
});

Deno.test("the official architectures have the official shapes and key names", () =>
  noLeak(() => {
    using g = new t.Generator(0);
    const cfg = dinoConfig({ arch: "vit_small", depth: 1, outDim: 128 });
    const p = initDino(cfg, g);
    const flat = stateDict(p);
    assert.deepEqual(flat["backbone.pos_embed"].shape, [1, 197, 384]);
    assert.deepEqual(flat["backbone.patch_embed.proj.weight"].shape, [384, 3, 16, 16]);
    assert.deepEqual(flat["backbone.blocks.0.attn.qkv.weight"].shape, [1152, 384]);
    assert.deepEqual(flat["backbone.blocks.0.mlp.fc1.weight"].shape, [1536, 384]);
    assert.deepEqual(flat["head.mlp.0.weight"].shape, [2048, 384]);
    assert.deepEqual(flat["head.mlp.4.weight"].shape, [256, 2048]);
    assert.deepEqual(flat["head.last_layer.weight_g"].shape, [128, 1]);
    assert.deepEqual(flat["head.last_layer.weight_v"].shape, [128, 256]);
    assert.deepEqual(vitConfig("vit_base").embedDim, 768);
    assert.deepEqual(vitConfig("vit_tiny").numHeads, 3);
    assert.throws(() => vitConfig("vit_huge" as "vit_base"), /unknown arch/);
    assert.throws(() => vitConfig("vit_tiny", { numHeads: 5 }), /does not divide/);
  }));

Deno.test("initialisation follows the official recipe: std 0.02 linears, zero biases, unit norms, g = 1", () =>
  noLeak(() => {
    using g = new t.Generator(0);
    const p = initViT(vitConfig("vit_tiny", { depth: 1 }), g);
    const w = p.blocks[0].mlp.fc1.weight;
    assertClose([Math.sqrt(t.item(t.variance(w)))], [0.02], 0.001);
    assert.equal(t.item(t.amax(t.abs(p.blocks[0].mlp.fc1.bias))), 0);
    assert.equal(t.item(t.amin(p.norm.weight)), 1);
    assert.ok(t.item(t.amax(t.abs(truncNormal(g, [10000], 1)))) <= 2, "truncated at +-2");
    const bound = 1 / Math.sqrt(3 * 16 * 16);
    assert.ok(t.item(t.amax(t.abs(p.patch_embed.proj.weight))) <= bound);
    const head = initHead(headConfig(192, 64), g);
    assert.equal(t.item(t.amin(head.last_layer.weight_g)), 1);
  }));

Deno.test("stochastic depth rises linearly over the blocks and drops whole samples", () =>
  noLeak(() => {
    assertClose(dropRates(vitConfig("vit_tiny", { dropPathRate: 0.1, depth: 5 })), [0, 0.025, 0.05, 0.075, 0.1]);
    using g = new t.Generator(3);
    const cfg = vitConfig("vit_tiny", { imgSize: 8, patchSize: 4, depth: 2, dropPathRate: 0.9 });
    const p = initViT(cfg, g);
    const x = t.randn(g, [64, 3, 8, 8]);
    const a = vitForward(p, cfg, x, { dropPath: g }), b = vitForward(p, cfg, x);
    assert.notDeepEqual(t.toArray(a), t.toArray(b), "drop path changes the output in training");
    assertClose(t.toArray(vitForward(p, cfg, x)), t.toArray(b), 0);
  }));

Deno.test("a CLS-only block gives the full block's CLS row and gradients, in fp32 and within rounding in bf16", () =>
  noLeak(() => {
    using g = new t.Generator(5);
    const cfg = vitConfig("vit_tiny", { imgSize: 12, patchSize: 4, depth: 2 });
    const p = initViT(cfg, g);
    const h = t.randn(g, [4, 7, 192]); // [B, 1 + N, D]
    const run = (clsOnly: boolean, rate: number, dt?: "bf16") => {
      using masks = new t.Generator(9); // the same drop-path masks for both
      const bp = t.mapTree(p.blocks[1], (w) => t.requiresGrad(w)), x = t.requiresGrad(h);
      const out = block(bp, x, cfg.numHeads, rate, masks, undefined, dt, clsOnly).out;
      assert.deepEqual(out.shape, clsOnly ? [4, 1, 192] : [4, 7, 192]);
      const cls = t.to(t.select(out, 1, 0), "f32"); // [B, D]
      const grads = t.grad(t.sum(t.mul(cls, cls)), [x, bp.attn.qkv.weight, bp.mlp.fc1.weight]);
      return [cls, ...grads].map((y) => t.toArray(y) as number[]);
    };
    const names = ["CLS row", "input gradient", "qkv gradient", "fc1 gradient"];
    const compare = (a: number[][], b: number[][], tol: number) => {
      for (const [i, name] of names.entries()) {
        const scale = b[i].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        assert.ok(scale > 0, `${name} is not zero`);
        assertClose(a[i].map((v) => v / scale), b[i].map((v) => v / scale), tol);
      }
    };
    const full = run(false, 0.5);
    compare(run(true, 0.5), full, 1e-5);
    assert.notDeepEqual(full[0], run(false, 0)[0], "the masks drop a sample");
    compare(run(true, 0.5, "bf16"), run(false, 0.5, "bf16"), 2 ** -7); // equal here; other kernels may round apart
  }));

Deno.test("vitForward gives intermediateLayers' CLS row", () =>
  noLeak(() => {
    using g = new t.Generator(6);
    const cfg = vitConfig("vit_tiny", { imgSize: 12, patchSize: 4, depth: 2 });
    const p = initViT(cfg, g);
    const x = t.randn(g, [2, 3, 12, 8]);
    assertClose(t.toArray(vitForward(p, cfg, x)), t.toArray(t.select(intermediateLayers(p, cfg, x)[0], 1, 0)), 1e-5);
  }));

Deno.test("position embeddings are interpolated for other sizes, rectangular inputs and sides that are not multiples of the patch", () =>
  noLeak(() => {
    using g = new t.Generator(0);
    const cfg = vitConfig("vit_tiny", { imgSize: 16, patchSize: 4, depth: 1 });
    const p = initViT(cfg, g);
    assert.deepEqual(vitForward(p, cfg, t.randn(g, [2, 3, 8, 12])).shape, [2, 192]);
    const ragged = t.randn(g, [2, 3, 10, 14]);
    // The official stride-4 patch embedding drops the last 10 % 4 rows and 14 % 4 columns.
    assert.deepEqual(
      t.toArray(vitForward(p, cfg, ragged)),
      t.toArray(vitForward(p, cfg, t.contiguous(t.slice(t.slice(ragged, 2, 0, 8), 3, 0, 12)))),
    );
    assert.throws(() => vitForward(p, cfg, t.randn(g, [2, 3, 3, 8])), /smaller than the patch size 4/);
    assert.throws(() => vitForward(p, cfg, t.randn(g, [2, 1, 16, 16])), /takes \[B, 3, H, W\]/);
  }));

Deno.test("multi-crop forward equals running each crop alone", () =>
  noLeak(() => {
    using g = new t.Generator(1);
    const cfg = dinoConfig({
      arch: "vit_tiny",
      imgSize: 8,
      patchSize: 4,
      depth: 1,
      outDim: 16,
      hiddenDim: 8,
      bottleneckDim: 4,
    });
    const p = initDino(cfg, g);
    const crops = [t.randn(g, [2, 3, 8, 8]), t.randn(g, [2, 3, 8, 8]), t.randn(g, [2, 3, 4, 4])];
    const all = multiCropForward(p, cfg, crops).output;
    const each = t.cat(crops.map((c) => multiCropForward(p, cfg, [c]).output), 0);
    assertClose(t.toArray(all), t.toArray(each), 1e-5);
  }));

Deno.test("the head supports one layer, batch norm, and a trainable weight_g", () =>
  noLeak(() => {
    using g = new t.Generator(2);
    const one = headConfig(8, 16, { nlayers: 1, bottleneckDim: 4 });
    const p1 = initHead(one, g);
    assert.deepEqual(Object.keys(stateDict(p1)), [
      "mlp.weight",
      "mlp.bias",
      "last_layer.weight_g",
      "last_layer.weight_v",
    ]);
    assert.deepEqual(headForward(p1, one, t.randn(g, [3, 8])).output.shape, [3, 16]);
    const bn = headConfig(8, 16, { useBn: true, hiddenDim: 6, bottleneckDim: 4 });
    const p2 = initHead(bn, g);
    assert.deepEqual(Object.keys(stateDict(p2)).filter((k) => k.startsWith("mlp.1.")), [
      "mlp.1.weight",
      "mlp.1.bias",
      "mlp.1.running_mean",
      "mlp.1.running_var",
      "mlp.1.num_batches_tracked",
    ]);
    assert.ok(Object.keys(stateDict(p2)).includes("mlp.6.weight"), "Linears at 0, 3, 6 with batch norm");
    const r = headForward(p2, bn, t.randn(g, [5, 8]));
    assert.deepEqual(Object.keys(r.bnStats).sort(), [
      "mlp.1.num_batches_tracked",
      "mlp.1.running_mean",
      "mlp.1.running_var",
      "mlp.4.num_batches_tracked",
      "mlp.4.running_mean",
      "mlp.4.running_var",
    ]);
  }));

Deno.test("dinoLoss is ln K for uniform outputs; updateCenter returns a new center and leaves the old one", () =>
  noLeak(() => {
    const K = 32, B = 4;
    const center = t.zeros([1, K]);
    const student = t.zeros([4 * B, K]), teacher = t.ones([2 * B, K]);
    const r = dinoLoss(student, teacher, center, { ncrops: 4, teacherTemp: 0.04 });
    assertClose([t.item(r.loss)], [Math.log(K)], 1e-5);
    assert.equal(t.item(t.amax(center)), 0, "the input center is untouched");
    assertClose([t.item(t.mean(updateCenter(center, teacher, {})))], [0.1], 1e-6);
    assert.equal(t.item(t.amax(center)), 0, "the old center is untouched");
    assert.equal(t.item(t.amax(updateCenter(center, teacher, { centering: "none" }))), 0);
    const mse = dinoLoss(student, teacher, center, { ncrops: 4, teacherTemp: 0.04, criterion: "mse" });
    assertClose([t.item(mse.loss)], [0], 1e-9);
    assert.throws(() => dinoLoss(t.zeros([5, K]), teacher, center, { ncrops: 4, teacherTemp: 0.04 }), /multiple of 4/);
  }));

Deno.test("Sinkhorn-Knopp targets are doubly normalised", () =>
  noLeak(() => {
    using g = new t.Generator(0);
    const q = sinkhornKnopp(t.randn(g, [8, 16]), 1, 50);
    assertClose(t.toArray(t.sum(q, 1)), Array(8).fill(1), 1e-4);
    assertClose(t.toArray(t.sum(q, 0)), Array(16).fill(0.5), 1e-3); // the last iteration normalises samples
  }));

Deno.test("AdamW leaves parameters without gradients, and their state, untouched; decays only matrices", () =>
  noLeak(() => {
    const params = { "a.weight": t.ones([2, 2]), "a.bias": t.ones([2]), "frozen.weight": t.ones([2, 2]) };
    assert.equal(isDecayed("a.weight", params["a.weight"]), true);
    assert.equal(isDecayed("a.bias", params["a.bias"]), false);
    assert.equal(isDecayed("cls_token", t.ones([1, 1, 4])), true);
    const opt = adamw();
    const s0 = opt.init(params);
    const zero = { "a.weight": t.zeros([2, 2]), "a.bias": t.zeros([2]) };
    const r = opt.update(params, zero, s0, { lr: 0.1, weightDecay: 0.5 });
    assertClose(t.toArray(r.params["a.weight"]), Array(4).fill(1 - 0.1 * 0.5), 1e-7);
    assertClose(t.toArray(r.params["a.bias"]), [1, 1], 0);
    assertClose(t.toArray(r.params["frozen.weight"]), Array(4).fill(1), 0);
    assert.deepEqual(r.state.step, { "a.weight": 1, "a.bias": 1, "frozen.weight": 0 });
    // First step: the update is lr * g / (|g| + eps), i.e. lr for a unit gradient.
    const r2 = opt.update(params, { "a.bias": t.ones([2]) }, s0, { lr: 0.1, weightDecay: 0 });
    assertClose(t.toArray(r2.params["a.bias"]), [0.9, 0.9], 1e-6);
  }));

Deno.test("SGD with momentum accumulates the velocity as PyTorch", () =>
  noLeak(() => {
    const opt = sgd({ momentum: 0.9 });
    const params = { w: t.tensor([[1]]) };
    let state = opt.init(params);
    let p = params;
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = opt.update(p, { w: t.tensor([[1]]) }, state, { lr: 0.1, weightDecay: 0 });
      p = r.params as typeof params;
      state = r.state;
      seen.push(t.item(p.w));
    }
    // velocities 1, 1.9, 2.71
    assertClose(seen, [0.9, 0.71, 0.439], 1e-6);
  }));

Deno.test("per-parameter clipping scales only gradients whose norm is over the limit", () =>
  noLeak(() => {
    const small = t.tensor([0.3, 0.4]);
    const { grads, norms } = clipGradients({ big: t.tensor([3, 4]), small }, 1);
    assertClose(t.toArray(grads.big), [0.6, 0.8], 1e-6);
    assertClose(t.toArray(grads.small), t.toArray(small), 0);
    assertClose([t.item(norms.big)], [5], 1e-6);
  }));

Deno.test("the teacher EMA moves toward the student by 1 - m", () =>
  noLeak(() => {
    const r = emaUpdate({ w: t.zeros([2]), only: t.ones([1]) }, { w: t.ones([2]) }, 0.75);
    assertClose(t.toArray(r.w), [0.25, 0.25], 1e-7);
    assertClose(t.toArray(r.only), [1], 0);
  }));

Deno.test("stateDict gives dotted official keys; loadStateDict checks keys and shapes like strict loading", () =>
  noLeak(() => {
    const tree = { blocks: [{ w: t.ones([2]) }], norm: { b: t.zeros([3]) } };
    assert.deepEqual(Object.keys(stateDict(tree)), ["blocks.0.w", "norm.b"]);
    const back = loadStateDict(tree, stateDict(tree));
    assert.notEqual(back.blocks[0].w, tree.blocks[0].w, "new handles");
    assertClose(t.toArray(back.norm.b), [0, 0, 0]);
    assert.throws(() => loadStateDict(tree, { "blocks.0.w": t.ones([2]) }), /missing keys: norm\.b/);
    assert.throws(() => loadStateDict(tree, { ...stateDict(tree), extra: t.ones([1]) }), /unexpected keys: extra/);
    assert.throws(
      () => loadStateDict(tree, { "blocks.0.w": t.ones([5]), "norm.b": t.zeros([3]) }),
      /blocks\.0\.w: shape \[5\] in the weights, \[2\] in the model/,
    );
    const doubled = mapTree(tree, (x) => t.mul(x, 2));
    assertClose(t.toArray(doubled.blocks[0].w), [2, 2]);
  }));

Deno.test("mapTree maps tensors and keeps numbers, strings and nested records as they are", () =>
  noLeak(() => {
    const state = { w: t.ones([1]), step: 3, rng: { seed: 1, counter: 2 }, name: "x", steps: { "a.weight": 4 } };
    const mapped = mapTree(state, (x) => t.mul(x, 2));
    assert.equal(mapped.step, 3);
    assert.deepEqual(mapped.rng, { seed: 1, counter: 2 });
    assert.equal(mapped.name, "x");
    assert.deepEqual(mapped.steps, { "a.weight": 4 });
    assertClose(t.toArray(mapped.w), [2]);
  }));

Deno.test("a ViT's forward and backward on the test device equal the CPU's (TF32 rounding on CUDA)", () =>
  noLeak(() => {
    using g = new t.Generator(4);
    const cfg = dinoConfig({
      arch: "vit_tiny",
      embedDim: 32,
      numHeads: 2,
      depth: 2,
      imgSize: 16,
      patchSize: 4,
      outDim: 64,
      hiddenDim: 48,
      bottleneckDim: 16,
      dropPathRate: 0.2,
    });
    const cpu = initDino(cfg, g);
    const crops = [t.randn(g, [4, 3, 16, 16]), t.randn(g, [4, 3, 16, 16]), t.randn(g, [4, 3, 8, 8])];
    const weights = t.randn(g, [12, 64]); // a loss whose gradient differs by row and column
    const run = (p: typeof cpu, x: t.Tensor[], w: t.Tensor, seed: number) => {
      const flat = stateDict(p);
      const leaves = Object.fromEntries(Object.entries(flat).map(([k, v]) => [k, t.requiresGrad(v)]));
      using dg = new t.Generator(seed); // drop-path masks: the same draws on any device
      const out = multiCropForward(mapTree(p, (_, k) => leaves[k]), cfg, x, { dropPath: dg }).output;
      const keys = Object.keys(leaves);
      const grads = t.grad(t.sum(t.mul(out, w)), keys.map((k) => leaves[k]));
      return { out, grads: Object.fromEntries(keys.map((k, i) => [k, grads[i]])) };
    };
    const ref = run(cpu, crops, weights, 9);
    const dev = run(onTestDevice(cpu), onTestDevice(crops), onTestDevice(weights), 9);
    assert.ok(dev.out.device.startsWith(testDevice), `output on ${dev.out.device}`);
    assert.deepEqual(dev.out.shape, [12, 64]);
    // On the CPU the same computation twice: bit for bit. On CUDA the matrix products are fp32 (libtorch's
    // default), but cuDNN's convolutions (the patch embedding) may round their inputs to TF32 (libtorch's default
    // allow_tf32 for cuDNN: 10 mantissa bits, 2^-11 relatively) and the kernels sum in another order: 5e-3 for
    // the output and 1e-2 for each gradient (relative L2 per tensor) are ten TF32 roundings, far below what a
    // wrong kernel or a mask drawn differently gives (drop path 0.2 zeroes whole residual branches: 10% and more).
    const [outTol, gradTol] = testDevice === "cpu" ? [0, 0] : [5e-3, 1e-2];
    const e = relativeL2(dev.out, ref.out);
    assert.ok(e <= outTol, `output: relative error ${e} > ${outTol}`);
    for (const [k, gk] of Object.entries(ref.grads)) {
      assert.ok(dev.grads[k].device.startsWith(testDevice), k);
      const ek = relativeL2(dev.grads[k], gk);
      assert.ok(ek <= gradTol, `${k}: relative error ${ek} > ${gradTol}`);
    }
  }));
