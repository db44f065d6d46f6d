// Shared by the fuzz tests (tests/fuzz_*_test.ts): a seeded random stream, the case count, and a runner that
// runs cases in child processes under a memory and time limit, so that a native crash, a runaway allocation or a
// hang fails the case that caused it instead of killing or stalling the test runner.
//
// DINO_FUZZ_CASES=5000 runs more cases than the default; DINO_FUZZ_SEED=n draws other ones. A failing case is
// reported with its index: each case's input depends only on the seed and its index, so it can be rerun alone.
import { liveTensors } from "../mod.ts";

/** The seed of every fuzz test: DINO_FUZZ_SEED, else 12. */
export const FUZZ_SEED: number = Number(Deno.env.get("DINO_FUZZ_SEED") || 12);

/** How many random cases to run: DINO_FUZZ_CASES if set, else `fallback`. */
export function fuzzCases(fallback: number): number {
  const env = Deno.env.get("DINO_FUZZ_CASES");
  if (!env) return fallback;
  const n = Number(env);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`DINO_FUZZ_CASES must be a positive integer, got "${env}"`);
  return n;
}

/** A small seeded random stream (splitmix32), so every case can be regenerated from (seed, index). */
export class Rng {
  #s: number;
  /** A stream from `seed` and an optional case index. */
  constructor(seed: number, index = 0) {
    this.#s = (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  }
  /** A uniform unsigned 32-bit integer. */
  u32(): number {
    let z = (this.#s = (this.#s + 0x9e3779b9) | 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  /** A uniform float in [0, 1). */
  float(): number {
    return this.u32() / 2 ** 32;
  }
  /** A uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.float() < p;
  }
  /** One of the items. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** n random bytes. */
  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.int(256));
  }
}

/** What a case reported, or why it did not. */
export type CaseResult =
  | { index: number; status: "done"; value: Record<string, unknown>; leaked: number; peakGrowthKb: number; ms: number }
  | {
    index: number;
    status: "threw";
    name: string;
    message: string;
    stack?: string;
    leaked: number;
    peakGrowthKb: number;
    ms: number;
  }
  | { index: number; status: "died"; why: string };

/** How to run cases in children. */
export interface ChildOptions {
  /** The module that calls {@linkcode childMain} when given "fuzz-child" as its first argument. */
  script: string | URL;
  /** Case indices 0..count-1 are run. */
  count: number;
  /** More arguments for the child (after "fuzz-child", first and end). */
  args?: string[];
  /** A child's resident memory may not pass this many MiB (default 1024): it is killed and the case fails. */
  memoryMb?: number;
  /** V8's heap limit in the child, MiB (default 512). */
  heapMb?: number;
  /** A case may take this long before its child is killed and it fails (default 20 s). */
  caseTimeoutMs?: number;
  /** The child's startup may take this long (default 60 s). */
  startTimeoutMs?: number;
  /** After this many dead children the rest of the cases are not run (default 10). */
  maxDeaths?: number;
  /** More environment variables for the child. */
  env?: Record<string, string>;
}

/** All results by index, the largest resident memory seen in any child (KiB), and failed exits after all cases. */
export interface ChildRun {
  results: CaseResult[];
  peakKb: number;
  children: number;
  exits: string[];
}

function statusKb(pid: number, field: string): number {
  try {
    const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(new RegExp(`${field}:\\s+(\\d+) kB`));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Runs cases 0..count-1 in as few child processes as possible: a child runs a range of cases and prints a line
 * per case; one that crashes, passes the memory limit or overruns a case's time is killed, its current case is
 * recorded as "died" with the reason, and a new child goes on from the next case.
 */
export async function runInChildren(o: ChildOptions): Promise<ChildRun> {
  const memoryKb = (o.memoryMb ?? 1024) * 1024;
  const results: CaseResult[] = [];
  let next = 0;
  let deaths = 0;
  let peakKb = 0;
  let children = 0;
  const exits: string[] = [];
  const script = o.script instanceof URL ? o.script.pathname : o.script;
  while (next < o.count) {
    children++;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-check",
        `--v8-flags=--max-old-space-size=${o.heapMb ?? 512}`,
        script,
        "fuzz-child",
        String(next),
        String(o.count),
        ...(o.args ?? []),
      ],
      // The caching allocator would hold freed memory and hide which case allocated it.
      env: { DINO_CPU_CACHE_MB: "0", NO_COLOR: "1", ...o.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let killedFor = "";
    let current = -1; // the case the child has started and not finished
    let since = performance.now();
    const watchdog = setInterval(() => {
      const rss = statusKb(child.pid, "VmRSS");
      peakKb = Math.max(peakKb, rss);
      const limit = current < 0 ? o.startTimeoutMs ?? 60_000 : o.caseTimeoutMs ?? 20_000;
      if (!killedFor && rss > memoryKb) {
        killedFor = `resident memory ${rss >> 10} MiB passed the ${memoryKb >> 10} MiB limit`;
      } else if (!killedFor && performance.now() - since > limit) killedFor = `no result after ${limit} ms`;
      if (killedFor) {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }, 20);
    let stderr = "";
    const drainErr = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderr = (stderr + chunk).slice(-2000);
      }
    })();
    let buffer = "";
    let finished = false;
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.startsWith("{")) continue;
        const msg = JSON.parse(line);
        if ("start" in msg) {
          current = msg.start;
          since = performance.now();
        } else if ("finished" in msg) {
          finished = true;
          peakKb = Math.max(peakKb, msg.hwmKb);
        } else {
          results.push(msg as CaseResult);
          next = msg.index + 1;
          current = -1;
          since = performance.now();
        }
      }
    }
    const status = await child.status;
    clearInterval(watchdog);
    await drainErr;
    if (finished) {
      // Every case ran; a crash on the way out (a static destructor, say) still fails the run.
      if (!status.success) {
        exits.push(`a child exited with ${status.signal ?? status.code}: ${stderr.trim().slice(-300)}`);
      }
      break;
    }
    // The child died: the case it was in (or the next one, if it died between cases) failed.
    const index = current >= 0 ? current : next;
    const why = killedFor ||
      `the child exited with ${status.signal ? `signal ${status.signal}` : `code ${status.code}`}: ` +
        stderr.trim().split("\n").slice(-3).join(" | ");
    results.push({ index, status: "died", why });
    next = index + 1;
    if (++deaths >= (o.maxDeaths ?? 10)) break;
  }
  return { results, peakKb, children, exits };
}

