/**
 * Collectives over libtorch's c10d: a process group met through a TCPStore
 * rendezvous (rank 0 hosts it), with Gloo (CPU) or NCCL (CUDA, where the shim
 * was built against a CUDA libtorch). The calls block until every rank has
 * taken part, or fail within the group's timeout with a message naming the
 * ranks that were lost. Results are new tensors; inputs are never changed.
 *
 * @example A group of one process (a real run has one process per rank, each calling the same functions)
 * ```ts
 * import assert from "node:assert/strict";
 * import { allReduce, distributedBackends, ProcessGroup, tensor, toArray } from "../mod.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ backend: "gloo", rank: 0, worldSize: 1, port: 0 });
 *   using x = tensor([1, 2, 3]);
 *   const [y] = allReduce([x], group, { op: "mean" });
 *   assert.deepEqual(toArray(y), [1, 2, 3]);
 *   y.dispose();
 * }
 * ```
 * @module
 */
import { checked, ctx, messageOf, native, TorchError } from "../library.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { handles } from "./args.ts";

/** A collective backend of c10d. */
export type DistBackend = "gloo" | "nccl";

/**
 * The backends this shim was built with: `gloo` where Gloo's headers (Debian's
 * `libgloo-dev`) were found, `nccl` where libtorch has CUDA and NCCL's header
 * was found; none otherwise.
 *
 * @example
 * ```ts
 * import { distributedBackends } from "../mod.ts";
 * console.log(distributedBackends()); // ["gloo"] on a CPU machine with libgloo-dev
 * ```
 */
export function distributedBackends(): DistBackend[] {
  const mask = checked(native.dist_backends(ctx), "distributedBackends");
  return [...(mask & 1 ? ["gloo" as const] : []), ...(mask & 2 ? ["nccl" as const] : [])];
}

/** Where and how a process joins a group. */
export interface JoinOptions {
  /** The backend (default gloo). */
  backend?: DistBackend;
  /** This process's rank, 0..worldSize-1. */
  rank: number;
  /** How many processes take part. */
  worldSize: number;
  /**
   * The address of rank 0, which hosts the rendezvous (default 127.0.0.1).
   * Under torchrun's static rendezvous (`TORCHELASTIC_USE_AGENT_STORE=True`)
   * its agent hosts it there instead, and every rank joins as a client.
   */
  masterAddr?: string;
  /** Its port (default 29500, as torchrun); 0 lets the system pick a free one (a world of one only). */
  port?: number;
  /** Seconds every rendezvous and collective may take before it fails (default 1800, as PyTorch's). */
  timeoutSeconds?: number;
}

const registry = new FinalizationRegistry<Deno.PointerObject>((ptr) => native.dist_free(ptr));
const cString = (s: string) => new TextEncoder().encode(s + "\0");

/**
 * A process group: this process's membership of a world of ranks. It holds
 * connections to every peer (and, on rank 0, the rendezvous); `dispose()`
 * closes them. After a failed collective the group refuses further ones.
 */
export class ProcessGroup {
  /** This process's rank. */
  readonly rank: number;
  /** How many ranks there are. */
  readonly worldSize: number;
  /** The backend. */
  readonly backend: DistBackend;
  /** The collective timeout, in seconds. */
  readonly timeoutSeconds: number;
  #ptr: Deno.PointerObject | null;

  private constructor(ptr: Deno.PointerObject, rank: number, worldSize: number, backend: DistBackend, t: number) {
    this.#ptr = ptr;
    this.rank = rank;
    this.worldSize = worldSize;
    this.backend = backend;
    this.timeoutSeconds = t;
    registry.register(this, ptr, this);
  }

