/**
 * Every user mistake, in every command, is a one-line error with exit code 2
 * (usage: the fix is in the command line) or 1 (the run failed), never a stack
 * trace, and nothing is written.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { main as knn } from "../cli/knn.ts";
import { main as embed } from "../cli/embed.ts";
import { main as preview } from "../cli/preview.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/mod.ts";
import { saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { saveWeights } from "../lib/weights/weights.ts";

const FULL_PTH = new URL("./fixtures/pth/full.pth", import.meta.url).pathname;
const EVIL_PTH = new URL("./fixtures/pth/evil.pth", import.meta.url).pathname;
const LEGACY_PTH = new URL("./fixtures/pth/legacy.pth", import.meta.url).pathname;

/** A table row: the arguments, the exit code, and what the message must say. */
export type Case = [args: string[], code: 1 | 2, says: RegExp];

/** Checks each case: its exit code, a single `error:` line without a stack, and no output folder made. */
export async function checkCases(
  command: (args: string[]) => Promise<number>,
  cases: Case[],
  out: string,
  withOut: (out: string) => string[],
): Promise<number> {
  for (const [args, code, says] of cases) {
    const all = [...args, ...withOut(out)];
    const r = await captured(() => command(all));
    const what = `${all.join(" ")} -> ${r.err}`;
    assert.equal(r.value, code, what);
    const lines = r.err.trim().split("\n");
    assert.equal(lines.length, 1, `one line: ${what}`);
    assert.match(lines[0], /^error: /, what);
    assert.doesNotMatch(r.err, /Uncaught|\n\s+at |TypeError|RangeError/, what);
    assert.match(lines[0], says, what);
    assert.ok(!t.exists(out), `nothing written: ${what}`);
  }
  return cases.length;
}

