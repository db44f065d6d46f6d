/**
 * The DINO recipe (the official `DataAugmentationDINO`) as batched tensor
 * transforms on the batch's device. Per view: random resized crop and
 * horizontal flip (an antialiased resize per crop), color jitter with p 0.8 in
 * a random order per sample, grayscale with p 0.2, gaussian blur,
 * solarization, then normalisation.
 *
 * Every random choice is drawn first, for all samples at once (`plans.ts`).
 * On the CPU, the whole batch's views are then made in one call of the shim's
 * fused kernel (`native/augment.cpp`): each view from crop to normalised rows
 * in one pass that stays in cache, on native threads over the views, and off
 * the JavaScript thread with {@linkcode dinoViewsAsync}. Elsewhere, and as the
 * reference the kernel is tested against ({@linkcode dinoViewsByOps}), the
 * views of one size go through as one batch op by op: samples that take the
 * same steps (the same jitter order; then the same gray/blur/solarize
 * choices, blurs in order of sigma) are processed together, a cache-sized
 * chunk at a time, each result written straight to its place (`engine.ts`),
 * by the image functions of `image.ts`.
 *
 * Every random draw comes from the explicit generator, in a fixed order, or
 * from each sample's own seed (then a sample's views do not depend on the
 * batch it is in), so a seed reproduces the views exactly.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS, dispose, Generator, randint, tidy, to } from "../../mod.ts";
 * import { dinoViews } from "./views.ts";
 * using g = new Generator(0);
 * const views = tidy(() => dinoViews(to(randint(g, 0, 256, [4, 1, 28, 28]), "u8"), AUGMENT_PRESETS.fmnist28, g));
 * assert.deepEqual(views.map((v) => v.shape[2]), [28, 28, 12, 12, 12, 12, 12, 12]); // 2 global, 6 local views
 * assert.ok(views.every((v) => v.dtype === "f32" && v.shape[0] === 4));
 * dispose(views);
 * ```
 * @module
 */
import {
  AUGMENT_RECORD,
  augmentBatch,
  augmentBatchAsync,
  data,
  div,
  empty,
  expand,
  Generator,
  narrow,
  randRows,
  type Tensor,
  tidy,
} from "../../ffi/mod.ts";
import { batches, chunkOf, FINISH_CHUNK, FINISH_SAMPLES, JITTER_CHUNK, pipe, scatter } from "./engine.ts";
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  type CropBox,
  gaussianBlur,
  grayscale,
  normalize,
  resizedCrop,
  solarize,
} from "./image.ts";
import {
  CROP_DRAWS,
  cropBox,
  cropBoxes,
  jitterFrom,
  type JitterPlan,
  jitterPlan,
  uniforms,
  type ViewSpec,
  viewSpecs,
} from "./plans.ts";
import type { AugmentConfig } from "./presets.ts";

const JITTER_OPS = [adjustBrightness, adjustContrast, adjustSaturation, adjustHue];

/** The jitter ops of samples `ids`, which share one order, as pipeline steps. */
function jitterSteps(plan: JitterPlan, ids: readonly number[]): ((y: Tensor) => Tensor)[] {
  return plan.order[ids[0]].map((o) => (y: Tensor) => JITTER_OPS[o](y, ids.map((b) => plan.factors[o][b])));
}

/** Every random choice of a run of views, per sample k = view x B + b. */
interface ViewPlan {
  boxes: CropBox[];
  flips: boolean[];
  jitter: JitterPlan;
  gray: boolean[];
  blur: boolean[];
  sigmas: number[];
  sol: boolean[];
}

/**
 * The uniforms one view of one sample takes from that sample's own stream:
 * the crop's 40, then flip, jitter (whether, 4 factors, 4 order keys), gray,
 * blur, sigma and solarize.
 */
export const VIEW_DRAWS: number = CROP_DRAWS + 14;

/**
 * Where a batch's random draws come from: one generator for the whole batch
 * (drawn op by op, for all samples at once), or one seed per sample, whose
 * stream alone decides that sample's views, so a sample gets the same views in
 * any batch (a data-parallel rank's shard, or one process's whole batch).
 */
export type ViewRandomness = Generator | { sampleSeeds: readonly (number | bigint)[] };

