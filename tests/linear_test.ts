// Linear evaluation: parity with the official eval_linear.py on fixtures written by
// scripts/gen_linear_fixtures.py (run with /usr/bin/python3), the loop, the library probe and the command.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assertClose, captured } from "./helpers.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { saveWeights } from "../lib/weights/weights.ts";
import { type Flat, loadStateDict } from "../lib/weights/tree.ts";
import { initViT, vitConfig, type ViTParams } from "../lib/model/vit.ts";
import { tensorDataset } from "../lib/data/dataset.ts";
import {
  cosineAnnealingLr,
  evaluateClassifier,
  initLinearState,
  linearFeatures,
  linearLoop,
  linearProbe,
  type LinearState,
  linearStep,
} from "../lib/eval/linear.ts";
import { main as linear } from "../cli/linear.ts";

const fixture = readSafetensors(new URL("./fixtures/linear.safetensors", import.meta.url).pathname);
const F = fixture.tensors;
const CFG = JSON.parse(fixture.metadata.cfg);
const TRAIN = JSON.parse(fixture.metadata.train);
const vit = vitConfig("vit_tiny", {
  embedDim: CFG.embed_dim,
  depth: CFG.depth,
  numHeads: CFG.num_heads,
  patchSize: CFG.patch_size,
  inChans: CFG.in_chans,
  imgSize: CFG.img_size,
});
const labels = Int32Array.from(t.toArray(F.labels));

function prefixed(prefix: string): Flat {
  return Object.fromEntries(
    Object.entries(F).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
  );
}

function fixtureBackbone(): ViTParams {
  using g = new t.Generator(0);
  const template = initViT(vit, g);
  try {
    return loadStateDict(template, prefixed("backbone."));
  } finally {
    t.dispose(template);
  }
}

function maxDiff(a: t.Tensor, b: t.Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  return t.tidy(() => t.item(t.amax(t.abs(t.sub(t.to(a, "f64"), t.to(b, "f64"))))));
}

