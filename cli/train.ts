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
 * deno task train --nproc-per-node 2 --batch-size 32  # 2 data-parallel processes (Gloo on CPU), global batch 64
 * ```
 *
 * Data-parallel runs: `--nproc-per-node N` starts N processes of this program
 * (`launch.ts`); a process started with torchrun's or SLURM's variables joins
 * their group. Every rank checks that its flags hash as rank 0's, starts from
 * rank 0's state, trains on its shard and averages gradients; rank 0 alone
 * writes the output folder and evaluates.
 * @module
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import {
  cudaAvailable,
  cudnnEnabled,
  type Device,
  dispose,
  exists,
  ProcessGroup,
  setNumThreads,
  TorchError,
} from "../mod.ts";
import {
  channelStats,
  checkReadable,
  type Dataset,
  firstImages,
  openDataset,
  skippedWarning,
  UnreadableDataError,
} from "../lib/data/mod.ts";
import { evaluateRun, knnAccuracy, linearProbe } from "../lib/eval/mod.ts";
import { type BackboneConfig, backboneConfig, isResNetConfig } from "../lib/model/mod.ts";
import { augmentConfig, networkConfig, resumeConflicts, type Settings } from "../lib/settings/mod.ts";
import { dinoHyper, divergence, initTrainState, trainLoop, type TrainState, turnsEvery } from "../lib/training/mod.ts";
import { loadCheckpoint, moveTree, startFrom } from "../lib/weights/mod.ts";
import {
  failure,
  flagOf,
  noTestSplit,
  parseTrainArgs,
  trainHelp,
  unlabelled,
  UsageError,
  warnLimits,
  weightsFile,
} from "./flags.ts";
import { Bar } from "./bar.ts";
import { clock, EpochLog } from "./progress.ts";
import { openOutput, prepareOutputDir } from "./run_folder.ts";
import {
  anyRank,
  broadcastNumbers,
  broadcastTree,
  gatherNumbers,
  ranksDiffering,
  type World,
  worldFromEnv,
} from "../lib/distributed/mod.ts";
import { launch, requireBackend, requireCentering, resolveBackend } from "./launch.ts";
import { main as runReport } from "./report.ts";
import { listenForStop } from "./stop.ts";

const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** Runs the training program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let s: Settings, world: World | undefined;
  try {
    const parsed = parseTrainArgs(args);
    if (parsed === "help") return help(args);
    s = parsed;
    world = worldFromEnv(Deno.env.toObject());
    // --nproc-per-node N: this process starts the N ranks (torchrun's convention) and waits for them.
    if (!world && s.nprocPerNode > 1) return await launch(args, s, s.device !== "cpu" && cudaAvailable());
  } catch (e) {
    return failure(e, "train");
  }
  using stop = listenForStop(); // SIGINT or SIGTERM: stop at the next step and save; a second one exits at once
  const dist = joinWorld(s, world); // one process: no group; several: joined, with the same flags on every rank
  if (typeof dist === "number") return dist;
  try {
    const run = await openRun(s, dist); // resume, open: everything is checked before anything is written
    if (typeof run === "number") return run;
    try {
      return await train(run, stop) ?? await report(run, stop); // the loop, then the final k-NN evaluation
    } catch (e) {
      if (!dist.group || !(e instanceof TorchError)) throw e;
      // A collective failed: a rank died or hung (named in the message). The last checkpoint is whole.
      const kept = exists(run.out.checkpoint)
        ? `the last checkpoint is kept at ${run.out.checkpoint}; rerun the same command to resume`
        : "no checkpoint was written";
      return failure(new Error(`training stopped: ${e.message}; ${kept}`), "train");
    } finally {
      run.close();
    }
  } finally {
    dist.group?.dispose();
  }
}

/** This process's place in the run: rank 0 of 1 without a group, or one rank of a data-parallel group. */
interface Dist {
  /** The group, when there are several processes. */
  group?: ProcessGroup;
  /** This process's rank. */
  rank: number;
  /** Its rank on this machine: the CUDA device it takes. */
  localRank: number;
  /** How many processes share each step. */
  worldSize: number;
}

/**
 * Joins the group `world` describes (none for one process) and checks that every rank was given the same flags:
 * rank 0 broadcasts the hash of its settings. Returns an exit code when that fails.
 */
function joinWorld(s: Settings, world: World | undefined): Dist | number {
  if (!world || world.worldSize === 1) return { rank: 0, localRank: world?.localRank ?? 0, worldSize: 1 };
  let group: ProcessGroup;
  try {
    requireCentering(s);
    const backend = resolveBackend(s, s.device !== "cpu" && cudaAvailable());
    requireBackend(backend, `WORLD_SIZE ${world.worldSize}`);
    group = ProcessGroup.join({
      backend,
      rank: world.rank,
      worldSize: world.worldSize,
      masterAddr: world.masterAddr,
      port: world.masterPort,
      timeoutSeconds: s.distTimeout,
    });
  } catch (e) {
    return failure(e, "train");
  }
  let differ: number[];
  try {
    differ = ranksDiffering(createHash("sha256").update(JSON.stringify(s)).digest("hex"), group);
  } catch (e) {
    group.dispose();
    return failure(e, "train");
  }
  if (differ.length > 0) {
    group.dispose();
    return usage(
      `${differ.length === 1 ? "rank" : "ranks"} ${differ.join(", ")} of ${world.worldSize} ` +
        `${differ.length === 1 ? "was" : "were"} started with ` +
        `other settings than rank 0 (their flags hash differently): start every rank with the same flags`,
    );
  }
  return { group, rank: world.rank, localRank: world.localRank, worldSize: world.worldSize };
}

/**
 * Every rank starts from rank 0's state (its weights broadcast); a rank that resumed from another step (it could
 * not see rank 0's checkpoint) is an error.
 */
function sameStart(state: TrainState, group: ProcessGroup, s: Settings): TrainState {
  const [step, counter] = broadcastNumbers([state.step, state.rng.counter], group);
  const steps = gatherNumbers(state.step === step && state.rng.counter === counter ? 0 : 1, group);
  const lost = steps.flatMap((v, r) => (v > 0 ? [r] : []));
  if (lost.length > 0) {
    throw new UsageError(
      `rank 0 starts at step ${step}, but ${lost.length === 1 ? "rank" : "ranks"} ${lost.join(", ")} ` +
        `could not see its checkpoint in ${s.outputDir}: every rank must read the same output folder (a shared disk)`,
    );
  }
  return broadcastTree(state, group);
}

/** An opened run: its settings, data, network, state and output folder. */
type Run = Awaited<ReturnType<typeof openRun>> & object;

async function openRun(s: Settings, dist: Dist) {
  let train: Dataset, test: Dataset, resumed: ReturnType<typeof resumption> | undefined;
  let created: ReturnType<typeof prepareOutputDir> | undefined;
  const { group } = dist, lead = dist.rank === 0; // rank 0 alone writes the output folder
  try {
    if (s.device === "cuda" && !cudaAvailable()) {
      return usage("--device cuda, but libtorch sees no CUDA device (see README: point DINO_PYTHON at a CUDA PyTorch)");
    }
    if (s.precision === "fp16" && (s.device === "cpu" || !cudaAvailable())) {
      return usage(
        "--precision fp16 needs a CUDA device: libtorch's CPU kernels have no float16 matrix products " +
          "(use --precision bf16 on the CPU, or fp16 with --device cuda on a CUDA machine)",
      );
    }
    resumed = resumption(s);
    if (s.initWeights && !resumed) weightsFile(flagOf("initWeights"), s.initWeights);
    created = lead ? prepareOutputDir(s.outputDir) : { undo() {} };
    train = openDataset(s.data, "train", { side: s.imageSize, maxImagePixels: s.maxImagePixels });
    test = openDataset(s.data, "test", { side: s.imageSize, maxImagePixels: s.maxImagePixels });
  } catch (e) {
    dispose(resumed?.state);
    created?.undo();
    return failure(e, "train");
  }
  const data = firstImages(train, s.trainLimit), queries = firstImages(test, s.testLimit);
  if (lead) warnLimits(train, test, s);
  // Each rank takes its shard of an epoch: the images over the ranks, padded to a multiple of their number.
  const itersPerEpoch = Math.floor(Math.ceil(data.length / dist.worldSize) / s.batchSize);
  const mismatch = itersPerEpoch === 0
    ? `--batch-size ${s.batchSize} is larger than the ${data.length} training images` +
      (dist.worldSize > 1 ? ` over ${dist.worldSize} processes` : "")
    : resumed && resumed.channels !== data.channels
    ? `${resumed.path} has ${resumed.channels}-channel inputs, the data ${data.channels}`
    : undefined;
  if (mismatch) {
    dispose(resumed?.state);
    train.dispose();
    test.dispose();
    created.undo();
    return usage(mismatch);
  }
  try {
    // A folder whose every file is unreadable would train on nothing: said before anything is written. The test
    // images are read by the k-NN evaluation, when there are labels.
    await checkReadable(data);
    if (data.labels !== undefined && queries.labels !== undefined) await checkReadable(queries);
  } catch (e) {
    dispose(resumed?.state);
    train.dispose();
    test.dispose();
    created.undo();
    if (e instanceof UnreadableDataError) return unreadable(e);
    throw e;
  }
  if (s.threads > 0) setNumThreads(s.threads);
  const cuda = s.device === "cuda" || (s.device === "auto" && cudaAvailable());
  const device: Device = cuda ? (dist.worldSize > 1 ? `cuda:${dist.localRank}` : "cuda") : "cpu"; // a GPU per rank
  const norm = s.preset.startsWith("imagenet-") && data.channels === 3 ? IMAGENET : await channelStats(data);
  const net = networkConfig(s, data.channels), hyper = dinoHyper({ ...s, itersPerEpoch, worldSize: dist.worldSize });
  let start = resumed?.state ?? initTrainState(net, hyper, s.seed), startedFrom;
  // A loss scaler is fp16's: a run resumed in another precision drops the saved one (fp16 starts one if none).
  if (start.scaler && s.precision !== "fp16") start = { ...start, scaler: undefined };
  if (!resumed && s.initWeights) {
    try {
      ({ state: start, from: startedFrom } = startFrom(start, s.initWeights));
    } catch (e) {
      dispose(start);
      train.dispose();
      test.dispose();
      created.undo();
      return usage(`${flagOf("initWeights")} ${e instanceof Error ? e.message : e}`);
    }
  }
  let state = moveTree(start, device);
  if (group) {
    try {
      state = sameStart(state, group, s);
    } catch (e) {
      dispose(state);
      train.dispose();
      test.dispose();
      created.undo();
      return failure(e, "train");
    }
  }
  const out = lead ? openOutput(s, norm, data.channels, resumed?.state.step, dist.worldSize) : silentOutput(s);
  // The evaluations read each split several times (the teacher, the network at init, raw pixels): each unreadable
  // file is told of once.
  const told = new Set<string>();
  const protocol = {
    train: data,
    test: queries,
    transform: { size: s.globalCropsSize, ...norm },
    k: s.knnK,
    temperature: s.knnTemperature,
    leaveOneOut: train.name === test.name, // no test split: each image is left out of its own neighbours
    onSkipped: (files: string[], why: string) => {
      const fresh = files.filter((f) => !told.has(f));
      fresh.forEach((f) => told.add(f));
      if (lead && fresh.length > 0) console.warn(skippedWarning(fresh, why, "in the evaluation"));
    },
  };
  const labelled = data.labels !== undefined && queries.labels !== undefined;
  if (lead && labelled && train.name === test.name) {
    console.warn(noTestSplit(s.data, "k-NN"));
  }
  if (lead) {
    console.log(
      describeRun(s, backboneConfig(net), data, itersPerEpoch, device, resumed ? state.step : undefined, group),
    );
  }
  if (lead && startedFrom) {
    console.log(
      `starting from ${s.initWeights}: ${startedFrom}${
        startedFrom === "backbones only" ? " (fresh heads)" : ""
      }; a fresh optimizer, center and schedules`,
    );
  } else if (lead && resumed && s.initWeights) {
    console.log(`resuming: ${flagOf("initWeights")} is not used (the checkpoint holds the networks)`);
  }
  const savedPrecision = resumed?.config.precision;
  if (lead && savedPrecision && savedPrecision !== s.precision) {
    console.warn(
      `warning: ${resumed!.path} was trained in ${savedPrecision}, this run goes on in ${s.precision}` +
        `${resumed!.state.scaler && s.precision !== "fp16" ? " (its fp16 loss scale is dropped)" : ""}: ` +
        `pass ${flagOf("precision")} ${savedPrecision} to keep it`,
    );
  }
  if (lead && s.globalCropsSize > data.size) {
    const folder = data.name.startsWith("folder:")
      ? `: raise ${flagOf("imageSize")}, the side a folder is read at`
      : "";
    console.warn(
      `warning: the global crops (${s.globalCropsSize} px) are larger than the images (${data.size} px), ` +
        `so every crop is enlarged${folder}`,
    );
  }
  if (lead && resumed && resumed.worldSize !== dist.worldSize) {
    console.warn(
      `warning: ${resumed.path} was trained by ${resumed.worldSize} process(es), this run has ${dist.worldSize}: ` +
        `from here the global batch (and with it the learning rate) and each process's share of an epoch change`,
    );
  }
  return {
    s,
    data,
    net,
    hyper,
    norm,
    device,
    out,
    protocol,
    labelled,
    state,
    group,
    lead,
    firstStep: state.step,
    started: performance.now(),
    close() {
      out.close();
      dispose(this.state);
      train.dispose();
      test.dispose();
    },
  };
}

