/**
 * `deno task train`: trains a ViT with DINO, then reports weighted k-NN
 * accuracy of the teacher, of the same network at initialisation, and of raw
 * pixels. Flags follow the official `main_dino.py` in kebab-case; `--help`
 * lists them with their defaults.
 *
 * Exit codes: 0 done, 1 a run-time failure (missing data, non-finite loss),
 * 2 a bad flag, value or combination (nothing is written), 130 interrupted
 * (after saving a checkpoint).
 *
 * @example
 * ```sh
 * deno task train                                  # Fashion-MNIST, ~10 minutes on 2 CPU cores
 * deno task train --preset imagenet-vits16 --data /data/imagenet --output-dir runs/vits16
 * ```
 * @module
 */
import { join } from "node:path";
import {
  cudaAvailable,
  type Device,
  dispose,
  Generator,
  mean,
  setNumThreads,
  sqrt,
  streamSeed,
  tidy,
  to,
  toArray,
  toDevice,
  variance,
} from "../mod.ts";
import { AUGMENT_PRESETS, type AugmentConfig, dinoViews } from "../lib/augment/mod.ts";
import { loadCheckpoint, networkConfig, saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { parseTrainArgs, type TrainConfig, trainHelp, UsageError } from "../lib/settings/settings.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { batches } from "../lib/data/loader.ts";
import { openDataset } from "../lib/data/open.ts";
import { extractFeatures, knnClassify, pixelFeatures } from "../lib/eval/knn.ts";
import { dinoHyper, initTrainState, type TrainState, trainStep } from "../lib/training/step.ts";
import { mapTree } from "../lib/weights/tree.ts";
import { writeFileAtomic } from "../lib/weights/safetensors.ts";
import { clock, Progress } from "./progress.ts";
import { exists } from "../lib/weights/files.ts";

const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
/** Settings that may change between a run and its resumption. */
const RESUMABLE = new Set<keyof TrainConfig>([
  "resume",
  "outputDir",
  "device",
  "maxSteps",
  "knnEvery",
  "knnK",
  "knnTemperature",
  "logEvery",
  "numWorkers",
  "threads",
  "testLimit",
  "saveckpFreq",
]);

/** Per-channel mean and std of the first images of a dataset, in [0, 1]. */
async function datasetStats(ds: Dataset, n = 2048): Promise<{ mean: number[]; std: number[] }> {
  const b = await ds.load(Array.from({ length: Math.min(n, ds.length) }, (_, i) => i));
  try {
    return tidy(() => {
      const x = to(b.images, "f32");
      const m = toArray(mean(x, [0, 2, 3])).map((v) => v / 255);
      const s = toArray(sqrt(variance(x, [0, 2, 3], { correction: 0 }))).map((v) => Math.max(v / 255, 1e-3));
      return { mean: m, std: s };
    });
  } finally {
    dispose([b.images, b.labels]);
  }
}

function limited(ds: Dataset, n: number): Dataset {
  return n > 0 && n < ds.length ? { ...ds, length: n, labels: ds.labels?.subarray(0, n) } : ds;
}

function augmentation(c: TrainConfig, norm: { mean: number[]; std: number[] }): AugmentConfig {
  const base = c.preset === "fmnist"
    ? AUGMENT_PRESETS.fmnist28
    : c.preset === "cifar10"
    ? AUGMENT_PRESETS.cifar32
    : AUGMENT_PRESETS.imagenet;
  return {
    ...base,
    globalSize: c.globalCropsSize,
    localSize: c.localCropsSize,
    localCrops: c.localCropsNumber,
    globalScale: c.globalCropsScale,
    localScale: c.localCropsScale,
    mean: norm.mean,
    std: norm.std,
  };
}

async function knn(
  state: TrainState,
  c: TrainConfig,
  net: ReturnType<typeof networkConfig>,
  train: Dataset,
  test: Dataset,
  norm: { mean: number[]; std: number[] },
): Promise<{ top1: number; top5: number }> {
  const t = { size: c.globalCropsSize, ...norm };
  const a = await extractFeatures(state.teacher.backbone, net.vit, train, t);
  const b = await extractFeatures(state.teacher.backbone, net.vit, test, t);
  try {
    return knnClassify(a.features, a.labels, b.features, b.labels, { k: c.knnK, temperature: c.knnTemperature });
  } finally {
    dispose([a.features, b.features]);
  }
}

/** Runs the training program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let c: TrainConfig;
  try {
    const parsed = parseTrainArgs(args);
    if (parsed === "help") {
      const i = args.indexOf("--preset");
      console.log(trainHelp(i >= 0 && args[i + 1] ? args[i + 1] : "fmnist"));
      return 0;
    }
    c = parsed;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\nRun 'deno task train --help' for the flags and their defaults.`);
      return 2;
    }
    throw e;
  }
  const usage = (m: string) => {
    console.error(`error: ${m}\nRun 'deno task train --help' for the flags and their defaults.`);
    return 2;
  };
  if (c.device === "cuda" && !cudaAvailable()) {
    return usage("--device cuda, but libtorch sees no CUDA device (see README: point DINO_PYTHON at a CUDA PyTorch)");
  }
  if (c.threads > 0) setNumThreads(c.threads);
  const device: Device = c.device === "cuda" || (c.device === "auto" && cudaAvailable()) ? "cuda" : "cpu";

  // Everything is checked before anything is written.
  const ckptPath = join(c.outputDir, "checkpoint.safetensors");
  const resumeFrom = c.resume === "latest" ? ckptPath : c.resume || (exists(ckptPath) ? ckptPath : "");
  if (c.resume && !exists(resumeFrom)) return usage(`--resume ${c.resume}: no checkpoint at ${resumeFrom}`);
  let loaded: ReturnType<typeof loadCheckpoint> | undefined;
  if (resumeFrom) {
    try {
      loaded = loadCheckpoint(resumeFrom);
    } catch (e) {
      return usage(e instanceof Error ? e.message : String(e));
    }
    const saved = loaded.config as unknown as Record<string, unknown>;
    const diffs = Object.entries(c).filter(([k, v]) =>
      !RESUMABLE.has(k as keyof TrainConfig) && JSON.stringify(saved[k]) !== JSON.stringify(v)
    );
    if (diffs.length > 0) {
      dispose(loaded.state);
      return usage(
        `${resumeFrom} was trained with different settings (${
          diffs.map(([k, v]) => `${k}: ${JSON.stringify(saved[k])} there, ${JSON.stringify(v)} now`).join("; ")
        }). Use another --output-dir to start a new run.`,
      );
    }
  }

  let trainFull: Dataset, testFull: Dataset;
  try {
    trainFull = openDataset(c.data, "train", { side: c.imageSize });
    testFull = openDataset(c.data, "test", { side: c.imageSize });
  } catch (e) {
    dispose(loaded?.state);
    if (e instanceof UsageError) return usage(e.message);
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
  const train = limited(trainFull, c.trainLimit), test = limited(testFull, c.testLimit);
  const itersPerEpoch = Math.floor(train.length / c.batchSize);
  if (itersPerEpoch === 0) {
    dispose([loaded?.state]);
    trainFull.dispose();
    testFull.dispose();
    return usage(`--batch-size ${c.batchSize} is larger than the ${train.length} training images`);
  }
  if (loaded && loaded.channels !== train.channels) {
    return usage(`${resumeFrom} has ${loaded.channels}-channel inputs, the data ${train.channels}`);
  }

  const norm = c.preset === "imagenet-vits16" && train.channels === 3 ? IMAGENET : await datasetStats(train);
  const aug = augmentation(c, norm);
  const net = networkConfig(c, train.channels);
  const hyper = dinoHyper({
    epochs: c.epochs,
    itersPerEpoch,
    batchSize: c.batchSize,
    lr: c.lr,
    minLr: c.minLr,
    warmupEpochs: c.warmupEpochs,
    weightDecay: c.weightDecay,
    weightDecayEnd: c.weightDecayEnd,
    momentumTeacher: c.momentumTeacher,
    clipGrad: c.clipGrad,
    freezeLastLayer: c.freezeLastLayer,
    warmupTeacherTemp: c.warmupTeacherTemp,
    teacherTemp: c.teacherTemp,
    warmupTeacherTempEpochs: c.warmupTeacherTempEpochs,
    optimizer: c.optimizer,
    accumSteps: c.accumSteps,
  });
  const totalSteps = c.epochs * itersPerEpoch;
  const stopAt = c.maxSteps > 0 ? Math.min(c.maxSteps, totalSteps) : totalSteps;
  let state = loaded?.state ?? initTrainState(net, hyper, c.seed);
  if (device !== "cpu") {
    const moved = mapTree(state, (x) => toDevice(x, device));
    dispose(state);
    state = moved;
  }

  Deno.mkdirSync(c.outputDir, { recursive: true });
  writeFileAtomic(
    join(c.outputDir, "config.json"),
    new TextEncoder().encode(JSON.stringify({ ...c, normalization: norm }, null, 2)),
  );
  const metricsPath = join(c.outputDir, "metrics.jsonl");
  const metrics = Deno.openSync(metricsPath, { write: true, create: true, append: !!loaded, truncate: !loaded });
  const record = (r: Record<string, unknown>) => metrics.writeSync(new TextEncoder().encode(JSON.stringify(r) + "\n"));
  const save = (epochsDone: number) => {
    saveCheckpoint(ckptPath, state, { config: c, channels: train.channels, epoch: epochsDone, normalization: norm });
    if (epochsDone > 0 && epochsDone % c.saveckpFreq === 0 && state.step % itersPerEpoch === 0) {
      saveCheckpoint(join(c.outputDir, `checkpoint${String(epochsDone).padStart(4, "0")}.safetensors`), state, {
        config: c,
        channels: train.channels,
        epoch: epochsDone,
        normalization: norm,
      });
    }
  };

  let interrupted = false;
  const onInterrupt = () => {
    interrupted = true;
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  const started = performance.now();
  const firstStep = state.step;
  const labelled = train.labels !== undefined && test.labels !== undefined;
  if (labelled && trainFull.name === testFull.name) {
    console.warn("warning: the data has no separate test split; k-NN is measured on the training images themselves");
  }
  const lnK = Math.log(c.outDim);
  console.log(
    `DINO ${c.preset}: ${net.arch}-like ViT (D ${net.vit.embedDim}, depth ${net.vit.depth}, patch ${net.vit.patchSize}), ` +
      `K ${c.outDim}, ${train.name} (${train.length} images), ${c.epochs} epoch(s) x ${itersPerEpoch} steps, ` +
      `batch ${c.batchSize}, 2 x ${c.globalCropsSize} + ${c.localCropsNumber} x ${c.localCropsSize} px crops, ${device}` +
      (loaded ? `, resuming at step ${state.step}` : ""),
  );

  let exitCode = 0;
  try {
    for (
      let epoch = Math.floor(state.step / itersPerEpoch);
      epoch < c.epochs && state.step < stopAt && !interrupted;
      epoch++
    ) {
      const progress = new Progress(epoch, c.epochs, itersPerEpoch, Deno.stdout.isTerminal(), c.logEvery);
      const epochLosses: number[] = [], entropies: number[] = [];
      let windowStart = performance.now(), windowImages = 0;
      const start = state.step - epoch * itersPerEpoch;
      const onSkipped = (files: string[], why: string) =>
        console.warn(
          `\nwarning: skipped ${files.length} unreadable file(s) in epoch ${epoch} (${why}): ${
            files.slice(0, 10).join(", ")
          }`,
        );
      for await (const batch of batches(train, epoch, { batchSize: c.batchSize, seed: c.seed, start, onSkipped })) {
        if (state.step >= stopAt || interrupted || batch.images.shape[0] < c.accumSteps) {
          dispose([batch.images, batch.labels]);
          if (state.step >= stopAt || interrupted) break;
          continue;
        }
        using g = new Generator(streamSeed(c.seed + 0x5eed, state.step));
        const views = tidy(() => {
          const x = device === "cpu" ? batch.images : toDevice(batch.images, device);
          return dinoViews(x, aug, g);
        });
        dispose([batch.images, batch.labels]);
        const { state: next, metrics: m } = trainStep(state, views, hyper, net);
        dispose(views);
        if (!Number.isFinite(m.loss)) {
          dispose(next);
          progress.finish();
          console.error(
            `error: the loss is ${m.loss} at step ${state.step} (epoch ${epoch}); stopping. ` +
              (exists(ckptPath) ? `The last good checkpoint is kept at ${ckptPath}. ` : "No checkpoint was written. ") +
              "Try a lower --lr, a --clip-grad, or a longer --warmup-epochs.",
          );
          exitCode = 1;
          return exitCode;
        }
        dispose(state);
        state = next;
        epochLosses.push(m.loss);
        entropies.push(m.teacherEntropy);
        windowImages += c.batchSize;
        if (state.step % c.logEvery === 0 || state.step === stopAt) {
          const now = performance.now();
          const imagesPerS = windowImages / ((now - windowStart) / 1000);
          windowStart = now;
          windowImages = 0;
          record({
            step: state.step,
            epoch,
            loss: m.loss,
            lr: m.lr,
            wd: m.weightDecay,
            momentum: m.momentum,
            teacher_temp: m.teacherTemp,
            teacher_entropy: m.teacherEntropy,
            student_entropy: m.studentEntropy,
            images_per_s: imagesPerS,
          });
        }
        progress.update(state.step - epoch * itersPerEpoch, m, stopAt - state.step, c.batchSize);
      }
      progress.finish();
      const completed = state.step % itersPerEpoch === 0 ? Math.floor(state.step / itersPerEpoch) : epoch;
      save(completed);
      if (epochLosses.length === itersPerEpoch && epochLosses.every((l) => Math.abs(l - lnK) < 0.01 * lnK)) {
        console.warn(
          `warning: collapse: the loss stayed within 1% of ln K = ${lnK.toFixed(3)} for all of epoch ${epoch}`,
        );
      }
      const meanEntropy = entropies.reduce((a, b) => a + b, 0) / Math.max(1, entropies.length);
      if (entropies.length > 0 && meanEntropy > 0.99 * lnK) {
        console.warn(
          `warning: collapse: the teacher's outputs are uniform (entropy ${meanEntropy.toFixed(3)} of ln K ${
            lnK.toFixed(3)
          })`,
        );
      }
      if (
        labelled && c.knnEvery > 0 && completed > 0 && completed % c.knnEvery === 0 && state.step % itersPerEpoch === 0
      ) {
        const r = await knn(state, c, net, train, test, norm);
        console.log(`epoch ${epoch}: k-NN top-1 ${r.top1.toFixed(2)}%`);
        record({ step: state.step, epoch, knn_top1: r.top1, knn_top5: r.top5 });
      }
    }
    if (interrupted) {
      console.log(
        `interrupted: checkpoint saved at step ${state.step} to ${ckptPath}; rerun the same command to resume`,
      );
      return 130;
    }
    const trainSeconds = (performance.now() - started) / 1000;

    if (!labelled) {
      console.log(`${train.name} has no labels: k-NN evaluation skipped. Checkpoint: ${ckptPath}`);
      return exitCode;
    }
    // Final evaluation: the trained teacher, the same network at initialisation, raw pixels.
    console.log(
      `evaluating: weighted k-NN (k ${c.knnK}, T ${c.knnTemperature}) on ${test.length} test images, memory of ${train.length}`,
    );
    const trained = await knn(state, c, net, train, test, norm);
    const init = initTrainState(net, hyper, c.seed);
    let atInit;
    try {
      atInit = await knn(init, c, net, train, test, norm);
    } finally {
      dispose(init);
    }
    const pa = await pixelFeatures(train), pb = await pixelFeatures(test);
    const raw = knnClassify(pa.features, pa.labels, pb.features, pb.labels, {
      k: c.knnK,
      temperature: c.knnTemperature,
    });
    dispose([pa.features, pb.features]);
    const totalSeconds = (performance.now() - started) / 1000;
    const summary = {
      knn_top1: { trained: trained.top1, init: atInit.top1, raw_pixels: raw.top1 },
      knn_top5: { trained: trained.top5, init: atInit.top5, raw_pixels: raw.top5 },
      steps: state.step,
      train_seconds: trainSeconds,
      total_seconds: totalSeconds,
    };
    record({ step: state.step, epoch: Math.floor(state.step / itersPerEpoch), ...summary });
    writeFileAtomic(join(c.outputDir, "summary.json"), new TextEncoder().encode(JSON.stringify(summary, null, 2)));
    console.log(`k-NN top-1 accuracy (${test.length} test images):`);
    console.log(`  DINO teacher, trained       ${trained.top1.toFixed(2)}%`);
    console.log(`  same network, at init       ${atInit.top1.toFixed(2)}%`);
    console.log(`  raw pixels                  ${raw.top1.toFixed(2)}%`);
    const ran = state.step - firstStep;
    console.log(
      ran > 0
        ? `${ran} steps in ${clock(trainSeconds)}, ${clock(totalSeconds)} with evaluation; checkpoint: ${ckptPath}`
        : `training was already complete (${state.step} steps in ${ckptPath}); use another --output-dir to train anew`,
    );
    return exitCode;
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    metrics.close();
    dispose(state);
    trainFull.dispose();
    testFull.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
