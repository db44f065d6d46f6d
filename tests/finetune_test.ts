// Fine-tuning (lib/eval/finetune.ts, deno task finetune): two steps equal PyTorch's on the fixture written by
// scripts/gen_finetune_fixtures.py (layer-wise lr decay as BEiT's parameter groups, AdamW, label smoothing), and the
// command trains, tests, checkpoints and reports, from DINO weights, from scratch and on a ResNet.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured, spawnCli, TINY_VIT_FLAGS } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { main as finetune } from "../cli/finetune.ts";
import { readSafetensors, writeSafetensors } from "../lib/weights/safetensors.ts";
import { loadStateDict, stateDict } from "../lib/weights/tree.ts";
import { initViT, vitConfig } from "../lib/model/vit.ts";
import { resnetConfig } from "../lib/model/resnet.ts";
import {
  FINETUNE_DEFAULTS,
  finetuneLoop,
  type FinetuneState,
  finetuneStep,
  initFinetune,
  layerScale,
  loadFinetune,
  saveFinetune,
  smoothedCrossEntropy,
} from "../lib/eval/finetune.ts";
import type { BestEpoch } from "../lib/eval/linear.ts";
import { tensorDataset } from "../lib/data/dataset.ts";

/**
 * How far a weight may differ after one AdamW step whose gradient equals PyTorch's to 1e-5 of its largest
 * element: where a gradient is within rounding of zero (the key bias of a qkv layer, to which softmax is blind),
 * m / sqrt(v) can take any value up to about 1, so the weight can move by up to 2 lr. The allowance is how far
 * PyTorch's own update moves when the gradient moves within that precision (as tests/parity_test.ts).
 */
function adamSlack(m0: t.Tensor, m1: t.Tensor, v0: t.Tensor, step: number, lr: number): t.Tensor {
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  const g = t.div(t.sub(m1, t.mul(m0, beta1)), 1 - beta1); // PyTorch's gradient
  const precision = 1e-5 * t.item(t.amax(t.abs(g)));
  const update = (dg: number) => {
    const gi = t.add(g, dg);
    const m = t.add(t.mul(m0, beta1), t.mul(gi, 1 - beta1));
    const v = t.add(t.mul(v0, beta2), t.mul(t.mul(gi, gi), 1 - beta2));
    return t.mul(t.div(t.div(m, 1 - beta1 ** step), t.add(t.sqrt(t.div(v, 1 - beta2 ** step)), eps)), lr);
  };
  const u0 = update(0);
  let slack = t.zerosLike(u0);
  for (let j = -8; j <= 8; j++) slack = t.maximum(slack, t.abs(t.sub(update((j / 8) * precision), u0)));
  return slack;
}

Deno.test("each fine-tuning step from PyTorch's state equals PyTorch's: layer-wise lr decay, AdamW groups, label smoothing", () => {
  const { tensors: F, metadata } = readSafetensors("tests/fixtures/finetune.safetensors");
  const C = JSON.parse(metadata.cfg), H = JSON.parse(metadata.hyper);
  const vit = vitConfig("vit_tiny", {
    embedDim: C.embed_dim,
    depth: C.depth,
    numHeads: C.num_heads,
    patchSize: C.patch_size,
    imgSize: C.img_size,
    inChans: C.in_chans,
  });
  const live = t.liveTensors();
  using g = new t.Generator(0);
  const template = initViT(vit, g);
  const prefixed = (p: string) =>
    Object.fromEntries(Object.entries(F).filter(([k]) => k.startsWith(p)).map(([k, v]) => [k.slice(p.length), v]));
  try {
    for (let s = 0; s < H.steps; s++) {
      // PyTorch's state before the step: its weights and AdamW moments (zero before the first step).
      const before = s === 0 ? "init." : `step${s - 1}.`;
      const fresh = initFinetune(loadStateDict(template, prefixed(`${before}backbone.`)), vit, H.classes, g);
      t.dispose(fresh.head);
      const moments = (part: string) =>
        Object.fromEntries(
          Object.keys(fresh.optimizer.exp_avg).map((
            k,
          ) => [k, s === 0 ? t.zerosLike(F[`step0.${k}`]) : t.clone(F[`adam${s - 1}.${part}.${k}`])]),
        );
      t.dispose([fresh.optimizer.exp_avg, fresh.optimizer.exp_avg_sq]);
      const state: FinetuneState = {
        backbone: fresh.backbone,
        head: { weight: t.clone(F[`${before}head.weight`]), bias: t.clone(F[`${before}head.bias`]) },
        optimizer: {
          exp_avg: moments("exp_avg"),
          exp_avg_sq: moments("exp_avg_sq"),
          step: Object.fromEntries(Object.keys(fresh.optimizer.step).map((k) => [k, s])),
        },
        step: s,
      };
      const h = {
        lr: H.lr[s],
        weightDecay: H.weight_decay,
        layerDecay: H.layer_decay,
        smoothing: H.smoothing,
        dropPath: 0,
      };
      const next = finetuneStep(state, vit, F[`input.${s}`], F[`labels.${s}`], h, g);
      try {
        const loss = t.item(F[`loss.${s}`]);
        assert.ok(Math.abs(next.loss - loss) <= 1e-5 * loss, `step ${s} loss ${next.loss} != ${loss}`);
        const ours: Record<string, t.Tensor> = {
          ...stateDict(next.state.backbone, "backbone"),
          "head.weight": next.state.head.weight,
          "head.bias": next.state.head.bias,
        };
        const theirs = prefixed(`step${s}.`);
        assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
        for (const [k, v] of Object.entries(theirs)) {
          t.tidy(() => {
            const lr = H.lr[s] * layerScale(k, vit, H.layer_decay);
            const slack = adamSlack(
              state.optimizer.exp_avg[k],
              F[`adam${s}.exp_avg.${k}`],
              state.optimizer.exp_avg_sq[k],
              s + 1,
              lr,
            );
            const scale = Math.max(t.item(t.amax(t.abs(v))), 1e-12);
            const excess = t.item(t.amax(t.sub(t.abs(t.sub(ours[k], v)), slack)));
            assert.ok(
              excess <= 1e-5 * scale,
              `step ${s} ${k}: |diff| exceeds the allowance by ${excess.toExponential(3)} of ${scale.toExponential(3)}`,
            );
          });
        }
      } finally {
        t.dispose([state, next.state]);
      }
    }
  } finally {
    t.dispose([template, F]);
  }
  assert.equal(t.liveTensors(), live - Object.keys(F).length, "nothing left behind");
});

