// PyTorch's .pth files as the official repository publishes them, against
// fixtures from scripts/gen_pth_fixtures.py (torch.save of the official modules).
import assert from "node:assert/strict";
import { join } from "node:path";
import { zipSync } from "npm:fflate@0.8.3";
import { dispose, exists, Generator, item, liveTensors, tidy, toArray } from "../mod.ts";
import { main as convert } from "../cli/convert.ts";
import { main as embed } from "../cli/embed.ts";
import { main as knn } from "../cli/knn.ts";
import { dinoConfig } from "../lib/model/dino.ts";
import { headForward } from "../lib/model/head.ts";
import { initViT, vitConfig, vitForward } from "../lib/model/vit.ts";
import { decodePth, PthError, readPth } from "../lib/weights/pth.ts";
import { readWeights } from "../lib/weights/read.ts";
import { loadEvalBackbone, requireViT } from "../lib/weights/pretrained.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { loadDino, saveWeights } from "../lib/weights/weights.ts";
import { saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/step.ts";
import { assertClose, captured } from "./helpers.ts";

const DIR = new URL("./fixtures/pth/", import.meta.url).pathname;
const fixture = (name: string) => join(DIR, name);
const IMAGES = new URL("./fixtures/images/", import.meta.url).pathname;
const flatArray = (t: Parameters<typeof toArray>[0]) => [toArray(t)].flat(8) as number[];

Deno.test("every dtype and view a .pth holds reads as PyTorch wrote it", () => {
  const before = liveTensors();
  const { tensors } = readWeights(fixture("kinds.pth"));
  const expected = readSafetensors(fixture("expected.safetensors")).tensors;
  const dtypes: Record<string, string> = { f16: "f16", bf16: "bf16", f64: "f64", i64: "i64", i32: "i32", u8: "u8" };
  for (const key of ["f32", "offset", "transposed", "shared", "f16", "bf16", "f64", "i64", "i32", "u8", "bool"]) {
    const want = expected[`kinds.${key}`];
    assert.deepEqual(tensors[key].shape, want.shape, key);
    assert.equal(tensors[key].dtype, dtypes[key] ?? (key === "bool" ? "bool" : "f32"), key);
    const got = flatArray(tensors[key]).map(Number);
    assert.deepEqual(got, flatArray(want).map(Number), key);
  }
  assert.deepEqual([tensors.scalar.shape, item(tensors.scalar)], [[], 7.5]);
  assert.deepEqual(tensors.empty.shape, [0, 3]);
  assert.deepEqual(toArray(tensors.param), [1, 1]);
  dispose([tensors, expected]);
  assert.equal(liveTensors(), before);
});

Deno.test("a full checkpoint's teacher (default) and student give PyTorch's features to 1e-5", () => {
  const before = liveTensors();
  const expected = readSafetensors(fixture("expected.safetensors")).tensors;
  for (const key of ["teacher", "student"]) {
    const b = requireViT(
      loadEvalBackbone(fixture("full.pth"), key === "teacher" ? {} : { checkpointKey: key }),
      "tests",
    );
    assert.deepEqual([b.vit.embedDim, b.vit.depth, b.vit.numHeads, b.vit.patchSize, b.vit.imgSize], [24, 2, 3, 8, 32]);
    const features = tidy(() => vitForward(b.backbone, b.vit, expected.input));
    assertClose(flatArray(features), flatArray(expected[`${key}_features`]), 1e-5);
    dispose([features, b.backbone]);
  }
  // The network with its head, as continued pretraining loads it.
  const cfg = dinoConfig({ arch: "vit_tiny", embedDim: 24, depth: 2, patchSize: 8, imgSize: 32, outDim: 64 });
  const net = loadDino(fixture("full.pth"), { ...cfg, head: { ...cfg.head, hiddenDim: 48, bottleneckDim: 16 } });
  const out = tidy(() => {
    const { output, bnStats } = headForward(
      net.head,
      { ...cfg.head, hiddenDim: 48, bottleneckDim: 16 },
      vitForward(net.backbone, cfg.vit, expected.input),
      false,
    );
    dispose(bnStats);
    return output;
  });
  assertClose(flatArray(out), flatArray(expected.teacher_output), 1e-5);
  dispose([out, net, expected]);
  assert.equal(liveTensors(), before);
});

Deno.test("a released backbone-only .pth gives the same features, its shape read from the weights", () => {
  const before = liveTensors();
  const expected = readSafetensors(fixture("expected.safetensors")).tensors;
  const b = requireViT(loadEvalBackbone(fixture("backbone.pth"), { arch: "vit_tiny" }), "tests");
  const features = tidy(() => vitForward(b.backbone, b.vit, expected.input));
  assertClose(flatArray(features), flatArray(expected.teacher_features), 1e-5);
  assert.throws(() => loadEvalBackbone(fixture("backbone.pth")), /has no metadata: pass arch/);
  assert.throws(() => loadEvalBackbone(fixture("backbone.pth"), { arch: "vit_tiny", patchSize: 16 }), /patch size 8/);
  dispose([features, b.backbone, expected]);
  assert.equal(liveTensors(), before);
});

Deno.test("a full checkpoint keeps its args and epoch as metadata; an unknown or absent --checkpoint-key names the networks", () => {
  const before = liveTensors();
  const { tensors, metadata } = readWeights(fixture("full.pth"), { select: (k) => k.startsWith("dino_loss.") });
  assert.deepEqual(Object.keys(tensors), ["dino_loss.center"]);
  assert.equal(JSON.parse(metadata.args).arch, "vit_tiny");
  assert.deepEqual(JSON.parse(metadata.args).global_crops_scale, [0.4, 1]);
  assert.equal(metadata.epoch, "3");
  dispose(tensors);
  assert.throws(
    () => loadEvalBackbone(fixture("full.pth"), { checkpointKey: "ema" }),
    /no "ema" network in this file \(it holds "student", "teacher"\): pass one of those to --checkpoint-key/,
  );
  // Only a student: the default teacher is refused naming the key that works, which loads.
  assert.throws(
    () => loadEvalBackbone(fixture("student_only.pth"), { arch: "vit_tiny" }),
    /no "teacher" network in this file \(it holds "student"\): pass --checkpoint-key student/,
  );
  const student = loadEvalBackbone(fixture("student_only.pth"), { arch: "vit_tiny", checkpointKey: "student" });
  assert.ok(student.vit);
  dispose(student.backbone);
  assert.equal(liveTensors(), before);
});

Deno.test("a pickle naming os.system is refused and never runs", () => {
  const marker = "/tmp/dino-pth-evil-ran";
  try {
    Deno.removeSync(marker);
  } catch { /* absent, as it should be */ }
  assert.throws(
    () => readPth(fixture("evil.pth")),
    (e: Error) =>
      e instanceof PthError &&
      /the pickle names the global posix\.system.*refused \(loading never runs code\)/.test(e.message),
  );
  assert.throws(() => Deno.statSync(marker), Deno.errors.NotFound);
  // Any other global is refused the same way, by name.
  const pickle = Uint8Array.from(
    "\x80\x02cbuiltins\neval\nq\x00X\x03\x00\x00\x001+1q\x01\x85R.",
    (c) => c.charCodeAt(0),
  );
  assert.throws(() => decodePth(zipSync({ "a/data.pkl": pickle }), "x.pth"), /x\.pth: .*builtins\.eval.*refused/);
});

Deno.test("the legacy format, truncated and corrupt zips, and other files are clear errors", () => {
  const before = liveTensors();
  assert.throws(() => readPth(fixture("script.pth")), /a TorchScript archive .*torch\.save\(model\.state_dict\(\)/);
  assert.throws(() => readPth(fixture("legacy.pth")), /PyTorch before 1\.6.*convert it with python -c .*torch\.save/);
  const bytes = Deno.readFileSync(fixture("full.pth"));
  for (const cut of [10, 1000, bytes.length / 2, bytes.length - 30]) {
    assert.throws(() => decodePth(bytes.subarray(0, cut), "cut.pth"), /cut\.pth: a truncated or corrupt zip/, `${cut}`);
  }
  // A storage shorter than its tensor, and a zip without data.pkl.
  const files = { "a/data.pkl": Deno.readFileSync(fixture("kinds.pth")).subarray(0, 0) };
  assert.throws(() => decodePth(zipSync(files), "e.pth"), /e\.pth: /);
  assert.throws(
    () => decodePth(zipSync({ "x.txt": new Uint8Array(3) }), "z.pth"),
    /without a single <name>\/data\.pkl/,
  );
  assert.throws(
    () => decodePth(new TextEncoder().encode("{}"), "j.pth"),
    /not a PyTorch checkpoint .* nor safetensors/,
  );
  assert.equal(liveTensors(), before);
});

Deno.test("deno task convert writes safetensors that load to the same features; embed reads .pth directly", async () => {
  const before = liveTensors();
  const dir = Deno.makeTempDirSync();
  const out = join(dir, "full.safetensors");
  const r = await captured(() => Promise.resolve(convert(["--in", fixture("full.pth"), "--out", out])));
  assert.equal(r.value, 0, r.err);
  assert.match(r.out, /wrote .*full\.safetensors: 188 tensors, args in the metadata/);
  const { metadata, tensors } = readSafetensors(out);
  assert.equal(JSON.parse(metadata.args).patch_size, 8);
  assert.ok("student.module.backbone.cls_token" in tensors && "dino_loss.center" in tensors);
  dispose(tensors);
  const expected = readSafetensors(fixture("expected.safetensors")).tensors;
  for (const key of ["teacher", "student"]) {
    const b = requireViT(loadEvalBackbone(out, { checkpointKey: key }), "tests"); // the arch comes from the saved args
    const features = tidy(() => vitForward(b.backbone, b.vit, expected.input));
    assertClose(flatArray(features), flatArray(expected[`${key}_features`]), 1e-5);
    dispose([features, b.backbone]);
  }
  // Failures write nothing: a refused pickle, an unknown network, a safetensors input.
  for (
    const [args, says] of [
      [["--in", fixture("evil.pth"), "--out", join(dir, "e.safetensors")], /posix\.system.*refused/],
      [["--in", fixture("full.pth"), "--out", join(dir, "e.safetensors"), "--checkpoint-key", "ema"], /no "ema"/],
      [["--in", out, "--out", join(dir, "e.safetensors")], /already safetensors/],
      [["--in", fixture("full.pth"), "--out", fixture("full.pth")], /is the --in file/],
    ] as const
  ) {
    const e = await captured(() => Promise.resolve(convert([...args])));
    assert.equal(e.value, 2, e.err);
    assert.match(e.err, says);
    assert.ok(!exists(join(dir, "e.safetensors")));
  }
  // embed takes the official file as it is (the network's shape from its args, the teacher by default).
  const images = join(dir, "images");
  Deno.mkdirSync(images);
  for (const f of ["png-rgb8.png", "jpeg-rgb-444.jpg"]) Deno.copyFileSync(join(IMAGES, f), join(images, f));
  const features = join(dir, "features.safetensors");
  const e = await captured(() => embed(["--weights", fixture("full.pth"), "--data", images, "--out", features]));
  assert.equal(e.value, 0, e.err);
  const written = readSafetensors(features).tensors;
  assert.deepEqual(written.features.shape, [2, 24]);
  // knn too: a labelled folder (one subfolder per class), the student this time.
  const labelled = join(dir, "labelled");
  for (
    const [cls, files] of [["a", ["png-rgb8.png", "jpeg-rgb-444.jpg"]], ["b", [
      "bmp-24bit.bmp",
      "png-rgb8-adam7.png",
    ]]] as const
  ) {
    Deno.mkdirSync(join(labelled, cls), { recursive: true });
    for (const f of files) Deno.copyFileSync(join(IMAGES, f), join(labelled, cls, f));
  }
  const k = await captured(() =>
    knn(["--checkpoint", fixture("full.pth"), "--checkpoint-key", "student", "--data", labelled, "--k", "1"])
  );
  assert.equal(k.value, 0, k.err);
  assert.match(k.out, /top-1/);
  dispose([written, expected]);
  Deno.removeSync(dir, { recursive: true });
  assert.equal(liveTensors(), before);
});

Deno.test("weights of a standard width and another --arch are refused naming both widths and the fix", () => {
  const before = liveTensors();
  using g = new Generator(0);
  const p = initViT(vitConfig("vit_small", { depth: 1 }), g);
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  saveWeights(path, p);
  assert.throws(
    () => loadEvalBackbone(path, { arch: "vit_base" }),
    /holds a 384-wide ViT \(vit_small\), not arch vit_base \(768 wide\): pass arch vit_small/,
  );
  const ok = requireViT(loadEvalBackbone(path, { arch: "vit_small" }), "tests");
  assert.equal(ok.vit.numHeads, 6);
  dispose([p, ok.backbone]);
  Deno.removeSync(path);
  assert.equal(liveTensors(), before);
});

Deno.test("a checkpoint's own network wins: another --arch or --patch-size is refused, the same is accepted", () => {
  const before = liveTensors();
  const config = makeSettings("fmnist", { depth: 1 });
  const state = initTrainState(networkConfig(config, 1), dinoHyper(), 0);
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  saveCheckpoint(path, state, { config, channels: 1, epoch: 1, normalization: { mean: [0.5], std: [0.5] } });
  dispose(state);
  assert.throws(
    () => loadEvalBackbone(path, { arch: "resnet18" }),
    /is a checkpoint of arch vit_tiny, not resnet18: drop arch \(it is read from the checkpoint\)/,
  );
  assert.throws(
    () => loadEvalBackbone(path, { patchSize: 16 }),
    /is a checkpoint of patchSize 7, not 16: drop patchSize/,
  );
  const same = loadEvalBackbone(path, { arch: "vit_tiny", patchSize: 7 });
  assert.equal(same.vit?.patchSize, 7);
  dispose(same.backbone);
  Deno.removeSync(path);
  assert.equal(liveTensors(), before, "nothing left behind by the refusals");
});
