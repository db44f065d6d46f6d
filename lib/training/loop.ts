/**
 * The training loop as an async generator: it reads shuffled batches, makes
 * each step's views and takes the step, and yields an event after every step
 * and at the end of every epoch. The caller decides what to do with them
 * (log, save, evaluate, stop): breaking out of the loop stops it cleanly.
 *
 * Ownership: the loop owns the state it is given and every state it makes,
 * and disposes each one when the next replaces it. The state of the last
 * event the caller saw (or the initial state, when there was none) is the
 * caller's to dispose.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, randint, tidy, to } from "../../mod.ts";
 * import { AUGMENT_PRESETS } from "../augment/mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { dinoConfig } from "../model/dino.ts";
 * import { dinoHyper, initTrainState } from "./step.ts";
 * import { trainLoop } from "./loop.ts";
 * import { Generator } from "../../mod.ts";
 * using g = new Generator(0);
 * using images = tidy(() => to(randint(g, 0, 256, [8, 1, 16, 16]), "u8"));
 * using data = tensorDataset(images);
 * const net = dinoConfig({ arch: "vit_tiny", imgSize: 16, patchSize: 8, depth: 1, inChans: 1, outDim: 32 });
 * const hyper = dinoHyper({ epochs: 2, itersPerEpoch: 2, batchSize: 4, warmupEpochs: 0 });
 * const augment = { ...AUGMENT_PRESETS.fmnist28, globalCropsSize: 16, localCropsSize: 8, localCropsNumber: 2 };
 * let state = initTrainState(net, hyper, 0);
 * const seen: string[] = [];
 * for await (const e of trainLoop(state, { data, net, hyper, augment, seed: 0 })) {
 *   state = e.state;
 *   seen.push(e.type === "step" ? `step ${e.state.step}` : `epoch ${e.completed}`);
 * }
 * assert.deepEqual(seen, ["step 1", "step 2", "epoch 1", "step 3", "step 4", "epoch 2"]);
 * dispose(state);
 * ```
 * @module
 */
import {
  type Device,
  dispose,
  getNumThreads,
  narrow,
  type ProcessGroup,
  streamSeed,
  type Tensor,
  tidy,
  toDevice,
} from "../../ffi/mod.ts";
import { gatherNumbers } from "../distributed/collectives.ts";
import { type AugmentConfig, dinoViews, dinoViewsAsync } from "../augment/mod.ts";
import type { Batch, Dataset } from "../data/dataset.ts";
import { batches } from "../data/loader.ts";
import type { DinoConfig } from "../model/dino.ts";
import { type DinoHyper, type StepMetrics, type TrainState, trainStep } from "./step.ts";

/** What the loop trains on and how. */
export interface LoopOptions {
  /** The training images. */
  data: Dataset;
  /** The network. */
  net: DinoConfig;
  /** The hyperparameters; `batchSize` images per step, `itersPerEpoch` steps per epoch. */
  hyper: DinoHyper;
  /** The views of each batch. */
  augment: AugmentConfig;
  /** The run's seed: shuffling and augmentation streams derive from it and the step. */
  seed: number;
  /** Where the batch goes (the state must already be there; default: cpu). */
  device?: Device;
  /** The step to stop at (default: the end of the last epoch). */
  stopAt?: number;
  /** Called with files a batch could not read (they are skipped). */
  onSkipped?: (files: string[], why: string, epoch: number) => void;
  /**
   * The process group of a data-parallel run: this process trains on its
   * rank's shard of each epoch (`hyper.batchSize` per rank) and every step
   * averages over the ranks (see `TrainStepOptions`). None for one
   * process.
   */
  group?: ProcessGroup;
  /**
   * Where the views are made when training on another device than the CPU:
   * `"cpu"` (the default, as the official DataLoader workers do) makes the
   * views of batch n + 1 on native CPU threads during the step of batch n
   * and moves them to the device; `"device"` makes them there, op by op,
   * between steps.
   */
  augmentOn?: "cpu" | "device";
  /**
   * Threads that make the next batch's views while a step runs (default: 1
   * when training on the CPU, whose step keeps the others; when the step runs
   * on another device, one less than this process's compute threads, which a
   * launcher of several processes divides among them).
   */
  augmentThreads?: number;
  /** Time each step's phases (`StepMetrics.phases`; see `TrainStepOptions.timed`). */
  timed?: boolean;
}

