/**
 * Reading and writing safetensors files: an 8-byte little-endian header
 * length, a JSON header `{name: {dtype, shape, data_offsets}, __metadata__}`,
 * then the tensors' raw little-endian bytes. The header rules are checked, so
 * a truncated or malformed file is a clear error, never a crash. Writes are
 * atomic: a temporary file, fsync, then rename.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, toArray } from "../../mod.ts";
 * import { readSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * using w = ones([2, 2]);
 * writeSafetensors(path, { w }, { note: "hello" });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.deepEqual([metadata.note, tensors.w.shape, toArray(tensors.w)], ["hello", [2, 2], [1, 1, 1, 1]]);
 * dispose(tensors);
 * Deno.removeSync(path);
 * ```
 * @module
 */
import { data, type DType, fromBytes, type Tensor, tidy, writeFileAtomic } from "../../ffi/mod.ts";
import type { Flat } from "./tree.ts";

const TO_DTYPE: Record<string, DType> = {
  F32: "f32",
  F16: "f16",
  BF16: "bf16",
  F64: "f64",
  I64: "i64",
  I32: "i32",
  I16: "i16",
  I8: "i8",
  U8: "u8",
  BOOL: "bool",
};
const FROM_DTYPE = Object.fromEntries(Object.entries(TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;
const SIZE: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, f64: 8, i64: 8, i32: 4, i16: 2, i8: 1, u8: 1, bool: 1 };
const MAX_HEADER = 100 * 1024 * 1024;
/** The most dimensions a tensor may have here: the shim reports a result's sizes in 26 fields (native/shim.h). */
const MAX_DIMS = 26;

/** A malformed safetensors file. */
export class SafetensorsError extends Error {
  /** An error about `source` (a path or "buffer"). */
  constructor(source: string, message: string) {
    super(`${source}: not a valid safetensors file: ${message}`);
    this.name = "SafetensorsError";
  }
}

interface Entry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/** A value from the header as short one-line JSON, for messages (the header is outside input: any size, any depth). */
function show(v: unknown): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = undefined; // nested too deeply to print
  }
  if (s === undefined) return typeof v === "object" && v !== null ? "(a value nested too deeply to show)" : String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Parses and checks the header; returns the entries in file order, the metadata and where the data starts. */
