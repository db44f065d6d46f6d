/**
 * Any weights file as flat tensors: safetensors (this project's files, or
 * official weights converted) or PyTorch's `.pth` (the official releases and
 * full checkpoints as published), told apart by their first bytes. A `.pth`
 * file's nested dicts become dotted keys (`teacher.backbone.cls_token`,
 * `dino_loss.center`), as its `state_dict` would name them; its `args`
 * (an `argparse.Namespace`) and `epoch` become metadata.
 *
 * {@linkcode selectNetwork} then picks one network out of a full checkpoint
 * the way the official `load_pretrained_weights` does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones } from "../../mod.ts";
 * import { writeSafetensors } from "./safetensors.ts";
 * import { readWeights, selectNetwork } from "./read.ts";
 * using w = ones([2]);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * writeSafetensors(path, { "student.module.backbone.norm.weight": w, "teacher.backbone.norm.weight": w });
 * const { tensors } = readWeights(path);
 * assert.deepEqual(Object.keys(selectNetwork(tensors, { source: path })), ["backbone.norm.weight"]); // the teacher's
 * assert.deepEqual(Object.keys(selectNetwork(tensors, { key: "student", source: path })), ["backbone.norm.weight"]);
 * dispose(tensors);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { type DType, type Tensor, tidy, to } from "../../ffi/mod.ts";
import type { PickleValue } from "./pickle.ts";
import { decodePth, isZip, pthTensor, TensorRef } from "./pth.ts";
import { decodeSafetensors } from "./safetensors.ts";
import type { Flat } from "./tree.ts";

/** Flat tensors and string metadata from a weights file. */
export interface WeightsFile {
  /** Every tensor (or every selected one), by dotted key. */
  tensors: Flat;
  /** safetensors metadata; for `.pth`, `args` (JSON of the saved Namespace) and `epoch` when present. */
  metadata: Record<string, string>;
  /** The file's format. */
  format: "safetensors" | "pth";
}

/** What to read. */
export interface ReadWeightsOptions {
  /** Reads only the tensors whose keys this accepts (a full checkpoint's optimizer state is then never made). */
  select?: (key: string) => boolean;
}

/**
 * JSON of a pickled value, with bigints as numbers' text and tensors as their shapes; undefined for values
 * that are cyclic or too large to be a saved Namespace (a crafted pickle can share one list many times over).
 */
function plainJson(v: PickleValue): string | undefined {
  let nodes = 0;
  try {
    return JSON.stringify(v, (_, x) => {
      if (++nodes > 100_000) throw new RangeError("too large");
      if (typeof x === "bigint") return x.toString();
      if (x instanceof TensorRef) return `tensor [${x.shape}]`;
      if (x instanceof Uint8Array) return `${x.length} bytes`;
      return x;
    });
  } catch {
    return undefined;
  }
}

/** Every tensor in a pickled tree, by dotted key; shared or cyclic parts are visited once. */
function tensorRefs(root: PickleValue): Map<string, TensorRef> {
  const out = new Map<string, TensorRef>();
  const seen = new Set<object>();
  const walk = (v: PickleValue, key: string) => {
    if (v instanceof TensorRef) {
      if (!out.has(key)) out.set(key, v);
      return;
    }
    if (typeof v !== "object" || v === null || v instanceof Uint8Array || seen.has(v)) return;
    seen.add(v);
    for (const [k, child] of Object.entries(v)) walk(child as PickleValue, key ? `${key}.${k}` : k);
  };
  walk(root, "");
  return out;
}

/**
 * Reads a safetensors or `.pth` file into flat tensors (see the module doc).
 * Errors name the file and say what to do.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readWeights } from "./read.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".bin" });
 * Deno.writeTextFileSync(path, "hello");
 * assert.throws(() => readWeights(path), /not a PyTorch checkpoint .* nor safetensors/);
 * Deno.removeSync(path);
 * ```
 */