/** An event of the loop. Its state belongs to the loop until the next event. */
export type TrainEvent =
  | {
    /** A step was taken. */
    type: "step";
    /** The state after it. */
    state: TrainState;
    /** What the step reports. */
    metrics: StepMetrics;
    /** The epoch it belongs to (0-based). */
    epoch: number;
    /** Images it consumed, over every rank. */
    images: number;
    /**
     * Milliseconds the step waited for its data: from the loop resuming after
     * the previous event until the step began (the next batch to arrive and
     * its views to be made, where they were not ready yet).
     */
    dataWaitMs: number;
  }
  | {
    /** An epoch ended, or the loop stopped inside one (see `completed`). */
    type: "epoch";
    /** The state at its end. */
    state: TrainState;
    /** The epoch that ended (0-based). */
    epoch: number;
    /** Epochs completed so far: `epoch + 1` at a full epoch's end, `epoch` when stopped inside it. */
    completed: number;
  };

/** Where the augmentation streams derive from, apart from the step's own (drop-path) stream. */
const AUGMENT_STREAM = 0x5eed;

/**
 * The seed of a sample's augmentation stream in an epoch: its views depend on
 * the run's seed, the epoch and the sample's index alone, not on the batch it
 * is in, so they are the same whatever the world size and rank.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sampleSeed } from "./loop.ts";
 * assert.equal(sampleSeed(0, 1, 42), sampleSeed(0, 1, 42));
 * assert.notEqual(sampleSeed(0, 1, 42), sampleSeed(0, 2, 42));
 * ```
 */
export function sampleSeed(seed: number, epoch: number, index: number): bigint {
  return streamSeed(Number(streamSeed(seed + AUGMENT_STREAM, epoch)), index);
}

/** A batch whose views are being made. */
interface Pending {
  batch: Batch;
  views: Promise<Tensor[]>;
}

/** In place of a {@linkcode Pending} batch: one that had nothing left to train on. */
const SKIPPED = "skipped";

/** The batch's first `kept` images, or undefined where that is none (the batch is freed but where it is returned). */
function firstImages(batch: Batch, kept: number): Batch | undefined {
  if (kept === batch.images.shape[0] && kept > 0) return batch;
  try {
    if (kept === 0) return undefined;
    return {
      ...batch,
      images: narrow(batch.images, 0, 0, kept),
      labels: batch.labels && narrow(batch.labels, 0, 0, kept),
      indices: batch.indices.slice(0, kept),
    };
  } finally {
    dispose([batch.images, batch.labels]);
  }
}

/**
 * Trains from `state` until `stopAt` or the last epoch, yielding an event
 * after every step and at the end of every epoch. A resumed state continues
 * exactly where it stopped: the batch order and every random draw depend only
 * on the seed, the epoch, the step and the samples' indices.
 *
 * The data never waits for the step: while the step of one batch runs (its
 * calls hold the JavaScript thread), the next batch is already read and its
 * views are being made on native threads, so the step after starts on them
 * without delay. What a step still waited is its event's `dataWaitMs`.
 */
