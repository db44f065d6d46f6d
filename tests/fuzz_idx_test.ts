// Fuzzing the IDX reader (lib/data/idx.ts), plain and gzipped: every mutated file is read exactly as its header
// says or refused with a one-line Error naming the file; gzip bombs are refused without inflating them; a file
// that is not a file (a device, a pipe) is refused without reading it. idxDataset turns what was read into a
// tensor in native code, so the cases run in child processes (tests/fuzz_helpers.ts) under a memory limit that a
// bomb inflated in full would pass.
//
// DINO_FUZZ_CASES=5000 deno test -A tests/fuzz_idx_test.ts runs more of them.
import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { dispose, toArray } from "../mod.ts";
import { idxDataset, readIdx } from "../lib/data/idx.ts";
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

/** The children's DINO_IDX_MAX_BYTES: 64 MiB, so that a header within it is cheap to honour. */
const MAX_BYTES = 64 * 2 ** 20;

// ---- building files ------------------------------------------------------------------------------------------

function idxBytes(dims: number[], data: Uint8Array, type = 0x08): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  out.set([0, 0, type, dims.length]);
  const view = new DataView(out.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

function gzip(bytes: Uint8Array, r: Rng): Uint8Array {
  return new Uint8Array(gzipSync(bytes, { level: r.pick([0, 1, 6, 9]) }));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

/** A gzip member whose header carries the optional fields: FEXTRA, FNAME and FCOMMENT, some long. */
function withFields(member: Uint8Array, r: Rng): Uint8Array {
  const text = (n: number) => new TextEncoder().encode("n".repeat(n) + "\0");
  const extraLength = r.pick([0, 4, 65535]);
  const extra = new Uint8Array(2 + extraLength);
  new DataView(extra.buffer).setUint16(0, extraLength, true);
  const head = member.slice(0, 10);
  head[3] |= 0x04 | 0x08 | 0x10; // FEXTRA, FNAME, FCOMMENT
  return concat(head, extra, text(r.pick([1, 300, 70_000])), text(r.pick([0, 50])), member.subarray(10));
}

/** A valid IDX file's content: 0 to 4 dimensions, mostly [N, S, S] images, small. */
function validContent(r: Rng): { dims: number[]; data: Uint8Array } {
  const ndim = r.pick([0, 1, 1, 2, 3, 3, 3, 3, 4]);
  const dims = ndim === 3
    ? (() => {
      const s = r.chance(0.05) ? 0 : 1 + r.int(6);
      return [r.chance(0.05) ? 0 : 1 + r.int(5), s, s];
    })()
    : Array.from({ length: ndim }, () => r.int(6));
  return { dims, data: r.bytes(dims.reduce((a, b) => a * b, 1)) };
}

function flipBits(r: Rng, bytes: Uint8Array, from = 0): Uint8Array {
  const out = bytes.slice();
  if (out.length <= from) return out;
  for (let i = 1 + r.int(6); i > 0; i--) out[from + r.int(out.length - from)] ^= 1 << r.int(8);
  return out;
}

/** Mutations of the IDX content itself: the magic number, element type, rank, sizes and length. */
function mutateContent(r: Rng, bytes: Uint8Array, dims: number[]): [string, Uint8Array] {
  const out = bytes.slice();
  const k = r.int(7);
  if (k === 0) {
    out[r.int(2)] = 1 + r.int(255);
    return ["magic", out];
  }
  if (k === 1) {
    out[2] = r.pick([0x00, 0x09, 0x0b, 0x0c, 0x0d, 0x0e, 0xff]);
    return ["type", out];
  }
  if (k === 2) {
    out[3] = r.pick([0, 255, dims.length + 1, Math.max(dims.length - 1, 0), r.int(256)]);
    return ["ndim", out];
  }
  if (k === 3 && dims.length > 0) {
    const i = r.int(dims.length);
    const d = r.pick([0, 1, 2 ** 32 - 1, 2 ** 31, 65536, r.u32(), dims[i] + 1, Math.max(dims[i] - 1, 0)]);
    new DataView(out.buffer).setUint32(4 + 4 * i, d, false);
    return ["dims", out];
  }
  if (k === 4) return ["truncate", out.slice(0, r.int(out.length))];
  if (k === 5) return ["append", concat(out, r.bytes(1 + r.int(8)))];
  return ["bits", flipBits(r, out)];
}

// ---- gzip bombs: 1 GiB of zeros in about 1 MiB, as 64 gzip members of 16 MiB ----------------------------------

let zeros16: Uint8Array | undefined;
function bomb(): Uint8Array {
  zeros16 ??= new Uint8Array(gzipSync(new Uint8Array(16 * 2 ** 20), { level: 9 }));
  const out = new Uint8Array(zeros16.length * 64);
  for (let i = 0; i < 64; i++) out.set(zeros16, i * zeros16.length);
  return out;
}

// ---- cases -------------------------------------------------------------------------------------------------------

interface Case {
  kind: string;
  bytes: Uint8Array;
  /** What the reader must do: "reference" (whatever the reference decoding says) or "refuse" (with this pattern). */
  refuse?: RegExp;
  labels?: Uint8Array;
  classes?: number;
}

const KINDS = ["valid", "content", "content-gz", "gz-bytes", "gz-members", "gz-fields", "bomb", "dataset"] as const;

function makeCase(index: number): Case {
  const r = new Rng(FUZZ_SEED, index);
  const { dims, data } = validContent(r);
  const plain = idxBytes(dims, data);
  const kind = KINDS[index % KINDS.length];
  switch (kind) {
    case "valid":
      return { kind, bytes: r.chance(0.5) ? plain : gzip(plain, r) };
    case "content": {
      const [how, bytes] = mutateContent(r, plain, dims);
      return { kind: `content:${how}`, bytes };
    }
    case "content-gz": {
      const [how, bytes] = mutateContent(r, plain, dims);
      return { kind: `content-gz:${how}`, bytes: gzip(bytes, r) };
    }
    case "gz-bytes": {
      const gz = gzip(plain, r);
      const k = r.int(4);
      if (k === 0) return { kind: "gz:bits", bytes: flipBits(r, gz) };
      if (k === 1) return { kind: "gz:header-bits", bytes: concat(flipBits(r, gz.subarray(0, 10)), gz.subarray(10)) };
      if (k === 2) return { kind: "gz:truncate", bytes: gz.slice(0, 2 + r.int(gz.length - 2)) };
      return {
        kind: "gz:trailing",
        bytes: concat(gz, r.pick([r.bytes(1 + r.int(8)), new Uint8Array(8), gz.subarray(0, 10)])),
      };
    }
    case "gz-members": {
      // The content split over several members (the header too), some empty: still one valid file.
      const cuts = [0, ...Array.from({ length: 1 + r.int(3) }, () => r.int(plain.length + 1)), plain.length].sort((
        a,
        b,
      ) => a - b);
      const members = cuts.slice(1).map((end, i) => gzip(plain.subarray(cuts[i], end), r));
      return { kind, bytes: concat(...members) };
    }
    case "gz-fields":
      return { kind, bytes: withFields(gzip(plain, r), r) };
    case "bomb": {
      const k = r.int(4);
      if (k === 0) {
        // A small header, then a gigabyte more than it says.
        return {
          kind: "bomb:small-header",
          bytes: concat(gzip(idxBytes([r.pick([1, 4, 1000])], new Uint8Array(0)), r), bomb()),
          refuse: /inflates to more than the \d+ bytes its IDX header implies/,
        };
      }
      if (k === 1) {
        // A header whose sizes multiply past any limit: refused before anything is inflated.
        return {
          kind: "bomb:huge-header",
          bytes: concat(gzip(idxBytes([2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1], new Uint8Array(0)), r), bomb()),
          refuse: /over the limit of \d+ \(raise it with DINO_IDX_MAX_BYTES\)/,
        };
      }
      if (k === 2) {
        // An honest header for a gigabyte: over DINO_IDX_MAX_BYTES.
        return {
          kind: "bomb:over-limit",
          bytes: concat(gzip(idxBytes([16384, 256, 256], new Uint8Array(0)), r), bomb()),
          refuse: /imply 1073741824 bytes of data, over the limit of 67108864/,
        };
      }
      // The header arrives only after the first 64 KiB of gzip header fields.
      return {
        kind: "bomb:late-header",
        bytes: concat(withFields(gzip(idxBytes([2, 2], new Uint8Array(0)), r), r), bomb()),
        refuse: /inflates to more than the 16 bytes its IDX header implies/,
      };
    }
    case "dataset": {
      // Images with a labels file, one of them mutated: idxDataset must build a dataset or refuse.
      const n = 1 + r.int(4);
      const s = 1 + r.int(5);
      let images = idxBytes([n, s, s], r.bytes(n * s * s));
      let labels = idxBytes([n], Uint8Array.from({ length: n }, () => r.int(10)));
      let how = "valid";
      const k = r.int(4);
      if (k === 1) [how, images] = mutateContent(r, images, [n, s, s]);
      if (k === 2) [how, labels] = mutateContent(r, labels, [n]);
      if (k === 3) {
        labels = idxBytes([n], Uint8Array.from({ length: n }, () => r.pick([9, 10, 255])));
        how = "label-range";
      }
      return { kind: `dataset:${how}`, bytes: r.chance(0.5) ? gzip(images, r) : images, labels, classes: 10 };
    }
  }
}

// ---- the reference: the format, decoded without limits (the cases are small, the bombs are not referenced) --------

function reference(bytes: Uint8Array): { dims: number[]; data: Uint8Array } | undefined {
  let content = bytes;
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      content = new Uint8Array(gunzipSync(bytes));
    } catch {
      return undefined;
    }
  }
  if (content.length < 4 || content[0] !== 0 || content[1] !== 0 || content[2] !== 8) return undefined;
  const start = 4 + 4 * content[3];
  if (content.length < start) return undefined;
  const view = new DataView(content.buffer, content.byteOffset, content.byteLength);
  const dims = Array.from({ length: content[3] }, (_, i) => view.getUint32(4 + 4 * i, false));
  const size = dims.reduce((a, b) => a * b, 1);
  if (size > MAX_BYTES || content.length - start !== size) return undefined;
  return { dims, data: content.subarray(start) };
}

