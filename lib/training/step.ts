/**
 * One DINO training step as a pure function of an immutable state record:
 * `trainStep(state, views, hyper, cfg) -> { state, metrics }`. The order is
 * the official one: forward, loss, backward, per-parameter clipping, dropping
 * the last layer's gradients while it is frozen, the optimizer step, then the
 * teacher's EMA with this iteration's momentum.
 *
 * The old state is left as it was; the caller disposes it once it no longer
 * needs it (every tensor of the new state has its own handle).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn } from "../../mod.ts";
 * import { dinoConfig } from "../model/dino.ts";
 * import { dinoHyper, initTrainState, trainStep } from "./step.ts";
 * const cfg = dinoConfig({ arch: "vit_tiny", imgSize: 16, patchSize: 4, depth: 1, inChans: 1, outDim: 64 });
 * const hyper = dinoHyper({ epochs: 1, itersPerEpoch: 1, batchSize: 2, warmupEpochs: 0 });
 * let state = initTrainState(cfg, hyper, 0);
 * using g = new Generator(1);
 * const views = [randn(g, [2, 1, 16, 16]), randn(g, [2, 1, 16, 16]), randn(g, [2, 1, 8, 8])];
 * const { state: next, metrics } = trainStep(state, views, hyper, cfg);
 * dispose([state, views]);
 * state = next;
 * assert.ok(Number.isFinite(metrics.loss) && metrics.loss > 0);
 * assert.equal(state.step, 1);
 * dispose(state);
 * ```
 * @module
 */
import {
  add,
  alias,
  cat,
  chunk,
  clone,
  cudaSynchronize,
  div,
  gelu,
  Generator,
  grad,
  item,
  linear,
  noGrad,
  type ProcessGroup,
  requiresGrad,
  softmax,
  streamSeed,
  sum,
  type Tensor,
  tensor,
  tidy,
  toArray,
  zeros,
} from "../../ffi/mod.ts";
import { type SettingName, SETTINGS, type Settings } from "../settings/settings.ts";
import { centerFromSum, dinoLoss, meanEntropy, updateCenter } from "./loss.ts";
import { allReduceMean, allReduceSum } from "../distributed/collectives.ts";
import { type DinoConfig, type DinoParams, initDino, isLastLayer, multiCropForward } from "../model/dino.ts";
import {
  adamw,
  type AdamWState,
  clipGradients,
  emaUpdate,
  lars,
  type LARSState,
  type Optimizer,
  sgd,
  type SGDState,
} from "./optim.ts";
import { cosineSchedule, teacherTempSchedule } from "./schedules.ts";
import { type Flat, mapTree, stateDict } from "../weights/tree.ts";
import type { LinearParams } from "../model/vit.ts";
import { truncNormal } from "../model/vit.ts";
import { checkPrecision, fp32, type LowDtype, lowDtype, lowLinear } from "../model/precision.ts";
import { lossScaler, type LossScalerState, scaleLoss, unscaleGradients } from "./scaler.ts";

/** The settings a training step reads. */
export const HYPER_KEYS = [
  "epochs",
  "batchSize",
  "lr",
  "minLr",
  "warmupEpochs",
  "weightDecay",
  "weightDecayEnd",
  "momentumTeacher",
  "momentumTeacherEnd",
  "clipGrad",
  "freezeLastLayer",
  "warmupTeacherTemp",
  "teacherTemp",
  "warmupTeacherTempEpochs",
  "studentTemp",
  "centerMomentum",
  "optimizer",
  "accumSteps",
  "teacherMode",
  "criterion",
  "centering",
  "predictorDim",
  "precision",
] as const satisfies readonly SettingName[];

/**
 * Training hyperparameters: the settings of {@linkcode HYPER_KEYS} (see
 * {@linkcode SETTINGS} for each one's meaning and official name) and the
 * number of optimizer steps per epoch the schedules span.
 */
