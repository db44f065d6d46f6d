// Assertions shared by the tests.
import assert from "node:assert/strict";
import { cudaAvailable, type Device, liveTensors, type Tensor, tidy, toArray, toDevice } from "../mod.ts";
import { mapTree } from "../lib/weights/tree.ts";
import type { DinoHyper } from "../lib/training/step.ts";

/** Asserts two number lists agree elementwise within `tol` (absolute). */
export function assertClose(actual: readonly number[], expected: readonly number[], tol = 1e-6): void {
  assert.equal(actual.length, expected.length, `length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const ok = Math.abs(actual[i] - expected[i]) <= tol || (Number.isNaN(actual[i]) && Number.isNaN(expected[i]));
    if (!ok) {
      const head = (xs: readonly number[]) => xs.slice(0, 12).join(", ") + (xs.length > 12 ? ", ..." : "");
      assert.fail(
        `at ${i}: ${actual[i]} != ${expected[i]} (tol ${tol})\nactual   ${head(actual)}\nexpected ${head(expected)}`,
      );
    }
  }
}

/** Asserts a tensor's shape and values, then frees nothing: the caller owns it. */
export function assertTensor(t: Tensor, shape: readonly number[], values: readonly number[], tol = 1e-6): void {
  assert.deepEqual(t.shape, shape);
  assertClose(toArray(t), values, tol);
}

/** Runs `fn` in a scope and asserts it leaves no tensor alive. */
export function noLeak(fn: () => void): void {
  const before = liveTensors();
  tidy(fn);
  assert.equal(liveTensors(), before, "tensors leaked");
}

/** Runs `fn` with console output captured. */
export async function captured<T>(fn: () => Promise<T>): Promise<{ value: T; out: string; err: string }> {
  const log = console.log, error = console.error, warn = console.warn;
  let out = "", err = "";
  console.log = (...a: unknown[]) => void (out += a.join(" ") + "\n");
  console.error = console.warn = (...a: unknown[]) => void (err += a.join(" ") + "\n");
  try {
    return { value: await fn(), out, err };
  } finally {
    console.log = log;
    console.error = error;
    console.warn = warn;
  }
}

/**
 * The device the device tests run on, from `DINO_TEST_DEVICE` (`cpu` or
 * `cuda`) where it is set, else CUDA where it is available, else the CPU. Asked
 * for CUDA on a machine without it: an error, so that a GPU check never passes
 * on the CPU by accident.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pickTestDevice } from "./helpers.ts";
 * assert.equal(pickTestDevice(undefined, false), "cpu");
 * assert.equal(pickTestDevice(undefined, true), "cuda");
 * assert.equal(pickTestDevice("cpu", true), "cpu");
 * assert.throws(() => pickTestDevice("cuda", false), /CUDA/);
 * ```
 */
export function pickTestDevice(asked: string | undefined, cuda: boolean): Device {
  if (asked === undefined || asked === "") return cuda ? "cuda" : "cpu";
  if (asked === "cpu") return "cpu";
  if (asked === "cuda" || /^cuda:\d+$/.test(asked)) {
    if (!cuda) throw new Error(`DINO_TEST_DEVICE=${asked}, but CUDA is not available here`);
    return asked as Device;
  }
  throw new Error(`DINO_TEST_DEVICE=${asked}: use cpu or cuda`);
}

/**
 * Where the device tests (named "... on the test device ...") run: see
 * {@linkcode pickTestDevice}. On a CPU-only machine they run on the CPU and
 * compare the CPU with itself.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { testDevice } from "./helpers.ts";
 * assert.ok(testDevice === "cpu" || testDevice.startsWith("cuda"));
 * ```
 */
export const testDevice: Device = pickTestDevice(Deno.env.get("DINO_TEST_DEVICE"), cudaAvailable());

/**
 * A copy of every tensor of a tree (a network, a training state) on `device`,
 * numbers and strings carried along; the caller owns the copy, and `tree` is
 * left as it was.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../mod.ts";
 * import { onTestDevice } from "./helpers.ts";
 * const tree = { w: tensor([1, 2]), step: 3 };
 * const moved = onTestDevice(tree, "cpu");
 * assert.deepEqual([moved.w.device, moved.step], ["cpu", 3]);
 * dispose([tree, moved]);
 * ```
 */
export function onTestDevice<T extends object>(tree: T, device: Device = testDevice): T {
  return mapTree(tree, (x) => toDevice(x, device));
}

/**
 * ||a - b|| / ||b|| over the elements of two same-shaped tensors (read back
 * to the CPU as float64), 0 where both are all zeros.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../mod.ts";
 * import { relativeL2 } from "./helpers.ts";
 * const [a, b] = [tensor([3, 4]), tensor([3, 5])];
 * assert.equal(relativeL2(a, b), Math.sqrt(1 / 34));
 * dispose([a, b]);
 * ```
 */
export function relativeL2(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shapes [${a.shape}] and [${b.shape}] differ`);
  const x = toArray(a), y = toArray(b);
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return num === 0 ? 0 : Math.sqrt(num / den);
}

/**
 * The largest and the mean absolute difference of two images' pixels (same shape), in levels: how far a resize is
 * from its reference's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../mod.ts";
 * import { pixelDistance } from "./helpers.ts";
 * const [a, b] = [tensor([1, 2, 3, 4], { dtype: "u8" }), tensor([1, 2, 3, 6], { dtype: "u8" })];
 * assert.deepEqual(pixelDistance(a, b), { max: 2, mean: 0.5 });
 * dispose([a, b]);
 * ```
 */
export function pixelDistance(a: Tensor, b: Tensor): { max: number; mean: number } {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shapes [${a.shape}] and [${b.shape}] differ`);
  const x = toArray(a), y = toArray(b);
  let max = 0, sum = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i] - y[i]);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / x.length };
}

/**
 * The network flags of a tiny ViT for tests of the training program (width 32, one block, a small head): its
 * code paths in seconds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TINY_VIT_FLAGS } from "./helpers.ts";
 * assert.deepEqual(TINY_VIT_FLAGS.slice(0, 2), ["--embed-dim", "32"]);
 * ```
 */
export const TINY_VIT_FLAGS: readonly string[] = [
  "--embed-dim",
  "32",
  "--depth",
  "1",
  "--num-heads",
  "2",
  "--out-dim",
  "64",
  "--hidden-dim",
  "32",
  "--bottleneck-dim",
  "16",
];

/**
 * Starts a program (a `cli/` file) in a child process with piped output; `waitFor` resolves once its stdout
 * matches, `done` gives its exit code and output.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { spawnCli } from "./helpers.ts";
 * const run = spawnCli(new URL("../cli/train.ts", import.meta.url).pathname, ["--help"]);
 * await run.waitFor(/usage: deno task train/);
 * assert.equal((await run.done()).code, 0);
 * ```
 */
export function spawnCli(script: string, args: string[]): {
  child: Deno.ChildProcess;
  waitFor(pattern: RegExp): Promise<void>;
  done(): Promise<{ code: number; out: string; err: string }>;
} {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "", finished = false;
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) out += decoder.decode(chunk);
    finished = true;
  })();
  const err = new Response(child.stderr).text();
  return {
    child,
    async waitFor(pattern: RegExp) {
      while (!pattern.test(out)) {
        if (finished) throw new Error(`the program ended before its output matched ${pattern}:\n${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async done() {
      const { code } = await child.status;
      await reading;
      return { code, out, err: await err };
    },
  };
}

/** The training hyperparameters of a fixture generator's `HYPER` record, from the official snake_case names. */
// deno-lint-ignore no-explicit-any
export function officialHyper(H: Record<string, any>): Partial<DinoHyper> {
  return {
    epochs: H.epochs,
    itersPerEpoch: H.iters_per_epoch,
    batchSize: H.batch,
    lr: H.lr,
    minLr: H.min_lr,
    warmupEpochs: H.warmup_epochs,
    weightDecay: H.weight_decay,
    weightDecayEnd: H.weight_decay_end,
    momentumTeacher: H.momentum_teacher,
    clipGrad: H.clip_grad,
    freezeLastLayer: H.freeze_last_layer,
    warmupTeacherTemp: H.warmup_teacher_temp,
    teacherTemp: H.teacher_temp,
    warmupTeacherTempEpochs: H.warmup_teacher_temp_epochs,
  };
}
