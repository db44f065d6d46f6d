/**
 * Weights in and out, in the official layouts: the full network
 * (`backbone.*`, `head.*`, as `MultiCropWrapper.state_dict()`) or the bare
 * backbone (no prefix, as the released `dino_vits16` weights). Loading also
 * accepts the prefixes of official checkpoints (`module.`, `teacher.`,
 * `student.`) and checks keys and shapes as `load_state_dict(strict=True)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, toArray } from "../../mod.ts";
 * import { dinoConfig, initDino } from "../model/dino.ts";
 * import { loadBackbone, saveWeights } from "./weights.ts";
 * using g = new Generator(0);
 * const cfg = dinoConfig({ arch: "vit_tiny", depth: 1, outDim: 64 });
 * const model = initDino(cfg, g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveWeights(path, model.backbone); // bare backbone keys
 * const backbone = loadBackbone(path, cfg.vit);
 * assert.deepEqual(toArray(backbone.pos_embed), toArray(model.backbone.pos_embed));
 * dispose([model, backbone]);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { dispose, Generator } from "../../ffi/mod.ts";
import { type DinoConfig, type DinoParams, initDino } from "../model/dino.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import { type Flat, loadStateDict, stateDict } from "./tree.ts";
import { initViT, type ViTConfig, type ViTParams } from "../model/vit.ts";

/**
 * Writes a network (official `backbone.*`/`head.*` keys) or a bare backbone atomically as safetensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { dinoConfig, initDino } from "../model/dino.ts";
 * import { readSafetensors } from "./safetensors.ts";
 * import { saveWeights } from "./weights.ts";
 * using g = new Generator(0);
 * const m = initDino(dinoConfig({ arch: "vit_tiny", depth: 1, outDim: 64 }), g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveWeights(path, m, { arch: "vit_tiny" });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.equal(metadata.arch, "vit_tiny");
 * assert.ok("backbone.blocks.0.attn.qkv.weight" in tensors && "head.last_layer.weight_g" in tensors); // official keys
 * dispose([m, tensors]);
 * Deno.removeSync(path);
 * ```
 */
export function saveWeights(path: string, params: DinoParams | ViTParams, metadata: Record<string, string> = {}): void {
  writeSafetensors(path, stateDict(params), metadata);
}

/** Strips one leading prefix shared by every key (`module.`, `teacher.`, `student.`). */
function stripWrapper(flat: Flat): Flat {
  for (const prefix of ["module.", "teacher.", "student."]) {
    const keys = Object.keys(flat);
    if (keys.length > 0 && keys.every((k) => k.startsWith(prefix))) {
      return Object.fromEntries(keys.map((k) => [k.slice(prefix.length), flat[k]]));
    }
  }
  // A full checkpoint: take the teacher (the network DINO evaluates).
  if (Object.keys(flat).some((k) => k.startsWith("teacher."))) {
    return Object.fromEntries(
      Object.entries(flat).filter(([k]) => k.startsWith("teacher.")).map(([k, v]) => [k.slice(8), v]),
    );
  }
  return flat;
}

function withTemplate<T extends object>(make: (g: Generator) => T, flat: Flat, source: string): T {
  using g = new Generator(0);
  const template = make(g);
  try {
    return loadStateDict(template, flat);
  } catch (e) {
    throw new Error(`${source}: ${e instanceof Error ? e.message : e}`);
  } finally {
    dispose(template);
  }
}

/**
 * Loads a full network (`backbone.*` and `head.*` keys, optionally under `module.`, `teacher.` or `student.`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, toArray } from "../../mod.ts";
 * import { dinoConfig, initDino } from "../model/dino.ts";
 * import { loadDino, saveWeights } from "./weights.ts";
 * using g = new Generator(0);
 * const cfg = dinoConfig({ arch: "vit_tiny", depth: 1, outDim: 64 });
 * const saved = initDino(cfg, g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveWeights(path, saved); // backbone.* and head.* keys
 * const model = loadDino(path, cfg);
 * assert.deepEqual(toArray(model.head.last_layer.weight_v), toArray(saved.head.last_layer.weight_v));
 * dispose([saved, model]);
 * Deno.removeSync(path);
 * ```
 */
export function loadDino(path: string, cfg: DinoConfig): DinoParams {
  const { tensors } = readSafetensors(path);
  try {
    return withTemplate((g) => initDino(cfg, g), stripWrapper(tensors), path);
  } finally {
    dispose(tensors);
  }
}

/**
 * Loads a backbone: bare keys (released weights), or the `backbone.*` part of a network or checkpoint.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, toArray } from "../../mod.ts";
 * import { dinoConfig, initDino } from "../model/dino.ts";
 * import { loadBackbone, saveWeights } from "./weights.ts";
 * using g = new Generator(0);
 * const cfg = dinoConfig({ arch: "vit_tiny", depth: 1, outDim: 64 });
 * const model = initDino(cfg, g);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * saveWeights(path, model); // a full network: loadBackbone takes its backbone.* part
 * const vit = loadBackbone(path, cfg.vit);
 * assert.deepEqual(toArray(vit.cls_token), toArray(model.backbone.cls_token));
 * dispose([model, vit]);
 * Deno.removeSync(path);
 * ```
 */
export function loadBackbone(path: string, cfg: ViTConfig): ViTParams {
  const { tensors } = readSafetensors(path);
  try {
    let flat = stripWrapper(tensors);
    if (Object.keys(flat).some((k) => k.startsWith("backbone."))) {
      flat = Object.fromEntries(
        Object.entries(flat).filter(([k]) => k.startsWith("backbone.")).map(([k, v]) => [k.slice(9), v]),
      );
    }
    return withTemplate((g) => initViT(cfg, g), flat, path);
  } finally {
    dispose(tensors);
  }
}
