/**
 * The official recipe's DINO step on a GPU beside PyTorch eager, in one run:
 * ViT-S/16 at 224 px, 2 x 224 + 8 x 96 crops, K 65536, batch 64, AdamW,
 * clipping, EMA (PyTorch: the official-layout modules of scripts/gen_fixtures.py,
 * `bench/gpu_step_torch.py`), in fp32 (TF32 on both sides or on neither:
 * `--tf32`) and in bf16 / fp16 (the official `--use_fp16 true`: autocast with a
 * GradScaler; here `dinoHyper({ precision })`). Each side of each precision
 * runs in a fresh process, so that its peak GPU memory (`nvidia-smi`'s
 * memory.used over the run, less what was used before it started: the CUDA
 * context, cuBLAS's workspace and the caching allocator's reserve, alike on
 * both sides) is its own. Reports seconds per step, the ratio, peak memory and
 * the model FLOPs utilisation (analytic matrix-product FLOPs of the step over
 * the GPU's dense peak for that precision). Then `--what augment`: `dinoViews`
 * on a CUDA batch of 256 px images in images/s beside the official
 * torchvision pipeline on the machine's CPU cores (one worker per core).
 *
 * On a machine without CUDA, `--dry-run` runs the same code on the CPU at toy
 * sizes (it checks the bench, not the speed).
 *
 * @example
 * ```sh
 * deno run -A bench/compare_gpu_step.ts --steps 10 --json gpu-step.json   # on a GPU
 * deno run -A bench/compare_gpu_step.ts --dry-run                         # anywhere: toy sizes, CPU
 * ```
 * @module
 */
import { benchFlags, positiveInt } from "./flags.ts";
import {
  cudaAvailable,
  cudaSynchronize,
  type Device,
  dispose,
  Generator,
  randint,
  randn,
  tidy,
  to,
  toDevice,
} from "../mod.ts";
import { dinoConfig } from "../lib/model/dino.ts";
import { dinoHyper, initTrainState, type TrainState, trainStep } from "../lib/training/step.ts";
import { AUGMENT_PRESETS, dinoViews } from "../lib/augment/mod.ts";
import { mapTree } from "../lib/weights/tree.ts";

/** The step's shapes. */
export interface StepSizes {
  batch: number;
  global: number;
  local: number;
  locals: number;
  patch: number;
  embedDim: number;
  depth: number;
  heads: number;
  outDim: number;
}

/** The official recipe: ViT-S/16, 2 x 224 + 8 x 96, K 65536, batch 64 per GPU. */
export const OFFICIAL_SIZES: StepSizes = {
  batch: 64,
  global: 224,
  local: 96,
  locals: 8,
  patch: 16,
  embedDim: 384,
  depth: 12,
  heads: 6,
  outDim: 65536,
};
/** Toy sizes for a dry run on a CPU. */
export const DRY_RUN_SIZES: StepSizes = {
  batch: 4,
  global: 32,
  local: 16,
  locals: 2,
  patch: 16,
  embedDim: 48,
  depth: 1,
  heads: 2,
  outDim: 256,
};

/**
 * The matrix-product FLOPs of one DINO training step (multiply-adds count 2):
 * the student's forward and backward (3x its forward) over every crop, and the
 * teacher's forward over the 2 global crops. Per crop of N patches the ViT
 * costs 2 (N+1) D (3 p^2 - ish patch embedding aside) per block 24 (N+1) D^2 +
 * 4 (N+1)^2 D, plus the head on the CLS token. Elementwise work is left out,
 * as MFU usually counts. These are the official model's FLOPs, credited to both
 * sides: this project's last block, which makes the CLS token alone, does ~6%
 * fewer (model FLOPs utilisation, not hardware FLOPs).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { OFFICIAL_SIZES, stepFlops } from "./compare_gpu_step.ts";
 * const tflop = stepFlops(OFFICIAL_SIZES) / 1e12;
 * assert.ok(tflop > 5 && tflop < 20, `${tflop}`); // ViT-S/16, 10 crops, batch 64
 * ```
 */