export type DinoHyper = Pick<Settings, typeof HYPER_KEYS[number]> & {
  /** Optimizer steps per epoch. */
  itersPerEpoch: number;
  /**
   * Processes sharing each step (data-parallel ranks; default 1): `batchSize`
   * is per process, as the official `batch_size_per_gpu`, and the learning
   * rate is scaled by the global batch, batchSize x worldSize / 256.
   */
  worldSize?: number;
};

/**
 * The official defaults, overridden by those of `o`'s fields that are
 * hyperparameters (so a whole {@linkcode Settings} record may be passed).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dinoHyper } from "./step.ts";
 * const h = dinoHyper({ epochs: 10, itersPerEpoch: 100, batchSize: 128 });
 * assert.deepEqual([h.epochs, h.lr, h.momentumTeacher, h.optimizer], [10, 5e-4, 0.996, "adamw"]);
 * ```
 */
export function dinoHyper(o: Partial<DinoHyper> = {}): DinoHyper {
  const h = { itersPerEpoch: o.itersPerEpoch ?? 1, worldSize: o.worldSize ?? 1 } as Record<string, unknown>;
  for (const k of HYPER_KEYS) h[k] = o[k] ?? SETTINGS[k].default;
  const hyper = h as DinoHyper;
  if (hyper.warmupEpochs > hyper.epochs) {
    throw new Error(`warmup epochs (${hyper.warmupEpochs}) exceed epochs (${hyper.epochs})`);
  }
  if (!(hyper.accumSteps >= 1 && Number.isInteger(hyper.accumSteps))) {
    throw new Error("accumSteps must be a positive integer");
  }
  if (!(Number.isInteger(hyper.worldSize) && hyper.worldSize! >= 1)) {
    throw new Error(`worldSize must be a positive integer, got ${hyper.worldSize}`);
  }
  return hyper;
}

/**
 * The schedules of a run, as pure functions of the iteration (the teacher temperature: of the epoch).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dinoHyper, schedules } from "./step.ts";
 * const h = { epochs: 2, itersPerEpoch: 10, warmupEpochs: 1, momentumTeacher: 0.99 };
 * const official = schedules(dinoHyper(h));
 * assert.deepEqual([official.momentum(0), official.momentum(19)], [0.99, 0.99 + 0.01 * (1 - Math.cos(Math.PI * 19 / 20)) / 2]);
 * const held = schedules(dinoHyper({ ...h, momentumTeacherEnd: 0.99 }));
 * assert.equal(held.momentum(19), 0.99); // the teacher keeps following the student to the end
 * ```
 */
export function schedules(h: DinoHyper): {
  lr: (it: number) => number;
  weightDecay: (it: number) => number;
  momentum: (it: number) => number;
  teacherTemp: (epoch: number) => number;
} {
  return {
    lr: cosineSchedule(
      (h.lr * h.batchSize * (h.worldSize ?? 1)) / 256,
      h.minLr,
      h.epochs,
      h.itersPerEpoch,
      h.warmupEpochs,
    ),
    weightDecay: cosineSchedule(h.weightDecay, h.weightDecayEnd, h.epochs, h.itersPerEpoch),
    momentum: cosineSchedule(h.momentumTeacher, h.momentumTeacherEnd, h.epochs, h.itersPerEpoch),
    teacherTemp: teacherTempSchedule(h.warmupTeacherTemp, h.teacherTemp, h.warmupTeacherTempEpochs, h.epochs),
  };
}

/** The student: the DINO network, plus the predictor of that ablation. */
export interface StudentParams extends DinoParams {
  /** The predictor MLP of that ablation: Linear(K, h), GELU, Linear(h, K). */
  predictor?: Record<string, LinearParams>;
}

/** Everything that changes during training. Immutable: each step returns a new one. */
export interface TrainState {
  /** The trained network. */
  student: StudentParams;
  /** The EMA of the student. */
  teacher: DinoParams;
  /** Optimizer state over the student's trainable parameters (official keys). */
  optimizer: AdamWState | SGDState | LARSState;
  /** The teacher-output center, [1, K]. */
  center: Tensor;
  /** Optimizer steps taken, counting those skipped (a batch with no readable image, an fp16 overflow). */
  step: number;
  /** The random stream: step generators are derived from (seed, counter). */
  rng: { seed: number; counter: number };
  /**
   * The dynamic loss scaler (fp16; see `scaler.ts`): while it is present, the
   * loss is scaled, the gradients unscaled before clipping, and a step with
   * non-finite gradients skipped. Absent: no scaling.
   */
  scaler?: LossScalerState;
}