/** Each sample's own uniforms on [0, 1) as {@linkcode viewPlan} reads them: VIEW_DRAWS per view. */
type SampleUniforms = { uniforms: readonly Float64Array[]; firstView: number };

function viewPlan(
  draw: Generator | SampleUniforms,
  specs: readonly ViewSpec[],
  [B, C, H, W]: readonly number[],
  cfg: AugmentConfig,
): ViewPlan {
  const n = specs.length * B;
  const specOf = (k: number) => specs[Math.floor(k / B)];
  if (!("uniforms" in draw)) {
    const g = draw;
    return {
      boxes: specs.flatMap((s) => cropBoxes(g, B, H, W, s.scale, cfg.ratio)),
      flips: uniforms(g, n, 0, 1).map((u) => u < cfg.flipP),
      jitter: jitterPlan(g, n, cfg, C === 3),
      gray: uniforms(g, n, 0, 1).map((u) => C === 3 && u < cfg.grayP),
      blur: uniforms(g, n, 0, 1).map((u, k) => u < specOf(k).blurP),
      sigmas: uniforms(g, n, cfg.blurSigma[0], cfg.blurSigma[1]),
      sol: uniforms(g, n, 0, 1).map((u, k) => u < specOf(k).solarizeP),
    };
  }
  // Sample b's draws for view v start at (firstView + v) x VIEW_DRAWS of its own uniforms.
  const each = <T>(f: (u: Float64Array, o: number, k: number) => T) =>
    Array.from({ length: n }, (_, k) => f(draw.uniforms[k % B], (draw.firstView + Math.floor(k / B)) * VIEW_DRAWS, k));
  const j = CROP_DRAWS + 1; // where the jitter's draws start
  const [lo, hi] = cfg.blurSigma;
  const keys = each((u, o) => u.slice(o + j + 5, o + j + 9));
  return {
    boxes: each((u, o, k) => cropBox(u, o, H, W, specOf(k).scale, cfg.ratio)),
    flips: each((u, o) => u[o + CROP_DRAWS] < cfg.flipP),
    jitter: jitterFrom(
      each((u, o) => u[o + j]),
      [0, 1, 2, 3].map((op) => each((u, o) => u[o + j + 1 + op])),
      (k, op) => keys[k][op],
      cfg,
      C === 3,
    ),
    gray: each((u, o) => C === 3 && u[o + j + 9] < cfg.grayP),
    blur: each((u, o, k) => u[o + j + 10] < specOf(k).blurP),
    sigmas: each((u, o) => lo + (hi - lo) * u[o + j + 11]),
    sol: each((u, o, k) => u[o + j + 12] < specOf(k).solarizeP),
  };
}

/**
 * Augmented views of a batch of images in [0, 1] (f32 [B, C, H, W]), one per
 * spec, normalised. Views of one size go through as one batch of
 * specs.length x B samples, each with its spec's scale and blur and
 * solarization probabilities: fewer, larger calls than one view at a time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS, dispose, Generator, rand, tidy, viewSpecs } from "../../mod.ts";
 * import { augmentViews } from "./views.ts";
 * using g = new Generator(0);
 * const cfg = AUGMENT_PRESETS.cifar32;
 * const [g1, g2] = tidy(() => augmentViews(rand(g, [4, 3, 32, 32]), viewSpecs(cfg).slice(0, 2), cfg, g));
 * const side = cfg.globalCropsSize;
 * assert.deepEqual([g1.shape, g2.shape], [[4, 3, side, side], [4, 3, side, side]]); // the two global views
 * dispose([g1, g2]);
 * ```
 */
export function augmentViews(x: Tensor, specs: readonly ViewSpec[], cfg: AugmentConfig, g: Generator): Tensor[] {
  return applyPlan(x, specs, cfg, viewPlan(g, specs, x.shape, cfg));
}

/** The views of one size, in order, with their random choices. */
interface Run {
  specs: ViewSpec[];
  plan: ViewPlan;
}

/**
 * The records of the fused kernel (`native/augment.cpp`, laid out as
 * AUGMENT_RECORD says) of runs of views of a batch of B, one run after the
 * other, view by view, sample by sample.
 */