/** Trains to the end (returns undefined) or stops: 1 when the loss diverged, 130 when interrupted (after saving). */
async function train(run: Run, stop: ReturnType<typeof listenForStop>): Promise<number | undefined> {
  const { s, hyper, out } = run;
  const perEpoch = hyper.itersPerEpoch, stopAt = s.maxSteps > 0 ? s.maxSteps : Infinity;
  const log = new EpochLog(s, perEpoch, out.record, { quiet: !run.lead });
  const augment = augmentConfig(s, run.norm);
  // What each epoch's batches held: an epoch whose every file was skipped had nothing to train on (files that
  // became unreadable after checkReadable passed at the start).
  let read = 0, skipped = 0, firstError = "";
  const turn = turnsEvery(250); // for a pending signal to be delivered
  const data: Dataset = {
    ...run.data,
    async load(indices) {
      const b = await run.data.load(indices);
      read += b.images.shape[0];
      skipped += b.failed.length;
      firstError ||= b.firstError;
      return b;
    },
  };
  for await (const e of trainLoop(run.state, { ...run, data, augment, seed: s.seed, stopAt, augmentOn: s.augmentOn })) {
    run.state = e.state;
    const step = e.state.step;
    // Every rank stops when one had nothing to train on (each rank's steps were skipped with it): the others would
    // wait for it at their next collective.
    const none = e.type === "epoch" && read === 0 && skipped > 0;
    if (e.type === "epoch" && (run.group ? anyRank(none, run.group) : none)) {
      log.finish();
      return unreadable(
        new UnreadableDataError(
          none
            ? `every one of the ${skipped} images of epoch ${e.epoch + 1} was unreadable`
            : `another process could read none of its images of epoch ${e.epoch + 1}`,
          firstError,
        ),
        exists(out.checkpoint) ? `the checkpoint at step ${step} is kept` : "no checkpoint was written",
      );
    }
    if (e.type === "epoch") read = skipped = 0;
    if (e.type === "step") {
      if (run.group && launcherGone()) stop.adopt(143);
      const why = divergence(e.metrics);
      if (why) return diverged(why, step, e.epoch, out.checkpoint, log);
      log.step(e.epoch, step, e.metrics, Math.min(stopAt, hyper.epochs * perEpoch) - step, e.images);
      await turn();
      // Every rank stops at the same step, when any of them was asked to (or its launcher died).
      if (run.group) stop.adopt(gatherNumbers(stop.code, run.group).find((c) => c !== 0) ?? 0);
      if (stop.code) break;
      continue;
    }
    log.end(e.epoch, step % perEpoch === 0);
    out.save(e.state, e.completed, step % perEpoch === 0);
    if (
      run.labelled && step % perEpoch === 0 && s.knnEvery > 0 && e.completed > 0 && e.completed % s.knnEvery === 0
    ) {
      try {
        const r = await knnAccuracy(e.state.teacher.backbone, backboneConfig(run.net), {
          ...run.protocol,
          signal: stop.signal,
        });
        if (run.lead) console.log(`epoch ${e.completed}: k-NN top-1 ${r.top1.toFixed(2)}%`);
        out.record({ step, epoch: e.completed, knn_top1: r.top1, knn_top5: r.top5 });
        if (run.lead && s.report) await writeRunReport(s.outputDir);
      } catch (err) {
        if (!stop.code) throw err;
        break;
      }
    }
  }
  if (!stop.code) return undefined;
  const step = run.state.step;
  log.finish();
  out.save(run.state, Math.floor(step / perEpoch), step % perEpoch === 0);
  if (run.lead) {
    console.log(`interrupted: checkpoint saved at step ${step} to ${out.checkpoint}; rerun the same command to resume`);
  }
  return stop.code;
}