Deno.test("features: the CLS of the last n blocks (+ pooled patch tokens) match the official line to 1e-5", () => {
  const before = t.liveTensors();
  const backbone = fixtureBackbone();
  try {
    for (
      const [name, spec] of [
        ["features_n1_avg", { nLastBlocks: 1, avgpoolPatchtokens: true }], // the official line itself (interleaved)
        ["features_n2_avg", { nLastBlocks: 2, avgpoolPatchtokens: true }], // the mean after the CLS tokens
        ["features_n2", { nLastBlocks: 2, avgpoolPatchtokens: false }],
      ] as const
    ) {
      using f = t.tidy(() => t.noGrad(() => linearFeatures(backbone, vit, F.images, spec)));
      const d = maxDiff(f, F[name]);
      assert.ok(d <= 1e-5, `${name}: max |diff| ${d}`);
    }
    assert.throws(
      () => linearFeatures(backbone, vit, F.images, { nLastBlocks: 4, avgpoolPatchtokens: false }),
      /n_last_blocks must be between 1 and the backbone's depth 3, got 4/,
    );
  } finally {
    t.dispose(backbone);
  }
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

Deno.test("training: SGD momentum, CosineAnnealingLR and cross-entropy steps match the official loop to 1e-5", () => {
  const before = t.liveTensors();
  const features = F.features_n2_avg;
  const orders = t.toArray(F.orders);
  const expectedLosses = t.toArray(F.losses), expectedLrs = t.toArray(F.lrs);
  const { epochs, batch, lr } = TRAIN;
  const n = labels.length;
  const lrAt = cosineAnnealingLr((lr * batch) / 256, epochs);
  let state: LinearState = {
    classifier: { linear: { weight: t.clone(F["init.linear.weight"]), bias: t.clone(F["init.linear.bias"]) } },
    optimizer: {
      momentum_buffer: {
        "linear.weight": t.zerosLike(F["init.linear.weight"]),
        "linear.bias": t.zerosLike(F["init.linear.bias"]),
      },
    },
  };
  const losses: number[] = [], lrs: number[] = [];
  for (let e = 0; e < epochs; e++) {
    lrs.push(lrAt(e));
    const order = orders.slice(e * n, (e + 1) * n);
    for (let start = 0; start < n; start += batch) {
      const idx = order.slice(start, start + batch);
      const next = t.tidy(() => {
        const x = t.indexSelect(features, 0, t.tensor(BigInt64Array.from(idx, BigInt)));
        const y = t.tensor(BigInt64Array.from(idx, (i) => BigInt(labels[i])));
        return linearStep(state, x, y, lrAt(e));
      });
      t.dispose(state);
      state = next.state;
      losses.push(next.loss);
    }
  }
  assertClose(lrs, expectedLrs, 1e-12);
  assertClose(losses, expectedLosses, 1e-5);
  for (
    const [actual, expected] of [
      [state.classifier.linear.weight, F["final.linear.weight"]],
      [state.classifier.linear.bias, F["final.linear.bias"]],
      [state.optimizer.momentum_buffer["linear.weight"], F["momentum.linear.weight"]],
      [state.optimizer.momentum_buffer["linear.bias"], F["momentum.linear.bias"]],
    ]
  ) {
    assert.ok(maxDiff(actual, expected) <= 1e-5, `max |diff| ${maxDiff(actual, expected)}`);
  }
  const [top1, top5, loss] = t.toArray(F.eval);
  const r = evaluateClassifier(state.classifier, features, labels);
  assert.deepEqual([r.top1, r.top5], [top1, top5]);
  assertClose([r.loss], [loss], 1e-5);
  const logits = t.tidy(() => t.linear(features, state.classifier.linear.weight, state.classifier.linear.bias));
  assert.ok(maxDiff(logits, F.logits) <= 1e-5);
  t.dispose([logits, state]);
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

Deno.test("the loop: a seed gives the same classifier, every tensor freed, an aborted loop stops, --val-freq as the official", async () => {
  const before = t.liveTensors();
  const features = F.features_n2_avg;
  const run = async (seed: number, signal?: AbortSignal) => {
    using g = new t.Generator(0);
    let state = initLinearState(features.shape[1], TRAIN.labels, g);
    const set = { features, labels };
    try {
      let best;
      for await (
        const e of linearLoop(state, { train: set, test: set, epochs: 3, batchSize: 4, lr: 8, seed, signal })
      ) {
        state = e.state;
        if (e.type === "epoch") best = e.best;
      }
      return { weight: t.toArray(state.classifier.linear.weight), best };
    } finally {
      t.dispose(state);
    }
  };
  const a = await run(0), b = await run(0), c = await run(1);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.weight, c.weight); // another shuffle
  assert.ok(a.best && a.best.top1 >= 0 && a.best.epoch >= 0 && a.best.epoch < 3);
  const stop = new AbortController();
  stop.abort(new Error("stop"));
  await assert.rejects(run(0, stop.signal), /stop/);
  // --val-freq 3 over 5 epochs tests epochs 0, 3 and 4, as eval_linear.py's `epoch % val_freq == 0 or last`.
  const tested: number[] = [];
  {
    using g = new t.Generator(0);
    let state = initLinearState(features.shape[1], TRAIN.labels, g);
    const set = { features, labels };
    for await (
      const e of linearLoop(state, { train: set, test: set, epochs: 5, batchSize: 8, lr: 8, seed: 0, valFreq: 3 })
    ) {
      state = e.state;
      if (e.type === "epoch" && e.test) tested.push(e.epoch);
    }
    t.dispose(state);
  }
  assert.deepEqual(tested, [0, 3, 4]);
  assert.equal(t.liveTensors(), before, "tensors leaked");
});

/** A tiny labelled image folder (train/ and val/, two classes: dark and bright noise) and official-layout weights. */
function tinySetup(): { dir: string; data: string; weights: string } {
  const dir = Deno.makeTempDirSync();
  const data = join(dir, "data");
  using g = new t.Generator(0);
  for (const [split, count] of [["train", 12], ["val", 6]] as const) {
    for (const [c, lo] of [["dark", 0], ["bright", 150]] as const) {
      Deno.mkdirSync(join(data, split, c), { recursive: true });
      for (let i = 0; i < count; i++) {
        t.tidy(() =>
          t.writeImage(join(data, split, c, `${i}.png`), t.to(t.randint(g, lo, lo + 100, [20, 20, 3]), "u8"))
        );
      }
    }
  }
  const backbone = initViT(vitConfig("vit_tiny", { embedDim: 48, depth: 2, patchSize: 8, imgSize: 16 }), g);
  const weights = join(dir, "backbone.safetensors");
  saveWeights(weights, backbone); // bare backbone keys, no metadata: needs --arch
  t.dispose(backbone);
  return { dir, data, weights };
}

Deno.test("deno task linear: cached features, end to end: classifier, metrics, summary, no leak", async () => {
  const { dir, data, weights } = tinySetup();
  const out = join(dir, "out");
  const before = t.liveTensors();
  const args = ["--weights", weights, "--arch", "vit_tiny", "--data", data, "--epochs", "3", "--batch-size", "8"];
  const r = await captured(() => linear([...args, "--cached-features", "--lr", "1", "--output-dir", out]));
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before, "the program frees every tensor");
  assert.match(r.out, /CLS of the last 2 block\(s\) \(96 features\)/); // depth 2: min(4, depth) blocks of width 48
  assert.match(r.out, /linear top-1 \d+\.\d+% {2}top-5 100\.00% \(best epoch \d of 3/);
  assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
    "checkpoint.safetensors",
    "config.json",
    "metrics.jsonl",
    "summary.json",
  ]);
  const records = Deno.readTextFileSync(join(out, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(records.map((x) => x.epoch), [0, 1, 2]);
  for (const k of ["lr", "train_loss", "test_acc1", "test_acc5", "test_loss", "best_acc1", "best_epoch"]) {
    assert.ok(k in records[0], k);
  }
  assertClose(records.map((x) => x.lr), [0, 1, 2].map(cosineAnnealingLr(8 / 256, 3)), 1e-12);
  const summary = JSON.parse(Deno.readTextFileSync(join(out, "summary.json")));
  assert.equal(summary.top1, Math.max(...records.map((x) => x.test_acc1)));
  assert.ok(summary.top1 >= 75, `dark vs bright noise: ${summary.top1}%`);
  const { tensors, metadata } = readSafetensors(join(out, "checkpoint.safetensors"));
  assert.deepEqual(Object.keys(tensors).sort(), [
    "linear.bias",
    "linear.weight",
    "optimizer.momentum_buffer.linear.bias",
    "optimizer.momentum_buffer.linear.weight",
  ]);
  assert.deepEqual(tensors["linear.weight"].shape, [2, 96]);
  assert.deepEqual([metadata.epoch, metadata.n_last_blocks, metadata.avgpool_patchtokens], ["3", "2", "false"]);
  t.dispose(tensors);
  // The first 6 training images of a folder are of its first class alone: said.
  const limited = await captured(() =>
    linear([...args, "--cached-features", "--train-limit", "6", "--output-dir", join(dir, "limited")])
  );
  assert.equal(limited.value, 0, limited.err);
  assert.match(limited.err, /warning: the first 6 images \(--train-limit\) hold 1 of the 2 classes/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("deno task linear: augmented training (crops and flips every epoch) with pooled patch tokens", async () => {
  const { dir, data, weights } = tinySetup();
  const out = join(dir, "out");
  const before = t.liveTensors();
  const args = ["--weights", weights, "--arch", "vit_tiny", "--data", data, "--epochs", "2", "--batch-size", "5"];
  const r = await captured(() =>
    linear([...args, "--n-last-blocks", "1", "--avgpool-patchtokens", "--output-dir", out, "--test-limit", "7"])
  );
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before, "the program frees every tensor");
  assert.match(r.out, /\(96 features\), .*\(24 train, 7 test images\).*RandomResizedCrop 0\.4-1 \+ flip/);
  const { tensors, metadata } = readSafetensors(join(out, "checkpoint.safetensors"));
  assert.deepEqual([tensors["linear.weight"].shape, metadata.avgpool_patchtokens], [[2, 96], "true"]);
  t.dispose(tensors);
  const config = JSON.parse(Deno.readTextFileSync(join(out, "config.json")));
  assert.deepEqual([config.nLastBlocks, config.avgpoolPatchtokens, config.cachedFeatures], [1, true, false]);
  // `--avgpool-patchtokens false` turns it off again
  const r2 = await captured(() =>
    linear([...args, "--avgpool-patchtokens", "false", "--epochs", "1", "--output-dir", out, "--cached-features"])
  );
  assert.equal(r2.value, 0, r2.err);
  assert.equal(JSON.parse(Deno.readTextFileSync(join(out, "config.json"))).avgpoolPatchtokens, false);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("deno task linear: bad input is one line naming the fix, exit 2, nothing written", async () => {
  const { dir, data, weights } = tinySetup();
  const out = join(dir, "out");
  // a 1-channel IDX file: the 3-channel weights cannot read it
  const idx = join(dir, "gray-images-idx3-ubyte");
  const header = new Uint8Array([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 16, 0, 0, 0, 16]);
  Deno.writeFileSync(idx, new Uint8Array([...header, ...new Uint8Array(2 * 16 * 16)]));
  const base = ["--weights", weights, "--arch", "vit_tiny", "--data", data, "--output-dir", out];
  const cases: [string[], RegExp][] = [
    [["--frobnicate"], /Unknown option '--frobnicate'/],
    [["--data", data], /--weights is required/],
    [["--weights", join(dir, "missing.safetensors"), "--data", data], /--weights .*missing\.safetensors: no such file/],
    [[...base, "--epochs", "0"], /--epochs must be between 1 and 100000, got 0/],
    [[...base, "--lr", "fast"], /--lr takes a number, got "fast"/],
    [[...base, "--avgpool-patchtokens=maybe"], /--avgpool-patchtokens takes true or false, got "maybe"/],
    [[...base, "--n-last-blocks", "3"], /--n-last-blocks 3 exceeds the 2 blocks of/],
    [[...base, "--patch-size", "4"], /patch size 8, not --patch-size 4/],
    [[...base, "--image-size", "20"], /--image-size 20 is not a multiple of the model's patch size 8/],
    [[...base.slice(0, 4), "--data", idx, "--output-dir", out], /takes 3-channel images; --data .* has 1/],
    [["--weights", weights, "--data", data, "--output-dir", out], /no metadata: pass --arch/],
    [["--weights", data, "--data", data], /is a folder, not a weights file/],
  ];
  const help = await captured(() => linear(["--help"]));
  assert.equal(help.value, 0);
  assert.match(help.out, /--n-last-blocks N .*\n.*4 for ViT-S-like widths under 768, 1 for ViT-B/);
  for (const [args, expected] of cases) {
    const r = await captured(() => linear(args));
    assert.equal(r.value, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, expected);
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
    assert.match(r.err, /\(see 'deno task linear --help'\)$/m);
    assert.ok(!t.exists(out), `${args.join(" ")} wrote ${out}`);
  }
  // A training run's folder: its checkpoint and records would be replaced.
  const run = join(dir, "run");
  Deno.mkdirSync(run);
  Deno.writeTextFileSync(join(run, "config.json"), JSON.stringify({ outDim: 64 }));
  Deno.writeTextFileSync(join(run, "checkpoint.safetensors"), "the run's");
  const r = await captured(() => linear([...base.slice(0, 6), "--output-dir", run]));
  assert.equal(r.value, 2, r.err);
  assert.match(
    r.err,
    /--output-dir .*run holds a run of `deno task train` .* choose another folder, for example .*run\/linear/,
  );
  assert.equal(Deno.readTextFileSync(join(run, "checkpoint.safetensors")), "the run's");
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("linearProbe: the library probe a training run can call separates the classes, frees everything", async () => {
  using g = new t.Generator(0);
  const cfg = vitConfig("vit_tiny", { embedDim: 24, depth: 2, numHeads: 2, patchSize: 4, imgSize: 8, inChans: 1 });
  const backbone = initViT(cfg, g);
  using dark = t.tidy(() => t.to(t.randint(g, 0, 60, [20, 1, 8, 8]), "u8"));
  using bright = t.tidy(() => t.to(t.randint(g, 190, 256, [20, 1, 8, 8]), "u8"));
  using images = t.cat([dark, bright], 0);
  using data = tensorDataset(images, { labels: new Int32Array(40).map((_, i) => (i < 20 ? 0 : 1)) });
  const epochs: number[] = [];
  const before = t.liveTensors();
  const r = await linearProbe(backbone, cfg, {
    train: data,
    test: data,
    transform: { size: 8, mean: [0.5], std: [0.25] },
    epochs: 5,
    batchSize: 8,
    lr: 2,
    onEpoch: (e) => epochs.push(e.epoch),
  });
  assert.deepEqual(epochs, [0, 1, 2, 3, 4]);
  assert.deepEqual([r.featureDim, r.numLabels, r.spec], [48, 2, { nLastBlocks: 2, avgpoolPatchtokens: false }]);
  assert.equal(r.top1, Math.max(...r.epochs.map((e) => e.test!.top1)));
  assert.ok(r.top1 >= 90, `${r.top1}%`);
  assert.equal(t.liveTensors(), before, "tensors leaked");
  t.dispose(backbone);
});
