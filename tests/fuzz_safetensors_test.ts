// Fuzzing the safetensors reader (lib/weights/safetensors.ts) with mutations of valid files: every input must be
// read exactly as the format says (each tensor's bytes, shape and dtype as its header entry gives them) or refused
// with a one-line SafetensorsError; nothing may crash, hang, allocate without bound or leak tensors. The cases
// decode tensors in native code, so they run in child processes (tests/fuzz_helpers.ts).
//
// DINO_FUZZ_CASES=5000 deno test -A tests/fuzz_safetensors_test.ts runs more of them.
import assert from "node:assert/strict";
import { data, dispose, type DType } from "../mod.ts";
import { decodeSafetensors, readSafetensors, SafetensorsError } from "../lib/weights/safetensors.ts";
import {
  childMain,
  FUZZ_SEED,
  fuzzCases,
  isFuzzChild,
  judge,
  messageProblem,
  Rng,
  runInChildren,
  summarize,
} from "./fuzz_helpers.ts";

const SIZES: Record<string, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};
const DTYPES: Record<string, DType> = {
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
const SOURCE = "fuzz.safetensors";
const MAX_HEADER = 100 * 1024 * 1024;

// ---- building files ------------------------------------------------------------------------------------------

type Header = Record<string, unknown>;

/** Stands for an array nested 100,000 deep, which JSON.stringify cannot write but a header may hold. */
const DEEP = "@@deep@@";
const DEEP_JSON = "[".repeat(100_000) + "1" + "]".repeat(100_000);

function encode(header: Header | string, body: Uint8Array, length?: bigint): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text.replaceAll(`"${DEEP}"`, DEEP_JSON));
  return frame(json, body, length);
}

