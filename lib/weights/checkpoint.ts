/**
 * Training checkpoints as one safetensors file: `student.<official key>`,
 * `teacher.<official key>`, `center`, the optimizer's state
 * (`optimizer.exp_avg.<key>`, `optimizer.exp_avg_sq.<key>` or
 * `optimizer.momentum_buffer.<key>`), and in the metadata the step, epoch,
 * random stream, per-parameter optimizer steps and the full configuration.
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
import { presetSettings } from "../settings/presets.ts";
import type { Settings } from "../settings/settings.ts";
import type { AdamWState, SGDState } from "../training/optim.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { dinoHyper, initTrainState, type TrainState } from "../training/step.ts";
import { type Flat, loadStateDict, stateDict } from "./tree.ts";

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
  const opt = state.optimizer as Partial<AdamWState & SGDState>;
  for (const part of ["exp_avg", "exp_avg_sq", "momentum_buffer"] as const) {
    for (const [k, v] of Object.entries(opt[part] ?? {})) tensors[`optimizer.${part}.${k}`] = v;
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
    config: JSON.stringify(info.config),
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
 * assert.deepEqual(toArray(state.teacher.backbone.cls_token), toArray(saved.teacher.backbone.cls_token));
 * dispose([saved, state]);
 * Deno.removeSync(path);
 * ```
 */
export function loadCheckpoint(path: string): CheckpointInfo & { state: TrainState } {
  const { tensors, metadata } = readSafetensors(path);
  try {
    if (metadata.format !== CHECKPOINT_FORMAT) {
      throw new Error(`${path} is not a training checkpoint of this project (format "${metadata.format ?? "none"}")`);
    }
    const saved = JSON.parse(metadata.config) as Settings;
    // Settings added since the checkpoint was written take their preset's value.
    const config: Settings = { ...presetSettings(saved.preset), ...saved };
    const channels = Number(metadata.channels);
    const template = initTrainState(networkConfig(config, channels), dinoHyper(config), 0);
    try {
      const student = loadStateDict(template.student, prefixed(tensors, "student."));
      const teacher = loadStateDict(template.teacher, prefixed(tensors, "teacher."));
      const optimizer = config.optimizer === "sgd"
        ? { momentum_buffer: prefixed(tensors, "optimizer.momentum_buffer.") }
        : {
          exp_avg: prefixed(tensors, "optimizer.exp_avg."),
          exp_avg_sq: prefixed(tensors, "optimizer.exp_avg_sq."),
          step: JSON.parse(metadata.optimizer_steps ?? "{}"),
        };
      for (const part of Object.values(optimizer)) {
        for (const [k, v] of Object.entries(part)) {
          if (typeof v !== "number") (part as Flat)[k] = keepAlias(v as Tensor);
        }
      }
      const state: TrainState = {
        student,
        teacher,
        optimizer: optimizer as AdamWState | SGDState,
        center: keepAlias(tensors.center),
        step: Number(metadata.step),
        rng: JSON.parse(metadata.rng),
      };
      const normalization = JSON.parse(metadata.normalization ?? "null") ?? { mean: [0.5], std: [0.5] };
      return { state, config, channels, epoch: Number(metadata.epoch), normalization };
    } finally {
      dispose(template);
    }
  } catch (e) {
    throw new Error(`cannot resume from ${path}: ${e instanceof Error ? e.message : e}`);
  } finally {
    dispose(tensors);
  }
}

/** A new handle on a tensor the loaded file owns, so the file's handles can all be freed. */
function keepAlias(t: Tensor | undefined): Tensor {
  if (!t) throw new Error("the checkpoint lacks a tensor it needs (center or optimizer state)");
  return alias(t);
}
