/**
 * `deno task train --nproc-per-node N ...`: starts N local processes of the
 * same program, as torchrun does: each gets `RANK`, `LOCAL_RANK`,
 * `WORLD_SIZE`, `MASTER_ADDR` (127.0.0.1) and `MASTER_PORT` (`--master-port`)
 * and joins the group from them. Their output is streamed with a rank prefix;
 * SIGINT and SIGTERM are forwarded to every rank (which runs in its own
 * session, so that a terminal's Ctrl-C reaches it once, through here; a rank
 * whose launcher is killed stops as on SIGTERM). When a rank fails, the others
 * are given `--dist-timeout` (and a little more) to stop by themselves, naming
 * the rank they lost, then killed. The exit code is 0 when every rank
 * succeeded, else the ranks' common code, else 1.
 *
 * Multi-node runs are started by the tools that already do it (torchrun on
 * each node, or SLURM's srun): the program joins the group their variables
 * describe.
 *
 * @module
 */
import { distributedBackends } from "../mod.ts";
import type { Settings } from "../lib/settings/mod.ts";
import { flagOf, UsageError } from "./flags.ts";

/** How each rank ended: its exit code (128 + n for signal n), and the signal's name. */
export interface RankEnd {
  /** The rank. */
  rank: number;
  /** The exit code; 128 + n when killed by signal n. */
  code: number;
  /** The signal that killed it, if one did. */
  signal?: string;
}

/**
 * The launcher's exit code: 0 when every rank succeeded, the ranks' code when
 * the failed ones agree (2 for refused flags, 130 when interrupted), else 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { launcherCode } from "./launch.ts";
 * assert.equal(launcherCode([{ rank: 0, code: 0 }, { rank: 1, code: 0 }]), 0);
 * assert.equal(launcherCode([{ rank: 0, code: 130 }, { rank: 1, code: 130 }]), 130);
 * assert.equal(launcherCode([{ rank: 0, code: 1 }, { rank: 1, code: 137, signal: "SIGKILL" }]), 1);
 * ```
 */
export function launcherCode(ends: readonly RankEnd[]): number {
  const failed = ends.filter((e) => e.code !== 0);
  if (failed.length === 0) return 0;
  return failed.every((e) => e.code === failed[0].code) ? failed[0].code : 1;
}

/** The `--dist-backend` a run uses: `auto` is NCCL for CUDA devices where the shim has it, else Gloo. */
export function resolveBackend(s: Pick<Settings, "distBackend">, cuda: boolean): "gloo" | "nccl" {
  if (s.distBackend !== "auto") return s.distBackend;
  return cuda && distributedBackends().includes("nccl") ? "nccl" : "gloo";
}

/** Throws a usage error unless this shim has `backend`, saying how to get it. */
export function requireBackend(backend: "gloo" | "nccl", processes: string): void {
  if (distributedBackends().includes(backend)) return;
  throw new UsageError(
    backend === "gloo"
      ? `${processes} needs distributed training, which this shim was built without (Gloo's headers, Debian's ` +
        `libgloo-dev, were missing): run 'deno task setup' as root (or sudo apt-get install libgloo-dev), then again`
      : `${flagOf("distBackend")} nccl needs a shim built against a CUDA libtorch with NCCL's header; ` +
        `use ${flagOf("distBackend")} gloo`,
  );
}

/** Sinkhorn-Knopp centering needs the whole batch in one process. */
export function requireCentering(s: Pick<Settings, "centering">): void {
  if (s.centering !== "sinkhorn") return;
  throw new UsageError(
    `${flagOf("centering")} sinkhorn normalises over the batch: it is not supported over several processes`,
  );
}

function portFree(port: number): boolean {
  try {
    const listener = Deno.listen({ hostname: "0.0.0.0", port });
    listener.close();
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) return false;
    throw e;
  }
}

/** Copies a stream to `out` line by line, each line prefixed. */
async function prefixLines(stream: ReadableStream<Uint8Array>, prefix: string, out: typeof Deno.stdout) {
  const encoder = new TextEncoder();
  let pending = "";
  const write = (text: string) => {
    const bytes = encoder.encode(text);
    for (let at = 0; at < bytes.length;) at += out.writeSync(bytes.subarray(at));
  };
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split(/\r?\n|\r/);
    pending = lines.pop()!;
    if (lines.length) write(lines.map((l) => `${prefix}${l}\n`).join(""));
  }
  if (pending) write(`${prefix}${pending}\n`);
}

