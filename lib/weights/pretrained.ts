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
import { readSafetensors } from "./safetensors.ts";
import { type Arch, ARCHS, type ViTConfig, vitConfig, type ViTParams } from "../model/vit.ts";
import { loadBackbone } from "./weights.ts";

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
export function loadEvalBackbone(path: string, o: { arch?: Arch; patchSize?: number } = {}): EvalBackbone {
  const { tensors, metadata } = readSafetensors(path);
  if (metadata.format === CHECKPOINT_FORMAT) {
    dispose(tensors);
    const ck = loadCheckpoint(path);
    const net = networkConfig(ck.config, ck.channels);
    dispose([ck.state.student, ck.state.optimizer, ck.state.center, ck.state.teacher.head]);
    return { backbone: ck.state.teacher.backbone, vit: net.vit, normalization: ck.normalization, source: "checkpoint" };
  }
  try {
    // Official layouts: find the backbone's keys under any of the wrappers.
    const keys = Object.keys(tensors);
    const prefix = ["teacher.backbone.", "module.backbone.", "backbone.", "teacher.", "module.", ""].find((p) =>
      keys.includes(`${p}cls_token`)
    );
    if (prefix === undefined) {
      throw new Error(`${path}: no ViT backbone found (no cls_token under backbone., teacher., module. or bare keys)`);
    }
    const get = (k: string) => tensors[prefix + k];
    if (!o.arch) {
      throw new SettingError(
        ["arch"],
        (n) => `${path} has no metadata: pass ${n("arch")} (${Object.keys(ARCHS).join(", ")}) for its heads`,
      );
    }
    const [D, C, p] = get("patch_embed.proj.weight").shape;
    if (o.patchSize !== undefined && o.patchSize !== p) {
      throw new SettingError(["patchSize"], (n) => `${path} has patch size ${p}, not ${n("patchSize")} ${o.patchSize}`);
    }
    const n = get("pos_embed").shape[1] - 1;
    const side = Math.round(Math.sqrt(n));
    if (side * side !== n) throw new Error(`${path}: pos_embed holds ${n} patches, not a square grid`);
    let depth = 0;
    while (`${prefix}blocks.${depth}.norm1.weight` in tensors) depth++;
    const vit = vitConfig(o.arch, {
      embedDim: D,
      depth,
      numHeads: ARCHS[o.arch].numHeads,
      patchSize: p,
      inChans: C,
      imgSize: side * p,
    });
    if (D % vit.numHeads !== 0) {
      throw new Error(`${path}: width ${D} does not divide into the ${vit.numHeads} heads of ${o.arch}`);
    }
    return { backbone: loadBackbone(path, vit), vit, source: "weights" };
  } finally {
    dispose(tensors);
  }
}