function records(runs: readonly Run[], B: number): Float64Array<ArrayBuffer> {
  const n = runs.reduce((total, r) => total + r.specs.length * B, 0);
  const out = new Float64Array(n * AUGMENT_RECORD);
  let at = 0;
  for (const { specs, plan } of runs) {
    for (let k = 0; k < specs.length * B; k++, at += AUGMENT_RECORD) {
      const { i, j, h, w } = plan.boxes[k];
      const order = plan.jitter.order[k];
      out.set([k % B, i, j, h, w, +plan.flips[k], order.length], at);
      out.set(order, at + 7);
      out.set(plan.jitter.factors.map((f) => f[k]), at + 11);
      out.set([+plan.gray[k], plan.blur[k] ? plan.sigmas[k] : 0, +plan.sol[k]], at + 15);
    }
  }
  return out;
}

/** The fused kernel's arguments for runs of views of `images`. */
function fusedCall(images: Tensor, runs: readonly Run[], cfg: AugmentConfig, threads?: number) {
  const B = images.shape[0];
  const sizes = runs.map((r): [number, number] => [r.specs[0].size, r.specs.length * B]);
  const o = { mean: cfg.mean, std: cfg.std, interpolation: cfg.interpolation, threads };
  return [images, records(runs, B), sizes, o] as const;
}

/** Splits each run's result [views x B, ...] into its views, which keep the run's storage alive. */
function splitRuns(results: Tensor[], runs: readonly Run[], B: number): Tensor[] {
  const views = results.flatMap((y, r) => runs[r].specs.map((_, v) => narrow(y, 0, v * B, B)));
  for (const y of results) y.dispose();
  return views;
}

function applyPlan(x: Tensor, specs: readonly ViewSpec[], cfg: AugmentConfig, plan: ViewPlan): Tensor[] {
  if (specs.some((s) => s.size !== specs[0].size)) {
    throw new Error("augmentViews: views augmented together share one size");
  }
  if (x.device !== "cpu") return applyPlanByOps(x, specs, cfg, plan);
  const runs = [{ specs: [...specs], plan }];
  return splitRuns(augmentBatch(...fusedCall(x, runs, cfg)), runs, x.shape[0]);
}

/** {@linkcode applyPlan} op by op, by groups of samples that take the same steps: for devices other than the CPU. */
function applyPlanByOps(x: Tensor, specs: readonly ViewSpec[], cfg: AugmentConfig, plan: ViewPlan): Tensor[] {
  const [B, C] = x.shape;
  const size = specs[0].size;
  if (specs.some((s) => s.size !== size)) throw new Error("augmentViews: views augmented together share one size");
  const n = specs.length * B;
  const { boxes, flips, jitter, gray, blur, sigmas, sol } = plan;

  const pick = <T>(xs: readonly T[], ids: readonly number[]) => ids.map((k) => xs[k]);
  // Gray, blur, solarize and normalise by groups that take the same steps, on the CPU in power-of-two chunks;
  // blurs in order of sigma, so that a chunk's kernel (its largest) is not much larger than its samples need, and
  // chunks are large: a depthwise convolution of a few planes costs several times more per plane. `slot` lists the
  // samples group by group, so each finishing chunk is one block of rows.
  const finishKeys = Array.from(
    { length: n },
    (_, k) => `${+gray[k]}/${+blur[k]}/${+sol[k]}`,
  );
  const finishChunk = Math.max(FINISH_SAMPLES, chunkOf(FINISH_CHUNK, [n, C, size, size], x.device));
  const finishing = batches(finishKeys, finishChunk, x.device === "cpu", sigmas);
  const slot = new Array<number>(n);
  finishing.flat().forEach((k, at) => (slot[k] = at));
  // Crop and jitter by groups of samples with the same jitter order, a few at a time so that they stay in
  // cache; each result goes straight to its samples' slots, so that each finishing group is one block.
  const options = { dtype: x.dtype, device: x.device };
  const jittered = empty([n, C, size, size], options);
  for (const ids of batches(jitter.order.map((o) => o.join("")), chunkOf(JITTER_CHUNK, [n, C, size, size], x.device))) {
    tidy(() => {
      const sources = ids.map((k) => k % B);
      const crops = resizedCrop(x, pick(boxes, ids), pick(flips, ids), size, cfg.interpolation, sources);
      scatter(jittered, pick(slot, ids), pipe(crops, jitterSteps(jitter, ids)));
    });
  }
  const y = empty([n, C, size, size], options);
  for (const ids of finishing) {
    const k = ids[0];
    tidy(() =>
      scatter(
        y,
        ids,
        pipe(narrow(jittered, 0, slot[k], ids.length), [
          // One channel from grayscale to the normalisation: a third of the blur's work.
          ...(gray[k] ? [grayscale] : []),
          // When the blur comes last, it normalises too (the normalisation folded into its taps).
          ...(blur[k] && !gray[k] && !sol[k] ? [(z: Tensor) => gaussianBlur(z, pick(sigmas, ids), cfg)] : [
            ...(blur[k] ? [(z: Tensor) => gaussianBlur(z, pick(sigmas, ids))] : []),
            ...(sol[k] ? [(z: Tensor) => solarize(z, ids.map(() => true))] : []),
            (z: Tensor) => normalize(expand(z, [-1, C, -1, -1]), cfg.mean, cfg.std),
          ]),
        ]),
      )
    );
  }
  jittered.dispose();
  const views = specs.map((_, v) => narrow(y, 0, v * B, B)); // views of y's storage, which they keep alive
  y.dispose();
  return views;
}