function hwmKb(): number {
  return statusKb(Deno.pid, "VmHWM");
}

/**
 * The child's side of {@linkcode runInChildren}: runs `run(index)` for the cases the parent asked for, printing
 * a line as each starts and one with its result: the value it returned or the error it threw, the tensors it
 * left alive and how far it raised the process's peak resident memory.
 */
export async function childMain(run: (index: number) => Record<string, unknown> | Promise<Record<string, unknown>>) {
  const [, first, end] = Deno.args;
  const out = (v: unknown) => {
    const bytes = new TextEncoder().encode(JSON.stringify(v) + "\n");
    for (let n = 0; n < bytes.length;) n += Deno.stdout.writeSync(bytes.subarray(n));
  };
  for (let index = Number(first); index < Number(end); index++) {
    out({ start: index });
    const before = liveTensors();
    const hwm = hwmKb();
    const t0 = performance.now();
    try {
      const value = await run(index);
      const ms = Math.round(performance.now() - t0);
      out({ index, status: "done", value, leaked: liveTensors() - before, peakGrowthKb: hwmKb() - hwm, ms });
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      out({
        index,
        status: "threw",
        name: err.name,
        message: err.message,
        stack: err.stack?.split("\n").slice(1, 4).join(" | "),
        ms: Math.round(performance.now() - t0),
        leaked: liveTensors() - before,
        peakGrowthKb: hwmKb() - hwm,
      });
    }
  }
  out({ finished: true, hwmKb: hwmKb() });
}

/** Whether this module was started by {@linkcode runInChildren}. */
export function isFuzzChild(): boolean {
  return Deno.args[0] === "fuzz-child";
}

/** A message fit for a user: one line, not empty, not huge. Returns what is wrong with it, or "". */
export function messageProblem(message: string, maxLength = 500): string {
  if (message.length === 0) return "an empty message";
  if (/[\n\r]/.test(message)) return "a message over several lines";
  if (message.length > maxLength) return `a message of ${message.length} characters`;
  return "";
}

/**
 * Turns a run's results into failure lines (each naming the case's index and kind) and counts of the outcomes
 * the cases reported. A case fails when its child died in it, when the harness caught an error from it, when it
 * reported problems, leaked tensors or raised the peak resident memory by more than `peakGrowthMb`, or when it
 * never ran.
 */
export function judge(
  run: ChildRun,
  count: number,
  kindOf: (index: number) => string,
  peakGrowthMb: number,
): { failures: string[]; outcomes: Record<string, number> } {
  const failures: string[] = [];
  const outcomes: Record<string, number> = {};
  const seen = new Set<number>();
  for (const r of run.results) {
    seen.add(r.index);
    const name = `case ${r.index} (${kindOf(r.index)})`;
    if (r.status === "died") failures.push(`${name}: died: ${r.why}`);
    else if (r.status === "threw") {
      failures.push(`${name}: the harness caught ${r.name}: ${r.message} ${r.stack ?? ""}`);
    } else {
      const v = r.value as { outcome: string; problems: string[]; message?: string };
      outcomes[v.outcome] = (outcomes[v.outcome] ?? 0) + 1;
      const problems = [...v.problems];
      if (r.leaked !== 0) problems.push(`${r.leaked} tensors leaked`);
      if (r.peakGrowthKb > peakGrowthMb * 1024) problems.push(`raised peak memory by ${r.peakGrowthKb >> 10} MiB`);
      if (problems.length) failures.push(`${name}: ${problems.join("; ")}${v.message ? ` [${v.message}]` : ""}`);
    }
  }
  failures.push(...run.exits);
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !seen.has(i));
  if (missing.length) failures.push(`${missing.length} case(s) never ran (from case ${missing[0]}): too many died`);
  return { failures, outcomes };
}

/** Groups failures by kind for an assertion message: at most `n` examples. */
export function summarize(failures: string[], n = 15): string {
  return `${failures.length} failing case(s):\n  ${failures.slice(0, n).join("\n  ")}` +
    (failures.length > n ? `\n  ... and ${failures.length - n} more` : "");
}
