/**
 * `deno task ablate`: the paper's ablation table at small scale. Trains the
 * `fmnist` preset once per variant (`lib/eval/ablation.ts`) with the same
 * seed and budget, each by the training program (`cli/train.ts`, with
 * `--eval-linear true`) into `<output-dir>/<variant>`, then writes
 * `ablation.md` and `ablation.json`: weighted k-NN and linear (cached
 * features) top-1, and the collapse diagnostics from each run's
 * metrics.jsonl. A variant whose run is complete (its summary.json written
 * after its config.json, with the same settings) is reused; an unfinished one
 * resumes from its checkpoint.
 *
 * Exit codes: 0 done, 1 a variant's run failed (the table is written with its
 * row marked), 2 a bad flag or variant, 130 interrupted (the run in progress
 * keeps its checkpoint).
 *
 * @example
 * ```sh
 * deno task ablate                                   # every variant, the preset's budget (an estimated hour or more on 2 cores)
 * deno task ablate --variants full,mse --max-steps 200 --output-dir output/ablate-short
 * deno task ablate --seed 1 -- --train-limit 10000   # flags after -- go to every training run
 * ```
 * @module
 */
import { join } from "node:path";
import { exists, writeFileAtomic } from "../mod.ts";
import { finishedRun } from "./run_folder.ts";
import {
  ABLATION_BASE,
  ablationFlags,
  ablationMarkdown,
  type AblationRow,
  ABLATIONS,
  collapseDiagnostics,
} from "../lib/eval/ablation.ts";
import { failure, integer, parseFlags, parseTrainArgs, splitPassthrough, UsageError } from "./flags.ts";
import { main as train } from "./train.ts";

const HELP = `usage: deno task ablate [options] [-- training flags]

Trains the fmnist preset with the official teacher momentum (${ABLATION_BASE.join(" ")})
once per variant with the same seed and budget, then writes
<output-dir>/ablation.md and ablation.json: weighted k-NN and linear (cached features)
top-1 per variant, with the final teacher and student entropies and KL(teacher || student).
Each run is <output-dir>/<variant>; complete runs are reused, unfinished ones resume.

variants: ${
  Object.entries(ABLATIONS).map(([k, a]) =>
    `\n  ${k.padEnd(15)} ${a.label}${a.flags.length ? ` (${a.flags.join(" ")})` : ""}`
  ).join("")
}

options:
  --output-dir DIR      where the runs and the table go (default output/ablation)
  --variants A,B,...    which variants, in the table's order (default: all)
  --seed N              the seed of every run (default 0)
  --epochs N            training epochs of every run (default: the preset's)
  --max-steps N         stop every run after N steps (default: all epochs)
  -h, --help            this help
Flags after -- are passed to every training run (deno task train --help lists them), except ablate's
own: --seed, --epochs, --max-steps and --output-dir go before --, and --eval-linear is always on.`;