export function stepFlops(s: StepSizes, hidden = 2048, bottleneck = 256): number {
  const D = s.embedDim;
  const crop = (side: number) => {
    const n = (side / s.patch) ** 2, t = n + 1;
    const embed = 2 * n * 3 * s.patch * s.patch * D;
    const blocks = s.depth * (24 * t * D * D + 4 * t * t * D);
    const head = 2 * (D * hidden + hidden * hidden + hidden * bottleneck + bottleneck * s.outDim);
    return embed + blocks + head;
  };
  const globals = 2 * crop(s.global), locals = s.locals * crop(s.local);
  return s.batch * (3 * (globals + locals) + globals);
}

/** Dense peak FLOP/s of the GPUs this bench expects, by precision (NVIDIA's data sheets, SXM parts). */
export function peakFlops(deviceName: string, precision: string, tf32: boolean): number | undefined {
  const hopper = /H100|H200|GH200/i.test(deviceName);
  if (!hopper) return undefined;
  if (precision === "bf16" || precision === "fp16") return 989e12;
  return tf32 ? 494.5e12 : 66.9e12;
}

const values = benchFlags({
  steps: { type: "string", default: "10" },
  precisions: { type: "string", default: "fp32,bf16,fp16" },
  tf32: { type: "boolean", default: false },
  what: { type: "string", default: "step,augment" },
  "dry-run": { type: "boolean", default: false },
  device: { type: "string" },
  json: { type: "string" },
  python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "python3" },
  workers: { type: "string", default: String(navigator.hardwareConcurrency) },
  // Internal: one side of one precision, in its own process.
  side: { type: "string" },
  precision: { type: "string", default: "fp32" },
});
const dry = values["dry-run"];
const sizes = dry ? DRY_RUN_SIZES : OFFICIAL_SIZES;
const device: Device = (values.device as Device | undefined) ?? (cudaAvailable() ? "cuda" : "cpu");
const steps = positiveInt(values.steps, "--steps");

/** Whether this checkout's training step takes a precision (the mixed-precision work may not have landed). */
function precisionAvailable(): boolean {
  return (dinoHyper({}) as unknown as Record<string, unknown>).precision !== undefined;
}

/** Our side of one precision: prints one line of JSON. */
function oursSide(precision: string): void {
  if (device !== "cpu") setTf32(values.tf32);
  const cfg = dinoConfig({
    arch: "vit_small",
    patchSize: sizes.patch,
    imgSize: sizes.global,
    inChans: 3,
    outDim: sizes.outDim,
    embedDim: sizes.embedDim,
    depth: sizes.depth,
    numHeads: sizes.heads,
  });
  const base = { epochs: 100, itersPerEpoch: 1000, batchSize: sizes.batch, warmupEpochs: 0, freezeLastLayer: 1 };
  const h = precision === "fp32"
    ? dinoHyper(base)
    : dinoHyper({ ...base, precision } as Parameters<typeof dinoHyper>[0]);
  const start = initTrainState(cfg, h, 0);
  let state: TrainState = device === "cpu" ? start : mapTree(start, (t) => toDevice(t, device));
  if (state !== start) dispose(start);
  using g = new Generator(1);
  const views = tidy(() => [
    ...Array.from({ length: 2 }, () => toDevice(randn(g, [sizes.batch, 3, sizes.global, sizes.global]), device)),
    ...Array.from(
      { length: sizes.locals },
      () => toDevice(randn(g, [sizes.batch, 3, sizes.local, sizes.local]), device),
    ),
  ]);
  const times: number[] = [];
  let loss = NaN;
  for (let i = 0; i <= steps; i++) {
    cudaSynchronize();
    const t0 = performance.now();
    const r = trainStep(state, views, h, cfg);
    cudaSynchronize();
    const dt = (performance.now() - t0) / 1000;
    dispose(state);
    state = r.state;
    loss = r.metrics.loss;
    if (i > 0) times.push(dt); // the first step warms up, as on the PyTorch side
  }
  dispose([state, views]);
  console.log(JSON.stringify({ times, loss }));
}

