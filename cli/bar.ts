/**
 * A progress display for the commands that work through a list (frames, images): a bar redrawn in place on a
 * terminal, a plain line every tenth of the way otherwise (logs, CI), with the rate and the time left.
 *
 * @example
 * ```ts
 * import { Bar } from "./bar.ts";
 * const bar = new Bar("frames", 3, { tty: false, unit: "frame" });
 * for (let i = 0; i < 3; i++) bar.tick();
 * bar.finish();
 * ```
 * @module
 */
import { clock } from "./progress.ts";

const encoder = new TextEncoder();

/** Options of {@linkcode Bar}. */
export interface BarOptions {
  /** Redraw in place (default: whether stdout is a terminal). */
  tty?: boolean;
  /** What is counted, for the rate ("image": "12.3 image/s"). */
  unit?: string;
}

/** One task's progress display: `tick` after each item, `finish` at the end. */
export class Bar {
  #start = performance.now();
  #done = 0;
  #drawn = false;
  #printedAt = 0;
  readonly #tty: boolean;
  readonly #unit: string;

  /** A display named `label` for `total` items. */
  constructor(readonly label: string, readonly total: number, o: BarOptions = {}) {
    this.#tty = o.tty ?? Deno.stdout.isTerminal();
    this.#unit = o.unit ?? "item";
  }

  /** Counts `n` more items done, with an optional note (a metric) after the rate. */
  tick(n = 1, note = ""): void {
    this.#done += n;
    const seconds = (performance.now() - this.#start) / 1000;
    const rate = this.#done / Math.max(seconds, 1e-9);
    const left = Math.max(0, this.total - this.#done) / Math.max(rate, 1e-9);
    const fields = `${this.#done}/${this.total}  ${rate.toFixed(rate < 10 ? 2 : 0)} ${this.#unit}/s  ETA ${
      clock(left)
    }${note ? `  ${note}` : ""}`;
    if (this.#tty) {
      const width = 24, filled = Math.round((width * Math.min(this.#done, this.total)) / Math.max(this.total, 1));
      Deno.stdout.writeSync(
        encoder.encode(`\r\x1b[2K${this.label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${fields}`),
      );
      this.#drawn = true;
    } else {
      const step = Math.max(1, Math.ceil(this.total / 10));
      if (this.#done - this.#printedAt >= step || this.#done >= this.total) {
        this.#printedAt = this.#done;
        console.log(`${this.label} ${fields}`);
      }
    }
  }

  /** Ends the display (a newline after an in-place bar). */
  finish(): void {
    if (this.#drawn) Deno.stdout.writeSync(encoder.encode("\n"));
    this.#drawn = false;
  }
}