function parseHeader(
  bytes: Uint8Array,
  source: string,
): { entries: Map<string, Entry>; metadata: Record<string, string>; start: number } {
  const fail = (m: string): never => {
    throw new SafetensorsError(source, m);
  };
  if (bytes.length >= 2 && bytes[0] === 0x50 && bytes[1] === 0x4b) {
    fail(
      "this is a zip archive, as PyTorch's torch.save writes (.pth), not safetensors: the commands that take weights " +
        "read .pth files as they are, `deno task convert --in F.pth --out F.safetensors` rewrites one, and a training " +
        "run starts from official weights with `deno task train --init-weights F.pth` (--resume takes this " +
        "project's checkpoints)",
    );
  }
  if (bytes.length < 8) fail(`${bytes.length} bytes is too short for the 8-byte header length`);
  const length = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER)) fail(`header length ${length} is over the 100 MiB limit`);
  const n = Number(length);
  if (8 + n > bytes.length) fail(`header length ${n} runs past the end of the file (${bytes.length} bytes)`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    // The parser's message quotes the header, which may hold line breaks and be any length.
    const why = String(e instanceof Error ? e.message : e).replace(/[\p{Cc}\u2028\u2029]/gu, " ");
    fail(`the header is not JSON (${why.length > 160 ? `${why.slice(0, 157)}...` : why})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("the header is not a JSON object");
  const dataLength = bytes.length - 8 - n;
  const entries = new Map<string, Entry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (
        typeof raw !== "object" || raw === null || Array.isArray(raw) ||
        Object.values(raw).some((v) => typeof v !== "string")
      ) {
        fail(`__metadata__ must map strings to strings, got ${show(raw)}`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const tensor = `tensor ${show(name)}`;
    // "__proto__" cannot be a key of the plain object the tensors are returned in.
    if (name === "__proto__") fail(`${tensor} has a name that cannot be a key`);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail(`${tensor} is ${show(raw)}, not an object`);
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = typeof e.dtype === "string" && Object.hasOwn(TO_DTYPE, e.dtype) ? TO_DTYPE[e.dtype] : undefined;
    if (!dtype) fail(`${tensor} has an unsupported dtype ${show(e.dtype)}`);
    if (!Array.isArray(e.shape) || e.shape.some((s) => !Number.isSafeInteger(s) || s < 0)) {
      fail(`${tensor} has a bad shape ${show(e.shape)}`);
    }
    const shape = e.shape as number[];
    if (shape.length > MAX_DIMS) fail(`${tensor} has ${shape.length} dimensions, more than ${MAX_DIMS}`);
    // Zero-size tensors may have any other sizes, but libtorch's strides are products of the sizes: keep them exact.
    if (shape.reduce((a, b) => a * Math.max(b, 1), 1) > Number.MAX_SAFE_INTEGER) {
      fail(`${tensor} has a shape ${show(shape)} whose sizes multiply past 2^53`);
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 || off.some((o) => !Number.isSafeInteger(o) || o < 0) || off[0] > off[1]
    ) {
      fail(`${tensor} has bad data_offsets ${show(off)}`);
    }
    const [begin, end] = off as number[];
    if (end > dataLength) fail(`${tensor} ends at byte ${end}, past the ${dataLength} bytes of data`);
    const numel = shape.reduce((a, b) => a * b, 1);
    if (end - begin !== numel * SIZE[dtype!]) {
      fail(`${tensor} has ${end - begin} bytes but ${dtype} [${shape}] needs ${numel * SIZE[dtype!]}`);
    }
    entries.set(name, { dtype: dtype!, shape, begin, end });
  }
  // The data must be covered exactly, without overlaps or holes.
  const sorted = [...entries.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  for (const [name, e] of sorted) {
    if (e.begin !== cursor) {
      fail(`tensor ${show(name)} starts at byte ${e.begin}, expected ${cursor} (overlap or hole)`);
    }
    cursor = e.end;
  }
  if (cursor !== dataLength) fail(`the tensors cover ${cursor} bytes of data but the file has ${dataLength}`);
  // libtorch's bool is one byte holding 0 or 1; any other byte would make comparisons and sums quietly wrong.
  for (const [name, e] of entries) {
    if (e.dtype !== "bool") continue;
    const i = bytes.subarray(8 + n + e.begin, 8 + n + e.end).findIndex((b) => b > 1);
    if (i >= 0) fail(`tensor ${show(name)} is BOOL but its element ${i} is the byte ${bytes[8 + n + e.begin + i]}`);
  }
  return { entries, metadata, start: 8 + n };
}

/**
 * Reads tensors from safetensors bytes. Throws {@linkcode SafetensorsError} when the header breaks the format's rules.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, toArray } from "../../mod.ts";
 * import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
 * using x = ones([3]);
 * const { tensors } = decodeSafetensors(encodeSafetensors({ x }));
 * assert.deepEqual(toArray(tensors.x), [1, 1, 1]);
 * dispose(tensors);
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  source = "buffer",
): { tensors: Flat; metadata: Record<string, string> } {
  const { entries, metadata, start } = parseHeader(bytes, source);
  const tensors = tidy(() => {
    const out: Flat = {};
    for (const [name, e] of entries) {
      out[name] = fromBytes(bytes.subarray(start + e.begin, start + e.end), e.dtype, e.shape);
    }
    return out;
  });
  return { tensors, metadata };
}

/**
 * Reads a safetensors file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, tensor } from "../../mod.ts";
 * import { readSafetensors, writeSafetensors } from "./safetensors.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * using labels = tensor([3, 1], { dtype: "i64" });
 * writeSafetensors(path, { labels });
 * const { tensors, metadata } = readSafetensors(path);
 * assert.deepEqual([tensors.labels.dtype, tensors.labels.shape, metadata], ["i64", [2], {}]);
 * dispose(tensors);
 * Deno.removeSync(path);
 * ```
 */
export function readSafetensors(path: string): { tensors: Flat; metadata: Record<string, string> } {
  let bytes: Uint8Array;
  try {
    // Reading a device or a pipe could take forever.
    if (!Deno.statSync(path).isFile) throw new Error("not a regular file");
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read weights file ${path}: ${e instanceof Error ? e.message : e}`);
  }
  return decodeSafetensors(bytes, path);
}

/**
 * Encodes tensors (in the record's order) and string metadata as safetensors bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "../../mod.ts";
 * import { encodeSafetensors } from "./safetensors.ts";
 * using w = ones([2]);
 * const bytes = encodeSafetensors({ w }, { step: "0" });
 * const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)); // u64 LE
 * const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
 * assert.deepEqual(header.w, { dtype: "F32", shape: [2], data_offsets: [0, 8] });
 * assert.deepEqual(header.__metadata__, { step: "0" });
 * ```
 */
export function encodeSafetensors(tensors: Record<string, Tensor>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === "__metadata__") throw new Error('"__metadata__" is reserved and cannot name a tensor');
    const a = data(t);
    const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    header[name] = { dtype: FROM_DTYPE[t.dtype], shape: t.shape, data_offsets: [offset, offset + b.length] };
    blobs.push(b);
    offset += b.length;
  }
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (new TextEncoder().encode(json).length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const b of blobs) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * Writes a safetensors file atomically: to a temporary file beside it, synced, then renamed over the target.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "../../mod.ts";
 * import { writeSafetensors } from "./safetensors.ts";
 * using w = ones([2]);
 * const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
 * writeSafetensors(path, { w });
 * assert.ok(Deno.statSync(path).size > 8 + 2 * 4); // header length, header, two f32s
 * Deno.removeSync(path);
 * ```
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata: Record<string, string> = {},
): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}