function setsid(): string | undefined {
  for (const path of ["/usr/bin/setsid", "/bin/setsid"]) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not there */ }
  }
  return undefined;
}

/**
 * Starts `s.nprocPerNode` processes of the training program with `args` and
 * waits for them; returns the launcher's exit code.
 */
export async function launch(args: readonly string[], s: Settings, cuda: boolean): Promise<number> {
  const n = s.nprocPerNode;
  requireCentering(s);
  requireBackend(resolveBackend(s, cuda && s.device !== "cpu"), `${flagOf("nprocPerNode")} ${n}`);
  if (!portFree(s.masterPort)) {
    throw new UsageError(
      `port ${s.masterPort} is already in use (another run?): the ranks cannot meet there; ` +
        `choose another with ${flagOf("masterPort")}`,
    );
  }
  const program = new URL("./train.ts", import.meta.url).pathname;
  const cores = navigator.hardwareConcurrency;
  const env: Record<string, string> = {
    WORLD_SIZE: String(n),
    MASTER_ADDR: "127.0.0.1",
    MASTER_PORT: String(s.masterPort),
  };
  // As torchrun: N processes share the cores, unless told otherwise.
  if (s.threads === 0 && !Deno.env.get("OMP_NUM_THREADS")) {
    env.OMP_NUM_THREADS = env.OPENBLAS_NUM_THREADS = String(Math.max(1, Math.floor(cores / n)));
  }
  if (!Deno.env.get("GLOG_minloglevel")) env.GLOG_minloglevel = "2"; // c10d's own warnings; errors still show
  env.DINO_LAUNCHER_PID = String(Deno.pid); // a rank whose launcher dies stops as on SIGTERM (train.ts)
  const wrapper = setsid();
  const children = Array.from({ length: n }, (_, rank) => {
    const command = [Deno.execPath(), "run", "-A", program, ...args];
    return new Deno.Command(wrapper ?? command[0], {
      args: wrapper ? command : command.slice(1),
      env: { ...env, RANK: String(rank), LOCAL_RANK: String(rank) },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  });
  console.log(
    `launching ${n} processes (ranks 0-${n - 1}, rendezvous 127.0.0.1:${s.masterPort}` +
      `${env.OMP_NUM_THREADS ? `, ${env.OMP_NUM_THREADS} thread(s) each` : ""})`,
  );
  const forward = (signal: "SIGINT" | "SIGTERM") => () => {
    for (const child of children) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    }
  };
  const handlers = [["SIGINT", forward("SIGINT")], ["SIGTERM", forward("SIGTERM")]] as const;
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  let deadline: ReturnType<typeof setTimeout> | undefined;
  const ends: RankEnd[] = [];
  try {
    const streams = children.flatMap((child, rank) => [
      prefixLines(child.stdout, `[rank ${rank}] `, Deno.stdout),
      prefixLines(child.stderr, `[rank ${rank}] `, Deno.stderr),
    ]);
    const done = children.map((child, rank) =>
      child.status.then((status) => {
        const end: RankEnd = { rank, code: status.signal ? 128 + signalNumber(status.signal) : status.code };
        if (status.signal) end.signal = status.signal;
        ends.push(end);
        if (end.code !== 0 && deadline === undefined) {
          // The others stop by themselves within the collective timeout, naming this rank; past it, they are killed.
          deadline = setTimeout(() => {
            for (const c of children) {
              try {
                c.kill("SIGKILL");
              } catch { /* already gone */ }
            }
            console.error(`launcher: ranks still running ${s.distTimeout + 15} s after rank ${rank} failed: killed`);
          }, (s.distTimeout + 15) * 1000);
        }
      })
    );
    await Promise.all(done);
    await Promise.all(streams);
  } finally {
    if (deadline !== undefined) clearTimeout(deadline);
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  }
  ends.sort((a, b) => a.rank - b.rank);
  const failed = ends.filter((e) => e.code !== 0);
  if (failed.length > 0) {
    console.error(
      `launcher: ${
        failed.map((e) => `rank ${e.rank} ${e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`}`)
          .join(", ")
      }`,
    );
  }
  return launcherCode(ends);
}

function signalNumber(signal: Deno.Signal): number {
  const numbers: Partial<Record<Deno.Signal, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGABRT: 6,
    SIGKILL: 9,
    SIGSEGV: 11,
    SIGPIPE: 13,
    SIGTERM: 15,
  };
  return numbers[signal] ?? 1;
}
