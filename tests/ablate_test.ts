import assert from "node:assert/strict";
import { join } from "node:path";
import { captured, TINY_VIT_FLAGS } from "./helpers.ts";
import { main as ablate } from "../cli/ablate.ts";
import { ABLATIONS } from "../lib/eval/ablation.ts";

// A tiny network on a tiny subset, 2 steps a variant: the code paths of the real table in seconds.
const TINY = [
  ...TINY_VIT_FLAGS,
  "--batch-size",
  "32",
  "--log-every",
  "1",
  "--train-limit",
  "128",
  "--test-limit",
  "40",
  "--report",
  "false",
];

Deno.test("ablate trains every variant and writes one row of finite numbers each, as Markdown and JSON; complete runs are reused", async () => {
  const dir = Deno.makeTempDirSync();
  const args = ["--output-dir", dir, "--max-steps", "2", "--seed", "3", "--", ...TINY];
  const r = await captured(() => ablate(args));
  assert.equal(r.value, 0, r.err + r.out);
  const json = JSON.parse(Deno.readTextFileSync(join(dir, "ablation.json")));
  assert.equal(json.seed, 3);
  assert.deepEqual(json.variants.map((v: { variant: string }) => v.variant), Object.keys(ABLATIONS));
  for (const v of json.variants) {
    assert.equal(v.status, "ok", v.variant);
    assert.equal(v.steps, 2, v.variant);
    for (const k of ["knn_top1", "linear_top1", "teacher_entropy", "student_entropy"]) {
      assert(Number.isFinite(v[k]), `${v.variant} ${k}: ${v[k]}`);
    }
    if (v.variant === "mse") {
      assert.equal(v.kl_teacher_student, null);
      assert.match(v.kl_note, /not derivable/);
    } else {
      assert(Number.isFinite(v.kl_teacher_student) && v.kl_teacher_student > -1e-4, `${v.variant} KL`);
    }
  }
  const md = Deno.readTextFileSync(join(dir, "ablation.md"));
  const rows = md.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| variant") && !l.startsWith("| ---"));
  assert.deepEqual(rows.map((l) => l.split(" | ")[0].slice(2)), Object.keys(ABLATIONS));
  for (const l of rows) {
    assert.match(l, /\| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d{3} \| \d+\.\d{3} \| (-?\d+\.\d{3}|—) \| 2 \| ok \|$/);
  }

  // The same command again trains nothing: every run is complete.
  const again = await captured(() =>
    ablate(["--output-dir", dir, "--max-steps", "2", "--seed", "3", "--variants", "full", "--", ...TINY])
  );
  assert.equal(again.value, 0, again.err);
  assert.match(again.out, /reusing the complete run/);
  assert.doesNotMatch(again.out, /deno task train/);
});

Deno.test("an unknown variant is a usage error naming the valid ones; nothing is written", async () => {
  const dir = join(Deno.makeTempDirSync(), "out");
  const r = await captured(() => ablate(["--output-dir", dir, "--variants", "full,nope"]));
  assert.equal(r.value, 2);
  assert.match(r.err, /unknown variant\(s\) nope; the variants are full, no-momentum, .*sinkhorn/);
  assert.match(r.err, /deno task ablate --help/);
  assert.equal((await captured(() => ablate(["--output-dir", dir, "--", "--lr", "fast"]))).value, 2);
  // ablate's own flags after -- would be overridden on every run: refused, saying where they go
  for (
    const [extra, message] of [
      [["--seed", "5"], /--seed is ablate's own flag, given to every run: put it before --/],
      [["--output-dir=/tmp/x"], /--output-dir is ablate's own flag/],
      [["--max-steps", "3"], /--max-steps is ablate's own flag/],
      [["--eval-linear", "false"], /--eval-linear is always on in the ablation/],
    ] as const
  ) {
    const bad = await captured(() => ablate(["--output-dir", dir, "--", ...extra]));
    assert.equal(bad.value, 2);
    assert.match(bad.err, message);
  }
  assert.throws(() => Deno.statSync(dir));
  const h = await captured(() => ablate(["--help"]));
  assert.equal(h.value, 0);
  assert.match(h.out, /no-sharpening +no sharpening/);
});
