// Continued pretraining (`train --init-weights`): a run starts from a full checkpoint's student and teacher,
// heads included (the official .pth as published, or this project's), or from a backbone with fresh heads,
// with a fresh optimizer and schedules; and `--eval-linear` adds a linear probe to the report.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/mod.ts";
import { vitForward, type ViTParams } from "../lib/model/vit.ts";
import { loadCheckpoint, readSafetensors, saveWeights, startFrom } from "../lib/weights/mod.ts";
import { assertClose } from "./helpers.ts";

const FIXTURES = new URL("./fixtures/pth/", import.meta.url).pathname;
const TINY = ["--embed-dim", "32", "--depth", "1", "--num-heads", "2", "--out-dim", "64", "--hidden-dim", "32"];
const RUN = [...TINY, "--bottleneck-dim", "16", "--batch-size", "32", "--local-crops-number", "2", "--epochs", "1"];
const flat = (x: t.Tensor) => [t.toArray(x)].flat(8) as number[];

/** The settings of the fixtures' network (scripts/gen_pth_fixtures.py): a 24-wide, 2-deep ViT on 32 px RGB. */
function fixtureNet() {
  const s = makeSettings("fmnist", {
    arch: "vit_tiny",
    embedDim: 24,
    depth: 2,
    numHeads: 3,
    patchSize: 8,
    imageSize: 32,
    globalCropsSize: 32,
    localCropsSize: 16,
    outDim: 64,
    hiddenDim: 48,
    bottleneckDim: 16,
  });
  return networkConfig(s, 3);
}

Deno.test("an official full checkpoint (.pth) starts both networks, heads included, as PyTorch computes them", () => {
  const before = t.liveTensors();
  const net = fixtureNet();
  const { state, from } = startFrom(initTrainState(net, dinoHyper(), 0), join(FIXTURES, "full.pth"));
  assert.equal(from, "student and teacher");
  const expected = readSafetensors(join(FIXTURES, "expected.safetensors")).tensors;
  for (const [name, backbone] of [["teacher", state.teacher.backbone], ["student", state.student.backbone]] as const) {
    const features = t.tidy(() => vitForward(backbone as ViTParams, net.vit!, expected.input));
    assertClose(flat(features), flat(expected[`${name}_features`]), 1e-5);
    features.dispose();
  }
  // The optimizer, center and step are fresh.
  assert.equal(state.step, 0);
  assert.deepEqual([...new Set(flat(state.center))], [0]);
  t.dispose([state, expected]);
  assert.equal(t.liveTensors(), before);
});

Deno.test("a backbone-only file starts both backbones and keeps fresh heads; a misfit names the shapes", () => {
  const before = t.liveTensors();
  const net = fixtureNet();
  const fresh = initTrainState(net, dinoHyper(), 0);
  const freshHead = t.toArray(fresh.student.head.last_layer.weight_v);
  const { state, from } = startFrom(fresh, join(FIXTURES, "backbone.pth"));
  assert.equal(from, "backbones only");
  assert.deepEqual(t.toArray(state.student.head.last_layer.weight_v), freshHead);
  t.dispose(state);
  // The Fashion-MNIST defaults are another network: every misfit is named, and the fresh state is left whole.
  const other = initTrainState(networkConfig(makeSettings("fmnist", { depth: 2 }), 1), dinoHyper(), 0);
  assert.throws(
    () => startFrom(other, join(FIXTURES, "full.pth")),
    /full\.pth does not fit the network of these settings .*patch_embed\.proj\.weight: shape \[24, 3, 8, 8\] in the weights, \[\d+, 1, 7, 7\] in the model/s,
  );
  t.dispose(other);
  assert.equal(t.liveTensors(), before);
});

Deno.test("train --init-weights continues from this project's checkpoint with a fresh optimizer; bad files are usage errors", async () => {
  const root = Deno.makeTempDirSync();
  const before = t.liveTensors();
  const first = join(root, "first");
  const a = await captured(() => train([...RUN, "--max-steps", "2", "--train-limit", "96", "--output-dir", first]));
  assert.equal(a.value, 0, a.err);
  const second = join(root, "second");
  const args = [...RUN, "--max-steps", "1", "--train-limit", "96", "--test-limit", "40", "--eval-linear", "true"];
  const b = await captured(() =>
    train([...args, "--init-weights", join(first, "checkpoint.safetensors"), "--output-dir", second])
  );
  assert.equal(b.value, 0, b.err);
  assert.match(
    b.out,
    /starting from .*checkpoint\.safetensors: student and teacher; a fresh optimizer, center and schedules/,
  );
  assert.match(b.out, /linear probe top-1 \d+\.\d+% \(top-5 \d+\.\d+%, best epoch \d+/);
  const summary = JSON.parse(Deno.readTextFileSync(join(second, "summary.json")));
  assert.ok(summary.linear.top1 >= 0 && summary.linear.top1 <= 100);
  const done = loadCheckpoint(join(second, "checkpoint.safetensors"));
  assert.equal(done.state.step, 1, "the step count starts again");
  t.dispose(done.state);
  // A backbone-only file of the same network: fresh heads, said so.
  const ck = loadCheckpoint(join(first, "checkpoint.safetensors"));
  const bare = join(root, "bare.safetensors");
  saveWeights(bare, ck.state.teacher.backbone);
  t.dispose(ck.state);
  const c = await captured(() =>
    train([...RUN, "--max-steps", "1", "--train-limit", "96", "--init-weights", bare, "--output-dir", join(root, "c")])
  );
  assert.equal(c.value, 0, c.err);
  assert.match(c.out, /starting from .*bare\.safetensors: backbones only \(fresh heads\)/);
  // Misfits and non-files: one line, exit 2, no output folder.
  for (
    const [file, says] of [
      [join(FIXTURES, "full.pth"), /--init-weights .*full\.pth does not fit .*patch_embed\.proj\.weight/],
      [join(FIXTURES, "evil.pth"), /--init-weights .*evil\.pth: .*posix\.system.*refused/],
      [join(root, "missing.pth"), /--init-weights .*missing\.pth: no such file/],
    ] as const
  ) {
    const out = join(root, "never");
    const r = await captured(() => train([...RUN, "--init-weights", file, "--output-dir", out]));
    assert.equal(r.value, 2, r.err);
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
    assert.match(r.err, says);
    assert.ok(!t.exists(out), "nothing written");
  }
  assert.equal(t.liveTensors(), before);
  Deno.removeSync(root, { recursive: true });
});