Deno.test("train: 45 bad invocations each give one line, exit code 2 or 1, and write nothing", async () => {
  const root = Deno.makeTempDirSync();
  const file = join(root, "a-file.txt");
  Deno.writeTextFileSync(file, "not data");
  const empty = join(root, "empty");
  Deno.mkdirSync(empty);
  const badJson = join(root, "bad.json"), array = join(root, "array.json"), unknown = join(root, "unknown.json");
  Deno.writeTextFileSync(badJson, "{ lr: ");
  Deno.writeTextFileSync(array, "[1, 2]");
  Deno.writeTextFileSync(unknown, JSON.stringify({ "teacher-temp": 0.07, nonsense: 1 }));
  // A checkpoint of other settings, one of a network too small for its config, and files that are no checkpoint.
  const other = join(root, "other.safetensors"), notCheckpoint = join(root, "plain.safetensors");
  const config = makeSettings("fmnist", { depth: 1, embedDim: 32, numHeads: 2, outDim: 64 });
  const state = initTrainState(networkConfig(config, 1), dinoHyper(config), 0);
  saveCheckpoint(other, state, { config, channels: 1, epoch: 0, normalization: { mean: [0.5], std: [0.5] } });
  t.dispose(state);
  t.writeFileAtomic(notCheckpoint, new Uint8Array(0));
  const corrupt = join(root, "corrupt.safetensors");
  Deno.writeTextFileSync(corrupt, "\x08\x00\x00\x00\x00\x00\x00\x00{bad json");
  const cases: Case[] = [
    // wrong type
    [["--lr", "fast"], 2, /--lr takes a number, got "fast"/],
    [["--epochs", "2.5"], 2, /--epochs takes an integer/],
    [["--depth", "1.5"], 2, /--depth takes an integer/],
    [["--norm-last-layer", "maybe"], 2, /--norm-last-layer takes true or false/],
    [["--global-crops-scale", "a,b"], 2, /--global-crops-scale takes two numbers/],
    [["--batch-size", ""], 2, /--batch-size takes a number/],
    [["--optimizer", "lamb"], 2, /--optimizer must be one of adamw, sgd/],
    [["--arch", "vit_huge"], 2, /--arch must be one of/],
    [["--device", "tpu"], 2, /--device must be one of auto, cpu, cuda/],
    [["--centering", "kmeans"], 2, /--centering must be one of center, none, sinkhorn/],
    // NaN and infinities
    [["--lr", "NaN"], 2, /--lr takes a number, got "NaN"/],
    [["--epochs", "NaN"], 2, /--epochs takes a number/],
    [["--teacher-temp", "Infinity"], 2, /--teacher-temp takes a number/],
    // out of range
    [["--depth", "0"], 2, /--depth must be positive/],
    [["--depth", "1000000"], 2, /--depth must be at most 128, got 1000000/],
    [["--embed-dim", "1000000000"], 2, /--embed-dim must be at most 8192/],
    [["--depth", "128", "--embed-dim", "8192", "--num-heads", "64"], 2, /billion parameters .* over the bound/],
    [["--patch-size", "0"], 2, /--patch-size must be positive/],
    [["--out-dim", "0"], 2, /--out-dim must be positive/],
    [["--image-size", "1000000"], 2, /--image-size must be at most 8192/],
    [["--momentum-teacher", "1.5"], 2, /--momentum-teacher must be in \(0, 1\]/],
    [["--teacher-temp", "0"], 2, /--teacher-temp must be in \(0, 1\]/],
    [["--drop-path-rate", "1"], 2, /--drop-path-rate must be in \[0, 1\)/],
    [["--local-crops-number=-1"], 2, /--local-crops-number must be >= 0/],
    [["--lr=-1"], 2, /--lr must be >= 0/],
    [["--seed", "-1"], 2, /--seed needs a value; write a negative one as --seed=-1/],
    [["--knn-k", "0"], 2, /--knn-k must be positive/],
    [["--threads", "100000"], 2, /--threads must be at most 1024/],
    [["--global-crops-scale", "0.8,0.4"], 2, /--global-crops-scale must satisfy 0 < lo <= hi <= 1/],
    // inconsistent combinations
    [["--embed-dim", "30", "--num-heads", "4"], 2, /--embed-dim 30 does not divide into --num-heads 4/],
    [["--patch-size", "5"], 2, /--global-crops-size 21 is not a multiple of --patch-size 5/],
    [["--batch-size", "30", "--accum-steps", "4"], 2, /does not divide into --accum-steps/],
    [["--warmup-epochs", "5", "--epochs", "2"], 2, /--warmup-epochs 5 exceeds --epochs 2/],
    [["--batch-size", "1000", "--train-limit", "100"], 2, /--batch-size 1000 is larger than the 100 training images/],
    // unknown or missing
    [["--bogus", "1"], 2, /Unknown option '--bogus'/],
    [["stray"], 2, /Unexpected argument 'stray'/],
    [["--lr"], 2, /--lr/],
    [["--preset", "mnist"], 2, /--preset must be one of/],
    [["--preset", "imagenet-vits16"], 2, /--data is required/],
    // paths: nonexistent, a file where a folder goes, empty data, bad config files
    [["--data", "/nonexistent/folder"], 2, /--data \/nonexistent\/folder: no such dataset, file or folder/],
    [["--data", file], 2, /not an IDX file/],
    [["--data", empty], 1, /no images|empty|no image/i],
    [["--config", join(root, "missing.json")], 2, /--config .* cannot be read/],
    [["--config", badJson], 2, /--config .* is not valid JSON/],
    [["--config", array], 2, /must hold a JSON object of flags/],
    [["--config", unknown], 2, /unknown setting "nonsense"/],
    // checkpoints: nonexistent, of other settings, not a checkpoint, corrupt
    [["--resume", "/nonexistent/ck.safetensors"], 2, /no checkpoint at/],
    [
      ["--resume", other],
      2,
      /was trained with different settings .*Resume it with the settings it was started with, or/,
    ],
    [["--resume", notCheckpoint], 2, /cannot|not a/],
    [["--resume", corrupt], 2, /cannot|not a/],
  ];
  if (!t.cudaAvailable()) cases.push([["--device", "cuda"], 2, /libtorch sees no CUDA device/]);
  const n = await checkCases(train, cases, join(root, "out"), (out) => ["--output-dir", out]);
  assert.ok(n >= 45, `${n} cases`);
  // Output folders: a file, and a place that cannot be written; the file is left as it was.
  for (
    const [out, says] of [[file, /--output-dir .* is a file, not a folder/], ["/proc/dino-out", /cannot be written/]]
  ) {
    const r = await captured(() => train(["--output-dir", out as string]));
    assert.equal(r.value, 2, r.err);
    assert.match(r.err.trim(), says as RegExp);
    assert.equal(r.err.trim().split("\n").length, 1);
  }
  assert.equal(Deno.readTextFileSync(file), "not data");
  Deno.removeSync(root, { recursive: true });
});