/** What a step reports. */
export interface StepMetrics {
  /** The DINO loss (mean over micro-batches). */
  loss: number;
  /** The learning rate used. */
  lr: number;
  /** The weight decay used. */
  weightDecay: number;
  /** The teacher momentum used. */
  momentum: number;
  /** The teacher temperature used. */
  teacherTemp: number;
  /** Mean entropy (nats) of the teacher's targets; ln K means a uniform teacher. */
  teacherEntropy: number;
  /** Mean entropy of the student's distributions. */
  studentEntropy: number;
  /** With a loss scaler: the scale this step's loss was multiplied by. */
  lossScale?: number;
  /** With a loss scaler: whether the step was skipped (non-finite gradients; parameters and optimizer unchanged). */
  skipped?: boolean;
  /** With `timed`: where the step's wall time went. */
  phases?: StepPhases;
}

const BUFFERS = /\.(running_mean|running_var|num_batches_tracked)$/;

/** Whether a student parameter is trained: not a batch-norm buffer, not the fixed weight_g. */
export function isTrainable(key: string, cfg: DinoConfig): boolean {
  if (BUFFERS.test(key)) return false;
  return !(cfg.head.normLastLayer && key === "head.last_layer.weight_g");
}

/** The optimizer a hyperparameter record names. */
export function optimizerFor(h: DinoHyper): Optimizer<AdamWState> | Optimizer<SGDState> | Optimizer<LARSState> {
  return h.optimizer === "sgd" ? sgd() : h.optimizer === "lars" ? lars() : adamw();
}

function trainable(student: StudentParams, cfg: DinoConfig): Flat {
  return Object.fromEntries(Object.entries(stateDict(student)).filter(([k]) => isTrainable(k, cfg)));
}

/**
 * A fresh state: student initialised from `seed`, teacher a copy of it, zero
 * center and optimizer moments, and with fp16 a loss scaler at GradScaler's
 * defaults.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, toArray } from "../../mod.ts";
 * import { dinoConfig } from "../model/dino.ts";
 * import { dinoHyper, initTrainState } from "./step.ts";
 * const s = initTrainState(dinoConfig({ arch: "vit_tiny", depth: 1, outDim: 64 }), dinoHyper(), 0);
 * assert.deepEqual(toArray(s.teacher.head.last_layer.weight_v), toArray(s.student.head.last_layer.weight_v));
 * assert.deepEqual([s.step, s.center.shape], [0, [1, 64]]);
 * dispose(s);
 * ```
 */
export function initTrainState(cfg: DinoConfig, h: DinoHyper, seed: number): TrainState {
  using g = new Generator(seed);
  const net = initDino(cfg, g);
  const K = cfg.head.outDim;
  const student: StudentParams = h.predictorDim > 0
    ? {
      ...net,
      predictor: {
        "0": { weight: truncNormal(g, [h.predictorDim, K]), bias: zeros([h.predictorDim]) },
        "2": { weight: truncNormal(g, [K, h.predictorDim]), bias: zeros([K]) },
      },
    }
    : net;
  const teacher = mapTree(net, (t) => clone(t));
  const optimizer = (optimizerFor(h) as Optimizer<AdamWState | SGDState | LARSState>).init(trainable(student, cfg));
  const state: TrainState = { student, teacher, optimizer, center: zeros([1, K]), step: 0, rng: { seed, counter: 0 } };
  return h.precision === "fp16" ? { ...state, scaler: lossScaler().init() } : state;
}

