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
import { type DinoConfig, type DinoParams, initDino, type ViTDinoConfig } from "../model/dino.ts";
import { writeSafetensors } from "./safetensors.ts";
import { asFloat32, readWeights, selectNetwork, type SelectOptions } from "./read.ts";
import { type Flat, loadStateDict, stateDict } from "./tree.ts";
import type { ViTConfig, ViTParams } from "../model/vit.ts";
import { type BackboneConfig, type BackboneParams, initBackbone } from "../model/backbone.ts";
import type { ResNetConfig, ResNetParams } from "../model/resnet.ts";

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
export function saveWeights(
  path: string,
  params: DinoParams | BackboneParams,
  metadata: Record<string, string> = {},
): void {
  writeSafetensors(path, stateDict(params), metadata);
}

function withTemplate<T extends object>(make: (g: Generator) => T, flat: Flat, source: string): T {
  using g = new Generator(0);
  const template = make(g);
  const { tensors, converted } = asFloat32(flat);
  try {
    return loadStateDict(template, tensors);
  } catch (e) {
    throw new Error(`${source}: ${e instanceof Error ? e.message : e}`);
  } finally {
    dispose([template, converted.map((k) => tensors[k])]);
  }
}

/** Which network of a full checkpoint to load. */
export interface LoadOptions {
  /** `teacher` (default), `student` or another group of a full checkpoint (`--checkpoint-key`). */
  checkpointKey?: string;
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
export function loadDino(path: string, cfg: ViTDinoConfig, o?: LoadOptions): DinoParams<ViTParams>;
/** Loads a full network of either kind. */
export function loadDino(path: string, cfg: DinoConfig, o?: LoadOptions): DinoParams;
export function loadDino(path: string, cfg: DinoConfig, o: LoadOptions = {}): DinoParams {
  const { tensors } = readWeights(path);
  try {
    return withTemplate((g) => initDino(cfg, g), selectNetwork(tensors, { key: o.checkpointKey, source: path }), path);
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
export function loadBackbone(path: string, cfg: ViTConfig, o: LoadOptions = {}): ViTParams {
  const { tensors } = readWeights(path);
  try {
    return fitBackbone(backboneTensors(tensors, { key: o.checkpointKey, source: path }), cfg, path);
  } finally {
    dispose(tensors);
  }
}

/**
 * A backbone from bare-key tensors, checked as `load_state_dict(strict=True)`
 * (errors name `source`); half, bfloat16 and double weights become fp32. The
 * result is new handles: the caller keeps owning `flat`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { stateDict } from "./tree.ts";
 * import { fitBackbone } from "./weights.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { depth: 1 });
 * const p = initViT(cfg, g);
 * const copy = fitBackbone(stateDict(p), cfg, "memory");
 * assert.throws(() => fitBackbone(stateDict(p), vitConfig("vit_tiny", { depth: 2 }), "memory"), /missing keys: blocks\.1/);
 * dispose([p, copy]);
 * ```
 */
export function fitBackbone(flat: Flat, cfg: ViTConfig, source: string): ViTParams;
/** A ResNet from bare-key tensors (torchvision's keys, no `fc`). */
export function fitBackbone(flat: Flat, cfg: ResNetConfig, source: string): ResNetParams;
/** A backbone of either kind from bare-key tensors. */
export function fitBackbone(flat: Flat, cfg: BackboneConfig, source: string): BackboneParams;
export function fitBackbone(flat: Flat, cfg: BackboneConfig, source: string): BackboneParams {
  return withTemplate((g) => initBackbone(cfg, g), flat, source);
}

/**
 * A backbone's tensors (bare keys) from flat weights: the chosen network of a
 * full checkpoint, `module.` and `backbone.` stripped, the head's keys left
 * out (as the official `load_pretrained_weights`). Aliases `flat`'s tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "../../mod.ts";
 * import { backboneTensors } from "./weights.ts";
 * using w = ones([1]);
 * const flat = { "teacher.backbone.cls_token": w, "teacher.head.mlp.0.bias": w, "student.module.backbone.cls_token": w };
 * assert.deepEqual(Object.keys(backboneTensors(flat, { source: "f" })), ["cls_token"]);
 * ```
 */
export function backboneTensors(flat: Flat, o: SelectOptions): Flat {
  const picked = selectNetwork(flat, o);
  if (!Object.keys(picked).some((k) => k.startsWith("backbone."))) return picked;
  return Object.fromEntries(
    Object.entries(picked).filter(([k]) => k.startsWith("backbone.")).map(([k, v]) => [k.slice(9), v]),
  );
}