function frame(json: Uint8Array, body: Uint8Array, length?: bigint): Uint8Array {
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

/** A valid file: 1 to 4 tensors of random dtypes, shapes (some empty, some scalars) and bytes, some metadata. */
function validFile(r: Rng): { header: Header; body: Uint8Array } {
  const header: Header = {};
  const blobs: Uint8Array[] = [];
  let offset = 0;
  const n = 1 + r.int(4);
  for (let i = 0; i < n; i++) {
    const dtype = r.pick(Object.keys(SIZES));
    const shape = Array.from({ length: r.int(4) }, () => r.chance(0.1) ? 0 : 1 + r.int(4));
    const numel = shape.reduce((a, b) => a * b, 1);
    const bytes = dtype === "BOOL" ? Uint8Array.from({ length: numel }, () => r.int(2)) : r.bytes(numel * SIZES[dtype]);
    header[r.pick(["w", "b", "blocks.0.attn.qkv.weight", "x"]) + i] = {
      dtype,
      shape,
      data_offsets: [offset, offset + bytes.length],
    };
    blobs.push(bytes);
    offset += bytes.length;
  }
  if (r.chance(0.5)) header.__metadata__ = { format: "pt", step: String(r.int(1000)) };
  const body = new Uint8Array(offset);
  let at = 0;
  for (const b of blobs) body.set(b, (at += b.length) - b.length);
  return { header, body };
}

// ---- mutations -----------------------------------------------------------------------------------------------

/** Values a header field may be set to: of every JSON type, edge numbers, very long and very deep. */
function oddValue(r: Rng): unknown {
  return r.pick<() => unknown>([
    () => null,
    () => true,
    () => -1,
    () => 1.5,
    () => 2 ** 53 + 2,
    () => 2 ** 64,
    () => 1e308,
    () => "2",
    () => "",
    () => "constructor",
    () => "__proto__",
    () => [],
    () => ({}),
    () => [[1]],
    () => DEEP,
    () => "x".repeat(100_000),
  ])();
}

function tensorNames(h: Header): string[] {
  return Object.keys(h).filter((k) => k !== "__metadata__");
}

/** Semantic changes to a parsed header: each field of an entry, the names, the metadata, entries added and removed. */
function mutateHeader(r: Rng, h: Header, body: Uint8Array): string {
  // A first mutation may have left entries that are not objects, or fields that are not arrays.
  const names = tensorNames(h).filter((n) => isObject(h[n]));
  if (names.length === 0) {
    h.added = { dtype: "U8", shape: [body.length], data_offsets: [0, body.length] };
    return "add";
  }
  const name = r.pick(names);
  const e = h[name] as { dtype: string; shape: unknown[]; data_offsets: unknown[] };
  if (!Array.isArray(e.shape)) e.shape = [];
  if (!Array.isArray(e.data_offsets)) e.data_offsets = [0, 0];
  const choice = r.int(12);
  switch (choice) {
    case 0: {
      e.dtype = r.chance(0.5)
        ? r.pick(Object.keys(SIZES))
        : r.pick(["Q8", "f32", "", "U16", "U32", "U64", "F8_E4M3", "C64", "toString", "constructor", "__proto__"]);
      return "dtype";
    }
    case 1:
      (e as Record<string, unknown>).dtype = oddValue(r);
      return "dtype-type";
    case 2: {
      const shape = e.shape;
      const k = r.int(9);
      if (k === 0) shape.push(1 + r.int(3));
      else if (k === 1) shape.pop();
      else if (k === 2 && shape.length) shape[r.int(shape.length)] = oddValue(r);
      else if (k === 3) e.shape = [2 ** 32, 2 ** 32];
      else if (k === 4) e.shape = [...shape, 0, 2 ** 62, 2 ** 62];
      else if (k === 5) e.shape = [1e30, 0];
      else if (k === 6) e.shape = Array(r.pick([26, 26, 27, 1000, 100_000])).fill(1); // the shim's tensors have at most 26;
      else if (k === 7) e.shape = [2 ** 53 - 1, 0, 2 ** 53 - 1];
      else (e as Record<string, unknown>).shape = oddValue(r);
      return "shape";
    }
    case 3: {
      const off = e.data_offsets as number[];
      const k = r.int(8);
      if (k === 0) e.data_offsets = [off[1], off[0]];
      else if (k === 1) e.data_offsets = [off[0] + 1, off[1] + 1];
      else if (k === 2) e.data_offsets = [off[0], off[1] + r.pick([1, 8, body.length, 2 ** 40])];
      else if (k === 3) e.data_offsets = [0, off[1] - off[0]]; // onto the first tensor's bytes
      else if (k === 4) e.data_offsets = [off[0]];
      else if (k === 5) e.data_offsets = [...off, off[1]];
      else if (k === 6) e.data_offsets[r.int(2)] = oddValue(r);
      else (e as Record<string, unknown>).data_offsets = oddValue(r);
      return "offsets";
    }
    case 4: {
      const other = h[r.pick(names)] as { data_offsets: unknown };
      // overlapping (or the same tensor)
      e.data_offsets = Array.isArray(other.data_offsets) ? [...other.data_offsets] : [0, 4];
      return "overlap";
    }
    case 5:
      h[name] = oddValue(r);
      return "entry";
    case 6: {
      delete (e as Record<string, unknown>)[r.pick(["dtype", "shape", "data_offsets"])];
      if (r.chance(0.3)) (e as Record<string, unknown>).extra = oddValue(r);
      return "entry-fields";
    }
    case 7: {
      const renamed = r.pick(["", "__proto__", "constructor", "toString", "a\nb", "n".repeat(10_000), "é✓", "__meta"]);
      const v = h[name];
      delete h[name];
      h[renamed] = v;
      return "name";
    }
    case 8: {
      h.__metadata__ = r.pick<() => unknown>([
        () => null,
        () => [],
        () => ["a"],
        () => "text",
        () => 7,
        () => ({ a: 1 }),
        () => ({ a: null }),
        () => ({ a: {} }),
        () => ({ a: ["x"] }),
        () => ({ a: DEEP }),
        () => ({ a: "x\ny", b: "" }), // valid
        () => ({ ["k".repeat(1000)]: "v".repeat(100_000) }), // valid
      ])();
      return "metadata";
    }
    case 9: {
      const end = body.length;
      h[`extra${r.int(100)}`] = r.chance(0.5)
        ? { dtype: "F32", shape: [0], data_offsets: [end, end] } // valid: empty, at the end
        : { dtype: "U8", shape: [1], data_offsets: [end, end + 1] }; // past the data
      return "add";
    }
    case 10:
      delete h[name];
      return "remove";
    default:
      e.shape = [...e.shape, 1]; // same bytes, one more dimension of 1: still valid
      return "unsqueeze";
  }
}

/** Changes to the header's text: characters replaced, ranges deleted or repeated, bytes that are not UTF-8. */
function mutateText(r: Rng, json: Uint8Array): Uint8Array {
  const s = [...json];
  const at = r.int(s.length + 1);
  const k = r.int(4);
  if (k === 0) s[Math.min(at, s.length - 1)] = r.pick([...'{}[]:,"\\0123456789ae-. \t'].map((c) => c.charCodeAt(0)));
  else if (k === 1) s.splice(at, 1 + r.int(8));
  else if (k === 2) s.splice(at, 0, ...s.slice(at, at + 1 + r.int(16)));
  else s.splice(at, 0, r.pick([0x00, 0xff, 0xc3, 0xed, 0xa0, 0x80]));
  return Uint8Array.from(s);
}

function flipBits(r: Rng, bytes: Uint8Array, from: number, to: number): Uint8Array {
  const out = bytes.slice();
  if (to <= from) return out;
  for (let i = 1 + r.int(8); i > 0; i--) out[from + r.int(to - from)] ^= 1 << r.int(8);
  return out;
}

const KINDS = [
  "valid",
  "bits",
  "header-bits",
  "data-bits",
  "truncate",
  "append",
  "length",
  "text",
  "header",
  "header-twice",
  "whitespace",
] as const;

/** Case `index`'s bytes and how they were made. */
function makeCase(index: number): { kind: string; bytes: Uint8Array } {
  const r = new Rng(FUZZ_SEED, index);
  const { header, body } = validFile(r);
  const valid = encode(header, body);
  const n = valid.length - 8 - body.length;
  const kind = KINDS[index % KINDS.length];
  switch (kind) {
    case "valid":
      return { kind, bytes: valid };
    case "bits":
      return { kind, bytes: flipBits(r, valid, 0, valid.length) };
    case "header-bits":
      return { kind, bytes: flipBits(r, valid, 8, 8 + n) };
    case "data-bits":
      return { kind, bytes: flipBits(r, valid, 8 + n, valid.length) };
    case "truncate":
      return { kind, bytes: valid.slice(0, r.int(valid.length)) };
    case "append":
      return { kind, bytes: new Uint8Array([...valid, ...r.bytes(1 + r.int(16))]) };
    case "length": {
      const json = valid.subarray(8, 8 + n);
      const len = r.pick([
        0n,
        1n,
        BigInt(n - 1),
        BigInt(n + 1),
        BigInt(n + 7),
        BigInt(n + body.length),
        BigInt(n + body.length + 1),
        2n ** 63n,
        2n ** 64n - 1n, // -1 as a signed length
        2n ** 64n - 8n, // -8
        2n ** 32n + BigInt(n),
        BigInt(MAX_HEADER),
        BigInt(MAX_HEADER + 1),
        BigInt(r.u32()) * 2n ** 32n + BigInt(r.u32()),
      ]);
      return { kind, bytes: frame(json, body, len) };
    }
    case "text":
      return { kind, bytes: frame(mutateText(r, valid.subarray(8, 8 + n)), body) };
    case "header":
      return { kind: `header:${mutateHeader(r, header, body)}`, bytes: encode(header, body) };
    case "header-twice": {
      const a = mutateHeader(r, header, body);
      const b = mutateHeader(r, header, body);
      return { kind: `header:${a}+${b}`, bytes: encode(header, body) };
    }
    case "whitespace": {
      // Padding, as writers align the data: spaces and newlines are JSON whitespace, a NUL is not.
      const pad = r.pick([" ", "    ", "\n", "\t \r\n", "\0"]);
      return { kind, bytes: encode(JSON.stringify(header, null, r.chance(0.5) ? 1 : 0) + pad, body) };
    }
  }
}

// ---- the reference: the format's rules, written out separately ------------------------------------------------

type Reference = { ok: false } | {
  ok: true;
  tensors: Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>;
  metadata: Record<string, string>;
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Whether the bytes are a safetensors file this project accepts, and what it holds. */
function reference(bytes: Uint8Array): Reference {
  const no = { ok: false } as const;
  if (bytes.length < 8) return no;
  const n = new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER) || 8n + n > BigInt(bytes.length)) return no;
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + Number(n))));
  } catch {
    return no;
  }
  if (!isObject(header)) return no;
  const body = bytes.subarray(8 + Number(n));
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  const ranges: [number, number][] = [];
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isObject(e) || !Object.values(e).every((v) => typeof v === "string")) return no;
      metadata = e as Record<string, string>;
      continue;
    }
    if (name === "__proto__" || !isObject(e)) return no;
    const { dtype, shape, data_offsets: off } = e;
    if (typeof dtype !== "string" || !Object.hasOwn(SIZES, dtype)) return no;
    if (!Array.isArray(shape) || shape.length > 26) return no;
    if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return no;
    let strides = 1;
    for (const d of shape) strides *= Math.max(d, 1);
    if (strides > Number.MAX_SAFE_INTEGER) return no;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0)) return no;
    const [b, end] = off as number[];
    const numel = shape.reduce((x: number, y: number) => x * y, 1);
    if (b > end || end > body.length || end - b !== numel * SIZES[dtype]) return no;
    const slice = body.subarray(b, end);
    if (dtype === "BOOL" && slice.some((v) => v > 1)) return no;
    ranges.push([b, end]);
    tensors.set(name, { dtype, shape, bytes: slice });
  }
  // Sorted by start, the ranges tile the data exactly (empty tensors anywhere they fit).
  ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let cursor = 0;
  for (const [b, end] of ranges) {
    if (b !== cursor) return no;
    cursor = end;
  }
  if (cursor !== body.length) return no;
  return { ok: true, tensors, metadata };
}

