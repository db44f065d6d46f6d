/**
 * The run's folder: made and checked before any data is loaded, cleaned of
 * what a killed run left, and written through one object (config.json,
 * metrics.jsonl, checkpoints, summary.json).
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { exists, removeStaleTemporaries, writeFileAtomic } from "../mod.ts";
import type { Accuracy } from "../lib/eval/mod.ts";
import type { Settings } from "../lib/settings/mod.ts";
import type { TrainState } from "../lib/training/mod.ts";
import { saveCheckpoint } from "../lib/weights/mod.ts";
import { UsageError } from "./flags.ts";

/**
 * Makes sure the output folder is a folder this process can write, creating it if need be, before any data is
 * loaded; removes the temporary files of writes a killed run left there. `undo` removes what it created.
 */
export function prepareOutputDir(dir: string): { undo(): void } {
  let top: string | undefined; // the outermost folder this call creates
  for (let d = resolve(dir); !exists(d); d = dirname(d)) top = d;
  try {
    if (top) Deno.mkdirSync(dir, { recursive: true });
    if (!Deno.statSync(dir).isDirectory) throw new UsageError(`--output-dir ${dir} is a file, not a folder`);
    Deno.removeSync(Deno.makeTempFileSync({ dir, prefix: ".write-check-" }));
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`--output-dir ${dir} cannot be written: ${e instanceof Error ? e.message : e}`);
  }
  const stale = removeStaleTemporaries(dir);
  if (stale.length > 0) {
    console.warn(`removed ${stale.length} temporary file(s) or folder(s) an interrupted write left in ${dir}`);
  }
  return { undo: () => top && Deno.removeSync(top, { recursive: true }) };
}

/** The commands whose output folders tell themselves apart by their config.json. */
export type RunKind = "train" | "linear" | "finetune";

/**
 * Which command's run a folder holds, by the settings its config.json records (undefined: no config.json, or
 * one that is not JSON or none of these).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { runKind } from "./run_folder.ts";
 * const dir = Deno.makeTempDirSync();
 * assert.equal(runKind(dir), undefined);
 * Deno.writeTextFileSync(join(dir, "config.json"), JSON.stringify({ nLastBlocks: 4 }));
 * assert.equal(runKind(dir), "linear");
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function runKind(dir: string): RunKind | undefined {
  try {
    return configKind(JSON.parse(Deno.readTextFileSync(join(dir, "config.json"))));
  } catch {
    return undefined;
  }
}

/** Which command wrote a run's config.json, by the settings it records (undefined: none of these). */
export function configKind(config: unknown): RunKind | undefined {
  if (typeof config !== "object" || config === null) return undefined;
  return "outDim" in config
    ? "train"
    : "layerDecay" in config
    ? "finetune"
    : "nLastBlocks" in config
    ? "linear"
    : undefined;
}

/**
 * Refuses an output folder that holds another command's run: writing there would replace its checkpoint and
 * records.
 */
export function refuseOtherRun(dir: string, kind: RunKind): void {
  const other = runKind(dir);
  if (other === undefined || other === kind) return;
  throw new UsageError(
    `--output-dir ${dir} holds a run of \`deno task ${other}\` (its config.json says so), whose files ` +
      `\`deno task ${kind}\` would overwrite: choose another folder, for example ${join(dir, kind)}`,
  );
}

/**
 * Rewrites the metrics.jsonl at `path`, where there is one, with the records `keep` accepts; a line cut short by a
 * crash goes too.
 */
export function keepRecords(path: string, keep: (record: Record<string, number>) => boolean): void {
  if (!exists(path)) return;
  const kept = Deno.readTextFileSync(path).split("\n").filter((line) => {
    try {
      const record = JSON.parse(line);
      return typeof record === "object" && record !== null && keep(record);
    } catch {
      return false; // blank, or cut short by a crash
    }
  });
  writeFileAtomic(path, new TextEncoder().encode(kept.map((l) => l + "\n").join("")));
}

/**
 * An evaluation's folder (a linear or fine-tuning run): config.json and metrics.jsonl are written when the first
 * epoch ends, so that a run stopped before it leaves nothing, then a line of metrics.jsonl an epoch.
 */
export class EpochRecords {
  #metrics?: Deno.FsFile;

  /** The records of a run in `dir`, with its settings `config`. */
  constructor(readonly dir: string, readonly config: unknown) {}

  /** A file of the folder. */
  path(name: string): string {
    return join(this.dir, name);
  }

