/**
 * Training progress: a bar redrawn in place on a terminal, plain periodic
 * lines otherwise (logs, CI).
 *
 * @example
 * ```ts
 * import { Progress } from "./progress.ts";
 * const p = new Progress(0, 1, 100, false, 10);
 * p.finish();
 * ```
 * @module
 */
import type { StepMetrics } from "../lib/training/step.ts";

const encoder = new TextEncoder();

/** Seconds as m:ss (or h:mm:ss). */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return `${h > 0 ? `${h}:${String(m).padStart(2, "0")}` : m}:${String(r).padStart(2, "0")}`;
}

/** One epoch's progress display. */
export class Progress {
  #start = performance.now();
  #steps = 0;
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
  update(step: number, m: StepMetrics, remaining: number, batch: number): void {
    this.#steps++;
    const seconds = (performance.now() - this.#start) / 1000;
    const perStep = seconds / this.#steps;
    const rate = (batch * this.#steps) / seconds;
    const fields = `loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)}  ${rate.toFixed(0)} img/s  ETA ${
      clock(perStep * remaining)
    }`;
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
