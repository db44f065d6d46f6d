/**
 * A backbone to evaluate or embed with, from this project's checkpoints (the
 * teacher, with the run's normalisation) or from official-layout weights
 * without metadata (full `teacher.`/`module.`/`backbone.` keys or bare
 * backbone keys). For the latter the embedding width, depth, patch size,
 * channels and image size come from the weights' shapes; the heads from
 * `arch`. ResNets (torchvision's layout: `conv1.weight`, `layer1.0.conv1.weight`,
 * ...) are told by their keys: the depth and block type from the weights,
 * `fc.*` dropped as the official code replaces `fc` by identity.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { saveWeights } from "./weights.ts";
 * import { loadEvalBackbone } from "./pretrained.ts";
 * using g = new Generator(0);
 * const released = initViT(vitConfig("vit_tiny", { depth: 2, patchSize: 16 }), g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveWeights(path, released); // bare backbone keys and no metadata, as the released dino_vits16 weights
 * const { backbone, vit, source } = loadEvalBackbone(path, { arch: "vit_tiny", patchSize: 16 });
 * assert.deepEqual([source, vit?.depth, vit?.embedDim, vit?.imgSize], ["weights", 2, 192, 224]);
 * dispose([released, backbone]);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { dispose, type Tensor } from "../../ffi/mod.ts";
import type { DinoParams } from "../model/dino.ts";
import type { TrainState } from "../training/step.ts";
import { type Flat, loadStateDict, stateDict } from "./tree.ts";
import { CHECKPOINT_FORMAT, loadCheckpoint } from "./checkpoint.ts";
import { networkConfig } from "../settings/derive.ts";
import { SettingError } from "../settings/settings.ts";
import { asFloat32, networkGroups, readWeights, selectNetwork } from "./read.ts";
import { type Arch, ARCHS, type ViTConfig, vitConfig, type ViTParams } from "../model/vit.ts";
import {
  isResNetArch,
  RESNET_ARCHS,
  type ResNetArch,
  type ResNetConfig,
  resnetConfig,
  type ResNetParams,
} from "../model/resnet.ts";
import type { BackboneArch } from "../model/backbone.ts";
import { backboneTensors, fitBackbone } from "./weights.ts";

/** What every backbone ready for feature extraction has. */
export interface EvalBackboneBase {
  /** The side of the images the weights were trained on: a ViT's `imgSize`, a run's global crops, else 224. */
  imageSize: number;
  /** The normalisation the weights were trained with, when the file says. */
  normalization?: { mean: number[]; std: number[] };
  /** "checkpoint" (this project's, the teacher) or "weights" (official layout). */
  source: "checkpoint" | "weights";
}

/** A ViT ready for feature extraction. */
export interface ViTEvalBackbone extends EvalBackboneBase {
  /** The backbone's parameters (the teacher's, for a checkpoint). */
  backbone: ViTParams;
  /** Its shape. */
  vit: ViTConfig;
  /** None: a ViT. */
  resnet?: undefined;
}

/** A ResNet ready for feature extraction. */
export interface ResNetEvalBackbone extends EvalBackboneBase {
  /** The backbone's parameters and batch-norm buffers (the teacher's, for a checkpoint). */
  backbone: ResNetParams;
  /** None: a ResNet. */
  vit?: undefined;
  /** Its shape. */
  resnet: ResNetConfig;
}

/** A backbone ready for feature extraction: a ViT or a ResNet. */
export type EvalBackbone = ViTEvalBackbone | ResNetEvalBackbone;

/**
 * The backbone, which must be a ViT for `purpose` (attention maps, patch tokens): a ResNet is an error naming it.
 * The ResNet's tensors are the caller's to free either way.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initResNet, resnetConfig } from "../model/resnet.ts";
 * import { requireViT } from "./pretrained.ts";
 * using g = new Generator(0);
 * const resnet = resnetConfig("resnet18");
 * const b = { backbone: initResNet(resnet, g), resnet, imageSize: 224, source: "weights" as const };
 * assert.throws(() => requireViT(b, "attention maps"), /attention maps need a ViT; this is a resnet18/);
 * dispose(b.backbone);
 * ```
 */
export function requireViT(b: EvalBackbone, purpose: string): ViTEvalBackbone {
  if (b.resnet) throw new Error(`${purpose} need a ViT; this is a ${b.resnet.arch}`);
  return b;
}