  /**
   * Joins the rendezvous at `masterAddr:port` (rank 0 hosts it) and connects
   * to every peer. Throws a `TorchError` naming the problem: the port in use,
   * rank 0 unreachable, ranks that did not join within the timeout, a world
   * size that differs from rank 0's, a backend this shim was built without.
   */
  static join(o: JoinOptions): ProcessGroup {
    const backend = o.backend ?? "gloo", addr = o.masterAddr ?? "127.0.0.1", port = o.port ?? 29500;
    const timeout = o.timeoutSeconds ?? 1800;
    if (!Number.isInteger(o.worldSize) || o.worldSize < 1) {
      throw new RangeError(`worldSize must be an integer >= 1, got ${o.worldSize}`);
    }
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) {
      throw new RangeError(`rank must be an integer in 0..${o.worldSize - 1}, got ${o.rank}`);
    }
    if (!Number.isInteger(port) || port < 0 || port > 65535 || (port === 0 && o.worldSize > 1)) {
      throw new RangeError(`port must be an integer in 1..65535 (0 for a world of one), got ${port}`);
    }
    if (!(timeout > 0) || !Number.isFinite(timeout)) {
      throw new RangeError(`timeoutSeconds must be a positive number, got ${timeout}`);
    }
    if (addr.includes("\0")) throw new TypeError("masterAddr holds a NUL character");
    const ptr = native.dist_new(ctx, cString(backend), cString(addr), port, o.rank, o.worldSize, timeout);
    if (ptr === null) throw new TorchError("ProcessGroup.join", messageOf(ctx));
    return new ProcessGroup(ptr, o.rank, o.worldSize, backend, timeout);
  }

  /** The native handle; throws after dispose. */
  get ptr(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error("use of a disposed ProcessGroup");
    return this.#ptr;
  }

  /** Leaves the group: closes the connections (and, on rank 0, the rendezvous). Harmless twice. */
  dispose(): void {
    if (this.#ptr === null) return;
    registry.unregister(this);
    native.dist_free(this.#ptr);
    this.#ptr = null;
  }

  /** For `using`. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Options of {@linkcode allReduce} and {@linkcode broadcast}. */
export interface CollectiveOptions {
  /** Megabytes per bucket: tensors are flattened into buckets of about this size, one collective each (25, as DDP). */
  bucketMb?: number;
}

function bucketOf(o: CollectiveOptions): number {
  const mb = o.bucketMb ?? 25;
  if (!(mb > 0)) throw new RangeError(`bucketMb must be > 0, got ${mb}`);
  return mb;
}

/**
 * The sum or mean over every rank of each tensor (floating-point for the
 * mean), as new tensors of the same shapes. The tensors are coalesced into
 * flat buckets, one collective per bucket. A mean sums each rank's tensors
 * times 1 / world size, as DDP does by default (for 3 ranks of 0.1:
 * 0.10000001 in fp32, where dividing the sum gives 0.1). Every rank must pass
 * dense tensors of the same shapes in the same order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allReduce, distributedBackends, ProcessGroup, tensor, toArray } from "../mod.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   using a = tensor([1, 2]);
 *   using b = tensor([[3]]);
 *   const [x, y] = allReduce([a, b], group); // one bucket of 3 floats
 *   assert.deepEqual([toArray(x), y.shape], [[1, 2], [1, 1]]);
 *   x.dispose();
 *   y.dispose();
 * }
 * ```
 */
export function allReduce(
  ts: readonly Tensor[],
  group: ProcessGroup,
  o: CollectiveOptions & { op?: "sum" | "mean" } = {},
): Tensor[] {
  const op = o.op ?? "sum";
  if (op !== "sum" && op !== "mean") throw new RangeError(`op must be "sum" or "mean", got ${op}`);
  const list = native.dist_allreduce(ctx, group.ptr, handles(ts), ts.length, op === "mean" ? 1 : 0, bucketOf(o));
  return wrapList(list, "allReduce");
}

/**
 * Rank `root`'s tensors on every rank (default root 0), as new tensors. Every
 * rank passes tensors of the same shapes; the others' values are ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { broadcast, distributedBackends, ProcessGroup, tensor, toArray } from "../mod.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   using w = tensor([0.5, -1]);
 *   const [v] = broadcast([w], group);
 *   assert.deepEqual(toArray(v), [0.5, -1]);
 *   v.dispose();
 * }
 * ```
 */
export function broadcast(
  ts: readonly Tensor[],
  group: ProcessGroup,
  o: CollectiveOptions & { root?: number } = {},
): Tensor[] {
  const root = o.root ?? 0;
  if (!Number.isInteger(root)) throw new RangeError(`root must be an integer rank, got ${root}`);
  const list = native.dist_broadcast(ctx, group.ptr, handles(ts), ts.length, root, bucketOf(o));
  return wrapList(list, "broadcast");
}

/**
 * Returns once every rank of the group has called it (or throws after the
 * timeout, naming the ranks that did not come).
 *
 * @example
 * ```ts
 * import { barrier, distributedBackends, ProcessGroup } from "../mod.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   barrier(group);
 * }
 * ```
 */
export function barrier(group: ProcessGroup): void {
  checked(native.dist_barrier(ctx, group.ptr), "barrier");
}

/**
 * The sum over every rank of `x`, with a gradient: on each rank the result's
 * gradient flows back to `x` summed over the ranks (the backward pass
 * all-reduces it), which is the gradient of the loss summed over the ranks.
 * Statistics shared by every rank's batch, as SyncBatchNorm's, train through
 * it. Every rank must call it, and run its backward pass, in the same order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { distributedBackends, grad, ProcessGroup, requiresGrad, sum, tensor, tidy, toArray } from "../mod.ts";
 * import { sumOverRanks } from "./distributed.ts";
 * if (distributedBackends().includes("gloo")) {
 *   using group = ProcessGroup.join({ rank: 0, worldSize: 1, port: 0 });
 *   tidy(() => {
 *     const x = requiresGrad(tensor([1, 2]));
 *     const y = sumOverRanks(x, group); // a world of one: x itself
 *     assert.deepEqual(toArray(y), [1, 2]);
 *     assert.deepEqual(toArray(grad(sum(y), [x])[0]), [1, 1]);
 *   });
 * }
 * ```
 */
export function sumOverRanks(x: Tensor, group: ProcessGroup): Tensor {
  return wrap(native.dist_sum_grad(ctx, group.ptr, x.ptr), "sumOverRanks");
}