/** The final evaluation: the trained teacher, the same network at initialisation, raw pixels. */
async function report(run: Run, stop: ReturnType<typeof listenForStop>): Promise<number> {
  const { s, out, protocol, state } = run;
  if (!run.lead) return 0; // rank 0 evaluates and reports
  const trainSeconds = (performance.now() - run.started) / 1000;
  if (!run.labelled) {
    console.log(
      `k-NN evaluation skipped: ${unlabelled(run.data, protocol.test)}. Checkpoint: ${out.checkpoint}`,
    );
    if (s.report) await writeRunReport(s.outputDir);
    return 0;
  }
  console.log(
    `evaluating: weighted k-NN (k ${s.knnK}, T ${s.knnTemperature}) on ${protocol.test.length} test images, ` +
      `memory of ${protocol.train.length}`,
  );
  let r;
  // Three passes (the trained teacher, the network at init, raw pixels) over both splits.
  const bar = new Bar("k-NN", 3 * (protocol.train.length + protocol.test.length), { unit: "image" });
  try {
    r = await evaluateRun(state.teacher.backbone, {
      ...protocol,
      net: run.net,
      seed: s.seed,
      signal: stop.signal,
      onProgress: (n) => bar.tick(n),
    });
  } catch (e) {
    if (!stop.code) throw e;
    console.log(`interrupted during the evaluation; the checkpoint at step ${state.step} is kept at ${out.checkpoint}`);
    return stop.code;
  } finally {
    bar.finish();
  }
  let linear;
  if (s.evalLinear) {
    console.log(`evaluating: linear probe on cached features (official eval_linear.py recipe, 100 epochs)`);
    const began = performance.now();
    try {
      const p = await linearProbe(state.teacher.backbone, backboneConfig(run.net), {
        ...protocol,
        seed: s.seed,
        signal: stop.signal,
      });
      linear = { ...p, seconds: (performance.now() - began) / 1000 };
    } catch (e) {
      if (!stop.code) throw e;
      console.log(
        `interrupted during the evaluation; the checkpoint at step ${state.step} is kept at ${out.checkpoint}`,
      );
      return stop.code;
    }
  }
  const totalSeconds = (performance.now() - run.started) / 1000;
  out.summary(state.step, Math.floor(state.step / run.hyper.itersPerEpoch), r, trainSeconds, totalSeconds, linear);
  if (s.report) await writeRunReport(s.outputDir);
  console.log(`k-NN top-1 accuracy (${r.trained.images} test images):`);
  console.log(`  DINO teacher, trained       ${r.trained.top1.toFixed(2)}%`);
  console.log(`  same network, at init       ${r.init.top1.toFixed(2)}%`);
  console.log(`  raw pixels                  ${r.rawPixels.top1.toFixed(2)}%`);
  if (linear) {
    console.log(
      `linear probe top-1 ${linear.top1.toFixed(2)}% (top-5 ${linear.top5.toFixed(2)}%, best epoch ${
        linear.bestEpoch + 1
      }, ${clock(linear.seconds)})`,
    );
  }
  const ran = state.step - run.firstStep;
  console.log(
    ran > 0
      ? `${ran} steps in ${clock(trainSeconds)}, ${clock(totalSeconds)} with evaluation; checkpoint: ${out.checkpoint}`
      : `training was already complete (${state.step} steps in ${out.checkpoint}); use another --output-dir to train anew`,
  );
  return 0;
}

