// DINO on ResNet backbones end to end: `deno task train --arch resnet18` trains, checkpoints and resumes
// bit-identically; batch norm moves as in the official code (the student's buffers once per backbone pass, the
// teacher's from its own forward passes, never from the EMA); knn, embed and linear take the checkpoint and
// torchvision-layout weights; attention refuses a ResNet in one line; and a ResNet-50 checkpoint's
// teacher.backbone.* keys are torchvision's resnet50() keys with fc = Identity, loaded with strict=True by
// scripts/gen_resnet_fixtures.py check-load where /usr/bin/python3 has torch and torchvision.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { main as knn } from "../cli/knn.ts";
import { main as embed } from "../cli/embed.ts";
import { main as linear } from "../cli/linear.ts";
import { main as attention } from "../cli/attention.ts";
import { main as retrieve } from "../cli/retrieve.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { stateDict } from "../lib/weights/tree.ts";
import { makeSettings, networkConfig, presetSettings, SETTINGS, type Settings } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/step.ts";
import { initResNet, resnetConfig } from "../lib/model/resnet.ts";
import { saveWeights } from "../lib/weights/weights.ts";

const RESNET18 = [
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
  "128",
  "--test-limit",
  "40",
  "--log-every",
  "1",
];

function tensorsOf(path: string): Record<string, number[]> {
  const { tensors } = readSafetensors(path);
  const out = Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, t.toArray(v)]));
  t.dispose(tensors);
  return out;
}

Deno.test("train --arch resnet18 --optimizer lars: batch norm moves as the official loop's; 2 + 2 resumed steps equal 4", async () => {
  const a = Deno.makeTempDirSync(), b = Deno.makeTempDirSync();
  const flags = [...RESNET18, "--optimizer", "lars", "--lr", "0.3"];
  const whole = await captured(() => train([...flags, "--max-steps", "4", "--output-dir", a]));
  assert.equal(whole.value, 0, whole.err);
  assert.match(whole.out, /DINO fmnist: resnet18 \(512-d pooled features, batch norm in student and teacher\)/);
  assert.equal((await captured(() => train([...flags, "--max-steps", "2", "--output-dir", b]))).value, 0);
  const resumed = await captured(() => train([...flags, "--max-steps", "4", "--output-dir", b, "--resume", "latest"]));
  assert.equal(resumed.value, 0, resumed.err);
  assert.match(resumed.out, /resuming at step 2/);
  const x = tensorsOf(join(a, "checkpoint.safetensors")), y = tensorsOf(join(b, "checkpoint.safetensors"));
  assert.deepEqual(Object.keys(x), Object.keys(y));
  for (const k of Object.keys(x)) assert.deepEqual(y[k], x[k], `${k} differs after resuming`);
  // The student's backbone norms move twice a step (the global crops' pass, then the local crops'), its head's
  // once; the teacher's move once a step, with its own forward pass over the global crops.
  assert.deepEqual(x["student.backbone.layer3.1.bn2.num_batches_tracked"], [8]);
  assert.deepEqual(x["student.head.mlp.1.num_batches_tracked"], [4]);
  assert.deepEqual(x["teacher.backbone.bn1.num_batches_tracked"], [4]);
  assert.deepEqual(x["teacher.head.mlp.1.num_batches_tracked"], [4]);
  // Not the EMA: the teacher's running statistics are not (m teacher + (1 - m) student) of anything.
  assert.notDeepEqual(x["teacher.backbone.bn1.running_mean"], x["student.backbone.bn1.running_mean"]);
  assert.ok("optimizer.mu.backbone.layer4.1.conv2.weight" in x && "optimizer.mu.backbone.bn1.weight" in x);
  assert.ok(!("optimizer.mu.backbone.bn1.running_mean" in x), "buffers are not optimised");
  Deno.removeSync(a, { recursive: true });
  Deno.removeSync(b, { recursive: true });
});

