/**
 * Training checkpoints as one safetensors file: `student.<official key>`,
 * `teacher.<official key>`, `center`, the optimizer's state
 * (`optimizer.exp_avg.<key>`, `optimizer.exp_avg_sq.<key>`,
 * `optimizer.momentum_buffer.<key>` or LARS's `optimizer.mu.<key>`), and in the metadata the step, epoch,
 * random stream, per-parameter optimizer steps, the full configuration and, with fp16, the loss scaler (`fp16_scaler`,
 * GradScaler's `state_dict()` as JSON, the official checkpoint's key).
 * Stripping `teacher.` gives the keys of the official
 * `MultiCropWrapper(vit, DINOHead)`. Written atomically.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose } from "../../mod.ts";
 * import { CHECKPOINT_FORMAT, saveCheckpoint } from "./checkpoint.ts";
 * import { makeSettings, networkConfig } from "../settings/mod.ts";
 * import { readSafetensors } from "./safetensors.ts";
 * import { dinoHyper, initTrainState } from "../training/step.ts";
 * const config = makeSettings("fmnist", { depth: 1 });
 * const state = initTrainState(networkConfig(config, 1), dinoHyper(), 0);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveCheckpoint(path, state, { config, channels: 1, epoch: 1, normalization: { mean: [0.5], std: [0.5] } });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.equal(metadata.format, CHECKPOINT_FORMAT);
 * assert.ok("student.backbone.cls_token" in tensors && "teacher.head.last_layer.weight_v" in tensors);
 * assert.ok("center" in tensors && "optimizer.exp_avg.backbone.cls_token" in tensors);
 * dispose([state, tensors]);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { alias, dispose, type Tensor } from "../../ffi/mod.ts";
import { networkConfig } from "../settings/derive.ts";
import { PRESETS, presetSettings } from "../settings/presets.ts";
import { validateSettings } from "../settings/validate.ts";
import { SettingError, type Settings, shown } from "../settings/settings.ts";
import type { AdamWState, LARSState, SGDState } from "../training/optim.ts";
import type { LossScalerState } from "../training/scaler.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { dinoHyper, initTrainState, type TrainState } from "../training/step.ts";
import { type Flat, loadStateDict, stateDict } from "./tree.ts";
import { isResNetArch, RESNET_ARCHS, type ResNetArch } from "../model/resnet.ts";

/** The tensors of each optimizer's state, under `optimizer.<part>.<key>`. */
const OPTIMIZER_PARTS = { adamw: ["exp_avg", "exp_avg_sq"], sgd: ["momentum_buffer"], lars: ["mu"] } as const;

/** The checkpoint format's name, in the metadata. */
export const CHECKPOINT_FORMAT = "dino-deno-checkpoint/1";

/** What a checkpoint holds besides the state. */
export interface CheckpointInfo {
  /** The run's configuration. */
  config: Settings;
  /** Image channels of the data. */
  channels: number;
  /** Epochs completed when saved. */
  epoch: number;
  /** The input normalisation the run used. */
  normalization: { mean: number[]; std: number[] };
  /** Processes that trained it, data-parallel (1 when absent). */
  worldSize?: number;
}

/**
 * Writes a checkpoint atomically.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose } from "../../mod.ts";
 * import { saveCheckpoint } from "./checkpoint.ts";
 * import { makeSettings, networkConfig } from "../settings/mod.ts";
 * import { readSafetensors } from "./safetensors.ts";
 * import { dinoHyper, initTrainState } from "../training/step.ts";
 * const config = makeSettings("fmnist", { depth: 1 });
 * const state = initTrainState(networkConfig(config, 1), dinoHyper(), 0);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveCheckpoint(path, state, { config, channels: 1, epoch: 3, normalization: { mean: [0.286], std: [0.353] } });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.deepEqual([metadata.epoch, metadata.step, metadata.channels], ["3", "0", "1"]);
 * dispose([state, tensors]);
 * Deno.removeSync(path);
 * ```
 */