/** Files that are not files, or far too big: refused without reading them. */
const PATHS: [string, (dir: string) => string][] = [
  ["a missing file", () => "/nonexistent/train-images-idx3-ubyte"],
  ["a directory", (dir) => dir],
  ["/dev/zero, endless", () => "/dev/zero"],
  ["a FIFO nobody writes to", (dir) => {
    const p = join(dir, "fifo-idx3-ubyte");
    if (!new Deno.Command("mkfifo", { args: [p] }).outputSync().success) throw new Error("mkfifo failed");
    return p;
  }],
  ["a sparse 8 GiB file", (dir) => {
    const p = join(dir, "huge-idx3-ubyte");
    Deno.writeFileSync(p, new Uint8Array(0));
    Deno.truncateSync(p, 8 * 2 ** 30);
    return p;
  }],
];

// ---- one case, in the child ------------------------------------------------------------------------------------

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function checkError(e: unknown, path: string, problems: string[]): string {
  const err = e as Error;
  if (!(err instanceof Error)) problems.push(`threw ${String(e)}, not an Error`);
  else if (err.name !== "Error") problems.push(`threw a ${err.name}`);
  if (!err.message.includes(path)) problems.push("the message does not name the file");
  const p = messageProblem(err.message);
  if (p) problems.push(p);
  return err.message;
}