/**
 * Small real inputs for the evaluation commands: checkpoints of 1- and 3-channel data, official-layout weights
 * without metadata, files that are no weights, and data folders (empty, CIFAR binaries, IDX, unreadable images).
 */
function inputs() {
  const root = Deno.makeTempDirSync();
  const file = join(root, "a-file.txt");
  Deno.writeTextFileSync(file, "not data");
  const empty = join(root, "empty");
  Deno.mkdirSync(empty);
  const config = makeSettings("fmnist", { depth: 1, embedDim: 32, numHeads: 2, outDim: 64 });
  const checkpoint = (channels: 1 | 3) => {
    const path = join(root, `ck${channels}.safetensors`);
    const state = initTrainState(networkConfig(config, channels), dinoHyper(config), 0);
    const normalization = { mean: Array(channels).fill(0.5), std: Array(channels).fill(0.5) };
    saveCheckpoint(path, state, { config, channels, epoch: 0, normalization });
    if (channels === 1) saveWeights(join(root, "bare.safetensors"), state.teacher.backbone); // official layout
    t.dispose(state);
    return path;
  };
  const ck1 = checkpoint(1), ck3 = checkpoint(3), bare = join(root, "bare.safetensors");
  const corrupt = join(root, "corrupt.safetensors");
  Deno.writeTextFileSync(corrupt, "\x08\x00\x00\x00\x00\x00\x00\x00{bad json");
  // CIFAR-10 binaries (3 channels): 2 labelled black images per batch.
  const cifar = join(root, "cifar");
  Deno.mkdirSync(cifar);
  const records = new Uint8Array(2 * (1 + 3 * 32 * 32));
  for (const name of [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`).concat("test_batch.bin")) {
    Deno.writeFileSync(join(cifar, name), records);
  }
  // One IDX file of 2 unlabelled 28 x 28 images (1 channel).
  const idx = join(root, "train-images-idx3-ubyte");
  const header = new Uint8Array([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]);
  Deno.writeFileSync(idx, new Uint8Array([...header, ...new Uint8Array(2 * 28 * 28)]));
  // Image folders: unlabelled, and one whose only image cannot be decoded.
  const unlabelled = join(root, "unlabelled"), broken = join(root, "broken");
  Deno.mkdirSync(unlabelled);
  Deno.mkdirSync(broken);
  t.tidy(() => {
    const gray = t.full([30, 30, 3], 100, { dtype: "u8" });
    for (const name of ["1.png", "2.png"]) t.writeImage(join(unlabelled, name), gray);
  });
  Deno.writeTextFileSync(join(broken, "1.png"), "not a png");
  return { root, file, empty, ck1, ck3, bare, corrupt, cifar, idx, unlabelled, broken };
}

Deno.test("knn: bad invocations each give one line, exit code 2 or 1, and nothing is made", async () => {
  const { root, file, empty, ck1, ck3, bare, corrupt, cifar, idx, unlabelled } = inputs();
  const base = ["--checkpoint", ck1, "--data", "fmnist"];
  const live = t.liveTensors();
  const cases: Case[] = [
    // wrong type, NaN and infinities
    [[...base, "--k", "fast"], 2, /--k takes an integer, got "fast"/],
    [[...base, "--k", "NaN"], 2, /--k takes an integer, got "NaN"/],
    [[...base, "--k", "10,,20"], 2, /--k takes an integer, got ""/],
    [[...base, "--k", "2.5"], 2, /--k takes an integer, got "2.5"/],
    [[...base, "--temperature", "warm"], 2, /--temperature takes a number, got "warm"/],
    [[...base, "--temperature", "NaN"], 2, /--temperature takes a number, got "NaN"/],
    [[...base, "--temperature", "Infinity"], 2, /--temperature takes a number, got "Infinity"/],
    [[...base, "--batch-size", ""], 2, /--batch-size takes an integer, got ""/],
    [[...base, "--test-limit", "2.5"], 2, /--test-limit takes an integer, got "2.5"/],
    [[...base, "--max-image-pixels", "1e300"], 2, /--max-image-pixels takes an integer/],
    [[...base, "--arch", "vit_huge"], 2, /--arch must be one of vit_tiny, vit_small, vit_base/],
    [[...base, "--arch", "__proto__"], 2, /--arch must be one of/],
    // out of range
    [[...base, "--k", "20,0"], 2, /--k must be between 1 and 100000, got 0/],
    [[...base, "--k", "1000000"], 2, /--k must be between 1 and 100000, got 1000000/],
    [[...base, "--k", "-5"], 2, /--k needs a value; write a negative one as --k=-1/],
    [[...base, "--temperature", "0"], 2, /--temperature must be positive, got 0/],
    [[...base, "--temperature=-0.1"], 2, /--temperature must be positive, got -0.1/],
    [[...base, "--image-size", "0"], 2, /--image-size must be between 1 and 8192, got 0/],
    [[...base, "--image-size", "1000000"], 2, /--image-size must be between 1 and 8192/],
    [[...base, "--batch-size", "0"], 2, /--batch-size must be between 1 and 65536, got 0/],
    [[...base, "--batch-size", "1000000000"], 2, /--batch-size must be between 1 and 65536/],
    [[...base, "--train-limit=-1"], 2, /--train-limit must be >= 0, got -1/],
    [[...base, "--patch-size", "65"], 2, /--patch-size must be between 1 and 64, got 65/],
    [[...base, "--max-image-pixels", "0"], 2, /--max-image-pixels must be >= 1, got 0/],
    [[...base, "--image-size", "30"], 2, /--image-size 30 is not a multiple of the model's patch size 7/],
    // unknown or missing
    [[...base, "--bogus", "1"], 2, /Unknown option '--bogus'/],
    [[...base, "stray"], 2, /Unexpected argument 'stray'/],
    [[...base, "--k"], 2, /--k/],
    [["--data", "fmnist"], 2, /--checkpoint is required/],
    [["--checkpoint", ck1], 2, /--data is required/],
    // paths: nonexistent, a folder where a file goes and a file where a folder goes, unreadable, empty data
    [["--checkpoint", "/nonexistent/ck.safetensors", "--data", "fmnist"], 2, /--checkpoint .*: no such file/],
    [["--checkpoint", root, "--data", "fmnist"], 2, /--checkpoint .* is a folder, not a weights file/],
    [["--checkpoint", ck1, "--data", "/nonexistent/folder"], 2, /--data \/nonexistent\/folder: no such dataset/],
    [["--checkpoint", ck1, "--data", "/proc/dino-out"], 2, /--data \/proc\/dino-out: no such dataset/],
    [["--checkpoint", ck1, "--data", file], 2, /--data .*: not an IDX file/],
    [["--checkpoint", ck1, "--data", empty], 1, /holds no images/],
    [["--checkpoint", ck1, "--data", unlabelled], 1, /k-NN needs labelled images/],
    // weights that are no checkpoint, or that do not fit the data or the flags
    [["--checkpoint", file, "--data", "fmnist"], 2, /--checkpoint .*: not a PyTorch checkpoint .* nor safetensors/],
    [
      ["--checkpoint", FULL_PTH, "--checkpoint-key", "ema", "--data", "fmnist"],
      2,
      /--checkpoint .*full.pth: no "ema" network/,
    ],
    [["--checkpoint", EVIL_PTH, "--data", "fmnist"], 2, /--checkpoint .*evil.pth: .*posix.system.*refused/],
    [["--checkpoint", corrupt, "--data", "fmnist"], 2, /--checkpoint .*safetensors/],
    [["--checkpoint", bare, "--data", "fmnist"], 2, /has no metadata: pass --arch/],
    [
      ["--checkpoint", bare, "--arch", "vit_tiny", "--patch-size", "16", "--data", "fmnist"],
      2,
      /has patch size 7, not --patch-size 16/,
    ],
    [["--checkpoint", ck1, "--data", cifar], 2, /--checkpoint .* takes 1-channel images; --data .* has 3/],
    [["--checkpoint", ck3, "--data", idx], 2, /--checkpoint .* takes 3-channel images; --data .* has 1/],
  ];
  // knn writes nothing: the path that must stay absent is one no case names.
  const n = await checkCases(knn, cases, join(root, "knn-out"), () => []);
  assert.ok(n >= 8, `${n} cases`);
  assert.equal(t.liveTensors(), live, "every failed run frees what it loaded");
  const help = await captured(() => knn(["--help"]));
  assert.equal(help.value, 0);
  assert.match(help.out, /^usage: deno task knn/);
  assert.equal(help.err, "");
  Deno.removeSync(root, { recursive: true });
});

Deno.test("embed: bad invocations each give one line, exit code 2 or 1, and write nothing", async () => {
  const { root, file, empty, ck1, ck3, bare, corrupt, cifar, idx } = inputs();
  const base = ["--weights", ck1, "--data", "fmnist"];
  const live = t.liveTensors();
  const out = join(root, "features.safetensors");
  const cases: Case[] = [
    // wrong type, NaN and infinities
    [[...base, "--split", "val"], 2, /--split must be train or test, got "val"/],
    [[...base, "--arch", "vit_huge"], 2, /--arch must be one of/],
    [[...base, "--image-size", "big"], 2, /--image-size takes an integer, got "big"/],
    [[...base, "--batch-size", "NaN"], 2, /--batch-size takes an integer, got "NaN"/],
    [[...base, "--max-image-pixels", "1.5"], 2, /--max-image-pixels takes an integer, got "1.5"/],
    [[...base, "--mean", "a,b,c"], 2, /--mean takes comma-separated numbers, got "a,b,c"/],
    [[...base, "--mean", "NaN"], 2, /--mean takes comma-separated numbers, got "NaN"/],
    [[...base, "--std", "0.5,Infinity,0.5"], 2, /--std takes comma-separated numbers/],
    [[...base, "--std", ""], 2, /--std takes comma-separated numbers, got ""/],
    // out of range
    [[...base, "--std", "0,0,0"], 2, /--std must be positive, got 0,0,0/],
    [[...base, "--std=-0.5"], 2, /--std must be positive, got -0.5/],
    [[...base, "--std", "0.1,0.2"], 2, /--std takes one number per channel \(1 or 3\), got 2/],
    [[...base, "--mean", "0.5", "--std", "0.5,0.5,0.5"], 2, /--mean has 1 values, --std 3/],
    [[...base, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"], 2, /--mean needs 1 value\(s\), one per channel/],
    [[...base, "--image-size", "0"], 2, /--image-size must be between 1 and 8192, got 0/],
    [[...base, "--image-size", "9000"], 2, /--image-size must be between 1 and 8192, got 9000/],
    [[...base, "--image-size", "30"], 2, /--image-size 30 is not a multiple of the model's patch size 7/],
    [[...base, "--batch-size", "100000"], 2, /--batch-size must be between 1 and 65536/],
    [[...base, "--patch-size", "0"], 2, /--patch-size must be between 1 and 64, got 0/],
    [[...base, "--max-image-pixels", "-5"], 2, /--max-image-pixels needs a value/],
    // unknown or missing
    [[...base, "--bogus"], 2, /Unknown option '--bogus'/],
    [[...base, "stray"], 2, /Unexpected argument 'stray'/],
    [["--data", "fmnist"], 2, /--weights is required/],
    [["--weights", ck1], 2, /--data is required/],
    // paths: nonexistent, a folder for a file, a file for a folder, empty data
    [["--weights", "/nonexistent/w.safetensors", "--data", "fmnist"], 2, /--weights .*: no such file/],
    [["--weights", root, "--data", "fmnist"], 2, /--weights .* is a folder, not a weights file/],
    [["--weights", ck1, "--data", "/nonexistent/folder"], 2, /--data \/nonexistent\/folder: no such dataset/],
    [["--weights", ck1, "--data", file], 2, /--data .*: not an IDX file/],
    [["--weights", ck1, "--data", empty], 1, /holds no images/],
    // weights that are no checkpoint, or that do not fit the data or the flags
    [["--weights", file, "--data", "fmnist"], 2, /--weights .*: not a PyTorch checkpoint .* nor safetensors/],
    [
      ["--weights", FULL_PTH, "--checkpoint-key", "ema", "--data", "fmnist"],
      2,
      /--weights .*full.pth: no "ema" network/,
    ],
    [["--weights", LEGACY_PTH, "--data", "fmnist"], 2, /--weights .*legacy.pth: .*before 1\.6.*convert it/],
    [["--weights", corrupt, "--data", "fmnist"], 2, /--weights .*safetensors/],
    [["--weights", bare, "--data", "fmnist"], 2, /has no metadata: pass --arch/],
    [["--weights", bare, "--arch", "vit_small", "--patch-size", "8", "--data", "fmnist"], 2, /has patch size 7/],
    [
      ["--weights", ck1, "--data", cifar, "--split", "train"],
      2,
      /--weights .* takes 1-channel images; --data .* has 3/,
    ],
    [["--weights", ck3, "--data", idx], 2, /--weights .* takes 3-channel images; --data .* has 1/],
  ];
  let n = await checkCases(embed, cases, out, (out) => ["--out", out]);
  // --out itself: missing, a folder, an unwritable place, a folder that does not exist, a path under a file;
  // checked before the weights are read (the bare weights would need --arch).
  const missing = join(root, "no-such-folder");
  n += await checkCases(
    embed,
    [
      [base, 2, /--out is required/],
      [[...base, "--out", root], 2, /--out .* is a folder; name the .safetensors file to write/],
      [["--weights", bare, "--data", "fmnist", "--out", root], 2, /--out .* is a folder/],
      [[...base, "--out", "/proc/dino-out"], 2, /--out \/proc\/dino-out cannot be written/],
      [[...base, "--out", join(missing, "f.safetensors")], 2, /--out .*: its folder .*no-such-folder does not exist/],
      [[...base, "--out", join(file, "f.safetensors")], 2, /--out .*: .*a-file.txt is a file, not a folder/],
    ],
    out,
    () => [],
  );
  assert.ok(n >= 8, `${n} cases`);
  assert.equal(t.liveTensors(), live, "every failed run frees what it loaded");
  assert.ok(!t.exists(missing));
  assert.equal(Deno.readTextFileSync(file), "not data");
  assert.deepEqual([...Deno.readDirSync(root)].filter((e) => e.name.startsWith(".write-check-")), []);
  const help = await captured(() => embed(["-h"]));
  assert.equal(help.value, 0);
  assert.match(help.out, /^usage: deno task embed/);
  assert.equal(help.err, "");
  Deno.removeSync(root, { recursive: true });
});

Deno.test("preview: bad invocations each give one line, exit code 2 or 1, and write nothing", async () => {
  const { root, file, empty, cifar, broken, unlabelled } = inputs();
  const base = ["--data", "fmnist"];
  const out = join(root, "views", "deeper");
  const cases: Case[] = [
    // wrong type, NaN
    [[...base, "--count", "many"], 2, /--count takes an integer, got "many"/],
    [[...base, "--count", "NaN"], 2, /--count takes an integer, got "NaN"/],
    [[...base, "--count", "2.5"], 2, /--count takes an integer, got "2.5"/],
    [[...base, "--seed", "1e20"], 2, /--seed takes an integer, got "1e20"/],
    [[...base, "--seed", "NaN"], 2, /--seed takes an integer, got "NaN"/],
    [[...base, "--max-image-pixels", "lots"], 2, /--max-image-pixels takes an integer/],
    [[...base, "--preset", "imagenet21k"], 2, /--preset must be one of .*, got "imagenet21k"/],
    [[...base, "--preset", "constructor"], 2, /--preset must be one of/],
    [[...base, "--preset", "fmnist28"], 2, /--preset must be one of fmnist, fmnist-gpu, cifar10, imagenet-vits16/],
    // out of range
    [[...base, "--count", "0"], 2, /--count must be between 1 and 1024, got 0/],
    [[...base, "--count", "100000"], 2, /--count must be between 1 and 1024, got 100000/],
    [[...base, "--seed=-1"], 2, /--seed must be >= 0, got -1/],
    [[...base, "--seed", "-1"], 2, /--seed needs a value; write a negative one as --seed=-1/],
    [[...base, "--max-image-pixels", "0"], 2, /--max-image-pixels must be >= 1, got 0/],
    // unknown or missing
    [[...base, "--bogus"], 2, /Unknown option '--bogus'/],
    [[...base, "stray"], 2, /Unexpected argument 'stray'/],
    [[], 2, /--data is required/],
    // data: nonexistent, a file that is no data, empty, unreadable images
    [["--data", "/nonexistent/folder"], 2, /--data \/nonexistent\/folder: no such dataset/],
    [["--data", file], 2, /--data .*: not an IDX file/],
    [["--data", empty], 1, /holds no images/],
    [["--data", broken], 1, /none of the first 1 image\(s\) of .* could be read \(.*1\.png: not a readable image/],
    [["--data", cifar, "--count", "0"], 2, /--count must be between 1 and 1024/],
  ];
  let n = await checkCases(preview, cases, out, (out) => ["--output-dir", out]);
  // --output-dir itself: missing, a file, a path under a file, an unwritable place; checked before the data opens.
  n += await checkCases(
    preview,
    [
      [base, 2, /--output-dir is required/],
      [[...base, "--output-dir", file], 2, /--output-dir .* is a file, not a folder/],
      [[...base, "--output-dir", join(file, "sub")], 2, /--output-dir .*sub: .*a-file.txt is a file/],
      [["--data", empty, "--output-dir", "/proc/dino-out"], 2, /--output-dir \/proc\/dino-out cannot be written/],
      // the training flags after --, checked as deno task train checks them
      [[...base, "--output-dir", out, "--", "--lr", "x"], 2, /--lr takes a number, got "x"/],
      [[...base, "--output-dir", out, "--", "--local-crops-size", "12"], 2, /--local-crops-size 12 is not a multiple/],
    ],
    out,
    () => [],
  );
  assert.ok(n >= 8, `${n} cases`);
  assert.ok(!t.exists(join(root, "views")), "no parent folder made either");
  assert.equal(Deno.readTextFileSync(file), "not data");
  const help = await captured(() => preview(["--help"]));
  assert.equal(help.value, 0);
  assert.match(help.out, /^usage: deno task preview/);
  // The folder is made only now, once the data opened; 10 CIFAR training images, 4 rows.
  const ok = await captured(() => preview(["--data", cifar, "--count", "4", "--output-dir", out]));
  assert.equal(ok.value, 0, ok.err);
  assert.match(ok.out, /wrote .*views\.png: 4 images x 4 views \(preset fmnist: 2 x 21 \+ 2 x 14 px\)/); // train's default
  const cifar10 = await captured(() =>
    preview(["--data", cifar, "--count", "1", "--preset", "cifar10", "--output-dir", out])
  );
  assert.match(cifar10.out, /1 images x 8 views \(preset cifar10: 2 x 32 \+ 6 x 16 px\)/);
  // The views of the training preset and flags: fmnist's 2 x 21 + 2 x 14, or what the flags after -- make them.
  // An unreadable image among the first: fewer rows, said.
  Deno.copyFileSync(join(unlabelled, "1.png"), join(broken, "2.png"));
  const short = await captured(() => preview(["--data", broken, "--count", "2", "--output-dir", out]));
  assert.equal(short.value, 0, short.err);
  assert.match(short.err, /warning: skipped 1 unreadable image file\(s\) among the first 2, so 1 rows \(.*1\.png: /);
  const fm = await captured(() => preview(["--data", "fmnist", "--count", "1", "--output-dir", out]));
  assert.match(fm.out, /1 images x 4 views \(preset fmnist: 2 x 21 \+ 2 x 14 px\)/);
  const flags = ["--", "--global-crops-size", "28", "--local-crops-number", "6"];
  const more = await captured(() => preview(["--data", "fmnist", "--count", "1", "--output-dir", out, ...flags]));
  assert.match(more.out, /1 images x 8 views \(preset fmnist: 2 x 28 \+ 6 x 14 px\)/);
  // the flags are checked against the preset given (cifar10's patch 4 takes 12 px local crops, fmnist's 7 does not)
  const small = await captured(() =>
    preview([
      "--data",
      cifar,
      "--count",
      "1",
      "--preset",
      "cifar10",
      "--output-dir",
      out,
      "--",
      "--local-crops-size",
      "12",
    ])
  );
  assert.match(small.out, /1 images x 8 views \(preset cifar10: 2 x 32 \+ 6 x 12 px\)/, small.err);
  assert.ok(t.exists(join(out, "views.png")));
  Deno.removeSync(root, { recursive: true });
});