export function saveCheckpoint(path: string, state: TrainState, info: CheckpointInfo): void {
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(stateDict(state.student))) tensors[`student.${k}`] = v;
  for (const [k, v] of Object.entries(stateDict(state.teacher))) tensors[`teacher.${k}`] = v;
  tensors.center = state.center;
  const opt = state.optimizer as Partial<AdamWState & SGDState & LARSState>;
  for (const part of ["exp_avg", "exp_avg_sq", "momentum_buffer", "mu"] as const) {
    for (const [k, v] of Object.entries(opt[part] ?? {})) tensors[`optimizer.${part}.${k}`] = v;
  }
  // The check that loading makes, made before writing: a config that does not describe the state would make a file
  // that no load accepts.
  try {
    checkAgainstTensors(info.config, info.channels, tensors);
  } catch (e) {
    throw new Error(`saveCheckpoint: the config does not describe the state: ${e instanceof Error ? e.message : e}`);
  }
  writeSafetensors(path, tensors, {
    format: CHECKPOINT_FORMAT,
    step: String(state.step),
    epoch: String(info.epoch),
    rng: JSON.stringify(state.rng),
    optimizer: info.config.optimizer,
    optimizer_steps: JSON.stringify(opt.step ?? {}),
    channels: String(info.channels),
    normalization: JSON.stringify(info.normalization),
    world_size: String(info.worldSize ?? 1),
    config: JSON.stringify(info.config),
    ...(state.scaler && { fp16_scaler: JSON.stringify(state.scaler) }),
  });
}

function prefixed(flat: Flat, prefix: string): Flat {
  return Object.fromEntries(
    Object.entries(flat).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]),
  );
}

/**
 * Reads a checkpoint back into a training state, checking every key and shape.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, toArray } from "../../mod.ts";
 * import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
 * import { makeSettings, networkConfig } from "../settings/mod.ts";
 * import { dinoHyper, initTrainState } from "../training/step.ts";
 * const config = makeSettings("fmnist", { depth: 1 });
 * const saved = initTrainState(networkConfig(config, 1), dinoHyper(), 0);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveCheckpoint(path, saved, { config, channels: 1, epoch: 2, normalization: { mean: [0.5], std: [0.5] } });
 * const { state, epoch, normalization } = loadCheckpoint(path);
 * assert.deepEqual([epoch, normalization.mean, state.step], [2, [0.5], 0]);
 * assert.deepEqual(toArray(state.teacher.head.last_layer.weight_v), toArray(saved.teacher.head.last_layer.weight_v));
 * dispose([saved, state]);
 * Deno.removeSync(path);
 * ```
 */
