/**
 * Parameter trees: plain nested records and arrays of tensors. Flattening a
 * tree joins its path with dots, which gives the official PyTorch state_dict
 * keys when the records are laid out as the official modules
 * (`blocks.0.attn.qkv.weight`).
 *
 * @module
 */
import { alias, type Device, dispose, Tensor, toDevice } from "../../ffi/mod.ts";

/**
 * A nested record or array of tensors. Interfaces such as `ViTParams` are
 * trees too, so the functions below take any object and walk it.
 */
export type Tree = Tensor | readonly Tree[] | { readonly [key: string]: Tree };
type Node = Tensor | readonly unknown[] | object;

/** Flat `key -> tensor` records, keyed by dotted paths. */
export type Flat = Record<string, Tensor>;

/**
 * The tree's tensors under dotted keys, in insertion order (the order of the
 * official modules' `named_parameters()` when the records follow them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "../../ffi/mod.ts";
 * import { stateDict } from "./tree.ts";
 * using w = ones([1]);
 * const flat = stateDict({ blocks: [{ w }] });
 * assert.deepEqual(Object.keys(flat), ["blocks.0.w"]);
 * assert.equal(flat["blocks.0.w"], w); // the same handles: nothing is copied
 * ```
 */
export function stateDict(tree: object, prefix = ""): Flat {
  const out: Flat = {};
  const walk = (node: Node, path: string) => {
    if (node instanceof Tensor) {
      out[path] = node;
      return;
    }
    const entries = Array.isArray(node) ? node.map((v, i) => [String(i), v] as const) : Object.entries(node);
    for (const [k, v] of entries) if (v !== undefined) walk(v as Node, path ? `${path}.${k}` : k);
  };
  walk(tree, prefix);
  return out;
}

/**
 * A tree of the same structure as `template`, whose tensors are `fn(tensor, key)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, mul, ones, toArray } from "../../ffi/mod.ts";
 * import { mapTree } from "./tree.ts";
 * using w = ones([2]);
 * const doubled = mapTree({ w, layers: [{ b: w }] }, (t) => mul(t, 2));
 * assert.deepEqual([toArray(doubled.w), toArray(doubled.layers[0].b)], [[2, 2], [2, 2]]);
 * dispose(doubled);
 * ```
 */
export function mapTree<T extends object>(template: T, fn: (t: Tensor, key: string) => Tensor, prefix = ""): T {
  const walk = (node: Node, path: string): Node => {
    if (node instanceof Tensor) return fn(node, path);
    if (node === null || typeof node !== "object") return node; // numbers and strings ride along unchanged
    if (Array.isArray(node)) return node.map((v, i) => walk(v as Node, path ? `${path}.${i}` : String(i)));
    const out: Record<string, Node> = {};
    for (const [k, v] of Object.entries(node)) {
      if (v !== undefined) out[k] = walk(v as Node, path ? `${path}.${k}` : k);
    }
    return out;
  };
  return walk(template, prefix) as T;
}

/**
 * `tree` with its tensors on `device`, taking the tree's place: on the CPU the
 * tree itself, elsewhere copies, the originals freed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones } from "../../ffi/mod.ts";
 * import { moveTree } from "./tree.ts";
 * const state = { w: ones([2]) };
 * assert.equal(moveTree(state, "cpu"), state);
 * dispose(state);
 * ```
 */
export function moveTree<T extends object>(tree: T, device: Device): T {
  if (device === "cpu") return tree;
  const moved = mapTree(tree, (t) => toDevice(t, device));
  dispose(tree);
  return moved;
}

/**
 * Rebuilds a tree shaped like `template` from flat records, failing with the
 * list of missing and unexpected keys (as `load_state_dict(strict=True)`) or
 * of shape mismatches. The tensors are new handles (aliases) of `flat`'s.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, zeros } from "../../ffi/mod.ts";
 * import { loadStateDict, stateDict } from "./tree.ts";
 * const tree = { w: ones([2]) };
 * const copy = loadStateDict(tree, stateDict(tree));
 * assert.deepEqual(copy.w.shape, [2]);
 * using wrong = zeros([3]);
 * assert.throws(() => loadStateDict(tree, { w: wrong }), /shape/);
 * dispose([tree, copy]);
 * ```
 */
export function loadStateDict<T extends object>(template: T, flat: Flat, prefix = ""): T {
  const expected = stateDict(template, prefix);
  const missing = Object.keys(expected).filter((k) => !(k in flat));
  const unexpected = Object.keys(flat).filter((k) => !(k in expected));
  const problems: string[] = [];
  if (missing.length) problems.push(`missing keys: ${missing.join(", ")}`);
  if (unexpected.length) problems.push(`unexpected keys: ${unexpected.join(", ")}`);
  for (const [k, t] of Object.entries(expected)) {
    const got = flat[k];
    if (got && got.shape.join(",") !== t.shape.join(",")) {
      problems.push(`${k}: shape [${got.shape.join(", ")}] in the weights, [${t.shape.join(", ")}] in the model`);
    }
  }
  if (problems.length) throw new Error(`weights do not fit the model:\n  ${problems.join("\n  ")}`);
  return mapTree(template, (_, key) => alias(flat[key]), prefix);
}