  /** Writes `value` to the folder's file `name` as indented JSON, atomically. */
  json(name: string, value: unknown): void {
    writeFileAtomic(this.path(name), new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n"));
  }

  /** Whether config.json and metrics.jsonl are written. */
  get written(): boolean {
    return this.#metrics !== undefined;
  }

  /**
   * Continues a run after its first `epochs` epochs: writes config.json, and metrics.jsonl keeps their records
   * (a run killed while writing may have left later ones, which are run again) and is appended to.
   */
  resume(epochs: number): void {
    this.json("config.json", this.config);
    keepRecords(this.path("metrics.jsonl"), (r) => r.epoch < epochs);
    this.#metrics = Deno.openSync(this.path("metrics.jsonl"), { write: true, create: true, append: true });
  }

  /** Appends an epoch's record to metrics.jsonl; the first, before any resume, writes config.json too. */
  record(r: Record<string, unknown>): void {
    if (!this.#metrics) {
      this.json("config.json", this.config);
      this.#metrics = Deno.openSync(this.path("metrics.jsonl"), { write: true, create: true, truncate: true });
    }
    this.#metrics.writeSync(new TextEncoder().encode(JSON.stringify(r) + "\n"));
  }

  /** Closes metrics.jsonl. */
  close(): void {
    this.#metrics?.close();
  }
}

/**
 * The run's folder: config.json, metrics.jsonl (appended to when resuming), checkpoints (with the number of
 * processes that trained them) and summary.json.
 */
export function openOutput(
  s: Settings,
  norm: { mean: number[]; std: number[] },
  channels: number,
  resumedAt: number | undefined,
  worldSize = 1,
) {
  const json = (path: string, value: unknown) =>
    writeFileAtomic(join(s.outputDir, path), new TextEncoder().encode(JSON.stringify(value, null, 2)));
  json("config.json", { ...s, normalization: norm });
  const metricsPath = join(s.outputDir, "metrics.jsonl");
  // Rows logged after the checkpoint (by a run that crashed before its next save) would be logged again.
  if (resumedAt !== undefined) keepRecords(metricsPath, (r) => !(r.step > resumedAt));
  const metrics = Deno.openSync(metricsPath, {
    write: true,
    create: true,
    append: resumedAt !== undefined,
    truncate: resumedAt === undefined,
  });
  const checkpoint = join(s.outputDir, "checkpoint.safetensors");
  const record = (r: Record<string, unknown>) => metrics.writeSync(new TextEncoder().encode(JSON.stringify(r) + "\n"));
  return {
    checkpoint,
    record,
    /** Saves the latest checkpoint, and keeps a numbered one every `saveckpFreq` full epochs. */
    save(state: TrainState, epochsDone: number, atEpochEnd: boolean) {
      const info = { config: s, channels, epoch: epochsDone, normalization: norm, worldSize };
      saveCheckpoint(checkpoint, state, info);
      if (s.saveckpFreq > 0 && epochsDone > 0 && epochsDone % s.saveckpFreq === 0 && atEpochEnd) {
        saveCheckpoint(join(s.outputDir, `checkpoint${String(epochsDone).padStart(4, "0")}.safetensors`), state, info);
      }
    },
    summary(
      steps: number,
      epoch: number,
      r: { trained: Accuracy & { images: number }; init: Accuracy; rawPixels: Accuracy },
      trainSeconds: number,
      totalSeconds: number,
      linear?: Accuracy & { bestEpoch: number; seconds: number },
    ) {
      const summary = {
        knn_top1: { trained: r.trained.top1, init: r.init.top1, raw_pixels: r.rawPixels.top1 },
        knn_top5: { trained: r.trained.top5, init: r.init.top5, raw_pixels: r.rawPixels.top5 },
        knn_test_images: r.trained.images,
        ...(linear && {
          linear: { top1: linear.top1, top5: linear.top5, best_epoch: linear.bestEpoch, seconds: linear.seconds },
        }),
        steps,
        train_seconds: trainSeconds,
        total_seconds: totalSeconds,
      };
      record({ step: steps, epoch, ...summary });
      json("summary.json", summary);
    },
    close: () => metrics.close(),
  };
}

/**
 * Whether `dir` holds a finished run of `settings`: its summary.json written after its config.json, every entry
 * of `settings` as config.json saved it, and `done` true of the summary (default: any summary).
 */
export function finishedRun(
  dir: string,
  settings: object,
  done: (summary: Record<string, unknown>) => boolean = () => true,
): boolean {
  const config = join(dir, "config.json"), summary = join(dir, "summary.json");
  if (!exists(config) || !exists(summary)) return false;
  if (Deno.statSync(summary).mtime! < Deno.statSync(config).mtime!) return false;
  const saved = JSON.parse(Deno.readTextFileSync(config));
  const same = Object.entries(settings).every(([k, v]) => JSON.stringify(saved[k]) === JSON.stringify(v));
  return same && done(JSON.parse(Deno.readTextFileSync(summary)));
}
