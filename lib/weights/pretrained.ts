/**
 * A backbone to evaluate or embed with, from this project's checkpoints (the
 * teacher, with the run's normalisation) or from official-layout weights
 * without metadata (full `teacher.`/`module.`/`backbone.` keys or bare
 * backbone keys). For the latter the embedding width, depth, patch size,
 * channels and image size come from the weights' shapes; the heads from
 * `arch`.
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
 * assert.deepEqual([source, vit.depth, vit.embedDim, vit.imgSize], ["weights", 2, 192, 224]);
 * dispose([released, backbone]);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { dispose } from "../../ffi/mod.ts";
import { CHECKPOINT_FORMAT, loadCheckpoint } from "./checkpoint.ts";
import { networkConfig } from "../settings/derive.ts";
import { SettingError } from "../settings/settings.ts";
import { readWeights } from "./read.ts";
import { type Arch, ARCHS, type ViTConfig, vitConfig, type ViTParams } from "../model/vit.ts";
import { backboneTensors, fitBackbone } from "./weights.ts";

/** A backbone ready for feature extraction. */
export interface EvalBackbone {
  /** The backbone's parameters (the teacher's, for a checkpoint). */
  backbone: ViTParams;
  /** Its shape. */
  vit: ViTConfig;
  /** The normalisation the weights were trained with, when the file says. */
  normalization?: { mean: number[]; std: number[] };
  /** "checkpoint" (this project's, the teacher) or "weights" (official layout). */
  source: "checkpoint" | "weights";
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
 * assert.deepEqual([b.source, b.vit.patchSize, b.normalization?.mean], ["checkpoint", 7, [0.286]]);
 * dispose([state, b.backbone]);
 * Deno.removeSync(path);
 * ```
 */
export function loadEvalBackbone(
  path: string,
  o: { arch?: Arch; patchSize?: number; checkpointKey?: string } = {},
): EvalBackbone {
  const { tensors, metadata, format } = readWeights(path);
  if (format === "safetensors" && metadata.format === CHECKPOINT_FORMAT) {
    dispose(tensors);
    const key = o.checkpointKey ?? "teacher";
    if (key !== "teacher" && key !== "student") {
      throw new Error(`${path}: no "${key}" network in this checkpoint (it holds "student", "teacher")`);
    }
    const ck = loadCheckpoint(path);
    const net = networkConfig(ck.config, ck.channels);
    const { student, teacher } = ck.state;
    const [kept, other] = key === "teacher" ? [teacher, student] : [student, teacher];
    dispose([other, kept.head, ck.state.optimizer, ck.state.center]);
    return { backbone: kept.backbone, vit: net.vit, normalization: ck.normalization, source: "checkpoint" };
  }
  try {
    const flat = backboneTensors(tensors, { key: o.checkpointKey, source: path });
    if (!("cls_token" in flat)) {
      throw new Error(
        `${path}: no ViT backbone found (no cls_token among its ${Object.keys(tensors).length} tensors, ` +
          "bare or under backbone., module. or a full checkpoint's teacher./student.)",
      );
    }
    const saved = savedArgs(metadata);
    const arch = o.arch ??
      (typeof saved.arch === "string" && Object.hasOwn(ARCHS, saved.arch) ? saved.arch as Arch : undefined);
    if (!arch) {
      throw new SettingError(
        ["arch"],
        (n) => `${path} has no metadata: pass ${n("arch")} (${Object.keys(ARCHS).join(", ")}) for its heads`,
      );
    }
    const patchWeight = flat["patch_embed.proj.weight"];
    if (!patchWeight || patchWeight.shape.length !== 4) throw new Error(`${path}: no 4-d patch_embed.proj.weight`);
    const [D, C, p] = patchWeight.shape;
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
    return { backbone: fitBackbone(flat, vit, path), vit, source: "weights" };
  } finally {
    dispose(tensors);
  }
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
