/**
 * Joining a world from the environment, the way the tools people already use
 * start processes: torchrun (and this project's `--nproc-per-node` launcher)
 * sets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`;
 * SLURM sets `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` and the job's node
 * list, whose first host is rank 0's. Pure functions of an environment record.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { worldFromEnv } from "./env.ts";
 * const w = worldFromEnv({ SLURM_PROCID: "5", SLURM_NTASKS: "8", SLURM_LOCALID: "1", SLURM_NODELIST: "gpu[07-10]" });
 * assert.deepEqual(w, { rank: 5, localRank: 1, worldSize: 8, masterAddr: "gpu07", masterPort: 29500, from: "SLURM" });
 * assert.equal(worldFromEnv({}), undefined); // a plain run: one process, no group
 * ```
 * @module
 */

/** Where this process stands in a world of ranks, and where rank 0 is. */
export interface World {
  /** This process's rank, 0..worldSize-1. */
  rank: number;
  /** Its rank on its machine (the CUDA device it takes). */
  localRank: number;
  /** How many processes take part. */
  worldSize: number;
  /** Rank 0's address (it hosts the rendezvous). */
  masterAddr: string;
  /** The rendezvous port. */
  masterPort: number;
  /** Which variables said so: `RANK` (torchrun, this project's launcher, a user's) or `SLURM`. */
  from: "RANK" | "SLURM";
}

/** torchrun's default rendezvous port. */
export const DEFAULT_MASTER_PORT = 29500;

/**
 * The first host of a SLURM node list: `node[01-04,07],gpu3` gives `node01`
 * (the zero padding kept).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { firstSlurmHost } from "./env.ts";
 * assert.equal(firstSlurmHost("node[01-04,07],gpu3"), "node01");
 * assert.equal(firstSlurmHost("a[3,5]-ib"), "a3-ib");
 * assert.equal(firstSlurmHost("login1"), "login1");
 * ```
 */
export function firstSlurmHost(list: string): string {
  let depth = 0, end = list.length;
  for (let i = 0; i < list.length; i++) {
    if (list[i] === "[") depth++;
    else if (list[i] === "]") depth--;
    else if (list[i] === "," && depth === 0) {
      end = i;
      break;
    }
  }
  const first = list.slice(0, end).trim();
  const m = /^([^[]*)\[([^\]]*)\](.*)$/.exec(first);
  if (!m) return first;
  const head = m[2].split(",")[0].split("-")[0];
  return m[1] + head + firstSlurmHost(m[3]);
}

/**
 * The world this process was started into, from `env`; undefined when
 * neither `RANK`/`WORLD_SIZE` nor `SLURM_PROCID`/`SLURM_NTASKS` are set (a
 * plain one-process run). Throws an error naming the variable when one is
 * malformed.
 */
export function worldFromEnv(env: Readonly<Record<string, string | undefined>>): World | undefined {
  const int = (name: string, lo: number, hi = Number.MAX_SAFE_INTEGER): number => {
    const text = env[name]!.trim();
    const v = Number(text);
    if (text === "" || !Number.isInteger(v) || v < lo || v > hi) {
      throw new Error(`${name}=${JSON.stringify(env[name])} must be an integer in ${lo}..${hi}`);
    }
    return v;
  };
  const port = () => (env.MASTER_PORT ? int("MASTER_PORT", 1, 65535) : DEFAULT_MASTER_PORT);
  if (env.RANK !== undefined || env.WORLD_SIZE !== undefined) {
    if (env.RANK === undefined || env.WORLD_SIZE === undefined) {
      throw new Error(
        `${env.RANK === undefined ? "RANK" : "WORLD_SIZE"} is not set, but ${
          env.RANK === undefined ? "WORLD_SIZE" : "RANK"
        } is: set both (torchrun and --nproc-per-node do), or neither for one process`,
      );
    }
    const worldSize = int("WORLD_SIZE", 1);
    return {
      rank: int("RANK", 0, worldSize - 1),
      localRank: env.LOCAL_RANK !== undefined ? int("LOCAL_RANK", 0) : 0,
      worldSize,
      masterAddr: env.MASTER_ADDR?.trim() || "127.0.0.1",
      masterPort: port(),
      from: "RANK",
    };
  }
  if (env.SLURM_PROCID !== undefined && env.SLURM_NTASKS !== undefined) {
    const worldSize = int("SLURM_NTASKS", 1);
    const nodes = env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST ?? "";
    const masterAddr = env.MASTER_ADDR?.trim() || (nodes ? firstSlurmHost(nodes) : "");
    if (!masterAddr) throw new Error("SLURM_PROCID is set but neither MASTER_ADDR nor SLURM_NODELIST: set MASTER_ADDR");
    return {
      rank: int("SLURM_PROCID", 0, worldSize - 1),
      localRank: env.SLURM_LOCALID !== undefined ? int("SLURM_LOCALID", 0) : 0,
      worldSize,
      masterAddr,
      masterPort: port(),
      from: "SLURM",
    };
  }
  return undefined;
}