Deno.test("layer-wise decay counts a ResNet's stages; label smoothing is (1 - eps) NLL + eps x the mean", () => {
  const rn = resnetConfig("resnet50");
  assert.deepEqual(
    ["backbone.conv1.weight", "backbone.layer1.0.conv1.weight", "backbone.layer4.2.bn3.bias", "head.bias"].map((k) =>
      layerScale(k, rn, 0.5)
    ),
    [1 / 32, 1 / 16, 1 / 2, 1],
  );
  const loss = t.tidy(() => {
    const logits = t.tensor([[2, 0, -1]]);
    return t.item(smoothedCrossEntropy(logits, t.tensor(new BigInt64Array([0n])), 0.3));
  });
  const z = Math.log(Math.exp(2) + 1 + Math.exp(-1));
  const logp = [2 - z, -z, -1 - z];
  assert.ok(Math.abs(loss - (0.7 * -logp[0] + 0.3 * -(logp[0] + logp[1] + logp[2]) / 3)) < 1e-6);
});

Deno.test("deno task finetune: from DINO weights and from scratch, metrics and checkpoint; a ResNet; bad flags", async () => {
  const dir = Deno.makeTempDirSync();
  const tiny = ["--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--out-dim", "64", "--hidden-dim", "32"];
  const run = await captured(() =>
    train([
      ...tiny,
      "--bottleneck-dim",
      "16",
      "--batch-size",
      "16",
      "--train-limit",
      "64",
      "--test-limit",
      "10",
      "--max-steps",
      "1",
      "--output-dir",
      join(dir, "run"),
    ])
  );
  assert.equal(run.value, 0, run.err);
  const ck = join(dir, "run", "checkpoint.safetensors");
  const base = [
    "--weights",
    ck,
    "--data",
    "fmnist",
    "--epochs",
    "2",
    "--warmup-epochs",
    "1",
    "--batch-size",
    "32",
    "--train-limit",
    "96",
    "--test-limit",
    "40",
  ];
  for (const scratch of [false, true]) {
    const out = join(dir, scratch ? "scratch" : "pre");
    const r = await captured(() => finetune([...base, ...(scratch ? ["--from-scratch"] : []), "--output-dir", out]));
    assert.equal(r.value, 0, r.err);
    assert.match(
      r.out,
      scratch
        ? /fine-tuning from scratch \(the network of /
        : /fine-tuning .*checkpoint\.safetensors: ViT D 32, depth 2/,
    );
    assert.match(r.out, /epoch 2\/2: test top-1 \d+\.\d+% {2}top-5/);
    assert.match(r.out, /fine-tuned top-1 \d+\.\d+% {2}top-5 \d+\.\d+% \(best epoch \d of 2/);
    const summary = JSON.parse(Deno.readTextFileSync(join(out, "summary.json")));
    assert.equal(summary.from_scratch, scratch);
    const records = Deno.readTextFileSync(join(out, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(records.map((m) => [m.epoch, m.step]), [[0, 3], [1, 6]]);
    const { tensors, metadata } = readSafetensors(join(out, "checkpoint.safetensors"));
    assert.equal(metadata.format, "dino-deno-finetune/2");
    assert.deepEqual(tensors["head.weight"].shape, [10, 32]);
    assert.ok("backbone.blocks.1.mlp.fc2.weight" in tensors && "optimizer.exp_avg.backbone.cls_token" in tensors);
    t.dispose(tensors);
  }
  // The backbone moved: the fine-tuned checkpoint's blocks differ from the DINO teacher's.
  const a = readSafetensors(ck).tensors, b = readSafetensors(join(dir, "pre", "checkpoint.safetensors")).tensors;
  assert.notDeepEqual(
    t.toArray(b["backbone.blocks.0.attn.qkv.weight"]),
    t.toArray(a["teacher.backbone.blocks.0.attn.qkv.weight"]),
  );
  t.dispose([a, b]);

  const rn = await captured(() =>
    train([
      "--arch",
      "resnet18",
      "--use-bn-in-head",
      "true",
      "--out-dim",
      "64",
      "--hidden-dim",
      "32",
      "--bottleneck-dim",
      "16",
      "--batch-size",
      "16",
      "--train-limit",
      "32",
      "--test-limit",
      "10",
      "--max-steps",
      "1",
      "--output-dir",
      join(dir, "rn"),
    ])
  );
  assert.equal(rn.value, 0, rn.err);
  const r = await captured(() =>
    finetune([
      "--weights",
      join(dir, "rn", "checkpoint.safetensors"),
      "--data",
      "fmnist",
      "--epochs",
      "1", // and no --warmup-epochs: the default 5 outlasts the run, which warms up throughout, as DeiT's
      "--batch-size",
      "16",
      "--train-limit",
      "33", // a last batch of one image, whose 1 x 1 layer4 maps would give NaN batch statistics: dropped, as DeiT does
      "--test-limit",
      "16",
      "--output-dir",
      join(dir, "rnft"),
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.match(r.out, /resnet18 \(512-d, 1 channel\) \+ linear head/);
  assert.match(r.out, /\(warmup 5, cosine to/);
  const { tensors } = readSafetensors(join(dir, "rnft", "checkpoint.safetensors"));
  assert.equal(t.item(tensors["backbone.bn1.num_batches_tracked"]), 1 + 2); // DINO's step (teacher's) + 2 here
  for (const [key, value] of Object.entries(tensors)) {
    if (key.includes("running_")) assert.ok(t.toArray(value).every(Number.isFinite), `${key} is finite`);
  }
  assert.doesNotMatch(r.out, /NaN/);
  t.dispose(tensors);

  for (
    const [flags, message] of [
      [["--smoothing", "1"], /--smoothing must be below 1/],
      [["--warmup-epochs", "-1"], /--warmup-epochs/],
      [["--device", "tpu"], /--device must be auto, cpu or cuda/],
    ] as const
  ) {
    const out = join(dir, "bad");
    const bad = await captured(() => finetune([...base, ...flags, "--output-dir", out]));
    assert.equal(bad.value, 2);
    assert.match(bad.err, message);
    assert.ok(!t.exists(out), "nothing written");
  }
  // The training run's own folder: its checkpoint would be replaced.
  const before = Deno.readFileSync(ck);
  const into = await captured(() => finetune([...base, "--output-dir", join(dir, "run")]));
  assert.equal(into.value, 2, into.err);
  assert.match(into.err, /--output-dir .*run holds a run of `deno task train` .*would overwrite/);
  assert.deepEqual(Deno.readFileSync(ck), before);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a fine-tuning run continued from its checkpoint after an epoch ends bit-identical to one never stopped", async () => {
  const vit = vitConfig("vit_tiny", { depth: 1, imgSize: 8, patchSize: 4, inChans: 1 });
  using g = new t.Generator(2);
  using images = t.randint(g, 0, 256, [24, 1, 8, 8], { dtype: "u8" });
  using data = tensorDataset(images, { labels: Int32Array.from({ length: 24 }, (_, i) => i % 3) });
  const live = t.liveTensors();
  const norm = { mean: [0.5], std: [0.5] };
  const o = {
    ...FINETUNE_DEFAULTS,
    epochs: 3,
    warmupEpochs: 1,
    batchSize: 8,
    train: data,
    test: data,
    transform: { size: 8, ...norm },
    crop: { size: 8, scale: [0.4, 1] as [number, number] },
    norm,
    seed: 1,
  };
  const fresh = () => {
    using g = new t.Generator(0);
    return initFinetune(initViT(vit, g), vit, 3, g);
  };
  let straight = fresh();
  for await (const e of finetuneLoop(straight, vit, o)) straight = e.state;

  let first = fresh(), best: BestEpoch | undefined;
  for await (const e of finetuneLoop(first, vit, o)) {
    first = e.state;
    if (e.type === "epoch") {
      best = e.best;
      break; // stopped after the first epoch
    }
  }
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  saveFinetune(path, first, { epoch: "1" });
  t.dispose(first);
  let resumed = loadFinetune(path, vit).state;
  for await (const e of finetuneLoop(resumed, vit, { ...o, startEpoch: 1, best })) resumed = e.state;

  assert.equal(resumed.step, straight.step);
  assert.deepEqual(resumed.optimizer.step, straight.optimizer.step);
  const a = stateDict(straight), b = stateDict(resumed);
  assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
  for (const k of Object.keys(a)) assert.deepEqual(t.toArray(b[k]), t.toArray(a[k]), k);
  t.dispose([straight, resumed]);
  // A checkpoint of the code that kept each epoch's last partial batch counted its steps another way: refused.
  const { tensors, metadata } = readSafetensors(path);
  writeSafetensors(path, tensors, { ...metadata, format: "dino-deno-finetune/1" });
  t.dispose(tensors);
  assert.throws(() => loadFinetune(path, vit), /written before each epoch's last partial batch was dropped/);
  Deno.removeSync(path);
  assert.equal(t.liveTensors(), live);
});

Deno.test("deno task finetune --resume latest continues an interrupted run to the same network; other settings are refused", async () => {
  const dir = Deno.makeTempDirSync();
  const dino = await captured(() =>
    train([...TINY_VIT_FLAGS, "--train-limit", "64", "--max-steps", "1", "--output-dir", dir])
  );
  assert.equal(dino.value, 0, dino.err);
  const base = [
    ...["--weights", join(dir, "checkpoint.safetensors"), "--data", "fmnist", "--epochs", "2"],
    ...["--warmup-epochs", "1", "--batch-size", "16", "--train-limit", "6000", "--test-limit", "40"],
  ];
  const whole = join(dir, "whole"), cut = join(dir, "cut");
  const r = await captured(() => finetune([...base, "--output-dir", whole]));
  assert.equal(r.value, 0, r.err);

  // Interrupted during the second epoch (its 375 steps take a second or more), then continued.
  const run = spawnCli(new URL("../cli/finetune.ts", import.meta.url).pathname, [...base, "--output-dir", cut]);
  await run.waitFor(/epoch 1\/2: test top-1/);
  run.child.kill("SIGINT");
  const stopped = await run.done();
  assert.equal(stopped.code, 130, stopped.err + stopped.out);
  assert.match(stopped.out, /interrupted: the network after epoch 1 is kept in .*--resume latest to continue/);
  const again = await captured(() => finetune([...base, "--output-dir", cut, "--resume", "latest"]));
  assert.equal(again.value, 0, again.err);
  assert.match(again.out, /resuming after epoch 1 from .*checkpoint\.safetensors/);
  assert.doesNotMatch(again.out, /epoch 1\/2: test/);

  const x = readSafetensors(join(whole, "checkpoint.safetensors")),
    y = readSafetensors(join(cut, "checkpoint.safetensors"));
  assert.deepEqual(Object.keys(y.tensors).sort(), Object.keys(x.tensors).sort());
  for (const k of Object.keys(x.tensors)) assert.deepEqual(t.toArray(y.tensors[k]), t.toArray(x.tensors[k]), k);
  t.dispose([x.tensors, y.tensors]);
  const records = (d: string) =>
    Deno.readTextFileSync(join(d, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(records(cut), records(whole));

  const done = await captured(() => finetune([...base, "--output-dir", cut, "--resume", "latest"]));
  assert.equal(done.value, 0, done.err);
  assert.match(done.out, /all 2 epochs of this run have ended; nothing to do/);
  for (
    const [flags, message] of [
      [["--epochs", "3", "--resume", "latest"], /other settings \(epochs: 2 then, 3 now\)/],
      [["--resume", join(dir, "missing.safetensors")], /missing\.safetensors does not exist/],
      [["--resume", join(dir, "checkpoint.safetensors")], /is not a fine-tuning checkpoint/],
    ] as const
  ) {
    const bad = await captured(() => finetune([...base, "--output-dir", cut, ...flags]));
    assert.equal(bad.value, 2, flags.join(" "));
    assert.match(bad.err, message);
  }
  Deno.removeSync(dir, { recursive: true });
});