export function loadCheckpoint(path: string): CheckpointInfo & { state: TrainState } {
  const { tensors, metadata } = readSafetensors(path);
  const made: Tensor[] = []; // what this load has made so far: freed if it fails
  try {
    if (metadata.format !== CHECKPOINT_FORMAT) {
      throw new Error(`not a training checkpoint of this project (format ${shown(metadata.format ?? null)})`);
    }
    // Every number that sizes an allocation is checked, against bounds and against the tensors, before any is made.
    const config = savedSettings(metadata.config);
    const channels = wholeNumber(metadata, "channels", 1, 16);
    checkAgainstTensors(config, channels, tensors);
    const step = wholeNumber(metadata, "step", 0, Number.MAX_SAFE_INTEGER);
    const epoch = wholeNumber(metadata, "epoch", 0, Number.MAX_SAFE_INTEGER);
    const worldSize = metadata.world_size === undefined ? 1 : wholeNumber(metadata, "world_size", 1, 1 << 20);
    const rng = parsed(metadata, "rng", (v) => {
      const r = v as TrainState["rng"];
      return Number.isSafeInteger(r?.seed) && Number.isSafeInteger(r?.counter) && r.counter >= 0 ? r : undefined;
    }, '{"seed": integer, "counter": integer >= 0}');
    const normalization = parsed(metadata, "normalization", (v) => {
      const n = v as CheckpointInfo["normalization"];
      const ok = (xs: unknown, positive: boolean) =>
        Array.isArray(xs) && xs.length === channels &&
        xs.every((x) => typeof x === "number" && Number.isFinite(x) && (!positive || x > 0));
      return ok(n?.mean, false) && ok(n?.std, true) ? n : undefined;
    }, `{"mean": [${channels} numbers], "std": [${channels} positive numbers]}`);
    const optimizerSteps = config.optimizer === "adamw"
      ? parsed(metadata, "optimizer_steps", (v) => {
        const steps = v as Record<string, number>;
        const fine = typeof steps === "object" && steps !== null && !Array.isArray(steps) &&
          Object.values(steps).every((n) => Number.isSafeInteger(n) && n >= 0);
        return fine ? steps : undefined;
      }, "an object of per-parameter step counts")
      : undefined;
    const scaler = metadata.fp16_scaler === undefined ? undefined : parsed(metadata, "fp16_scaler", (v) => {
      const s = v as LossScalerState;
      const fine = typeof s === "object" && s !== null && s.scale > 0 && Number.isFinite(s.scale) &&
        s.growth_factor > 1 && Number.isFinite(s.growth_factor) && s.backoff_factor > 0 && s.backoff_factor < 1 &&
        Number.isSafeInteger(s.growth_interval) && s.growth_interval > 0 &&
        Number.isSafeInteger(s._growth_tracker) && s._growth_tracker >= 0;
      return fine
        ? {
          scale: s.scale,
          growth_factor: s.growth_factor,
          backoff_factor: s.backoff_factor,
          growth_interval: s.growth_interval,
          _growth_tracker: s._growth_tracker,
        }
        : undefined;
    }, "GradScaler's state_dict (scale, growth_factor, backoff_factor, growth_interval, _growth_tracker)");

    const net = networkConfig(config, channels);
    const template = initTrainState(net, dinoHyper(config), 0);
    try {
      const keep = (t: Tensor | undefined): Tensor => {
        if (!t) throw new Error("it lacks a tensor it needs (center or optimizer state)");
        const a = alias(t);
        made.push(a);
        return a;
      };
      const student = loadStateDict(template.student, prefixed(tensors, "student."));
      made.push(...Object.values(stateDict(student)));
      const teacher = loadStateDict(template.teacher, prefixed(tensors, "teacher."));
      made.push(...Object.values(stateDict(teacher)));
      const optimizer: Record<string, Flat | Record<string, number>> = {};
      for (const part of OPTIMIZER_PARTS[config.optimizer]) {
        const flat = prefixed(tensors, `optimizer.${part}.`);
        const like = stateDict((template.optimizer as unknown as Record<string, Flat>)[part]);
        const expected = Object.keys(like);
        const missing = expected.filter((k) => !(k in flat));
        if (missing.length > 0) throw new Error(`optimizer.${part} lacks ${missing.slice(0, 3).join(", ")}`);
        const unexpected = Object.keys(flat).filter((k) => !expected.includes(k));
        if (unexpected.length > 0) {
          throw new Error(`optimizer.${part} has unexpected ${unexpected.slice(0, 3).join(", ")}`);
        }
        for (const k of expected) {
          if (flat[k].shape.join() !== like[k].shape.join()) {
            throw new Error(`optimizer.${part}.${k} has shape [${flat[k].shape}], not [${like[k].shape}]`);
          }
        }
        optimizer[part] = Object.fromEntries(expected.map((k) => [k, keep(flat[k])]));
      }
      if (optimizerSteps) {
        const counted = Object.keys(stateDict((template.optimizer as unknown as Record<string, Flat>).exp_avg));
        const uncounted = counted.filter((k) => !(k in optimizerSteps));
        if (uncounted.length > 0) {
          throw new Error(`its metadata field optimizer_steps lacks ${uncounted.slice(0, 3).join(", ")}`);
        }
        optimizer.step = optimizerSteps;
      }
      const state: TrainState = {
        student,
        teacher,
        optimizer: optimizer as unknown as AdamWState | SGDState | LARSState,
        center: keep(tensors.center),
        step,
        rng,
        ...((scaler ?? template.scaler) && { scaler: scaler ?? template.scaler }),
      };
      if (state.center.shape.join() !== `1,${config.outDim}`) {
        throw new Error(`center has shape [${state.center.shape}], not [1, ${config.outDim}]`);
      }
      return { state, config, channels, epoch, normalization, worldSize };
    } finally {
      dispose(template);
    }
  } catch (e) {
    dispose(made);
    const message = e instanceof SettingError ? e.render((n) => `config.${n}`) : e instanceof Error ? e.message : e;
    throw new Error(`cannot load checkpoint ${path}: ${String(message).replace(/\s*\n\s*/g, "; ")}`);
  } finally {
    dispose(tensors);
  }
}

/** The saved settings, completed with their preset's values for settings added since, and validated. */
function savedSettings(text: string | undefined): Settings {
  let saved: unknown;
  try {
    saved = JSON.parse(text ?? "");
  } catch {
    throw new Error("its metadata field config is not JSON");
  }
  if (typeof saved !== "object" || saved === null || Array.isArray(saved)) {
    throw new Error("its metadata field config is not a JSON object");
  }
  const preset = (saved as { preset?: unknown }).preset;
  if (typeof preset !== "string" || !(preset in PRESETS)) {
    throw new Error(`config.preset is ${shown(preset)}, not one of ${Object.keys(PRESETS).join(", ")}`);
  }
  return validateSettings({ ...presetSettings(preset), ...saved } as Settings);
}