export async function* trainLoop(state: TrainState, o: LoopOptions): AsyncGenerator<TrainEvent> {
  const { hyper, device = "cpu", group } = o;
  const shard = { rank: group?.rank ?? 0, worldSize: group?.worldSize ?? 1 };
  const perEpoch = hyper.itersPerEpoch;
  const stopAt = Math.min(o.stopAt ?? Infinity, hyper.epochs * perEpoch);
  const viewsOnCpu = device === "cpu" || (o.augmentOn ?? "cpu") === "cpu";
  const threads = o.augmentThreads ?? (device === "cpu" ? 1 : Math.max(1, getNumThreads() - 1));
  for (let epoch = Math.floor(state.step / perEpoch); epoch < hyper.epochs && state.step < stopAt; epoch++) {
    const start = state.step - epoch * perEpoch;
    const onSkipped = o.onSkipped && ((files: string[], why: string) => o.onSkipped!(files, why, epoch));
    const loader = { batchSize: hyper.batchSize, seed: o.seed, start, onSkipped, ...shard };
    // The views of a batch, started now: on the CPU on native threads (the promise settles while a step runs).
    const startViews = (batch: Batch): Pending => {
      const sampleSeeds = batch.indices.map((i) => sampleSeed(o.seed, epoch, i));
      const views = viewsOnCpu
        ? dinoViewsAsync(batch.images, o.augment, { sampleSeeds }, { threads }).then((made) => onDevice(made, device))
        : Promise.resolve(tidy(() => dinoViews(toDevice(batch.images, device), o.augment, { sampleSeeds })));
      return { batch, views };
    };
    let pending: Pending | typeof SKIPPED | undefined;
    let resumed = performance.now(); // when the loop last got control back from its caller
    // The step of a batch whose views were started: waits for them, steps, and says how long it waited.
    const step = async function* (p: Pending | typeof SKIPPED): AsyncGenerator<TrainEvent> {
      if (p === SKIPPED) {
        // Nothing to train on: the step is skipped, its number taken, so that the schedules and the epochs' batches
        // stay where they would have been (the next epoch resumes its batches from the step count).
        state = { ...state, step: state.step + 1 };
        return;
      }
      const views = await p.views.finally(() => dispose([p.batch.images, p.batch.labels]));
      const dataWaitMs = performance.now() - resumed;
      // The loop owns `state` and disposes it next: the step may write the new state into its buffers.
      const { state: next, metrics } = trainStep(state, views, hyper, o.net, { group, donate: true, timed: o.timed });
      dispose(views);
      dispose(state);
      state = next;
      yield { type: "step", state, metrics, epoch, images: p.batch.indices.length * shard.worldSize, dataWaitMs };
      resumed = performance.now();
    };
    try {
      for await (const loaded of batches(o.data, epoch, loader)) {
        const full = state.step + (pending ? 1 : 0) >= stopAt; // the steps to stopAt have their batches
        if (full) {
          dispose([loaded.images, loaded.labels]);
          break;
        }
        // Unreadable files leave a batch short. Every rank trains on as many images, the fewest any rank read, to
        // a whole number of micro-batches: trainStep splits a batch into equal micro-batches, the center divides
        // its all-reduced sum by this rank's count times the world size, and the gradients' mean weighs the ranks
        // alike. Where none is left, the step is skipped.
        const read = loaded.images.shape[0];
        const fewest = group ? Math.min(...gatherNumbers(read, group)) : read;
        const batch = firstImages(loaded, fewest - fewest % hyper.accumSteps);
        const next = batch ? startViews(batch) : SKIPPED; // made while the pending batch's step runs
        if (pending) {
          const p = pending;
          pending = next;
          yield* step(p);
        } else pending = next;
      }
      if (pending) {
        const p = pending;
        pending = undefined;
        yield* step(p);
      }
    } finally {
      // Stopped early (the caller broke out, or a step failed): the views being made are freed when made.
      if (pending && pending !== SKIPPED) {
        const p = pending;
        await p.views.then(dispose, () => {}).finally(() => dispose([p.batch.images, p.batch.labels]));
      }
    }
    const completed = state.step % perEpoch === 0 ? state.step / perEpoch : epoch;
    yield { type: "epoch", state, epoch, completed };
  }
}

/** `views` on `device`: the same tensors where they already are, else copies (the originals freed). */
function onDevice(views: Tensor[], device: Device): Tensor[] {
  if (views.every((v) => v.device === device || v.device.startsWith(`${device}:`))) return views;
  try {
    return tidy(() => views.map((v) => toDevice(v, device)));
  } finally {
    dispose(views);
  }
}