/**
 * One augmented view of a batch of images in [0, 1] (f32 [B, C, H, W]),
 * normalised: {@linkcode augmentViews} with one spec.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS, Generator, rand, tidy, viewSpecs } from "../../mod.ts";
 * import { augmentView } from "./views.ts";
 * using g = new Generator(0);
 * const cfg = AUGMENT_PRESETS.cifar32;
 * const local = viewSpecs(cfg).at(-1)!;
 * using v = tidy(() => augmentView(rand(g, [4, 3, 32, 32]), local, cfg, g));
 * assert.deepEqual(v.shape, [4, 3, cfg.localCropsSize, cfg.localCropsSize]);
 * ```
 */
export function augmentView(x: Tensor, spec: ViewSpec, cfg: AugmentConfig, g: Generator): Tensor {
  return augmentViews(x, [spec], cfg, g)[0];
}

/**
 * All views of a batch: u8 (0..255) or f32 ([0, 1]) images [B, C, H, W] in;
 * 2 global views then the local ones out, each normalised f32. The draws come
 * from one generator for the batch, or from each sample's own seed (see
 * {@linkcode ViewRandomness}): then a sample's views are the same whichever
 * batch it is in.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS, dispose, Generator, narrow, randint, tidy, to, toArray, viewSpecs } from "../../mod.ts";
 * import { dinoViews } from "./views.ts";
 * using g = new Generator(0);
 * const cfg = AUGMENT_PRESETS.cifar32;
 * using images = tidy(() => to(randint(g, 0, 256, [2, 3, 32, 32]), "u8"));
 * const views = tidy(() => dinoViews(images, cfg, g));
 * assert.deepEqual(views.map((v) => v.shape[2]), viewSpecs(cfg).map((s) => s.size));
 * // Seeded per sample: the second image's views alone equal its views in the pair (to float rounding).
 * const pair = tidy(() => dinoViews(images, cfg, { sampleSeeds: [7, 8] }));
 * const alone = tidy(() => dinoViews(narrow(images, 0, 1, 1), cfg, { sampleSeeds: [8] }));
 * const [p, a] = tidy(() => [toArray(narrow(pair[2], 0, 1, 1)), toArray(alone[2])]);
 * assert.ok(p.every((x, i) => Math.abs(x - a[i]) < 1e-5));
 * dispose([views, pair, alone]);
 * ```
 */
export function dinoViews(images: Tensor, cfg: AugmentConfig, randomness: ViewRandomness): Tensor[] {
  if (images.device !== "cpu") return dinoViewsByOps(images, cfg, randomness);
  const runs = plannedRuns(images, cfg, randomness);
  return splitRuns(augmentBatch(...fusedCall(images, runs, cfg)), runs, images.shape[0]);
}

/**
 * {@linkcode dinoViews} op by op, by groups of samples that take the same
 * steps, through the image functions of `image.ts`: the path on devices other
 * than the CPU, and on the CPU the reference that the fused kernel is checked
 * against (the same views to float rounding).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS, dispose, Generator, randint, tidy, to, toArray } from "../../mod.ts";
 * import { dinoViews, dinoViewsByOps } from "./views.ts";
 * using g = new Generator(0);
 * using images = tidy(() => to(randint(g, 0, 256, [2, 3, 32, 32]), "u8"));
 * const cfg = AUGMENT_PRESETS.cifar32;
 * const [fused, byOps] = [dinoViews, dinoViewsByOps].map((f) => f(images, cfg, { sampleSeeds: [1, 2] }));
 * const [a, b] = tidy(() => [toArray(fused[0]), toArray(byOps[0])]);
 * assert.ok(a.every((v, i) => Math.abs(v - b[i]) < 1e-4));
 * dispose([fused, byOps]);
 * ```
 */