function predict(p: Record<string, LinearParams>, x: Tensor, dt: LowDtype | undefined): Tensor {
  if (dt === undefined) return linear(gelu(linear(x, p["0"].weight, p["0"].bias)), p["2"].weight, p["2"].bias);
  return fp32(lowLinear(gelu(lowLinear(x, p["0"].weight, p["0"].bias, dt)), p["2"].weight, p["2"].bias, dt));
}

/** A tree shaped like `template` holding `flat`'s tensors (the same handles). */
function treeOf<T extends object>(template: T, flat: Flat): T {
  return mapTree(template, (_, key) => flat[key]);
}

/** Options of {@linkcode trainStep}. */
export interface TrainStepOptions {
  /**
   * The process group of a data-parallel run (none for one process, which
   * then communicates nothing). With a group, `views` are this rank's shard
   * of the global batch (rank r's sample k is the global batch's sample r + k
   * x worldSize, as the loader shards an epoch); the gradients are averaged
   * over the ranks after backward, before clipping (as DDP); the center moves
   * by the teacher outputs' sum over every rank's rows (as the official
   * `update_center`); the reported metrics are means over the ranks; the
   * drop-path masks are drawn for the global batch, each rank taking its rows;
   * and batch norms in both networks use the global batch's statistics
   * (SyncBatchNorm).
   * So every rank takes the same step, the one a single process would take on
   * the global batch, up to float summation order.
   */
  group?: ProcessGroup;
  /**
   * The caller gives up `state` (it will only dispose it, as the training
   * loop does): the new student, teacher and optimizer moments are written
   * into its buffers, so a step holds one copy of them, not two (see
   * `StepHyper.donate`). The result is the same.
   */
  donate?: boolean;
  /**
   * Time the step's phases (wall milliseconds in `StepMetrics.phases`; on
   * CUDA each phase waits for its kernels, which costs some speed).
   */
  timed?: boolean;
}

/** Where a step's wall time went, in milliseconds (see `TrainStepOptions.timed`). */
export interface StepPhases {
  /** The teacher's forward pass on the global crops. */
  teacherForward: number;
  /** The student's forward pass on every crop. */
  studentForward: number;
  /** The loss and the metrics' entropies. */
  loss: number;
  /** The backward pass. */
  backward: number;
  /** The center's update (and with a process group, the gradients' all-reduce). */
  center: number;
  /** Unscaling (fp16) and clipping the gradients. */
  clipping: number;
  /** The optimizer's update. */
  optimizer: number;
  /** The teacher's EMA update and the new state's handles. */
  ema: number;
}

/**
 * One training step on `views` (global crops first, then the locals; each
 * [B, C, H, W]). Returns the new state and the step's metrics.
 *
 * `h.precision` picks the matrix products' dtype (see `precision.ts`): bf16 or
 * fp16 autocast, the parameters, softmaxes, loss, center and optimizer staying
 * fp32; fp16 needs CUDA views. With a loss scaler in the state (fp16 starts
 * one), the step is the official `--use_fp16` one: the scaled loss's
 * gradients are unscaled before clipping, a step whose gradients are not all
 * finite leaves the student and the optimizer as they were (the center and
 * the teacher's EMA still move, as in the official loop), and the scaler is
 * updated.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randn } from "../../mod.ts";
 * import { dinoConfig } from "../model/dino.ts";
 * import { dinoHyper, initTrainState, trainStep } from "./step.ts";
 * const cfg = dinoConfig({ arch: "vit_tiny", imgSize: 16, patchSize: 8, depth: 1, outDim: 32 });
 * const h = dinoHyper({ epochs: 1, itersPerEpoch: 2, batchSize: 2, warmupEpochs: 0 });
 * const s0 = initTrainState(cfg, h, 0);
 * using g = new Generator(0);
 * const views = [randn(g, [2, 3, 16, 16]), randn(g, [2, 3, 16, 16])];
 * const { state: s1, metrics } = trainStep(s0, views, h, cfg);
 * assert.deepEqual([s1.step, metrics.lr, metrics.momentum], [1, 5e-4 * 2 / 256, 0.996]); // lr scaled by batch / 256
 * dispose([s0, s1, views]);
 * ```
 */
