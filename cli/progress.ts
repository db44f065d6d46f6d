/**
 * Training progress: a bar redrawn in place on a terminal, plain periodic
 * lines otherwise (logs, CI), and the per-epoch log that feeds it, writes
 * metrics records and checks for collapse at each epoch's end.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { clock } from "./progress.ts";
 * assert.deepEqual([clock(59), clock(61), clock(3661)], ["0:59", "1:01", "1:01:01"]);
 * ```
 * @module
 */
import type { Settings } from "../lib/settings/mod.ts";
import { collapseWarnings, type StepMetrics } from "../lib/training/mod.ts";

const encoder = new TextEncoder();

/** Seconds as m:ss (or h:mm:ss). */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return `${h > 0 ? `${h}:${String(m).padStart(2, "0")}` : m}:${String(r).padStart(2, "0")}`;
}

/** One epoch's progress display. */
export class Progress {
  // From the end of the first step shown: when that step began is not known here.
  #start?: number;
  #steps = 0;
  #images = 0;
  #drawn = false;

  /** A display for `epoch` of `epochs`, with `total` steps. */
  constructor(
    readonly epoch: number,
    readonly epochs: number,
    readonly total: number,
    readonly tty: boolean,
    readonly every: number,
  ) {}

  /** Shows step `step` of the epoch; `remaining` steps are left in the run. */
  update(step: number, m: Pick<StepMetrics, "loss" | "lr">, remaining: number, batch: number): void {
    const now = performance.now();
    if (this.#start === undefined) this.#start = now;
    else {
      this.#steps++;
      this.#images += batch;
    }
    const seconds = (now - this.#start) / 1000;
    const rate = this.#steps > 0 ? (this.#images / seconds).toFixed(0) : "-";
    const eta = this.#steps > 0 ? clock((seconds / this.#steps) * remaining) : "-";
    const fields = `loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)}  ${rate} img/s  ETA ${eta}`;
    if (this.tty) {
      const width = 24, filled = Math.round((width * step) / this.total);
      const bar = "#".repeat(filled) + ".".repeat(width - filled);
      Deno.stdout.writeSync(
        encoder.encode(`\r\x1b[2Kepoch ${this.epoch + 1}/${this.epochs} [${bar}] ${step}/${this.total}  ${fields}`),
      );
      this.#drawn = true;
    } else if (step % this.every === 0 || step === this.total) {
      console.log(`epoch ${this.epoch + 1}/${this.epochs} step ${step}/${this.total}  ${fields}`);
    }
  }

  /** Ends the epoch's display. */
  finish(): void {
    if (this.#drawn) Deno.stdout.writeSync(encoder.encode("\n"));
    this.#drawn = false;
  }
}

/**
 * The display of an evaluation's epochs (a linear or fine-tuning run): each step moves it, and `finish` ends the
 * epoch's before its line.
 */
export class EpochBar {
  #progress?: Progress;
  #tty = Deno.stdout.isTerminal();

  /** A display of `epochs` epochs of batches of `batchSize`. */
  constructor(readonly epochs: number, readonly batchSize: number) {}

  /** Shows step `step` (1-based) of the `steps` of `epoch` (0-based). */
  step(e: { epoch: number; step: number; steps: number } & Pick<StepMetrics, "loss" | "lr">): void {
    this.#progress ??= new Progress(e.epoch, this.epochs, e.steps, this.#tty, this.#tty ? 1 : e.steps);
    this.#progress.update(e.step, e, (this.epochs - e.epoch - 1) * e.steps + e.steps - e.step, this.batchSize);
  }

  /** Ends the epoch's display. */
  finish(): void {
    this.#progress?.finish();
    this.#progress = undefined;
  }
}

/** An evaluation epoch's line: its test accuracy and loss, and the best epoch so far (0-based epochs). */
export function epochLine(
  epoch: number,
  epochs: number,
  test: { top1: number; top5: number; loss: number },
  best: { top1: number; epoch: number },
): string {
  return `epoch ${epoch + 1}/${epochs}: test top-1 ${test.top1.toFixed(2)}%  top-5 ${test.top5.toFixed(2)}%  ` +
    `loss ${test.loss.toFixed(4)}  (best top-1 ${best.top1.toFixed(2)}% at epoch ${best.epoch + 1})`;
}

/**
 * Per-epoch bookkeeping: the progress display, metrics records, and the
 * collapse checks at the epoch's end. Of a data-parallel run, rank 0 logs
 * (counting the images of every rank) and the others are `quiet`.
 */
export class EpochLog {
  #progress?: Progress;
  #losses: number[] = [];
  #entropies: number[] = [];
  #windowStart = performance.now();
  #windowImages = 0;

  constructor(
    readonly s: Settings,
    readonly itersPerEpoch: number,
    readonly record: (r: Record<string, unknown>) => void,
    readonly o: { quiet?: boolean } = {},
  ) {}

  /** Step `step` of `epoch`, trained on `images` images (every process's). */
  step(epoch: number, step: number, m: StepMetrics, remaining: number, images: number): void {
    if (this.o.quiet) return;
    this.#progress ??= new Progress(
      epoch,
      this.s.epochs,
      this.itersPerEpoch,
      Deno.stdout.isTerminal(),
      this.s.logEvery,
    );
    this.#losses.push(m.loss);
    this.#entropies.push(m.teacherEntropy);
    this.#windowImages += images;
    if (step % this.s.logEvery === 0 || remaining === 0) {
      const now = performance.now();
      this.record({
        step,
        epoch,
        loss: m.loss,
        lr: m.lr,
        wd: m.weightDecay,
        momentum: m.momentum,
        teacher_temp: m.teacherTemp,
        teacher_entropy: m.teacherEntropy,
        student_entropy: m.studentEntropy,
        images_per_s: this.#windowImages / ((now - this.#windowStart) / 1000),
        ...(m.lossScale !== undefined && { loss_scale: m.lossScale }), // fp16's loss scaler
      });
      this.#windowStart = now;
      this.#windowImages = 0;
    }
    this.#progress.update(step - epoch * this.itersPerEpoch, m, remaining, images);
  }

  end(epoch: number, fullEpoch: boolean): void {
    this.finish();
    if (this.o.quiet) return;
    const full = fullEpoch && this.#losses.length === this.itersPerEpoch;
    for (const w of collapseWarnings(this.#losses, this.#entropies, this.s.outDim, full)) {
      console.warn(`warning: ${w} (epoch ${epoch})`);
    }
    this.#losses = [];
    this.#entropies = [];
  }

  finish(): void {
    this.#progress?.finish();
    this.#progress = undefined;
  }
}