// ---- one case, in the child ------------------------------------------------------------------------------------

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Files that are not files: reading them must not hang. */
const PATHS: [string, () => string][] = [
  ["a missing file", () => "/nonexistent/fuzz.safetensors"],
  ["a directory", () => Deno.makeTempDirSync()],
  ["/dev/zero, endless", () => "/dev/zero"],
  ["a FIFO nobody writes to", () => {
    const p = `${Deno.makeTempDirSync()}/fifo.safetensors`;
    const made = new Deno.Command("mkfifo", { args: [p] }).outputSync();
    if (!made.success) throw new Error("mkfifo failed");
    return p;
  }],
];

function runCase(index: number): Record<string, unknown> {
  const problems: string[] = [];
  if (index < PATHS.length) {
    const [kind, make] = PATHS[index];
    const path = make();
    try {
      dispose(readSafetensors(path).tensors);
      problems.push("read something from it");
    } catch (e) {
      const m = (e as Error).message;
      if (!m.includes(path)) problems.push(`the message does not name the path: ${m}`);
      const p = messageProblem(m);
      if (p) problems.push(p);
    }
    return { kind, outcome: "rejected", problems };
  }
  const { kind, bytes } = makeCase(index);
  const ref = reference(bytes);
  let got: ReturnType<typeof decodeSafetensors>;
  try {
    got = decodeSafetensors(bytes, SOURCE);
  } catch (e) {
    const err = e as Error;
    if (!(err instanceof SafetensorsError)) problems.push(`threw a ${err.name}, not a SafetensorsError`);
    if (!err.message.startsWith(`${SOURCE}: not a valid safetensors file: `)) problems.push("unprefixed message");
    const p = messageProblem(err.message, 400);
    if (p) problems.push(p);
    if (ref.ok) problems.push("refused a valid file");
    return { kind, outcome: "rejected", message: err.message.slice(0, 300), problems };
  }
  try {
    if (!ref.ok) problems.push("accepted an invalid file");
    else {
      const names = Object.keys(got.tensors);
      if (names.length !== ref.tensors.size) {
        problems.push(`${names.length} tensors, the header has ${ref.tensors.size}`);
      }
      for (const [name, want] of ref.tensors) {
        const t = got.tensors[name];
        if (!t || !Object.hasOwn(got.tensors, name)) {
          problems.push(`tensor ${JSON.stringify(name).slice(0, 40)} is missing`);
          continue;
        }
        if (t.dtype !== DTYPES[want.dtype]) problems.push(`${name}: dtype ${t.dtype}, the header says ${want.dtype}`);
        if (t.shape.join() !== want.shape.join()) problems.push(`${name}: shape [${t.shape}], not [${want.shape}]`);
        if (!equalBytes(bytesOf(data(t)), want.bytes)) problems.push(`${name}: the bytes differ from the file's`);
      }
      if (JSON.stringify(got.metadata) !== JSON.stringify(ref.metadata)) problems.push("the metadata differs");
    }
  } finally {
    dispose(got.tensors);
  }
  return { kind, outcome: "accepted", problems };
}