/**
 * Loads the backbone of a checkpoint or weights file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose } from "../../mod.ts";
 * import { saveCheckpoint } from "./checkpoint.ts";
 * import { makeSettings, networkConfig } from "../settings/mod.ts";
 * import { dinoHyper, initTrainState } from "../training/step.ts";
 * import { loadEvalBackbone } from "./pretrained.ts";
 * const config = makeSettings("fmnist", { depth: 1 });
 * const state = initTrainState(networkConfig(config, 1), dinoHyper(), 0);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveCheckpoint(path, state, { config, channels: 1, epoch: 1, normalization: { mean: [0.286], std: [0.353] } });
 * const b = loadEvalBackbone(path); // a checkpoint: the teacher, shape and normalisation from the metadata
 * assert.deepEqual([b.source, b.vit?.patchSize, b.normalization?.mean], ["checkpoint", 7, [0.286]]);
 * dispose([state, b.backbone]);
 * Deno.removeSync(path);
 * ```
 */
export function loadEvalBackbone(
  path: string,
  o: { arch?: BackboneArch; patchSize?: number; checkpointKey?: string } = {},
): EvalBackbone {
  // Only the chosen network is made: a full checkpoint's optimizer state and other network are skipped.
  const key = o.checkpointKey ?? "teacher";
  const other = key === "student" ? "teacher." : key === "teacher" ? "student." : undefined;
  let otherKeys = 0;
  const { tensors, metadata, format } = readWeights(path, {
    select: (k) => {
      if (other && k.startsWith(other)) {
        otherKeys++;
        return false;
      }
      return !/^(optimizer|dino_loss|fp16_scaler)\./.test(k);
    },
  });
  if (format === "safetensors" && metadata.format === CHECKPOINT_FORMAT) {
    dispose(tensors);
    if (key !== "teacher" && key !== "student") {
      throw new Error(
        `${path}: no "${key}" network in this checkpoint (it holds "student", "teacher"): pass one of those to --checkpoint-key`,
      );
    }
    const ck = loadCheckpoint(path);
    // The checkpoint describes its network; a flag that says otherwise is a mistake, not an override.
    const differs = (["arch", "patchSize"] as const).find((k) =>
      o[k] !== undefined && o[k] !== ck.config[k] && !(k === "patchSize" && isResNetArch(ck.config.arch))
    );
    if (differs) {
      dispose(ck.state);
      throw new SettingError(
        [differs],
        (n) =>
          `${path} is a checkpoint of ${n(differs)} ${ck.config[differs]}, not ${o[differs]}: ` +
          `drop ${n(differs)} (it is read from the checkpoint)`,
      );
    }
    const net = networkConfig(ck.config, ck.channels);
    const { student, teacher } = ck.state;
    const [kept, other] = key === "teacher" ? [teacher, student] : [student, teacher];
    dispose([other, kept.head, ck.state.optimizer, ck.state.center]);
    const common = {
      imageSize: ck.config.globalCropsSize,
      normalization: ck.normalization,
      source: "checkpoint" as const,
    };
    return net.resnet
      ? { ...common, backbone: kept.backbone as ResNetParams, resnet: net.resnet }
      : { ...common, backbone: kept.backbone as ViTParams, vit: net.vit };
  }
  try {
    const flat = backboneTensors(tensors, { key: o.checkpointKey, source: path });
    if ("conv1.weight" in flat && "layer1.0.conv1.weight" in flat) return resnetWeights(flat, path, o.arch);
    if (!("cls_token" in flat) && otherKeys > 0 && !Object.keys(tensors).some((k) => k.includes("backbone."))) {
      throw new Error(
        `${path}: no "${key}" network in this file (it holds "${other!.slice(0, -1)}"): pass --checkpoint-key ` +
          other!.slice(0, -1),
      );
    }
    if (!("cls_token" in flat)) {
      throw new Error(
        `${path}: no ViT backbone found (no cls_token among its ${Object.keys(tensors).length} tensors, ` +
          "bare or under backbone., module. or a full checkpoint's teacher./student.)",
      );
    }
    if (o.arch && isResNetArch(o.arch)) {
      throw new SettingError(["arch"], (n) => `${path} holds a ViT, not ${n("arch")} ${o.arch}`);
    }
    const saved = savedArgs(metadata);
    const arch = o.arch as Arch | undefined ??
      (typeof saved.arch === "string" && Object.hasOwn(ARCHS, saved.arch) ? saved.arch as Arch : undefined);
    if (!arch) {
      const archNames = Object.keys(ARCHS).join(", ");
      throw new SettingError(
        ["arch"],
        (n) => `${path} has no metadata: pass ${n("arch")} (${archNames}) to give its number of attention heads`,
      );
    }
    const patchWeight = flat["patch_embed.proj.weight"];
    if (!patchWeight || patchWeight.shape.length !== 4) throw new Error(`${path}: no 4-d patch_embed.proj.weight`);
    const [D, C, p] = patchWeight.shape;
    const standard = Object.entries(ARCHS).find(([, a]) => a.embedDim === D)?.[0];
    if (standard && standard !== arch) {
      throw new SettingError(
        ["arch"],
        (n) =>
          `${path} holds a ${D}-wide ViT (${standard}), not ${n("arch")} ${arch} (${ARCHS[arch].embedDim} wide): ` +
          `pass ${n("arch")} ${standard}`,
      );
    }
    if (o.patchSize !== undefined && o.patchSize !== p) {
      throw new SettingError(["patchSize"], (n) => `${path} has patch size ${p}, not ${n("patchSize")} ${o.patchSize}`);
    }
    const n = flat.pos_embed?.shape[1] - 1;
    const side = Math.round(Math.sqrt(n));
    if (!(side * side === n)) throw new Error(`${path}: pos_embed holds ${n} patches, not a square grid`);
    let depth = 0;
    while (`blocks.${depth}.norm1.weight` in flat) depth++;
    const vit = vitConfig(arch, {
      embedDim: D,
      depth,
      numHeads: ARCHS[arch].numHeads,
      patchSize: p,
      inChans: C,
      imgSize: side * p,
    });
    if (D % vit.numHeads !== 0) {
      throw new Error(`${path}: width ${D} does not divide into the ${vit.numHeads} heads of ${arch}`);
    }
    return { backbone: fitBackbone(flat, vit, path), vit, imageSize: vit.imgSize, source: "weights" };
  } finally {
    dispose(tensors);
  }
}