export function dinoViewsByOps(images: Tensor, cfg: AugmentConfig, randomness: ViewRandomness): Tensor[] {
  const runs = plannedRuns(images, cfg, randomness);
  return tidy(() => {
    const x = images.dtype === "u8" ? div(images, 255) : images; // true division: f32 in one pass
    return runs.flatMap((run) => tidy(() => applyPlanByOps(x, run.specs, cfg, run.plan)));
  });
}

/** Options of {@linkcode dinoViewsAsync}. */
export interface AsyncViewOptions {
  /** Threads that make the views (default: libtorch's intra-op thread count). */
  threads?: number;
}

/**
 * {@linkcode dinoViews} off the JavaScript thread, for images on the CPU: the
 * random choices are drawn now, the views are made on native threads, and the
 * promise resolves with them, so that JavaScript (a training step's calls)
 * runs meanwhile. The same views as {@linkcode dinoViews} for the same
 * randomness. `images` must stay alive until the promise settles.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AUGMENT_PRESETS, dispose, Generator, randint, tidy, to, toArray } from "../../mod.ts";
 * import { dinoViews, dinoViewsAsync } from "./views.ts";
 * using g = new Generator(0);
 * using images = tidy(() => to(randint(g, 0, 256, [2, 1, 28, 28]), "u8"));
 * const cfg = AUGMENT_PRESETS.fmnist28;
 * const later = dinoViewsAsync(images, cfg, { sampleSeeds: [3, 4] }, { threads: 1 });
 * const now = dinoViews(images, cfg, { sampleSeeds: [3, 4] });
 * const views = await later;
 * assert.deepEqual(tidy(() => views.map(toArray)), tidy(() => now.map(toArray))); // the same views
 * dispose([views, now]);
 * ```
 */
export async function dinoViewsAsync(
  images: Tensor,
  cfg: AugmentConfig,
  randomness: ViewRandomness,
  o: AsyncViewOptions = {},
): Promise<Tensor[]> {
  if (images.device !== "cpu") return dinoViews(images, cfg, randomness);
  const runs = plannedRuns(images, cfg, randomness);
  return splitRuns(await augmentBatchAsync(...fusedCall(images, runs, cfg, o.threads)), runs, images.shape[0]);
}

/** A batch's views as runs of one size (the globals, then the locals), each with its random choices. */
function plannedRuns(images: Tensor, cfg: AugmentConfig, randomness: ViewRandomness): Run[] {
  const specs = viewSpecs(cfg);
  const C = images.shape[1];
  if (cfg.mean.length !== C || cfg.std.length !== C) {
    throw new Error(`normalisation has ${cfg.mean.length} means and ${cfg.std.length} stds for ${C}-channel images`);
  }
  let perSample: Float64Array[] | undefined;
  if (!(randomness instanceof Generator)) {
    const seeds = randomness.sampleSeeds;
    if (seeds.length !== images.shape[0]) {
      throw new Error(`dinoViews: ${seeds.length} sample seeds for a batch of ${images.shape[0]}`);
    }
    const count = specs.length * VIEW_DRAWS;
    const all = tidy(() => data(randRows(seeds, count, { dtype: "f64" })) as Float64Array); // [B x count]
    perSample = seeds.map((_, b) => all.subarray(b * count, (b + 1) * count));
  }
  // Consecutive views of one size (the globals, then the locals) are augmented together.
  const runs: { specs: ViewSpec[]; first: number }[] = [];
  specs.forEach((spec, v) => {
    const last = runs.at(-1);
    if (last && last.specs[0].size === spec.size) last.specs.push(spec);
    else runs.push({ specs: [spec], first: v });
  });
  return runs.map((run) => {
    const draw = perSample ? { uniforms: perSample, firstView: run.first } : randomness as Generator;
    return { specs: run.specs, plan: viewPlan(draw, run.specs, images.shape, cfg) };
  });
}
