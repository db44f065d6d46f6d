// A training run whose every image is skipped as unreadable (issue 12) stops with one line that names the problem and
// the fix, exit code 1, before a step runs on nothing: checked before anything is written (the training images,
// and the test images when the k-NN evaluation will read them), and, for files that become unreadable later, at the
// end of an epoch whose every file was skipped, writing no checkpoint.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { captured } from "./helpers.ts";
import { main as train } from "../cli/train.ts";
import { epochOrder } from "../lib/data/loader.ts";

const TINY = [
  "--embed-dim=32",
  "--depth=1",
  "--num-heads=2",
  "--out-dim=64",
  "--hidden-dim=32",
  "--bottleneck-dim=16",
  "--image-size=28",
  "--batch-size=2",
];
const FIXTURES = new URL("./fixtures/images/", import.meta.url).pathname;

/** Unreadable files of several kinds in `dir`: not an image, cut short, a format stb refuses, empty. */
function unreadable(dir: string, n: number): void {
  Deno.mkdirSync(dir, { recursive: true });
  const png = Deno.readFileSync(join(FIXTURES, "png-rgb8.png")),
    rle = Deno.readFileSync(join(FIXTURES, "bmp-rle8.bmp"));
  for (let i = 0; i < n; i++) {
    const name = String(i).padStart(3, "0");
    if (i % 4 === 0) Deno.writeTextFileSync(join(dir, `${name}.png`), "not an image");
    if (i % 4 === 1) Deno.writeFileSync(join(dir, `${name}.png`), png.subarray(0, 40));
    if (i % 4 === 2) Deno.writeFileSync(join(dir, `${name}.bmp`), rle);
    if (i % 4 === 3) Deno.writeFileSync(join(dir, `${name}.jpg`), new Uint8Array());
  }
}

/** Runs `deno task train` in this process: exit code, stderr's lines. */
async function run(args: string[]) {
  const r = await captured(() => train([...TINY, ...args]));
  return { code: r.value, lines: r.err.trim().split("\n"), err: r.err };
}

function assertOneLine(lines: string[], says: RegExp): void {
  const last = lines.at(-1)!;
  assert.match(last, /^error: /, lines.join("\n"));
  assert.match(last, says);
  assert.match(last, /fix or remove the unreadable files/, "names the fix");
  assert.doesNotMatch(lines.join("\n"), /Uncaught|\n\s+at |TypeError|RangeError/);
}

Deno.test("train on a folder whose every image is unreadable: one line naming the problem and the fix, exit 1, nothing written", async () => {
  const root = Deno.makeTempDirSync();
  try {
    unreadable(join(root, "data", "cats"), 20);
    unreadable(join(root, "data", "dogs"), 20);
    const out = join(root, "out");
    const r = await run([`--data=${join(root, "data")}`, `--output-dir=${out}`]);
    assert.equal(r.code, 1, r.err);
    assert.equal(r.lines.length, 1, r.err);
    assertOneLine(r.lines, /none of the 40 images of folder:\S+data could be read \(first: \S+\.png: /);
    assert.match(r.lines[0], /nothing was written/);
    assert.ok(!t.exists(out), "no output folder");
    // An output folder that exists already is left as it was.
    Deno.mkdirSync(out);
    assert.equal((await run([`--data=${join(root, "data")}`, `--output-dir=${out}`])).code, 1);
    assert.deepEqual([...Deno.readDirSync(out)], []);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("train on images that are all over the pixel budget: the fix named is --max-image-pixels", async () => {
  const root = Deno.makeTempDirSync();
  try {
    const data = join(root, "data");
    Deno.mkdirSync(data);
    for (const name of ["a.png", "b.png", "c.png"]) Deno.copyFileSync(join(FIXTURES, "png-rgb8.png"), join(data, name));
    const r = await run([`--data=${data}`, `--output-dir=${join(root, "out")}`, "--max-image-pixels=100"]);
    assert.equal(r.code, 1, r.err);
    assert.equal(r.lines.length, 1, r.err);
    assertOneLine(
      r.lines,
      /none of the 3 images .* exceeds the decoding budget of 100 \(raise it to read it: --max-image-pixels/,
    );
    assert.ok(!t.exists(join(root, "out")));
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("train with readable training images but unreadable test images: said before training, naming the test split", async () => {
  const root = Deno.makeTempDirSync();
  try {
    for (const cls of ["cats", "dogs"]) {
      Deno.mkdirSync(join(root, "data", "train", cls), { recursive: true });
      for (let i = 0; i < 3; i++) {
        Deno.copyFileSync(join(FIXTURES, "png-rgb8.png"), join(root, "data", "train", cls, `${i}.png`));
      }
      unreadable(join(root, "data", "val", cls), 4);
    }
    const r = await run([`--data=${join(root, "data")}`, `--output-dir=${join(root, "out")}`]);
    assert.equal(r.code, 1, r.err);
    assertOneLine(r.lines, /none of the 8 images of folder:\S+val could be read/);
    assert.ok(!t.exists(join(root, "out")));
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("an epoch whose every file is skipped stops the run with one error line and no checkpoint", async () => {
  // 65 files, of which only the first decodes: the check at the start reads it and passes. With a batch of 64 and a
  // seed whose first epoch puts that file last, the epoch's one batch (the last file is dropped) is all unreadable.
  const root = Deno.makeTempDirSync();
  try {
    const data = join(root, "data");
    unreadable(data, 65);
    Deno.removeSync(join(data, "000.png"));
    Deno.copyFileSync(join(FIXTURES, "png-rgb8.png"), join(data, "000.png"));
    let seed = 0;
    while (epochOrder(65, 0, { seed }).at(-1) !== 0) seed++;
    const out = join(root, "out");
    const r = await run([`--data=${data}`, `--output-dir=${out}`, "--batch-size=64", `--seed=${seed}`]);
    assert.equal(r.code, 1, r.err);
    // (the loader's warning for the epoch's skipped files comes first)
    assertOneLine(
      r.lines,
      /every one of the 64 images of epoch 1 was unreadable \(first: \S+: .*\); no checkpoint was written/,
    );
    assert.ok(!t.exists(join(out, "checkpoint.safetensors")), "no checkpoint");
    const steps = Deno.readTextFileSync(join(out, "metrics.jsonl")).trim();
    assert.equal(steps, "", "no step was logged");
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
