/**
 * Argument encoders shared by the typed ops.
 *
 * @module
 */
import { type Tensor } from "../tensor.ts";

/** An int list as the shim takes it (safe integers: the shim converts each to int64 exactly). */
export function ints(xs: readonly number[]): Float64Array<ArrayBuffer> {
  for (const x of xs) {
    if (!Number.isSafeInteger(x)) throw new TypeError(`expected integers, got [${xs.join(", ")}]`);
  }
  return new Float64Array(xs);
}

/** A tensor list as the shim takes it: the handles' addresses. */
export function handles(ts: readonly Tensor[]): BigUint64Array<ArrayBuffer> {
  const out = new BigUint64Array(ts.length);
  for (let i = 0; i < ts.length; i++) out[i] = BigInt(Deno.UnsafePointer.value(ts[i].ptr));
  return out;
}

/** Normalises a dim argument: one dim, several, or all (undefined). */
export function dimList(dim: number | readonly number[] | undefined): readonly number[] {
  return dim === undefined ? [] : typeof dim === "number" ? [dim] : dim;
}