export function readWeights(path: string, o: ReadWeightsOptions = {}): WeightsFile {
  const bytes = Deno.readFileSync(path);
  const select = o.select ?? (() => true);
  // safetensors starts with a little-endian u64 header length and then "{"; .pth is a zip ("PK").
  if (isZip(bytes) || (bytes[0] === 0x80 && bytes[1] === 2) || bytes.length < 9 || bytes[8] !== 0x7b) {
    const { root } = decodePth(bytes, path);
    const refs = [...tensorRefs(root)].filter(([k]) => select(k));
    const tensors = tidy(() => Object.fromEntries(refs.map(([k, ref]) => [k, pthTensor(ref)])));
    const metadata: Record<string, string> = {};
    if (root && typeof root === "object" && !Array.isArray(root) && !(root instanceof TensorRef)) {
      const r = root as Record<string, PickleValue>;
      const args = Object.hasOwn(r, "args") && r.args !== null ? plainJson(r.args) : undefined;
      if (args !== undefined) metadata.args = args;
      if (typeof r.epoch === "number") metadata.epoch = String(r.epoch);
    }
    return { tensors, metadata, format: "pth" };
  }
  const { tensors, metadata } = decodeSafetensors(bytes, path);
  for (const k of Object.keys(tensors)) {
    if (!select(k)) {
      tensors[k].dispose();
      delete tensors[k];
    }
  }
  return { tensors, metadata, format: "safetensors" };
}

/** Which network of a full checkpoint to take, and the file it came from (for messages). */
export interface SelectOptions {
  /** `teacher` (the default, the network DINO evaluates), `student`, or another top-level group of the file. */
  key?: string;
  /** The file, named in errors. */
  source: string;
}

/**
 * The top-level groups of a full checkpoint that hold a network (a `backbone.` or `module.backbone.` inside).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { networkGroups } from "./read.ts";
 * assert.deepEqual(networkGroups(["student.module.backbone.cls_token", "teacher.backbone.cls_token", "epoch"]), [
 *   "student",
 *   "teacher",
 * ]);
 * ```
 */
export function networkGroups(keys: string[]): string[] {
  const groups = new Set<string>();
  for (const k of keys) {
    const m = /^([^.]+)\.(?:module\.)?backbone\./.exec(k);
    if (m && m[1] !== "module") groups.add(m[1]);
  }
  return [...groups];
}

/**
 * One network's tensors from flat weights, as the official
 * `load_pretrained_weights`: the `key` group of a full checkpoint (default
 * `teacher`), then `module.` stripped. Returns aliases of the same tensors
 * (the caller keeps owning `flat`). An explicit key the file lacks is an
 * error naming the groups it has.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "../../mod.ts";
 * import { selectNetwork } from "./read.ts";
 * using w = ones([1]);
 * const flat = { "module.backbone.cls_token": w, "module.head.last_layer.weight_g": w };
 * assert.deepEqual(Object.keys(selectNetwork(flat, { source: "f" })), ["backbone.cls_token", "head.last_layer.weight_g"]);
 * assert.throws(() => selectNetwork({ "teacher.backbone.cls_token": w }, { key: "ema", source: "f" }), /no "ema".*teacher/);
 * ```
 */
export function selectNetwork(flat: Flat, o: SelectOptions): Flat {
  const keys = Object.keys(flat);
  const groups = networkGroups(keys);
  const key = o.key ?? "teacher";
  let picked = flat;
  if (groups.includes(key)) {
    picked = Object.fromEntries(
      keys.filter((k) => k.startsWith(`${key}.`)).map((k) => [k.slice(key.length + 1), flat[k]]),
    );
  } else if (groups.length > 0 || o.key !== undefined && o.key !== "teacher") {
    const has = groups.length ? `it holds ${groups.map((g) => `"${g}"`).join(", ")}` : "it holds a single network";
    throw new Error(`${o.source}: no "${key}" network in this file (${has}): pass one of those to --checkpoint-key`);
  }
  const ks = Object.keys(picked);
  if (ks.length > 0 && ks.every((k) => k.startsWith("module."))) {
    picked = Object.fromEntries(ks.map((k) => [k.slice(7), picked[k]]));
  }
  return picked;
}

const FLOATS: DType[] = ["f16", "bf16", "f64"];

/**
 * The tensors as fp32 where they are half, bfloat16 or double (the model
 * computes in fp32); others are returned as they are. Owns nothing: the
 * result holds new tensors only for the converted keys, which `converted`
 * lists so the caller can free them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones } from "../../mod.ts";
 * import { asFloat32 } from "./read.ts";
 * using h = ones([2], { dtype: "f16" });
 * const { tensors, converted } = asFloat32({ h });
 * assert.deepEqual([tensors.h.dtype, converted], ["f32", ["h"]]);
 * dispose(tensors.h);
 * ```
 */
export function asFloat32(flat: Flat): { tensors: Flat; converted: string[] } {
  const converted = Object.keys(flat).filter((k) => FLOATS.includes(flat[k].dtype));
  const tensors: Record<string, Tensor> = { ...flat };
  for (const k of converted) tensors[k] = to(flat[k], "f32");
  return { tensors, converted };
}