/** TF32 for matrix products: not reachable from this project's API, so it must be off here (said in the report). */
function setTf32(on: boolean): void {
  if (on) console.error("note: this project has no TF32 switch; its fp32 step runs without TF32");
}

/** Samples `nvidia-smi`'s memory.used (MiB) while `run` runs; returns the run's output and the peak over the baseline. */
async function withGpuMemory(
  cmd: string,
  args: string[],
): Promise<{ out: string; err: string; ok: boolean; peakMiB?: number }> {
  const smi = async () => {
    try {
      const r = await new Deno.Command("nvidia-smi", {
        args: ["--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        stdout: "piped",
        stderr: "null",
      }).output();
      return r.success ? Number(new TextDecoder().decode(r.stdout).trim().split("\n")[0]) : undefined;
    } catch {
      return undefined;
    }
  };
  const base = device === "cpu" ? undefined : await smi();
  let peak = base, done = false;
  const poll = (async () => {
    while (!done && base !== undefined) {
      const m = await smi();
      if (m !== undefined && (peak === undefined || m > peak)) peak = m;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  done = true;
  await poll;
  const dec = new TextDecoder();
  return {
    ok: r.success,
    out: dec.decode(r.stdout),
    err: dec.decode(r.stderr),
    peakMiB: base !== undefined && peak !== undefined ? peak - base : undefined,
  };
}

const lastJson = (text: string) => JSON.parse(text.trim().split("\n").pop()!);
// deno-lint-ignore no-control-regex
const plain = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, "");
/** The first line of a failed side's stderr that says what went wrong. */
const why = (err: string) => {
  const lines = plain(err).trim().split("\n");
  return (lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? "").trim();
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function stepComparison(): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  const flops = stepFlops(sizes);
  const available = precisionAvailable();
  console.log(
    `DINO step: ViT (D ${sizes.embedDim}, depth ${sizes.depth}, patch ${sizes.patch}) at ${sizes.global} px, ` +
      `2 x ${sizes.global} + ${sizes.locals} x ${sizes.local} crops, K ${sizes.outDim}, batch ${sizes.batch}, ` +
      `on ${device}${dry ? " (dry run: toy sizes)" : ""}; ${(flops / 1e12).toFixed(2)} TFLOP a step; ` +
      `TF32 ${values.tf32 ? "on for PyTorch (this project has no switch)" : "off on both sides"}`,
  );
  for (const precision of values.precisions!.split(",")) {
    const script = new URL("./gpu_step_torch.py", import.meta.url).pathname;
    const torch = await withGpuMemory(values.python!, [
      script,
      "step",
      device,
      precision,
      String(steps),
      values.tf32 ? "1" : "0",
      JSON.stringify(sizes),
    ]);
    const row: Record<string, unknown> = { precision, device, sizes, flopsPerStep: flops, tf32: values.tf32 };
    if (torch.ok) {
      const t = lastJson(torch.out);
      Object.assign(row, {
        torchSeconds: median(t.times),
        torchTimes: t.times,
        torchPeakMiB: torch.peakMiB,
        torchMaxAllocatedMiB: t.max_allocated !== undefined ? t.max_allocated / 2 ** 20 : undefined,
        deviceName: t.device_name,
        torchVersion: t.torch,
      });
    } else {
      row.torchError = why(torch.err);
    }
    if (precision !== "fp32" && !available) {
      row.oursError = "precision not available";
      console.log(`  ${precision}: precision not available in this checkout's trainStep (dinoHyper has no precision)`);
    } else {
      const args = ["run", "-A", new URL(import.meta.url).pathname, "--side", "ours", "--precision", precision];
      args.push("--steps", String(steps), "--device", device, ...(dry ? ["--dry-run"] : []));
      if (values.tf32) args.push("--tf32");
      const ours = await withGpuMemory(Deno.execPath(), args);
      if (ours.ok) {
        const o = lastJson(ours.out);
        Object.assign(row, { oursSeconds: median(o.times), oursTimes: o.times, oursPeakMiB: ours.peakMiB });
      } else {
        row.oursError = why(ours.err);
      }
    }
    const peak = peakFlops(String(row.deviceName ?? ""), precision, values.tf32);
    if (typeof row.oursSeconds === "number" && typeof row.torchSeconds === "number") {
      row.ratio = row.torchSeconds / row.oursSeconds; // >= 1: this project as fast or faster
    }
    if (peak) {
      if (typeof row.oursSeconds === "number") row.oursMfu = flops / row.oursSeconds / peak;
      if (typeof row.torchSeconds === "number") row.torchMfu = flops / row.torchSeconds / peak;
    }
    rows.push(row);
    const f = (x: unknown, d = 3) => (typeof x === "number" ? x.toFixed(d) : "-");
    const pct = (x: unknown) => (typeof x === "number" ? `${(100 * x).toFixed(1)}%` : "-");
    console.log(
      `  ${precision.padEnd(4)}  PyTorch ${f(row.torchSeconds)} s/step (peak ${f(row.torchPeakMiB, 0)} MiB, MFU ${
        pct(row.torchMfu)
      })  this project ${f(row.oursSeconds)} s/step (peak ${f(row.oursPeakMiB, 0)} MiB, MFU ${pct(row.oursMfu)})  ` +
        `speed ratio ${f(row.ratio, 2)} (target >= 1.0)`,
    );
    for (const k of ["torchError", "oursError"]) if (row[k]) console.log(`    ${k}: ${row[k]}`);
  }
  return rows;
}

function augmentComparison(): Record<string, unknown> {
  const cfg = AUGMENT_PRESETS.imagenet;
  const B = dry ? 4 : 128, side = dry ? 64 : 256, passes = dry ? 2 : 5;
  using g = new Generator(0);
  const images = tidy(() => toDevice(to(randint(g, 0, 256, [B, 3, side, side]), "u8"), device));
  let best = 0;
  for (let pass = 0; pass < passes; pass++) {
    cudaSynchronize();
    const t0 = performance.now();
    const views = dinoViews(images, cfg, g);
    cudaSynchronize();
    const rate = B / ((performance.now() - t0) / 1000);
    dispose(views);
    if (pass > 0) best = Math.max(best, rate); // the first pass warms up
  }
  images.dispose();
  const workers = positiveInt(values.workers, "--workers");
  const script = new URL("./gpu_step_torch.py", import.meta.url).pathname;
  const r = new Deno.Command(values.python!, {
    args: [script, "augment", String(workers), String(dry ? 2 : 48), String(cfg.localCropsNumber)],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const ref = r.success ? lastJson(new TextDecoder().decode(r.stdout)) : undefined;
  const row = {
    device,
    batch: B,
    side,
    oursImagesPerS: best,
    torchvisionImagesPerS: ref?.images_per_s,
    torchvisionWorkers: workers,
    torchvisionError: r.success ? undefined : why(new TextDecoder().decode(r.stderr)),
  };
  console.log(
    `DINO views (2 x 224 + ${cfg.localCropsNumber} x 96 from ${side} px images): dinoViews on ${device} ` +
      `${best.toFixed(1)} images/s; torchvision + PIL on ${workers} CPU workers ${
        ref ? ref.images_per_s.toFixed(1) : "failed"
      } images/s`,
  );
  return row;
}

if (import.meta.main) {
  if (values.side === "ours") {
    oursSide(values.precision!);
  } else {
    if (device === "cpu" && !dry) {
      console.error("no CUDA device: run with --dry-run for the toy-size CPU check, or on a GPU");
      Deno.exit(2);
    }
    const what = values.what!.split(",");
    const result: Record<string, unknown> = { dryRun: dry, device, steps };
    if (what.includes("step")) result.step = await stepComparison();
    if (what.includes("augment")) result.augment = augmentComparison();
    if (values.json) Deno.writeTextFileSync(values.json, JSON.stringify(result, null, 2) + "\n");
  }
}
