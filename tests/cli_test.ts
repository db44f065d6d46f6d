import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured, TINY_VIT_FLAGS } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { main as knn } from "../cli/knn.ts";
import { filesMetadata, main as embed } from "../cli/embed.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { loadDino, saveWeights } from "../lib/weights/weights.ts";
import { networkConfig, presetSettings, SETTINGS, type Settings } from "../lib/settings/mod.ts";
import { flagOf, parseTrainArgs, trainHelp } from "../cli/flags.ts";

const TINY = [
  ...TINY_VIT_FLAGS,
  "--batch-size",
  "32",
  "--local-crops-number",
  "2",
  "--log-every",
  "1",
  "--epochs",
  "1",
];

function tensorsOf(path: string): Record<string, number[]> {
  const { tensors } = readSafetensors(path);
  const out = Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, t.toArray(v)]));
  t.dispose(tensors);
  return out;
}

Deno.test("a tiny end-to-end run trains, checkpoints, logs metrics and reports three k-NN numbers", async () => {
  const dir = Deno.makeTempDirSync();
  const before = t.liveTensors();
  const r = await captured(() => train([...TINY, "--train-limit", "256", "--test-limit", "60", "--output-dir", dir]));
  assert.equal(r.value, 0, r.err);
  assert.match(r.out, /DINO teacher, trained\s+\d+\.\d+%/);
  assert.match(r.out, /same network, at init\s+\d+\.\d+%/);
  assert.match(r.out, /raw pixels\s+\d+\.\d+%/);
  assert.equal(t.liveTensors(), before, "the program frees every tensor");
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.deepEqual(files, [
    "checkpoint.safetensors",
    "checkpoint0001.safetensors",
    "config.json",
    "metrics.jsonl",
    "report.html",
    "summary.json",
  ]);
  assert.match(Deno.readTextFileSync(join(dir, "report.html")), /<svg/, "the run's report, written at the end");
  const records = Deno.readTextFileSync(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
  const step = records[0];
  for (
    const k of [
      "step",
      "epoch",
      "loss",
      "lr",
      "wd",
      "momentum",
      "teacher_temp",
      "teacher_entropy",
      "student_entropy",
      "images_per_s",
    ]
  ) {
    assert.ok(k in step, `metrics record has ${k}`);
  }
  assert.equal(records.filter((r) => "loss" in r).length, 8); // 256 / 32 steps, logged every step
  const summary = JSON.parse(Deno.readTextFileSync(join(dir, "summary.json")));
  assert.ok(summary.knn_top1.trained >= 0 && summary.knn_top1.raw_pixels > 0);
  assert.equal(summary.knn_test_images, 60);

  const { tensors, metadata } = readSafetensors(join(dir, "checkpoint.safetensors"));
  assert.equal(metadata.step, "8");
  assert.equal(metadata.epoch, "1");
  assert.deepEqual(JSON.parse(metadata.rng), { seed: 0, counter: 8 });
  const config = JSON.parse(metadata.config) as Settings;
  assert.equal(config.embedDim, 32);
  for (const k of Object.keys(SETTINGS)) assert.ok(k in config, `the checkpoint saves ${k}`);
  const keys = Object.keys(tensors);
  for (
    const k of [
      "student.backbone.cls_token",
      "teacher.head.last_layer.weight_g",
      "center",
      "optimizer.exp_avg.backbone.pos_embed",
    ]
  ) {
    assert.ok(keys.includes(k), k);
  }
  t.dispose(tensors);
  // Stripping "teacher." gives the network's official keys: a strict load.
  t.dispose(loadDino(join(dir, "checkpoint.safetensors"), networkConfig(config, 1)));
  Deno.removeSync(dir, { recursive: true });
});

for (
  const [name, ablation] of [
    ["", []],
    [
      " with the ablation switches (student teacher, MSE, Sinkhorn-Knopp, predictor, two crops)",
      [
        "--teacher-mode",
        "student",
        "--criterion",
        "mse",
        "--centering",
        "sinkhorn",
        "--predictor-dim",
        "16",
        "--local-crops-number",
        "0",
      ],
    ],
  ] as const
) {
  Deno.test(`2 + 2 steps with a resume in between are bit-identical to 4 uninterrupted steps${name}`, async () => {
    const a = Deno.makeTempDirSync(), b = Deno.makeTempDirSync();
    const base = [...TINY, "--train-limit", "256", "--test-limit", "40", "--drop-path-rate", "0.2", ...ablation];
    assert.equal((await captured(() => train([...base, "--max-steps", "4", "--output-dir", a]))).value, 0);
    assert.equal((await captured(() => train([...base, "--max-steps", "2", "--output-dir", b]))).value, 0);
    const resumed = await captured(() => train([...base, "--max-steps", "4", "--output-dir", b, "--resume", "latest"]));
    assert.equal(resumed.value, 0, resumed.err);
    assert.match(resumed.out, /resuming at step 2/);
    const x = tensorsOf(join(a, "checkpoint.safetensors")), y = tensorsOf(join(b, "checkpoint.safetensors"));
    assert.deepEqual(Object.keys(x), Object.keys(y));
    for (const k of Object.keys(x)) assert.deepEqual(y[k], x[k], `${k} differs after resuming`);
    if (ablation.length > 0) {
      const { tensors, metadata } = readSafetensors(join(b, "checkpoint.safetensors"));
      t.dispose(tensors);
      const saved = JSON.parse(metadata.config) as Settings;
      assert.deepEqual(
        [saved.teacherMode, saved.criterion, saved.centering, saved.predictorDim, saved.localCropsNumber],
        ["student", "mse", "sinkhorn", 16, 0],
      );
      assert.ok(Object.keys(x).includes("student.predictor.0.weight"));
    }
    Deno.removeSync(a, { recursive: true });
    Deno.removeSync(b, { recursive: true });
  });
}

Deno.test("--knn-every 1 logs and records k-NN after each epoch, numbered as the epochs completed; --saveckp-freq 0", async () => {
  const dir = Deno.makeTempDirSync();
  const args = ["--epochs", "2", "--knn-every", "1", "--train-limit", "64", "--test-limit", "20", "--report", "false"];
  const r = await captured(() => train([...TINY, ...args, "--saveckp-freq", "0", "--output-dir", dir]));
  assert.equal(r.value, 0, r.err);
  assert.ok(!t.exists(join(dir, "checkpoint0001.safetensors")), "--saveckp-freq 0 keeps no numbered checkpoint");
  assert.ok(t.exists(join(dir, "checkpoint.safetensors")), "only the latest");
  assert.deepEqual([...r.out.matchAll(/^epoch (\d+): k-NN top-1 \d+\.\d+%$/gm)].map((m) => Number(m[1])), [1, 2]);
  const records = Deno.readTextFileSync(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
  const curve = records.filter((r) => typeof r.knn_top1 === "number");
  assert.deepEqual(curve.map((r) => [r.epoch, r.step]), [[1, 2], [2, 4]]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("bad flags, values and combinations exit with code 2 and write nothing", async () => {
  const root = Deno.makeTempDirSync();
  const cases: [string[], RegExp][] = [
    [["--bogus", "1"], /Unknown option '--bogus'/],
    [["--weight_decay", "0.1"], /--weight_decay is the official argument; here it is --weight-decay/],
    [["--use_fp16", "true"], /--use_fp16 is the official argument; here it is --precision/],
    [["--arch", "resnet18", "--patch-size", "4"], /--patch-size does not apply to a ResNet \(resnet18\): drop it/],
    [["--not_a_flag", "1"], /Unknown option '--not_a_flag': flags are kebab-case here \(--not-a-flag\)/],
    [["--global-crops-scale", "0.14", "1"], /Unexpected argument '1'.*as one value, as --global-crops-scale 0\.14,1/],
    [["--lr", "fast"], /--lr takes a number, got "fast"/],
    [["--epochs", "2.5"], /--epochs takes an integer/],
    [["--optimizer", "lamb"], /--optimizer must be one of adamw, sgd/],
    [["--arch", "vit_huge"], /--arch must be one of vit_tiny, vit_small, vit_base/],
    [["--norm-last-layer", "maybe"], /--norm-last-layer takes true or false/],
    [["--global-crops-scale", "0.8,0.4"], /--global-crops-scale must satisfy 0 < lo <= hi <= 1/],
    [["--embed-dim", "30", "--num-heads", "4"], /does not divide into --num-heads/],
    [["--batch-size", "30", "--accum-steps", "4"], /does not divide into --accum-steps/],
    [["--warmup-epochs", "5", "--epochs", "2"], /--warmup-epochs 5 exceeds --epochs 2/],
    [["--patch-size", "5"], /--global-crops-size 21 is not a multiple of --patch-size 5/],
    [["--preset", "mnist"], /--preset must be one of/],
    [["--data", "/nonexistent/folder"], /no such dataset, file or folder/],
    [["--resume", "/nonexistent/ck.safetensors"], /no checkpoint at/],
    [["--device", "tpu"], /--device must be one of auto, cpu, cuda/],
    [["--batch-size", "1000", "--train-limit", "100"], /--batch-size 1000 is larger than the 100 training images/],
  ];
  if (!t.cudaAvailable()) cases.push([["--device", "cuda"], /libtorch sees no CUDA device/]);
  for (const [args, pattern] of cases) {
    const out = join(root, "out");
    const r = await captured(() => train([...args, "--output-dir", out]));
    assert.equal(r.value, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, pattern, args.join(" "));
    assert.throws(() => Deno.statSync(out), `${args.join(" ")} wrote ${out}`);
  }
  const config = join(root, "c.json");
  Deno.writeTextFileSync(config, JSON.stringify({ "teacher-temp": 0.07, "nonsense": 1 }));
  const r = await captured(() => train(["--config", config, "--output-dir", join(root, "out")]));
  assert.equal(r.value, 2);
  assert.match(r.err, /unknown setting "nonsense"/);
  const help = await captured(() => train(["--help"]));
  assert.equal(help.value, 0);
  for (const flag of ["--arch", "--momentum-teacher", "--local-crops-scale", "--accum-steps", "--resume", "--config"]) {
    assert.ok(help.out.includes(flag), `--help lists ${flag}`);
  }
  assert.match(help.out, /--teacher-temp\s+.*\(default: 0\.02\)/);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("--config supplies flags (flags win); resuming with other settings is refused, in another precision warned of", async () => {
  const dir = Deno.makeTempDirSync();
  const config = join(dir, "run.json");
  Deno.writeTextFileSync(
    config,
    JSON.stringify({ "train-limit": 64, "max-steps": 1, "out-dim": 48, "test_limit": 30 }),
  );
  const out = join(dir, "out");
  const r = await captured(() => train([...TINY, "--config", config, "--out-dim", "64", "--output-dir", out]));
  assert.equal(r.value, 0, r.err);
  const saved = JSON.parse(Deno.readTextFileSync(join(out, "config.json")));
  assert.equal(saved.outDim, 64);
  assert.equal(saved.trainLimit, 64);
  const again = await captured(() => train([...TINY, "--config", config, "--lr", "0.01", "--output-dir", out]));
  assert.equal(again.value, 2);
  assert.match(again.err, /trained with different settings \(lr: 0\.003 there, 0\.01 now\)\. Use another --output-dir/);
  // The precision may change on resume (it is the same network), but not unannounced.
  const bf16 = await captured(() =>
    train([...TINY, "--config", config, "--max-steps", "2", "--precision", "bf16", "--output-dir", out])
  );
  assert.equal(bf16.value, 0, bf16.err);
  assert.match(
    bf16.err,
    /warning: .*checkpoint\.safetensors was trained in fp32, this run goes on in bf16: pass --precision fp32/,
  );
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("global crops larger than the images are warned of: every crop would be enlarged", async () => {
  const dir = Deno.makeTempDirSync();
  const r = await captured(() =>
    train([
      ...TINY,
      "--global-crops-size",
      "35",
      "--max-steps",
      "1",
      "--train-limit",
      "64",
      "--test-limit",
      "20",
      "--report",
      "false",
      "--output-dir",
      dir,
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.match(
    r.err,
    /warning: the global crops \(35 px\) are larger than the images \(28 px\), so every crop is enlarged\n/,
  );
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a non-finite loss stops the run with exit code 1 and keeps the last good checkpoint", async () => {
  const dir = Deno.makeTempDirSync();
  // 2 steps per epoch; warmup holds the lr near 0 in epoch 0, then a huge lr blows the weights up.
  const args = [
    ...TINY,
    "--train-limit",
    "64",
    "--test-limit",
    "30",
    "--epochs",
    "3",
    "--warmup-epochs",
    "1",
    "--lr",
    "1e30",
    "--clip-grad",
    "0",
    "--min-lr",
    "0",
    "--log-every",
    "1",
    "--output-dir",
    dir,
  ];
  const r = await captured(() => train(args));
  assert.equal(r.value, 1, r.out + r.err);
  const [, at, epoch] = /the loss is (?:NaN|Infinity|-Infinity) at step (\d+) \(epoch (\d+)/.exec(r.err) ?? [];
  // the step after the last one logged (every step is, and the diverging one is not), as the progress line numbers it
  const logged = Deno.readTextFileSync(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l))
    .filter((m) => "loss" in m);
  assert.equal(Number(at), logged.at(-1).step + 1, r.err);
  assert.equal(Number(epoch), Math.floor((Number(at) - 1) / 2) + 1, "epochs from 1, 2 steps each");
  assert.match(r.err, /The last good checkpoint is kept/);
  const { metadata, tensors } = readSafetensors(join(dir, "checkpoint.safetensors"));
  assert.ok(Number(metadata.step) >= 2);
  for (const v of Object.values(tensors)) {
    assert.ok(t.tidy(() => t.item(t.all(t.isfinite(t.to(v, "f32"))))), "the kept checkpoint is finite");
  }
  t.dispose(tensors);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("knn evaluates a checkpoint on fewer than 100 test images; embed writes features with their preprocessing", async () => {
  const dir = Deno.makeTempDirSync();
  assert.equal(
    (await captured(() =>
      train([...TINY, "--train-limit", "64", "--max-steps", "1", "--test-limit", "10", "--output-dir", dir])
    )).value,
    0,
  );
  const ck = join(dir, "checkpoint.safetensors");
  const r = await captured(() =>
    knn(["--checkpoint", ck, "--data", "fmnist", "--train-limit", "200", "--test-limit", "7", "--k", "5,20,300"])
  );
  assert.equal(r.value, 0, r.err);
  assert.match(r.out, /k-NN on 7 test images, memory of 200/);
  assert.match(r.out, /k\s+5: top-1 \d+\.\d+%/);
  assert.match(r.out, /k\s+20: top-1/);
  assert.match(r.out, /k 300 \(all 200 of the memory\): top-1/);

  const out = join(dir, "features.safetensors");
  const e = await captured(() => embed(["--weights", ck, "--data", "fmnist", "--out", out, "--split", "test"]));
  assert.equal(e.value, 0, e.err);
  const f = readSafetensors(out);
  assert.deepEqual(f.tensors.features.shape, [10000, 32]);
  assert.deepEqual(f.tensors.labels.shape, [10000]);
  const pre = JSON.parse(f.metadata.preprocessing);
  assert.equal(pre.size, 21); // the run's global crops
  assert.equal(pre.mean.length, 1);
  t.dispose(f.tensors);

  // Official-layout backbone weights without metadata: shapes from the weights, heads from --arch.
  const { state } = (await import("../lib/weights/checkpoint.ts")).loadCheckpoint(ck);
  const bare = join(dir, "bare.safetensors");
  saveWeights(bare, state.teacher.backbone);
  t.dispose(state);
  const missingArch = await captured(() => embed(["--weights", bare, "--data", "fmnist", "--out", out]));
  assert.equal(missingArch.value, 2); // a usage problem: the flag names the fix
  assert.match(missingArch.err, /pass --arch/);
  const wrongPatch = await captured(() =>
    embed(["--weights", bare, "--arch", "vit_tiny", "--patch-size", "16", "--data", "fmnist", "--out", out])
  );
  assert.match(wrongPatch.err, /has patch size 7, not --patch-size 16/);
  const { initViT, vitConfig } = await import("../lib/model/vit.ts");
  using g = new t.Generator(0);
  const vit = initViT(vitConfig("vit_tiny", { depth: 1, patchSize: 4, imgSize: 28, inChans: 1 }), g);
  const official = join(dir, "official.safetensors");
  saveWeights(official, vit);
  t.dispose(vit);
  const ok = await captured(() =>
    embed(["--weights", official, "--arch", "vit_tiny", "--data", "fmnist", "--split", "test", "--out", out])
  );
  assert.equal(ok.value, 0, ok.err);
  const g2 = readSafetensors(out);
  assert.deepEqual(g2.tensors.features.shape, [10000, 192]);
  assert.deepEqual(t.toArray(t.slice(g2.tensors.indices, 0, 9998)), [9998, 9999]);
  assert.equal(JSON.parse(g2.metadata.vit).depth, 1);
  t.dispose(g2.tensors);

  // An unreadable file leaves no row, and `indices` says which items the rows are.
  const photos = join(dir, "photos"), unreadable = join(dir, "unreadable");
  for (const folder of [photos, unreadable]) Deno.mkdirSync(folder);
  for (const name of ["a.png", "c.png"]) {
    t.tidy(() => t.writeImage(join(photos, name), t.full([30, 30, 3], 90, { dtype: "u8" })));
  }
  for (const folder of [photos, unreadable]) Deno.writeTextFileSync(join(folder, "b.png"), "not an image");
  const official2 = ["--weights", official, "--arch", "vit_tiny", "--out", out];
  const some = await captured(() => embed([...official2, "--data", photos]));
  assert.equal(some.value, 0, some.err);
  const h = readSafetensors(out);
  assert.deepEqual([h.tensors.features.shape, t.toArray(h.tensors.indices)], [[2, 192], [0, 2]]);
  assert.deepEqual(JSON.parse(h.metadata.files), ["a.png", "c.png"]);
  // Past the limit (16 MiB; 10 bytes here) the names go beside the file, which the metadata names.
  const many = filesMetadata(out, ["a.png", "c.png"], 10);
  assert.deepEqual(many.metadata, { files_json: "features.safetensors.files.json" });
  assert.deepEqual(JSON.parse(new TextDecoder().decode(many.aside)), ["a.png", "c.png"]);
  // A run whose list fits in the metadata removes an earlier run's list beside the file.
  Deno.writeTextFileSync(`${out}.files.json`, "[]");
  const again = await captured(() => embed([...official2, "--data", photos]));
  assert.equal(again.value, 0, again.err);
  assert.ok(!t.exists(`${out}.files.json`), "the earlier list is gone");
  t.dispose(h.tensors);
  // Class folders without train/ and val/: k-NN says that it measures the training images themselves.
  for (const c of ["a", "b"]) Deno.mkdirSync(join(photos, c));
  Deno.renameSync(join(photos, "a.png"), join(photos, "a", "a.png"));
  Deno.renameSync(join(photos, "c.png"), join(photos, "b", "c.png"));
  const self = await captured(() => knn(["--checkpoint", official, "--arch", "vit_tiny", "--data", photos]));
  assert.equal(self.value, 0, self.err);
  assert.match(self.err, /warning: --data \S+ has no separate test split .*: k-NN is measured on the training images/);
  // leave-one-out: each of the two images has the other alone as its memory, of the other class
  assert.match(self.out, /k {2}20 \(all 1 of the memory\): top-1 0\.00%/);
  // Every file unreadable: exit 1 and nothing written (the batches of nothing once made an empty file).
  Deno.removeSync(out);
  const none = await captured(() => embed([...official2, "--data", unreadable]));
  assert.equal(none.value, 1, none.err);
  assert.match(none.err, /no images could be read/);
  assert.ok(!t.exists(out));
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a collapsed (uniform) teacher is reported", async () => {
  const dir = Deno.makeTempDirSync();
  const r = await captured(() =>
    train([
      ...TINY,
      "--train-limit",
      "64",
      "--test-limit",
      "20",
      "--teacher-temp",
      "1",
      "--warmup-teacher-temp",
      "1",
      "--output-dir",
      dir,
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.match(r.err, /warning: collapse: the teacher's outputs are uniform/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("an unlabeled image folder trains, and the k-NN evaluation is skipped with a message", async () => {
  const dir = Deno.makeTempDirSync();
  const data = join(dir, "images");
  Deno.mkdirSync(data);
  using g = new t.Generator(0);
  for (let i = 0; i < 8; i++) {
    t.tidy(() => t.writeImage(join(data, `${i}.png`), t.to(t.randint(g, 0, 256, [40, 30, 3]), "u8")));
  }
  const r = await captured(() =>
    train([
      ...TINY,
      "--data",
      data,
      "--image-size",
      "32",
      "--global-crops-size",
      "28",
      "--batch-size",
      "4",
      "--output-dir",
      join(dir, "out"),
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.match(r.out, /k-NN evaluation skipped: folder:\S+ has no labels\./);
  const k = await captured(() => knn(["--checkpoint", join(dir, "out", "checkpoint.safetensors"), "--data", data]));
  assert.equal(k.value, 1);
  assert.match(k.err, /k-NN needs labelled images/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("SIGINT stops a run with exit code 130 after saving a checkpoint at the step reached", async () => {
  const dir = Deno.makeTempDirSync();
  const args = [...TINY, "--epochs", "50", "--train-limit", "512", "--test-limit", "40", "--output-dir", dir];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../cli/train.ts", import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const metrics = join(dir, "metrics.jsonl");
  while (!t.exists(metrics) || Deno.readTextFileSync(metrics).split("\n").length < 3) {
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGINT");
  const { code, stdout } = await child.output();
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 130, out);
  const step = Number(/interrupted: checkpoint saved at step (\d+)/.exec(out)?.[1]);
  assert.ok(step >= 2 && step < 800, out);
  const { tensors, metadata } = readSafetensors(join(dir, "checkpoint.safetensors"));
  t.dispose(tensors);
  assert.equal(Number(metadata.step), step);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("each declared setting is a flag, a line of --help, a --config key and a saved checkpoint field", () => {
  const help = trainHelp("fmnist");
  const defaults = presetSettings("fmnist") as unknown as Record<string, unknown>;
  const asText = (v: unknown) => Array.isArray(v) ? v.join(",") : String(v);
  for (const [name, d] of Object.entries(SETTINGS)) {
    assert.match(help, new RegExp(`^  ${flagOf(name)} +${d.help.replace(/[()[\].*+?^$|\\]/g, "\\$&")}`, "m"), name);
    if (name === "resume") continue; // "" is no checkpoint; a value must name one
    const fromFlag = parseTrainArgs([flagOf(name), asText(defaults[name])]);
    const fromConfig = parseTrainArgs(["--config", "c.json"], () => JSON.stringify({ [name]: defaults[name] }));
    assert.deepEqual(fromFlag, fromConfig, name);
    assert.deepEqual((fromFlag as Record<string, unknown>)[name], defaults[name], name);
  }
});