/** A metadata field holding a whole number within [lo, hi]. */
function wholeNumber(metadata: Record<string, string>, field: string, lo: number, hi: number): number {
  const text = metadata[field];
  const v = /^\d+$/.test(text ?? "") ? Number(text) : NaN;
  if (!(v >= lo && v <= hi)) {
    throw new Error(
      `its metadata field ${field} is ${shown(text ?? null)}, not a whole number in [${lo}, ${hi}]`,
    );
  }
  return v;
}

/** A JSON metadata field that `accept` takes (returning it), described as `expected` when it does not. */
function parsed<T>(
  metadata: Record<string, string>,
  field: string,
  accept: (value: unknown) => T | undefined,
  expected: string,
): T {
  let value: unknown;
  try {
    value = JSON.parse(metadata[field] ?? "");
  } catch {
    value = undefined;
  }
  const v = accept(value);
  if (v === undefined) {
    throw new Error(`its metadata field ${field} is ${shown(metadata[field] ?? null)}, not ${expected}`);
  }
  return v;
}

/** The config's sizes against the saved teacher's tensors, so a crafted config cannot size what is built. */
function checkAgainstTensors(c: Settings, channels: number, tensors: Flat): void {
  const shape = (key: string) => {
    const t = tensors[key];
    if (!t) throw new Error(`it lacks the tensor ${key}`);
    return t.shape;
  };
  if (isResNetArch(c.arch)) return checkResNet(c, c.arch, channels, tensors, shape);
  const [D, C, p] = shape("teacher.backbone.patch_embed.proj.weight");
  const tokens = shape("teacher.backbone.pos_embed")[1];
  let depth = 0;
  while (`teacher.backbone.blocks.${depth}.norm1.weight` in tensors) depth++;
  const [K, bottleneck] = shape("teacher.head.last_layer.weight_v");
  const hidden = shape("teacher.head.mlp.0.weight")[0];
  const found: [string, number, number][] = [
    ["embedDim", c.embedDim, D],
    ["hiddenDim", c.hiddenDim, hidden],
    ["bottleneckDim", c.bottleneckDim, bottleneck],
    ["patchSize", c.patchSize, p],
    ["depth", c.depth, depth],
    ["outDim", c.outDim, K],
    ["globalCropsSize", (c.globalCropsSize / c.patchSize) ** 2 + 1, tokens],
  ];
  for (const [field, said, held] of found) {
    if (said !== held) {
      const what = field === "globalCropsSize" ? `${said} tokens (config.globalCropsSize ${c.globalCropsSize})` : said;
      throw new Error(`config.${field} says ${what}, but the tensors hold ${held}`);
    }
  }
  if (C !== channels) throw new Error(`its metadata says ${channels} channels, but the tensors hold ${C}`);
}

/** A ResNet's checkpoint: its shape is its name (blocks per stage, block type), the channels and the head's widths. */
function checkResNet(
  c: Settings,
  arch: ResNetArch,
  channels: number,
  tensors: Flat,
  shape: (key: string) => readonly number[],
): void {
  const { block, layers } = RESNET_ARCHS[arch];
  const blocks = [1, 2, 3, 4].map((stage) => {
    let n = 0;
    while (`teacher.backbone.layer${stage}.${n}.conv1.weight` in tensors) n++;
    return n;
  });
  const bottleneck = "teacher.backbone.layer1.0.conv3.weight" in tensors;
  if (blocks.join() !== layers.join() || bottleneck !== (block === "bottleneck")) {
    throw new Error(
      `config.arch says ${arch}, but the tensors hold a ResNet of ${bottleneck ? "bottleneck" : "basic"} blocks ` +
        `[${blocks}] per stage`,
    );
  }
  const C = shape("teacher.backbone.conv1.weight")[1];
  const [K, bottleneckDim] = shape("teacher.head.last_layer.weight_v");
  const hidden = shape("teacher.head.mlp.0.weight")[0];
  const found: [string, number, number][] = [
    ["hiddenDim", c.hiddenDim, hidden],
    ["bottleneckDim", c.bottleneckDim, bottleneckDim],
    ["outDim", c.outDim, K],
  ];
  for (const [field, said, held] of found) {
    if (said !== held) throw new Error(`config.${field} says ${said}, but the tensors hold ${held}`);
  }
  if (C !== channels) throw new Error(`its metadata says ${channels} channels, but the tensors hold ${C}`);
}
