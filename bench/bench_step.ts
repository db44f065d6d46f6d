/**
 * The training step the step benchmarks measure (`compare_train_step.ts`, `profile_step.ts`): ViT-T/4 at 28 px
 * (dim 192, depth 12, heads 3, patch 4), batch 64, 2 x 28 px + 6 x 12 px crops, K 4096, AdamW, clipping, EMA, as
 * `train_step_torch.py` builds it on the PyTorch side; and how both run a side in its own process.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose } from "../mod.ts";
 * import { B, benchStep } from "./bench_step.ts";
 * const { state, views } = benchStep("fp32");
 * assert.deepEqual([views.length, views[0].shape], [8, [B, 1, 28, 28]]);
 * dispose([state, views]);
 * ```
 * @module
 */
import { Generator, randn, type Tensor } from "../mod.ts";
import { fail } from "./flags.ts";
import { type DinoConfig, dinoConfig } from "../lib/model/dino.ts";
import { type DinoHyper, dinoHyper, initTrainState, type TrainState } from "../lib/training/step.ts";

/** Images per step. */
export const B = 64;
/** The head's output dimension. */
export const K = 4096;

/** The benchmark's `--precision` flag: fp32 or bf16 (fp16 needs CUDA), else an error naming both and exit code 2. */
export function benchPrecision(flag: string | undefined): "fp32" | "bf16" {
  if (flag !== "fp32" && flag !== "bf16") fail(`--precision is fp32 or bf16 (fp16 needs CUDA), got ${flag}`);
  return flag;
}

/** The network, hyperparameters, a fresh state and the 8 views of the benchmark step (the caller owns them). */
export function benchStep(precision: "fp32" | "bf16"): {
  cfg: DinoConfig;
  h: DinoHyper;
  state: TrainState;
  views: Tensor[];
} {
  const cfg = dinoConfig({ arch: "vit_tiny", patchSize: 4, imgSize: 28, inChans: 1, outDim: K });
  const h = dinoHyper({
    epochs: 100,
    itersPerEpoch: 1000,
    batchSize: B,
    warmupEpochs: 0,
    freezeLastLayer: 1,
    precision,
  });
  using g = new Generator(1);
  const views = [
    ...Array.from({ length: 2 }, () => randn(g, [B, 1, 28, 28])),
    ...Array.from({ length: 6 }, () => randn(g, [B, 1, 12, 12])),
  ];
  return { cfg, h, state: initTrainState(cfg, h, 0), views };
}

/** The environment that gives PyTorch this project's thread arrangement for `n` threads. */
export const arranged = (n: number): Record<string, string> => ({
  GOMP_SPINCOUNT: "30000",
  OPENBLAS_THREAD_TIMEOUT: "4",
  OPENBLAS_NUM_THREADS: String(n),
});

/**
 * This process's environment without the thread settings that loading the shim added (children would inherit
 * them), with `env` on top: "as shipped" must mean OpenMP's and OpenBLAS's own defaults.
 */
function environment(env: Record<string, string>): Record<string, string> {
  const own = Deno.env.toObject();
  for (const name of ["GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS"]) delete own[name];
  return { ...own, ...env };
}

/** Runs one side of a benchmark in its own process (environment as {@linkcode environment}); its last line of JSON. */
export function spawnSide<T>(command: string, args: string[], env: Record<string, string>): T {
  const r = new Deno.Command(command, { args, env: environment(env), clearEnv: true, stdout: "piped", stderr: "piped" })
    .outputSync();
  if (!r.success) throw new Error(`${command} ${args.join(" ")} failed:\n${new TextDecoder().decode(r.stderr)}`);
  return JSON.parse(new TextDecoder().decode(r.stdout).trim().split("\n").pop()!);
}

/**
 * One side's process in turn-taking mode: started once, it makes its warmup step, then runs one step each time it is
 * asked, so that the sides' steps alternate a few seconds apart and a slow minute of the machine falls on all of them
 * alike. The protocol (this project's `compare_train_step.ts --side ours`, `train_step_torch.py THREADS serve`): a line
 * `{"ready": true}` after the warmup; a byte on stdin asks for a step, answered by `{"seconds": s}`; the end of stdin
 * ends the process after a line `{"peakMB": m}`.
 */
export class StepServer {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;
  #stderr: Promise<string>;
  #what: string;

  private constructor(command: string, args: string[], env: Record<string, string>) {
    this.#what = `${command} ${args.join(" ")}`;
    this.#child = new Deno.Command(command, {
      args,
      env: environment(env),
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = lines(this.#child.stdout)[Symbol.asyncIterator]();
    this.#stderr = new Response(this.#child.stderr).text();
  }

  /** Starts `command args` (environment as {@linkcode spawnSide}) and waits for its warmup step. */
  static async start(command: string, args: string[], env: Record<string, string>): Promise<StepServer> {
    const server = new StepServer(command, args, env);
    await server.#next("ready");
    return server;
  }

  /** Runs one step; its seconds. */
  async step(): Promise<number> {
    try {
      await this.#writer.write(new Uint8Array([1]));
    } catch {
      // The process has ended: what it said comes with the error #next throws.
    }
    return (await this.#next("seconds")) as number;
  }

  /** Ends the process; its peak resident memory in MB. */
  async finish(): Promise<number> {
    await this.#writer.close();
    const peak = (await this.#next("peakMB")) as number;
    const { code } = await this.#child.status;
    if (code !== 0) throw new Error(`${this.#what} exited with ${code}:\n${(await this.#stderr).slice(-2000)}`);
    return peak;
  }

  async #next(key: string): Promise<unknown> {
    for (;;) {
      const { value, done } = await this.#lines.next();
      if (done) throw new Error(`${this.#what} ended without "${key}":\n${(await this.#stderr).slice(-2000)}`);
      let reply: unknown;
      try {
        reply = JSON.parse(value);
      } catch {
        continue; // a line of its own output, not the protocol's
      }
      if (reply !== null && typeof reply === "object" && key in reply) return (reply as Record<string, unknown>)[key];
    }
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (pending + text).split("\n");
    pending = parts.pop()!;
    yield* parts;
  }
  if (pending) yield pending;
}