/**
 * A torchvision-layout ResNet from bare keys: which depth from the blocks per stage and the block type (a
 * `conv3` means Bottleneck), the channels from `conv1`; `fc.*` is dropped (the official code sets `fc` to
 * identity). With `arch`, the weights must be that ResNet.
 */
function resnetWeights(flat: Flat, path: string, arch: BackboneArch | undefined): ResNetEvalBackbone {
  const count = (stage: number) => {
    let n = 0;
    while (`layer${stage}.${n}.conv1.weight` in flat) n++;
    return n;
  };
  const layers = [1, 2, 3, 4].map(count);
  const block = "layer1.0.conv3.weight" in flat ? "bottleneck" : "basic";
  const found = (Object.entries(RESNET_ARCHS) as [ResNetArch, (typeof RESNET_ARCHS)[ResNetArch]][])
    .find(([, a]) => a.block === block && a.layers.join() === layers.join())?.[0];
  if (!found) {
    throw new Error(
      `${path}: a ResNet of ${block} blocks [${layers}] per stage is none of ${Object.keys(RESNET_ARCHS).join(", ")}`,
    );
  }
  if (arch && arch !== found) {
    throw new SettingError(
      ["arch"],
      (n) => `${path} holds a ${found}, not ${n("arch")} ${arch}: pass ${n("arch")} ${found}`,
    );
  }
  const conv1 = flat["conv1.weight"];
  if (conv1.shape.length !== 4) throw new Error(`${path}: conv1.weight is not 4-d`);
  const resnet = resnetConfig(found, conv1.shape[1]);
  const kept = Object.fromEntries(Object.entries(flat).filter(([k]) => !k.startsWith("fc.")));
  return { backbone: fitBackbone(kept, resnet, path), resnet, imageSize: 224, source: "weights" };
}

/** The `args` a `.pth` full checkpoint saved (its `argparse.Namespace`), or nothing. */
function savedArgs(metadata: Record<string, string>): Record<string, unknown> {
  try {
    const args = JSON.parse(metadata.args ?? "{}");
    return typeof args === "object" && args !== null ? args : {};
  } catch {
    return {};
  }
}