Deno.test("knn, embed and linear take a ResNet checkpoint and torchvision-layout weights; attention says no", async () => {
  const dir = Deno.makeTempDirSync();
  const run = await captured(() => train([...RESNET18, "--optimizer", "sgd", "--max-steps", "1", "--output-dir", dir]));
  assert.equal(run.value, 0, run.err);
  const ck = join(dir, "checkpoint.safetensors");
  const k = await captured(() =>
    knn(["--checkpoint", ck, "--data", "fmnist", "--train-limit", "100", "--test-limit", "9", "--k", "5"])
  );
  assert.equal(k.value, 0, k.err);
  assert.match(k.out, /k-NN on 9 test images, memory of 100/);

  const out = join(dir, "features.safetensors");
  const e = await captured(() => embed(["--weights", ck, "--data", "fmnist", "--split", "test", "--out", out]));
  assert.equal(e.value, 0, e.err);
  const f = readSafetensors(out);
  assert.deepEqual(f.tensors.features.shape, [10000, 512]);
  assert.equal(JSON.parse(f.metadata.resnet).arch, "resnet18");
  assert.equal(JSON.parse(f.metadata.preprocessing).size, 21); // the run's global crops
  t.dispose(f.tensors);

  const l = await captured(() =>
    linear([
      "--weights",
      ck,
      "--data",
      "fmnist",
      "--cached-features",
      "--epochs",
      "2",
      "--train-limit",
      "100",
      "--test-limit",
      "20",
      "--output-dir",
      join(dir, "linear"),
    ])
  );
  assert.equal(l.value, 0, l.err);
  assert.match(l.out, /\(resnet18\): its pooled output \(512 features\)/);
  const blocks = await captured(() =>
    linear(["--weights", ck, "--data", "fmnist", "--n-last-blocks", "2", "--output-dir", join(dir, "l2")])
  );
  assert.equal(blocks.value, 2);
  assert.match(blocks.err, /--n-last-blocks and --avgpool-patchtokens are for ViTs/);

  const copies = "tests/fixtures/copies";
  const rflags = ["--weights", ck, "--database", `${copies}/database`, "--queries", `${copies}/queries`];
  const ret = await captured(() =>
    retrieve([...rflags, "--multiscale", "--image-size", "32", "--output-dir", join(dir, "retrieve")])
  );
  assert.equal(ret.value, 0, ret.err);
  assert.equal(
    JSON.parse(Deno.readTextFileSync(join(dir, "retrieve", "neighbours.json"))).features,
    "pooled output, scales 1, 1/sqrt 2, 1/2",
  );
  const copy = await captured(() => retrieve([...rflags, "--copy-detection", "--output-dir", join(dir, "copy")]));
  assert.equal(copy.value, 2);
  assert.match(copy.err, /is a resnet18: copy detection uses a ViT's CLS and patch tokens/);

  const a = await captured(() =>
    attention(["--weights", ck, "--image", "tests/fixtures/images/png-rgb8.png", "--output-dir", join(dir, "attn")])
  );
  assert.equal(a.value, 2);
  assert.equal(a.err.trim().split("\n").length, 1, a.err);
  assert.match(a.err, /is a resnet18: attention maps need a ViT/);

  // torchvision's layout as published (bare keys, fc included, 3 channels): the depth is read from the keys.
  using g = new t.Generator(0);
  const rn = initResNet(resnetConfig("resnet18"), g);
  const fc = { weight: t.zeros([1000, 512]), bias: t.zeros([1000]) };
  const bare = join(dir, "resnet18.safetensors");
  saveWeights(bare, { ...rn, fc } as unknown as typeof rn);
  t.dispose([rn, fc]);
  const wrong = await captured(() =>
    embed(["--weights", bare, "--arch", "resnet50", "--data", "fmnist", "--out", out])
  );
  assert.equal(wrong.value, 2);
  assert.match(wrong.err, /holds a resnet18, not --arch resnet50: pass --arch resnet18/);
  const gray = await captured(() => embed(["--weights", bare, "--data", "fmnist", "--out", out]));
  assert.equal(gray.value, 2);
  assert.match(gray.err, /takes 3-channel images; --data fmnist has 1/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a ResNet-50 checkpoint's teacher.backbone.* keys load into torchvision's resnet50() (fc = Identity), strictly", () => {
  const config = makeSettings("fmnist", {
    arch: "resnet50",
    useBnInHead: true,
    outDim: 16,
    hiddenDim: 16,
    bottleneckDim: 8,
    optimizer: "sgd",
  });
  const state = initTrainState(networkConfig(config, 3), dinoHyper(config), 0);
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "checkpoint.safetensors");
  try {
    saveCheckpoint(path, state, { config, channels: 3, epoch: 0, normalization: { mean: [0, 0, 0], std: [1, 1, 1] } });
    // torchvision's keys and shapes, in order, as the fixture generator listed them.
    const { tensors: fixture, metadata } = readSafetensors("tests/fixtures/resnet/resnet18.safetensors");
    t.dispose(fixture);
    const expected = JSON.parse(metadata.keys).resnet50 as [string, number[]][];
    const saved = Object.entries(stateDict(state.teacher.backbone)).map(([k, v]) => [k, v.shape]);
    assert.deepEqual(saved, expected);
    const { tensors } = readSafetensors(path);
    const teacherKeys = Object.keys(tensors).filter((k) => k.startsWith("teacher.backbone."));
    t.dispose(tensors);
    assert.deepEqual(teacherKeys.map((k) => k.slice("teacher.backbone.".length)), expected.map(([k]) => k));
    const python = "/usr/bin/python3";
    const hasTorch = (() => {
      try {
        return new Deno.Command(python, { args: ["-c", "import torch, torchvision"], stderr: "null" }).outputSync()
          .success;
      } catch {
        return false;
      }
    })();
    if (hasTorch) {
      const r = new Deno.Command(python, {
        args: ["scripts/gen_resnet_fixtures.py", "check-load", path, "resnet50"],
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      const said = new TextDecoder().decode(r.success ? r.stdout : r.stderr).trim();
      assert.ok(r.success, said);
      assert.ok(said.includes(`load_state_dict of ${expected.length} teacher.backbone tensors, strict=True`), said);
      assert.match(said, /output \[1, 2048\]$/);
    }
  } finally {
    t.dispose(state);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("--preset imagenet-resnet50 is the official README's ResNet-50 command, with a batch-norm head", () => {
  const s = makeSettings("imagenet-resnet50", { data: "/data/imagenet" });
  const command: Partial<Settings> = {
    arch: "resnet50",
    optimizer: "sgd",
    lr: 0.03,
    weightDecay: 1e-4,
    weightDecayEnd: 1e-4,
    globalCropsScale: [0.14, 1],
    localCropsScale: [0.05, 0.14],
    useBnInHead: true,
  };
  for (const [k, v] of Object.entries(command)) assert.deepEqual(s[k as keyof Settings], v, k);
  // Everything else at the official defaults (those of the official ViT-S/16 preset, which are main_dino.py's).
  const official = presetSettings("imagenet-vits16");
  for (const k of Object.keys(SETTINGS) as (keyof typeof SETTINGS)[]) {
    if (!(k in command) && k !== "data") assert.deepEqual(s[k], official[k], k);
  }
  const net = networkConfig(s, 3);
  assert.deepEqual([net.resnet?.embedDim, net.head.inDim, net.head.useBn, net.head.outDim], [2048, 2048, true, 65536]);
});