/** report.html of the run so far (`deno task report`); a report that cannot be made is a warning, not a failed run. */
async function writeRunReport(dir: string): Promise<void> {
  const code = await runReport(["--run", dir]);
  if (code !== 0) console.warn(`warning: report.html was not written; deno task report --run ${dir} says why`);
}

/** Every image read was unreadable: a one-line error naming the fix (exit code 1). */
function unreadable(e: UnreadableDataError, kept = "nothing was written"): number {
  return failure(
    new Error(
      `${e.message}; ${kept}. The data must be images the shim reads (JPEG, PNG, BMP, PPM or PGM): ` +
        `fix or remove the unreadable files, or point ${flagOf("data")} at other data`,
    ),
    "train",
  );
}

function usage(message: string): number {
  return failure(new UsageError(message), "train");
}

function help(args: string[]): number {
  const i = args.indexOf("--preset");
  console.log(trainHelp(i >= 0 && args[i + 1] ? args[i + 1] : "fmnist"));
  return 0;
}

/** The checkpoint to resume from, if any, checked against the settings (throws a usage error naming the fix). */
function resumption(s: Settings): (ReturnType<typeof loadCheckpoint> & { path: string }) | undefined {
  const own = join(s.outputDir, "checkpoint.safetensors");
  const path = s.resume === "latest" ? own : s.resume || (exists(own) ? own : "");
  if (!path) return undefined;
  if (!exists(path)) throw new UsageError(`--resume ${s.resume}: no checkpoint at ${path}`);
  let loaded;
  try {
    loaded = { ...loadCheckpoint(path), path };
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const conflicts = resumeConflicts(loaded.config, s);
  if (conflicts.length > 0) {
    dispose(loaded.state);
    throw new UsageError(
      `${path} was trained with different settings (${
        conflicts.map((c) => `${c.name}: ${JSON.stringify(c.saved)} there, ${JSON.stringify(c.now)} now`).join("; ")
      }). ${
        path === own
          ? "Use another --output-dir to start a new run."
          : "Resume it with the settings it was started with, or leave out --resume to start a new run."
      }`,
    );
  }
  return loaded;
}

/**
 * Whether this rank was started by `--nproc-per-node`'s launcher and the launcher is gone (killed: no one forwards
 * signals or reads the output any more): the ranks then stop as on SIGTERM, rank 0 saving, instead of running on
 * unwatched. The output, whose pipes now lead nowhere, is dropped.
 */
function launcherGone(): boolean {
  const launcher = Number(Deno.env.get("DINO_LAUNCHER_PID") ?? 0);
  if (!launcher || Deno.ppid === launcher) return false;
  Deno.env.delete("DINO_LAUNCHER_PID");
  console.log = console.warn = console.error = () => {};
  return true;
}

/** The output folder as ranks other than 0 see it: they write nothing. */
function silentOutput(s: Settings): ReturnType<typeof openOutput> {
  return {
    checkpoint: join(s.outputDir, "checkpoint.safetensors"),
    record: () => 0,
    save() {},
    summary() {},
    close() {},
  };
}

function describeRun(
  s: Settings,
  vit: BackboneConfig,
  data: Dataset,
  itersPerEpoch: number,
  device: Device,
  resumingAt: number | undefined,
  group?: ProcessGroup,
): string {
  const backbone = isResNetConfig(vit)
    ? `${vit.arch} (${vit.embedDim}-d pooled features, batch norm in student and teacher)`
    : `${s.arch}-like ViT (D ${vit.embedDim}, depth ${vit.depth}, patch ${vit.patchSize})`;
  return `DINO ${s.preset}: ${backbone}, ` +
    `K ${s.outDim}, ${data.name} (${data.length} images), ${s.epochs} epoch(s) x ${itersPerEpoch} steps, ` +
    `batch ${s.batchSize}, 2 x ${s.globalCropsSize} + ${s.localCropsNumber} x ${s.localCropsSize} px crops, ` +
    `${s.precision}, ${device}` +
    (device === "cuda" && !cudnnEnabled()
      ? ` (cuDNN off${Deno.env.get("DINO_CUDNN") === "0" ? "" : ": start with LD_PRELOAD=libstdc++.so.6 to use it"})`
      : "") +
    (group
      ? ` per process; ${group.worldSize} processes (${group.backend}), global batch ${s.batchSize * group.worldSize}`
      : "") +
    (resumingAt !== undefined ? `, resuming at step ${resumingAt}` : "");
}

function diverged(why: string, step: number, epoch: number, checkpoint: string, log: EpochLog): number {
  log.finish();
  console.error(
    `error: ${why} at step ${step} (epoch ${epoch + 1}); stopping. ` +
      (exists(checkpoint) ? `The last good checkpoint is kept at ${checkpoint}. ` : "No checkpoint was written. ") +
      `Try a lower ${flagOf("lr")}, a ${flagOf("clipGrad")}, or a longer ${flagOf("warmupEpochs")}.`,
  );
  return 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