/** Where a run that starts from weights got its networks. */
export type StartedFrom = "student and teacher" | "one network for both" | "backbones only";

/**
 * A fresh training state whose networks come from a weights file, for
 * continued pretraining (`--init-weights`): a full checkpoint's student and
 * teacher, heads included (official `.pth`, its conversion, or this project's
 * checkpoint); a single network (backbone and head) as both; or a bare
 * backbone as both backbones, with `state`'s fresh heads. The optimizer,
 * center, step and schedules stay `state`'s (fresh). Shapes must fit
 * `state`'s network: a mismatch names each key's shape in the file and in the
 * model. Consumes `state` (its replaced tensors are freed) unless it throws.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, toArray } from "../../mod.ts";
 * import { makeSettings, networkConfig } from "../settings/mod.ts";
 * import { dinoHyper, initTrainState } from "../training/step.ts";
 * import { saveWeights } from "./weights.ts";
 * import { stateDict } from "./tree.ts";
 * import { startFrom } from "./pretrained.ts";
 * const net = networkConfig(makeSettings("fmnist", { depth: 1 }), 1);
 * const donor = initTrainState(net, dinoHyper(), 7);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveWeights(path, donor.student.backbone); // a bare backbone
 * const { state, from } = startFrom(initTrainState(net, dinoHyper(), 0), path);
 * assert.equal(from, "backbones only");
 * assert.deepEqual(toArray(stateDict(state.teacher.backbone).cls_token), toArray(stateDict(donor.student.backbone).cls_token));
 * dispose([donor, state]);
 * Deno.removeSync(path);
 * ```
 */
export function startFrom(state: TrainState, path: string): { state: TrainState; from: StartedFrom } {
  // A full checkpoint's optimizer state is never made: only the networks are read.
  const { tensors } = readWeights(path, { select: (k) => !/^(optimizer|dino_loss)\./.test(k) && k !== "center" });
  const made: Tensor[] = [];
  try {
    const groups = networkGroups(Object.keys(tensors));
    const both = groups.includes("student") && groups.includes("teacher");
    const studentFlat = selectNetwork(tensors, { key: both ? "student" : undefined, source: path });
    const teacherFlat = both ? selectNetwork(tensors, { key: "teacher", source: path }) : studentFlat;
    const load = (flat: Flat, into: DinoParams): { net: DinoParams; withHead: boolean } => {
      const withHead = Object.keys(flat).some((k) => k.startsWith("head."));
      const network = Object.fromEntries(Object.entries(flat).filter(([k]) => /^(backbone|head)\./.test(k)));
      const picked = withHead ? network : backboneTensors(flat, { source: path });
      const { tensors: f32, converted } = asFloat32(picked);
      try {
        const template = withHead ? { backbone: into.backbone, head: into.head } : into.backbone;
        const loaded = loadStateDict(template, f32) as DinoParams | ViTParams;
        made.push(...Object.values(stateDict(loaded)));
        const net = withHead ? loaded as DinoParams : { backbone: loaded as ViTParams, head: into.head };
        return { net, withHead };
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        const grid = /pos_embed/.test(why)
          ? " (pos_embed's grid is --global-crops-size / --patch-size patches a side: set them to the weights')"
          : "";
        throw new Error(
          `${path} does not fit the network of these settings (set the model flags to the weights' network, ` +
            `e.g. --preset imagenet-vits16 for the official ViT-S/16)${grid}: ${why}`,
        );
      } finally {
        dispose(converted.map((k) => f32[k]));
      }
    };
    const student = load(studentFlat, state.student);
    const teacher = load(teacherFlat, state.teacher);
    const next: TrainState = {
      ...state,
      student: { ...state.student, backbone: student.net.backbone, head: student.net.head },
      teacher: { backbone: teacher.net.backbone, head: teacher.net.head },
    };
    // Free what was replaced: the fresh backbones, and the heads when the file had its own.
    dispose([state.student.backbone, state.teacher.backbone]);
    if (student.withHead) dispose(state.student.head);
    if (teacher.withHead) dispose(state.teacher.head);
    const from: StartedFrom = both
      ? "student and teacher"
      : student.withHead
      ? "one network for both"
      : "backbones only";
    return { state: next, from: both && !student.withHead ? "backbones only" : from };
  } catch (e) {
    dispose(made);
    throw e;
  } finally {
    dispose(tensors);
  }
}
