/**
 * Stop requests for the long-running commands: SIGINT (exit code 130) and
 * SIGTERM (143, what schedulers send before killing a job) become an abort
 * signal the command checks between steps; a second request exits at once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listenForStop } from "./stop.ts";
 * using stop = listenForStop();
 * assert.equal(stop.code, 0); // no request yet
 * stop.adopt(143); // another rank was asked to stop
 * assert.deepEqual([stop.code, stop.signal.aborted], [143, true]);
 * ```
 * @module
 */

/** A stop request as an abort signal and the exit code it asks for. */
export interface StopRequest extends Disposable {
  /** Aborted once a request came. */
  readonly signal: AbortSignal;
  /** The exit code the request asks for; 0 while none came. */
  readonly code: number;
  /** Takes another rank's stop request (its exit code) as this one's, unless one came here. */
  adopt(other: number): void;
}

/** Listens for SIGINT and SIGTERM until disposed. */
export function listenForStop(): StopRequest {
  const controller = new AbortController();
  let code = 0, received = 0;
  const on = (signal: "SIGINT" | "SIGTERM", exitCode: number) => () => {
    // Only a second signal to this process exits at once: one that follows another rank's adopted request (the
    // launcher forwards to every rank, and a fast rank's request can reach here first) is this rank's first.
    if (received++ > 0) Deno.exit(code);
    code ||= exitCode;
    controller.abort(new Error(`stopped by ${signal}`));
  };
  const handlers = [["SIGINT", on("SIGINT", 130)], ["SIGTERM", on("SIGTERM", 143)]] as const;
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  return {
    signal: controller.signal,
    get code() {
      return code;
    },
    adopt(other: number) {
      if (code === 0 && other !== 0) {
        code = other;
        controller.abort(new Error("stopped: another rank was asked to stop"));
      }
    },
    [Symbol.dispose]() {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    },
  };
}
