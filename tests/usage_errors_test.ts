/**
 * Every user mistake, in every command, is a one-line error with exit code 2
 * (usage: the fix is in the command line) or 1 (the run failed), never a stack
 * trace, and nothing is written.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { main as train } from "../cli/train.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/mod.ts";
import { saveCheckpoint } from "../lib/weights/checkpoint.ts";

/** Runs `fn` with console output captured. */
export async function captured<T>(fn: () => Promise<T>): Promise<{ value: T; out: string; err: string }> {
  const log = console.log, error = console.error, warn = console.warn;
  let out = "", err = "";
  console.log = (...a: unknown[]) => void (out += a.join(" ") + "\n");
  console.error = console.warn = (...a: unknown[]) => void (err += a.join(" ") + "\n");
  try {
    return { value: await fn(), out, err };
  } finally {
    console.log = log;
    console.error = error;
    console.warn = warn;
  }
}

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
    [["--patch-size", "5"], 2, /--global-crops-size 28 is not a multiple of --patch-size 5/],
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
    [["--resume", other], 2, /was trained with different settings/],
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