/** Cases that go wrong on purpose, to check the runner: a native crash, a hang and a runaway allocation. */
function harnessCase(index: number): Record<string, unknown> {
  if (index === 1) new Deno.UnsafePointerView(Deno.UnsafePointer.create(8n)!).getUint8(); // reads address 8
  if (index === 2) { for (;;); }
  if (index === 3) {
    const hold: Uint8Array[] = [];
    for (;;) hold.push(new Uint8Array(32 * 2 ** 20).fill(1));
  }
  return { outcome: "ok", problems: [] };
}

if (isFuzzChild()) {
  await childMain(Deno.args[3] === "harness" ? harnessCase : runCase);
} else {
  Deno.test("the child runner turns a crash, a hang and a runaway allocation into failed cases, and goes on", async () => {
    const run = await runInChildren({
      script: new URL(import.meta.url),
      count: 5,
      args: ["harness"],
      memoryMb: 512,
      caseTimeoutMs: 2000,
    });
    assert.deepEqual(run.results.map((r) => r.index), [0, 1, 2, 3, 4]);
    assert.deepEqual(run.results.map((r) => r.status), ["done", "died", "died", "died", "done"]);
    const why = run.results.map((r) => r.status === "died" ? r.why : "");
    assert.match(why[1], /signal SIGSEGV/);
    assert.match(why[2], /no result after 2000 ms/);
    assert.match(why[3], /resident memory \d+ MiB passed the 512 MiB limit/);
    assert.equal(run.children, 4);
  });

  const COUNT = PATHS.length + fuzzCases(400);
  Deno.test(`safetensors fuzz: ${COUNT} mutated files are each read exactly as their header says or refused with a one-line SafetensorsError, with no crash, hang, leak or runaway allocation`, async () => {
    const count = COUNT;
    const run = await runInChildren({ script: new URL(import.meta.url), count, memoryMb: 1024, caseTimeoutMs: 20_000 });
    const { failures, outcomes } = judge(run, count, kindOf, 256);
    assert.deepEqual(failures, [], summarize(failures));
    assert.equal(run.results.length, count, `${run.results.length} of ${count} cases ran`);
    // The mutations reach both sides: many files are still valid and many are not.
    assert.ok(outcomes.accepted > count / 10 && outcomes.rejected > count / 3, JSON.stringify(outcomes));
  });
}

function kindOf(index: number): string {
  return index < PATHS.length ? PATHS[index][0] : makeCase(index).kind;
}