export function trainStep(
  state: TrainState,
  views: readonly Tensor[],
  h: DinoHyper,
  cfg: DinoConfig,
  o: TrainStepOptions = {},
): { state: TrainState; metrics: StepMetrics } {
  const { group, donate, timed } = o;
  if (views.length < 2) throw new Error(`DINO needs at least the 2 global crops, got ${views.length} views`);
  if (group && h.centering === "sinkhorn" && group.worldSize > 1) {
    throw new Error("Sinkhorn-Knopp centering normalises over the batch: it is not supported over several processes");
  }
  const B = views[0].shape[0];
  if (views.some((v) => v.shape[0] !== B)) throw new Error("every view needs the same batch size");
  if (B === 0) throw new Error("trainStep: the views hold no image (a mean over none would be NaN)");
  checkPrecision(h.precision, views[0].device);
  const precision = h.precision, dt = lowDtype(precision);
  const scaler = state.scaler ?? (precision === "fp16" ? lossScaler().init() : undefined);
  if (B % h.accumSteps !== 0) throw new Error(`batch ${B} does not divide into ${h.accumSteps} micro-batches`);
  const it = state.step;
  const epoch = Math.floor(it / h.itersPerEpoch);
  const sched = schedules(h);
  const lr = sched.lr(it), weightDecay = sched.weightDecay(it), momentum = sched.momentum(it);
  const teacherTemp = sched.teacherTemp(epoch);
  const lossOptions = {
    ncrops: views.length,
    teacherTemp,
    studentTemp: h.studentTemp,
    centerMomentum: h.centerMomentum,
    criterion: h.criterion,
    centering: h.centering,
  };

  return tidy(() => {
    using g = new Generator(streamSeed(state.rng.seed, state.rng.counter));
    const micro = h.accumSteps === 1 ? [views] : transposeChunks(views.map((v) => chunk(v, h.accumSteps, 0)));
    // Both networks as flat records under their official keys: updated by key, rebuilt into trees at the end.
    let student: Flat = stateDict(state.student);
    let teacher: Flat = stateDict(state.teacher);
    const keys = Object.keys(student).filter((k) => isTrainable(k, cfg));
    let grads: Tensor[] | undefined;
    let lossSum = 0, teacherEntropy = 0, studentEntropy = 0;
    const teacherOuts: Tensor[] = [];
    const phases: StepPhases = {
      teacherForward: 0,
      studentForward: 0,
      loss: 0,
      backward: 0,
      center: 0,
      clipping: 0,
      optimizer: 0,
      ema: 0,
    };
    let lapStart = performance.now();
    const lap = (phase: keyof StepPhases) => {
      if (!timed) return;
      if (views[0].device !== "cpu") cudaSynchronize();
      const now = performance.now();
      phases[phase] += now - lapStart;
      lapStart = now;
    };

    for (const crops of micro) {
      // Teacher: the 2 global crops, no graph; its batch-norm buffers move with its own forward.
      const t = noGrad(() =>
        multiCropForward(treeOf(state.teacher, teacher), cfg, crops.slice(0, 2), { precision, group })
      );
      teacher = { ...teacher, ...t.bnStats };
      teacherOuts.push(t.output);
      lap("teacherForward");
      // Student: every crop, with gradients for its trainable leaves.
      const leaves: Flat = { ...student };
      for (const k of keys) leaves[k] = requiresGrad(student[k]);
      const net = treeOf(state.student, leaves);
      const shard = group && { rank: group.rank, worldSize: group.worldSize, batch: crops[0].shape[0] };
      const s = multiCropForward(net, cfg, crops, { dropPath: g, shard, precision, group });
      const out = net.predictor ? predict(net.predictor, s.output, dt) : s.output;
      lap("studentForward");
      const { loss, targets } = dinoLoss(out, t.output, state.center, lossOptions);
      const part = div(loss, h.accumSteps);
      lap("loss");
      const gs = grad(scaler ? scaleLoss(part, scaler) : part, keys.map((k) => leaves[k]));
      grads = grads === undefined ? gs : grads.map((a, i) => add(a, gs[i]));
      student = { ...student, ...s.bnStats };
      lap("backward");
      lossSum += item(loss);
      teacherEntropy += tidy(() => item(meanEntropy(targets)));
      studentEntropy += tidy(() => item(meanEntropy(noGrad(() => softmax(div(out, h.studentTemp), -1)))));
      lap("loss");
    }
    const teacherOut = teacherOuts.length === 1 ? teacherOuts[0] : cat(teacherOuts, 0);
    let gradFlat: Flat = Object.fromEntries(keys.map((k, i) => [k, grads![i]]));
    let center: Tensor;
    if (group) {
      // The gradients' mean over the ranks; the teacher outputs' sum and the metrics' sums over every rank.
      gradFlat = allReduceMean(gradFlat, group);
      const local = tensor(new Float64Array([lossSum, teacherEntropy, studentEntropy]));
      const sums = allReduceSum({ center: noGrad(() => sum(teacherOut, 0, { keepdim: true })), local }, group);
      center = centerFromSum(state.center, sums.center, teacherOut.shape[0] * group.worldSize, lossOptions);
      [lossSum, teacherEntropy, studentEntropy] = toArray(sums.local).map((v) => v / group.worldSize);
    } else {
      center = updateCenter(state.center, teacherOut, lossOptions);
    }
    lap("center");

    // With a loss scaler: unscale, and skip the update when a gradient overflowed (GradScaler's unscale_ and step).
    let finite = true;
    if (scaler) ({ grads: gradFlat, finite } = unscaleGradients(gradFlat, scaler));
    // Clip each gradient, then drop the last layer's while it is frozen.
    if (h.clipGrad > 0 && finite) gradFlat = clipGradients(gradFlat, h.clipGrad, { donate: true }).grads;
    if (epoch < h.freezeLastLayer) {
      gradFlat = Object.fromEntries(Object.entries(gradFlat).filter(([k]) => !isLastLayer(k)));
    }
    lap("clipping");
    const opt = optimizerFor(h) as Optimizer<AdamWState | SGDState | LARSState>;
    const params = Object.fromEntries(keys.map((k) => [k, student[k]]));
    const updated = finite
      ? opt.update(params, gradFlat, state.optimizer, { lr, weightDecay, donate })
      : { params: {}, state: mapTree(state.optimizer, (t) => alias(t)) };
    student = { ...student, ...updated.params };
    lap("optimizer");

    // Teacher: EMA over the parameters both networks have (not the batch-norm buffers).
    const emaKeys = Object.keys(teacher).filter((k) => !BUFFERS.test(k));
    const ema = h.teacherMode === "student"
      ? Object.fromEntries(emaKeys.map((k) => [k, student[k]]))
      : emaUpdate(Object.fromEntries(emaKeys.map((k) => [k, teacher[k]])), student, momentum, { donate });
    teacher = { ...teacher, ...ema };

    // Every tensor of the new state gets its own handle; the scope frees everything else.
    const next: TrainState = {
      student: mapTree(state.student, (_, k) => alias(student[k])),
      teacher: mapTree(state.teacher, (_, k) => alias(teacher[k])),
      optimizer: updated.state,
      center,
      step: it + 1,
      rng: { seed: state.rng.seed, counter: state.rng.counter + 1 },
      ...(scaler && { scaler: lossScaler().update(scaler, finite) }),
    };
    lap("ema");
    const n = micro.length;
    const metrics: StepMetrics = {
      loss: lossSum / n,
      lr,
      weightDecay,
      momentum,
      teacherTemp,
      teacherEntropy: teacherEntropy / n,
      studentEntropy: studentEntropy / n,
      ...(scaler && { lossScale: scaler.scale, skipped: !finite }),
      ...(timed && { phases }),
    };
    return { state: next, metrics };
  });
}

function transposeChunks(perView: Tensor[][]): Tensor[][] {
  return perView[0].map((_, j) => perView.map((chunks) => chunks[j]));
}