function parse(args: string[]) {
  const { own, extra } = splitPassthrough(args);
  const values = parseFlags(own, {
    "output-dir": { type: "string", default: join("output", "ablation") },
    variants: { type: "string", default: Object.keys(ABLATIONS).join(",") },
    seed: { type: "string", default: "0" },
    epochs: { type: "string" },
    "max-steps": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  const variants = values.variants.split(",").map((v) => v.trim()).filter((v) => v !== "");
  const unknown = variants.filter((v) => !(v in ABLATIONS));
  if (unknown.length > 0 || variants.length === 0) {
    throw new UsageError(
      `${unknown.length ? `unknown variant(s) ${unknown.join(", ")}` : "--variants names none"}; ` +
        `the variants are ${Object.keys(ABLATIONS).join(", ")}`,
    );
  }
  // ablate's own flags, one value for every run: after --, they were overridden without a word (or, for the budget,
  // read where ablate's --epochs and --max-steps are the documented way).
  for (const flag of ["--seed", "--output-dir", "--epochs", "--max-steps", "--eval-linear"]) {
    if (extra.some((a) => a === flag || a.startsWith(`${flag}=`))) {
      throw new UsageError(
        flag === "--eval-linear"
          ? "--eval-linear is always on in the ablation (its table has a linear column): drop it after --"
          : `${flag} is ablate's own flag, given to every run: put it before --`,
      );
    }
  }
  const seed = integer("--seed", values.seed, 0);
  const budget = [
    ...(values.epochs === undefined ? [] : ["--epochs", String(integer("--epochs", values.epochs, 1))]),
    ...(values["max-steps"] === undefined
      ? []
      : ["--max-steps", String(integer("--max-steps", values["max-steps"], 0))]),
  ];
  const outputDir = values["output-dir"];
  // Every variant's flags are checked before anything trains: a bad passthrough flag is a usage error up front.
  const runs = [...new Set(variants)].map((variant) => {
    const dir = join(outputDir, variant);
    const flags = [
      ...ABLATION_BASE,
      ...extra,
      ...budget,
      ...ablationFlags(variant),
      "--seed",
      String(seed),
      "--eval-linear",
      "true",
    ];
    const args = [...flags, "--output-dir", dir];
    const settings = parseTrainArgs(args);
    if (settings === "help") throw new UsageError("--help is not a training flag here: use deno task ablate --help");
    if (settings.preset !== "fmnist") throw new UsageError("the ablation is of the fmnist preset: drop --preset");
    return { variant, dir, args, settings };
  });
  return { outputDir, seed, budget, extra, runs };
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let o: Exclude<ReturnType<typeof parse>, "help">;
  try {
    const parsed = parse(args);
    if (parsed === "help") {
      console.log(HELP);
      return 0;
    }
    o = parsed;
  } catch (e) {
    return failure(e, "ablate");
  }
  const rows: AblationRow[] = [];
  let failed = false, lnK = 0;
  for (const [i, run] of o.runs.entries()) {
    const a = ABLATIONS[run.variant];
    lnK = Math.log(run.settings.outDim);
    const reused = finishedRun(run.dir, run.settings, (summary) => summary.linear !== undefined);
    console.log(
      `ablation ${i + 1}/${o.runs.length}: ${run.variant} (${a.label})` +
        (reused ? `: reusing the complete run in ${run.dir}` : `: deno task train ${run.args.join(" ")}`),
    );
    const code = reused ? 0 : await train(run.args);
    if (code === 2 || code === 130 || code === 143) return code; // a usage error, or interrupted: stop here
    const row: AblationRow = {
      variant: run.variant,
      label: a.label,
      flags: ablationFlags(run.variant),
      status: code === 0 ? "ok" : `failed (exit ${code})`,
      steps: null,
      knnTop1: null,
      linearTop1: null,
      diagnostics: null,
    };
    if (code === 0) {
      const summary = JSON.parse(Deno.readTextFileSync(join(run.dir, "summary.json")));
      row.steps = summary.steps;
      row.knnTop1 = summary.knn_top1.trained;
      row.linearTop1 = summary.linear.top1;
    } else {
      failed = true;
    }
    const metrics = join(run.dir, "metrics.jsonl");
    try {
      if (exists(metrics)) {
        row.diagnostics = collapseDiagnostics(Deno.readTextFileSync(metrics), run.settings.criterion);
      }
    } catch {
      // no training record was logged: the row says so by its dashes
    }
    rows.push(row);
  }
  const table = ablationMarkdown(rows, lnK);
  const json = {
    preset: "fmnist",
    seed: o.seed,
    budget: o.budget,
    base_flags: ABLATION_BASE,
    training_flags: o.extra,
    ln_k: lnK,
    variants: rows.map((r) => ({
      variant: r.variant,
      label: r.label,
      flags: r.flags,
      status: r.status,
      steps: r.steps,
      knn_top1: r.knnTop1,
      linear_top1: r.linearTop1,
      teacher_entropy: r.diagnostics?.teacherEntropy ?? null,
      student_entropy: r.diagnostics?.studentEntropy ?? null,
      kl_teacher_student: r.diagnostics?.kl ?? null,
      ...(r.diagnostics?.klNote && { kl_note: r.diagnostics.klNote }),
      diagnostic_steps: r.diagnostics?.steps ?? null,
      run: join(o.outputDir, r.variant),
    })),
  };
  const encode = (s: string) => new TextEncoder().encode(s);
  Deno.mkdirSync(o.outputDir, { recursive: true });
  writeFileAtomic(join(o.outputDir, "ablation.md"), encode(table));
  writeFileAtomic(join(o.outputDir, "ablation.json"), encode(JSON.stringify(json, null, 2) + "\n"));
  console.log("\n" + table);
  console.log(`written: ${join(o.outputDir, "ablation.md")} and ablation.json`);
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