async function runCase(index: number): Promise<Record<string, unknown>> {
  const dir = Deno.makeTempDirSync({ prefix: "fuzz_idx" });
  try {
    const problems: string[] = [];
    if (index < PATHS.length) {
      const [kind, make] = PATHS[index];
      const path = make(dir);
      try {
        readIdx(path);
        problems.push("read something from it");
        return { kind, outcome: "accepted", problems };
      } catch (e) {
        return { kind, outcome: "rejected", message: checkError(e, path, problems).slice(0, 300), problems };
      }
    }
    const c = makeCase(index);
    const path = join(dir, "images-idx3-ubyte");
    Deno.writeFileSync(path, c.bytes);
    if (c.labels) {
      // The dataset: the reference's verdict on both files decides whether it must load.
      const labelsPath = join(dir, "labels-idx1-ubyte");
      Deno.writeFileSync(labelsPath, c.labels);
      const img = reference(c.bytes);
      const lbl = reference(c.labels);
      const classes = Array.from({ length: c.classes! }, (_, i) => `c${i}`);
      const ok = img && lbl && img.dims.length === 3 && img.dims[1] === img.dims[2] && img.dims[0] > 0 &&
        img.dims[1] > 0 && lbl.dims.length === 1 && lbl.dims[0] === img.dims[0] && lbl.data.every((l) => l < 10);
      let ds;
      try {
        ds = idxDataset(path, labelsPath, classes);
      } catch (e) {
        const message = String((e as Error).message);
        if (!message.includes(path) && !message.includes(labelsPath)) problems.push("the message names no file");
        const p = messageProblem(message);
        if (p) problems.push(p);
        if (ok) problems.push("refused a valid dataset");
        return { kind: c.kind, outcome: "rejected", message: message.slice(0, 300), problems };
      }
      try {
        if (!ok) problems.push("accepted an invalid dataset");
        else {
          const [n, s] = img.dims;
          if (ds.length !== n || ds.size !== s || ds.channels !== 1) problems.push("wrong dataset dimensions");
          const i = n - 1;
          const b = await ds.load([i]);
          const pixels = Uint8Array.from(toArray(b.images));
          if (!equal(pixels, img.data.subarray(i * s * s, (i + 1) * s * s))) problems.push("wrong pixels");
          if (toArray(b.labels!)[0] !== lbl.data[i]) problems.push("wrong label");
          dispose([b.images, b.labels]);
        }
      } finally {
        ds.dispose();
      }
      return { kind: c.kind, outcome: "accepted", problems };
    }
    const want = c.refuse ? undefined : reference(c.bytes);
    let got;
    try {
      got = readIdx(path);
    } catch (e) {
      const message = checkError(e, path, problems);
      if (c.refuse && !c.refuse.test(message)) problems.push(`expected a message like ${c.refuse}`);
      if (want) problems.push("refused a valid file");
      return { kind: c.kind, outcome: "rejected", message: message.slice(0, 300), problems };
    }
    if (!want) problems.push("accepted an invalid file");
    else if (got.dims.join() !== want.dims.join() || !equal(got.data, want.data)) {
      problems.push(`read [${got.dims}], the file holds [${want.dims}] (or other bytes)`);
    }
    return { kind: c.kind, outcome: "accepted", problems };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (isFuzzChild()) {
  await childMain(runCase);
} else {
  const COUNT = PATHS.length + fuzzCases(400);
  Deno.test(`IDX fuzz: ${COUNT} mutated plain and gzipped files (and datasets) are each read exactly or refused with a one-line error naming the file; gzip bombs are refused uninflated`, async () => {
    const count = COUNT;
    const run = await runInChildren({
      script: new URL(import.meta.url),
      count,
      memoryMb: 768,
      caseTimeoutMs: 20_000,
      env: { DINO_IDX_MAX_BYTES: String(MAX_BYTES) },
    });
    const { failures, outcomes } = judge(run, count, kindOf, 64);
    assert.deepEqual(failures, [], summarize(failures));
    assert.equal(run.results.length, count, `${run.results.length} of ${count} cases ran`);
    assert.ok(outcomes.accepted > count / 5 && outcomes.rejected > count / 5, JSON.stringify(outcomes));
  });
}

function kindOf(index: number): string {
  return index < PATHS.length ? PATHS[index][0] : makeCase(index).kind;
}
