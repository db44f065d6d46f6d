// Fuzzing the image decoder (native/images.cpp, stb_image compiled into the shim) with mutations of small valid
// files of every format stb reads (tests/fixtures/images/, written by make.py there): bit flips, byte insertions
// and deletions, truncations, splices, and header fields (sizes, bit depths, colour types, compression, segment
// lengths) set to zero, huge or odd values, JPEG Huffman tables of too many codes; and zlib bombs, PNGs whose few
// pixels inflate from a small file to hundreds of MiB. Every file must be decoded or skipped with a one-line
// reason, whatever the thread count; no file may abort or crash the process (stb's asserts are exceptions in the
// shim), hang it, or raise its peak memory without bound. The files are decoded in batches in child processes
// (tests/fuzz_helpers.ts), through decodeImages and through the folder dataset, on 1 and 2 threads; the first
// batch is the seeds as they are, the files that crashed or hung the process before (knownFiles) and valid strips
// of extreme aspect ratios. Every file also goes through the single-image decoder decodeImage (the whole image,
// its aspect kept, each side snapped to a multiple, or at its own size as `deno task attention` decodes) with two
// of a few short sides and multiples per batch, from 1 x 1 to 224 x multiples of 16; it must decode to that shape
// or give a one-line reason, the same reason as decodeImages unless the reason is the resize's (a side past 16384).
//
// DINO_FUZZ_CASES=5000 deno test -A tests/fuzz_images_test.ts decodes more files (the default is 2000).
import assert from "node:assert/strict";
import { join } from "node:path";
import { data, decodeImage, decodeImages, dispose } from "../mod.ts";
import { imageFolder } from "../lib/data/folder.ts";
import {
  childMain,
  type ChildRun,
  FUZZ_SEED,
  fuzzCases,
  isFuzzChild,
  judge,
  messageProblem,
  Rng,
  runInChildren,
  summarize,
} from "./fuzz_helpers.ts";

/** Files decoded by one call (one case of the child runner). */
const BATCH = 16;
/** The children's pixel budget: a header within it is cheap to honour (about 20 bytes a pixel at most). */
const MAX_PIXELS = 4_000_000;
/** A child's resident memory may not pass this (MiB); its peak (VmHWM) is checked against it too. */
const MEMORY_MB = 1024;
/** How far one batch may raise a child's peak memory (MiB): two threads decoding at the budget, and slack. */
const BATCH_GROWTH_MB = 320;

const FIXTURES = new URL("./fixtures/images/", import.meta.url);
const SEEDS: { name: string; bytes: Uint8Array }[] = [...Deno.readDirSync(FIXTURES)]
  .map((e) => e.name)
  .filter((n) => !n.endsWith(".py"))
  .sort()
  .map((name) => ({ name, bytes: Deno.readFileSync(new URL(name, FIXTURES)) }));
/** Seeds stb does not read (BMP RLE): skipped with a reason, never decoded. */
const UNSUPPORTED = /^bmp-rle/;

// ---- header fields -----------------------------------------------------------------------------------------------

/** A field in a file's header: where it is, how wide, and values worth trying there. */
interface Field {
  name: string;
  at: number;
  size: 1 | 2 | 4;
  le?: boolean;
  values: number[];
}

const u16 = (b: Uint8Array, at: number, le = false) =>
  at + 2 <= b.length ? new DataView(b.buffer, b.byteOffset).getUint16(at, le) : 0;
const u32 = (b: Uint8Array, at: number, le = false) =>
  at + 4 <= b.length ? new DataView(b.buffer, b.byteOffset).getUint32(at, le) : 0;

function sizes(orig: number, wide: boolean): number[] {
  const common = [0, 1, 2, 3, 7, 8, 255, 256, 4095, 0x7fff, 0x8000, 0xffff, orig + 1, orig - 1, orig * 2, orig * 16];
  const big = [0x10000, 1 << 20, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, 16_000_000, 0x7fffffff, 0x80000000, 0xffffffff];
  return (wide ? [...common, ...big] : common).filter((v) => v >= 0 && v <= (wide ? 0xffffffff : 0xffff));
}

function dims(w: Field["at"], h: Field["at"], size: 2 | 4, le: boolean, b: Uint8Array): Field[] {
  const get = size === 2 ? u16 : u32;
  return [
    { name: "width", at: w, size, le, values: sizes(get(b, w, le), size === 4) },
    { name: "height", at: h, size, le, values: sizes(get(b, h, le), size === 4) },
  ];
}

const ANY8 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255];

/** PNG chunks: [offset of the length field, length, type]. */
function pngChunks(b: Uint8Array): [number, number, string][] {
  const out: [number, number, string][] = [];
  for (let at = 8; at + 8 <= b.length && out.length < 64;) {
    const len = u32(b, at);
    out.push([at, len, String.fromCharCode(...b.subarray(at + 4, at + 8))]);
    at += 12 + len;
  }
  return out;
}

/** JPEG marker segments before the entropy-coded data: [offset of the 0xFF, marker, segment length]. */
function jpegSegments(b: Uint8Array): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let at = 2; at + 4 <= b.length && out.length < 64;) {
    if (b[at] !== 0xff) break;
    const marker = b[at + 1], len = u16(b, at + 2);
    out.push([at, marker, len]);
    if (marker === 0xda) break; // SOS: scan data follows
    at += 2 + len;
  }
  return out;
}

/** The header fields of a seed, by format. */
function fields(name: string, b: Uint8Array): Field[] {
  const ext = name.split(".").pop()!;
  const f = (name: string, at: number, size: 1 | 2 | 4, values: number[], le = false): Field => ({
    name,
    at,
    size,
    le,
    values,
  });
  switch (ext) {
    case "png": {
      const out = [
        ...dims(16, 20, 4, false, b),
        f("bit depth", 24, 1, [0, 1, 2, 3, 4, 8, 16, 32, 255]),
        f("colour type", 25, 1, [0, 1, 2, 3, 4, 5, 6, 7, 8, 255]),
        f("compression", 26, 1, [0, 1, 255]),
        f("filter method", 27, 1, [0, 1, 255]),
        f("interlace", 28, 1, [0, 1, 2, 255]),
      ];
      for (const [at, len, type] of pngChunks(b)) {
        out.push(f(`${type} length`, at, 4, [0, 1, len - 1, len + 1, len * 2, 0x7fffffff, 0x80000000, 0xffffffff]));
        out.push(f(`${type} type`, at + 4, 4, [0x49484452, 0x504c5445, 0x49444154, 0x74524e53, 0x49454e44, 0]));
      }
      // The zlib header and the first deflate block header of the first IDAT.
      const idat = pngChunks(b).find((c) => c[2] === "IDAT");
      if (idat) {
        out.push(f("zlib CMF", idat[0] + 8, 1, [0x78, 0x08, 0x7f, 0xf8, 0, 0xff]));
        out.push(f("zlib FLG", idat[0] + 9, 1, [0x9c, 0xda, 0x01, 0x20, 0xff]));
        out.push(f("deflate block", idat[0] + 10, 1, ANY8));
      }
      return out;
    }
    case "jpg": {
      const out: Field[] = [];
      for (const [at, marker, len] of jpegSegments(b)) {
        out.push(f(`${marker.toString(16)} length`, at + 2, 2, [0, 1, 2, 3, len - 1, len + 1, 0xffff]));
        out.push(f(`${marker.toString(16)} marker`, at + 1, 1, [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xd8, 0xd9, 0xda, 0xdd]));
        if (marker >= 0xc0 && marker <= 0xc2) {
          out.push(f("precision", at + 4, 1, [0, 8, 12, 16]));
          out.push(...dims(at + 7, at + 5, 2, false, b));
          out.push(f("components", at + 9, 1, [0, 1, 2, 3, 4, 5, 255]));
          for (let c = 0; c < Math.min(b[at + 9], 4); c++) {
            out.push(
              f(`sampling ${c}`, at + 11 + 3 * c, 1, [0x00, 0x11, 0x12, 0x21, 0x22, 0x14, 0x41, 0x44, 0x55, 0xff]),
            );
            out.push(f(`quant table ${c}`, at + 12 + 3 * c, 1, [0, 1, 2, 3, 4, 255]));
          }
        } else if (marker === 0xc4 || marker === 0xdb) {
          out.push(
            f(`${marker === 0xc4 ? "huffman" : "quant"} table id`, at + 4, 1, [0, 1, 2, 3, 4, 0x10, 0x11, 0x13, 0xff]),
          );
          for (let k = 0; k < 16; k++) out.push(f(`table byte ${k}`, at + 5 + k, 1, ANY8));
        } else if (marker === 0xda) {
          const n = b[at + 4];
          out.push(f("scan components", at + 4, 1, [0, 1, 2, 3, 4, 255]));
          for (let c = 0; c < Math.min(n, 4); c++) {
            out.push(f(`scan id ${c}`, at + 5 + 2 * c, 1, [0, 1, 2, 3, 4, 255]));
            out.push(f(`scan tables ${c}`, at + 6 + 2 * c, 1, [0x00, 0x11, 0x01, 0x10, 0x44, 0xff]));
          }
          out.push(f("spectral start", at + 5 + 2 * n, 1, [0, 1, 5, 63, 64, 255]));
          out.push(f("spectral end", at + 6 + 2 * n, 1, [0, 1, 5, 63, 64, 255]));
          out.push(f("approximation", at + 7 + 2 * n, 1, [0x00, 0x01, 0x10, 0x11, 0x21, 0xdd, 0xff]));
        }
      }
      return out;
    }
    case "bmp": {
      const hsz = u32(b, 14, true);
      const out = [
        f("data offset", 10, 4, [0, 14, 26, 54, b.length - 1, b.length, b.length + 100, 0x7fffffff, 0xffffffff], true),
        f("header size", 14, 4, [0, 12, 16, 40, 52, 56, 64, 108, 124, 200, 0xffffffff], true),
      ];
      if (hsz === 12) {
        out.push(...dims(18, 20, 2, true, b), f("bits", 24, 2, [0, 1, 2, 4, 8, 16, 24, 32, 0xffff], true));
      } else {
        out.push(
          ...dims(18, 22, 4, true, b),
          f("planes", 26, 2, [0, 1, 2], true),
          f("bits", 28, 2, [0, 1, 2, 3, 4, 8, 15, 16, 24, 32, 48, 64, 0xffff], true),
          f("compression", 30, 4, [0, 1, 2, 3, 4, 5, 6, 0xffffffff], true),
          f("colours used", 46, 4, [0, 1, 2, 15, 16, 255, 256, 257, 0x7fffffff, 0xffffffff], true),
        );
        for (let k = 0; k < 4 && 54 + 4 * k + 4 <= Math.min(b.length, 14 + hsz + 12); k++) {
          const masks = [0, 1, 0xff, 0x80000000, 0xffffffff, 0xf0f0f0f0, 0x00ff0000, 0x0000ff00, 0x000000ff, 0x7c00];
          out.push(f(`mask ${k}`, 54 + 4 * k, 4, masks, true));
        }
      }
      return out;
    }
    case "gif": {
      const out = [
        ...dims(6, 8, 2, true, b),
        f("flags", 10, 1, [0x00, 0x80, 0x87, 0xf7, 0xff, 0x70]),
        f("background", 11, 1, [0, 1, 255]),
      ];
      let at = 13 + (b[10] & 0x80 ? 3 << ((b[10] & 7) + 1) : 0);
      while (at < b.length && b[at] === 0x21) { // extensions: skip their sub-blocks
        at += 2;
        while (at < b.length && b[at] !== 0) at += b[at] + 1;
        at++;
      }
      if (b[at] === 0x2c) {
        out.push(f("frame left", at + 1, 2, sizes(u16(b, at + 1, true), false), true));
        out.push(f("frame top", at + 3, 2, sizes(u16(b, at + 3, true), false), true));
        out.push(...dims(at + 5, at + 7, 2, true, b).map((d) => ({ ...d, name: `frame ${d.name}` })));
        out.push(f("frame flags", at + 9, 1, [0x00, 0x40, 0x80, 0x87, 0xc7, 0xff]));
        const lzw = at + 10 + (b[at + 9] & 0x80 ? 3 << ((b[at + 9] & 7) + 1) : 0);
        out.push(f("LZW code size", lzw, 1, [0, 1, 2, 7, 8, 11, 12, 13, 255]));
        out.push(f("first block length", lzw + 1, 1, [0, 1, 2, 254, 255]));
      }
      return out;
    }
    case "tga":
      return [
        f("id length", 0, 1, [0, 1, 255]),
        f("colour map type", 1, 1, [0, 1, 2, 255]),
        f("image type", 2, 1, [0, 1, 2, 3, 4, 9, 10, 11, 12, 32, 255]),
        f("colour map start", 3, 2, [0, 1, 255, 0xffff], true),
        f("colour map length", 5, 2, [0, 1, 2, 255, 256, 0xffff], true),
        f("colour map bits", 7, 1, [0, 8, 15, 16, 24, 32, 255]),
        ...dims(12, 14, 2, true, b),
        f("bits", 16, 1, [0, 1, 8, 15, 16, 24, 32, 255]),
        f("descriptor", 17, 1, [0x00, 0x08, 0x20, 0x28, 0x30, 0xff]),
      ];
    case "psd":
      return [
        f("version", 4, 2, [0, 1, 2]),
        f("channels", 12, 2, [0, 1, 2, 3, 4, 5, 16, 17, 0xffff]),
        ...dims(18, 14, 4, false, b),
        f("depth", 22, 2, [0, 1, 8, 16, 32, 0xffff]),
        f("colour mode", 24, 2, [1, 3, 4, 0xffff]),
        f("mode data length", 26, 4, [0, 1, 0x7fffffff, 0xffffffff]),
        f("resources length", 30, 4, [0, 1, 0x7fffffff, 0xffffffff]),
        f("layers length", 34, 4, [0, 1, 0x7fffffff, 0xffffffff]),
        f("compression", 38, 2, [0, 1, 2, 0xffff]),
      ];
    case "pic": {
      const out = [...dims(92, 94, 2, false, b)];
      for (let p = 0; p < 3 && 104 + 4 * p + 4 <= b.length; p++) {
        out.push(f(`packet ${p} chained`, 104 + 4 * p, 1, [0, 1, 255]));
        out.push(f(`packet ${p} size`, 105 + 4 * p, 1, [0, 8, 16]));
        out.push(f(`packet ${p} type`, 106 + 4 * p, 1, [0, 1, 2, 3, 255]));
        out.push(f(`packet ${p} channels`, 107 + 4 * p, 1, [0x00, 0x10, 0x80, 0xe0, 0xf0, 0x0f, 0xff]));
      }
      return out;
    }
    default:
      return []; // HDR and PNM: text headers, mutated as text
  }
}

/** The text headers of HDR and PNM files, with their sizes (and PNM's maxval) replaced. */
function textHeader(name: string, b: Uint8Array, r: Rng): [string, Uint8Array] | undefined {
  const head = String.fromCharCode(...b.subarray(0, 200));
  const big = () =>
    String(
      r.pick([0, 1, 2, 7, 65535, 65536, 1 << 24, (1 << 24) + 1, 16_000_000, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1e12, 1e30]),
    );
  const value = (v: string) =>
    r.chance(0.3) ? `-${big()}` : r.chance(0.5) ? big() : String(Number(v) + r.pick([-1, 1]));
  let m: RegExpExecArray | null;
  let out: string | undefined;
  if (name.endsWith(".hdr") && (m = /([-+]Y) (\d+) ([-+]X) (\d+)\n/.exec(head))) {
    const axis = r.chance(0.2) ? r.pick(["+Y", "-X", "Y", "--Y"]) : m[1];
    out = head.replace(m[0], `${axis} ${value(m[2])} ${m[3]} ${value(m[4])}\n`);
  } else if ((m = /^(P[56]\s+(?:#[^\n]*\n\s*)*)(\d+)(\s+)(\d+)(\s+)(\d+)/.exec(head))) {
    const k = r.int(3);
    const maxval = () => String(r.pick([0, 1, 254, 255, 256, 65535, 65536, 2 ** 31, 1e12]));
    out = m[1] + (k === 0 ? value(m[2]) : m[2]) + m[3] + (k === 1 ? value(m[4]) : m[4]) + m[5] +
      (k === 2 ? maxval() : m[6]) + head.slice(m[0].length);
  }
  if (out === undefined) return undefined;
  const bytes = Uint8Array.from(out, (c) => c.charCodeAt(0));
  return ["text-header", concat(bytes, b.subarray(Math.min(200, b.length)))];
}

// ---- mutations -------------------------------------------------------------------------------------------------

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

function setField(b: Uint8Array, f: Field, v: number): Uint8Array {
  const out = b.slice();
  if (f.at + f.size > out.length) return out;
  const view = new DataView(out.buffer);
  if (f.size === 1) out[f.at] = v & 0xff;
  else if (f.size === 2) view.setUint16(f.at, v & 0xffff, f.le);
  else view.setUint32(f.at, v >>> 0, f.le);
  return out;
}

/**
 * The JPEG with its `which`th DHT segment replaced by one table (of the same class and id) with these 16 code
 * counts and as many symbols.
 */
function oversizedHuffman(b: Uint8Array, which: number, counts: number[]): Uint8Array {
  const dhts = jpegSegments(b).filter(([, marker]) => marker === 0xc4);
  if (dhts.length === 0) return b.slice();
  const [at, , len] = dhts[which % dhts.length];
  const n = counts.reduce((a, c) => a + c, 0);
  const seg = new Uint8Array(4 + 17 + n);
  seg.set([0xff, 0xc4, (2 + 17 + n) >> 8, (2 + 17 + n) & 0xff, b[at + 4]]);
  seg.set(counts, 5);
  for (let i = 0; i < n; i++) seg[21 + i] = (i * 7) & 0xff;
  return concat(b.subarray(0, at), seg, b.subarray(at + 2 + len));
}

const MUTATIONS = [
  "bits",
  "header-bits",
  "bytes",
  "insert",
  "delete",
  "truncate",
  "field",
  "fields",
  "aspect",
  "splice",
  "huffman",
];

/** One mutation of a seed: [what was done, the bytes]. */
function mutate(r: Rng, seed: { name: string; bytes: Uint8Array }, kind = r.pick(MUTATIONS)): [string, Uint8Array] {
  const b = seed.bytes;
  switch (kind) {
    case "bits":
    case "header-bits": {
      const out = b.slice();
      const span = kind === "bits" ? out.length : Math.min(out.length, 128);
      for (let i = 1 + r.int(8); i > 0; i--) out[r.int(span)] ^= 1 << r.int(8);
      return [kind, out];
    }
    case "bytes": {
      const out = b.slice();
      for (let i = 1 + r.int(4); i > 0; i--) out[r.int(out.length)] = r.pick([0, 0xff, 0x7f, 0x80, 1, r.int(256)]);
      return [kind, out];
    }
    case "insert": {
      const at = r.int(b.length + 1);
      const bytes = r.chance(0.5) ? r.bytes(1 + r.int(16)) : new Uint8Array(1 + r.int(16)).fill(r.pick([0, 0xff]));
      return [kind, concat(b.subarray(0, at), bytes, b.subarray(at))];
    }
    case "delete": {
      const at = r.int(b.length);
      return [kind, concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + r.int(16))))];
    }
    case "truncate":
      return [kind, b.slice(0, r.int(b.length))];
    case "field":
    case "fields": {
      const fs = fields(seed.name, b);
      if (fs.length === 0) return textHeader(seed.name, b, r) ?? ["truncate", b.slice(0, r.int(b.length))];
      let out = b;
      const names: string[] = [];
      for (let i = kind === "field" ? 1 : 2 + r.int(3); i > 0; i--) {
        const f = r.pick(fs);
        const v = r.pick(f.values);
        out = setField(out, f, v);
        names.push(`${f.name}=${v}`);
      }
      return [`field:${names.join(",")}`, out];
    }
    case "aspect": {
      // One side 1 (or tiny), the other as large as the field holds, or both huge.
      const [w, h] = fields(seed.name, b).filter((f) => f.name === "width" || f.name === "height");
      if (!w || !h) return textHeader(seed.name, b, r) ?? ["truncate", b.slice(0, r.int(b.length))];
      const top = w.size === 2 ? 0xffff : r.pick([1 << 24, 16_000_000, 0x7fffffff, 0xffffffff, 100_000]);
      const [vw, vh] = r.pick([[1, top], [top, 1], [top, top], [2, top >>> 1], [top >>> 1, 2]]);
      return [`aspect:${vw}x${vh}`, setField(setField(b, w, vw), h, vh)];
    }
    case "huffman": {
      // JPEG: a Huffman table with many long codes (its counts may add up to more than 256, which stb 2.27 does
      // not check); other formats: two fields.
      if (!seed.name.endsWith(".jpg")) return mutate(r, seed, "fields");
      const counts = Array.from(
        { length: 16 },
        (_, i) => i < 8 ? r.pick([0, 0, 1, 2]) : r.pick([0, 1, 16, 64, 128, 255]),
      );
      const n = counts.reduce((a, c) => a + c, 0);
      return [`huffman:${n} codes`, oversizedHuffman(b, r.int(8), counts)];
    }
    default: {
      // The head of this file and the tail of another (often of the same format).
      const same = SEEDS.filter((s) => s.name.split(".").pop() === seed.name.split(".").pop());
      const other = r.chance(0.7) ? r.pick(same) : r.pick(SEEDS);
      const cut = r.int(b.length), from = r.int(other.bytes.length);
      return [`splice:${other.name}`, concat(b.subarray(0, cut), other.bytes.subarray(from))];
    }
  }
}

// ---- zlib bombs ----------------------------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  let c = 0xffffffff;
  for (const x of out.subarray(4, 8 + data.length)) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  view.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
  return out;
}

/** The zlib stream of `mib` MiB of zeros, compressed a MiB at a time (about 1 KiB of stream per MiB). */
async function zeros(mib: number): Promise<Uint8Array> {
  const mb = new Uint8Array(2 ** 20);
  let i = 0;
  const source = new ReadableStream<BufferSource>({
    pull(c) {
      if (i++ < mib) c.enqueue(mb);
      else c.close();
    },
  });
  return new Uint8Array(await new Response(source.pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
}

const bombs = new Map<number, Promise<Uint8Array>>();

/** A PNG declaring w x h 8-bit gray pixels whose IDAT inflates to `mib` MiB: stb inflates all of it. */
async function zlibBomb(w: number, h: number, mib: number): Promise<Uint8Array> {
  if (!bombs.has(mib)) bombs.set(mib, zeros(mib));
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, w);
  new DataView(ihdr.buffer).setUint32(4, h);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const sig = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return concat(
    sig,
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", await bombs.get(mib)!),
    pngChunk("IEND", new Uint8Array()),
  );
}

// ---- cases: batches of files -----------------------------------------------------------------------------------------

interface FuzzFile {
  name: string;
  kind: string;
  bytes: Uint8Array;
  /** The file must be decoded ("decoded") or skipped with a reason matching this. */
  expect?: "decoded" | RegExp;
  /** A gray image: decoded in RGB, its three channels must be equal. */
  gray?: boolean;
  /** Its width and height, when known: decodeImage's outcome is then checked exactly. */
  size?: [number, number];
}

/** How far the zlib bombs inflate. */
const BOMB_MIB = 512;

/**
 * Files that ended, hung or bloated the process when the shim linked Debian's libstb (stb_image 2.27), and what
 * each must do now. No input found made an stb assert fail and abort (in some 50,000 mutated files, and searches
 * aimed at PNG's, JPEG's and the resizer's asserts); the oversized JPEG Huffman table crashes while evaluating one.
 */
async function knownFiles(): Promise<FuzzFile[]> {
  const seed = (name: string) => SEEDS.find((s) => s.name === name)!.bytes;
  const hdr = seed("hdr-rle.hdr");
  const hdrData = hdr.indexOf(0x0a, new TextDecoder().decode(hdr).indexOf("+X 16")) + 1;
  const pgm16 = (w: number, h: number) => {
    const head = new TextEncoder().encode(`P5 ${w} ${h} 65535\n`);
    const out = new Uint8Array(head.length + 2 * w * h);
    out.set(head);
    for (let i = head.length; i < out.length; i++) out[i] = i * 7;
    return out;
  };
  const png = seed("png-rgb8.png");
  return [
    // SIGSEGV: a PIC that ends early fails to decode, and stb converts its channels anyway, from a null buffer.
    {
      name: "known-pic-truncated.pic",
      kind: "PIC cut short",
      bytes: seed("pic-rgb.pic").slice(0, 300),
      expect: /bad file/,
    },
    {
      name: "known-pic-rle-truncated.pic",
      kind: "RLE PIC cut short",
      bytes: seed("pic-rgba-rle.pic").slice(0, 200),
      expect: /bad file/,
    },
    // A hang, 100% CPU forever: an HDR file that ends inside a run-length encoded scanline (CVE-2021-42715).
    {
      name: "known-hdr-truncated.hdr",
      kind: "HDR cut inside a scanline",
      bytes: hdr.slice(0, hdrData + 20),
      expect: /ends inside a run-length encoded scanline/,
    },
    // SIGSEGV (and garbage pixels when it survived): a valid 16-bit PGM decoded in RGB, which stb converted with
    // its 8-bit routine and then read as 16-bit, past its buffer (CVE-2021-42716).
    {
      name: "known-pgm16-1500x1500.pgm",
      kind: "16-bit PGM, 1500 x 1500",
      bytes: pgm16(1500, 1500),
      expect: "decoded",
      gray: true,
    },
    {
      name: "pnm-gray16-as-rgb.pgm",
      kind: "the 16-bit PGM seed",
      bytes: seed("pnm-gray16.pgm"),
      expect: "decoded",
      gray: true,
    },
    // SIGSEGV: a JPEG Huffman table of 765 codes (at most 256 fit), which overflows stb's table and makes it read
    // far outside it, evaluating the assert in stbi__jpeg_huff_decode.
    {
      name: "known-jpeg-huffman-765.jpg",
      kind: "a JPEG DHT whose code counts add up to 765",
      bytes: oversizedHuffman(seed("jpeg-gray.jpg"), 0, [...Array(13).fill(0), 255, 255, 255]),
      expect: /Huffman table of more than 256 codes/,
    },
    // SIGSEGV, in the shim that first steered around the table above: stb takes a file that starts with 0xff fill
    // bytes before its SOI for a JPEG, and the check looked for the SOI in the first two bytes only.
    {
      name: "known-jpeg-huffman-765-fill.jpg",
      kind: "the JPEG above after a 0xff fill byte",
      bytes: concat(
        new Uint8Array([0xff]),
        oversizedHuffman(seed("jpeg-gray.jpg"), 0, [...Array(13).fill(0), 255, 255, 255]),
      ),
      expect: /Huffman table of more than 256 codes/,
    },
    // Not a crash but a gigabyte: a 1 x 1 PNG whose data inflates to 512 MiB, all of which stb inflated.
    {
      name: "known-zlib-bomb-1x1.png",
      kind: `zlib bomb: 1 x 1, ${BOMB_MIB} MiB`,
      bytes: await zlibBomb(1, 1, BOMB_MIB),
      expect: /decompression bomb/,
    },
    // A reason over two lines: stb names an unknown critical chunk by its type, four raw bytes of the file.
    {
      name: "known-chunk-type.png",
      kind: "an unknown critical PNG chunk named \\nA\\rB",
      bytes: concat(png.subarray(0, 33), pngChunk("\nA\rB", new Uint8Array(4)), png.subarray(33)),
      expect: /^cannot decode \(\?A\?B PNG chunk not known\)$/,
    },
  ];
}

/** The mutated file with this global index (its bytes depend only on the seed and the index). */
async function fuzzFile(index: number): Promise<FuzzFile> {
  const r = new Rng(FUZZ_SEED, index);
  const seed = r.pick(SEEDS);
  const name = `${String(index).padStart(5, "0")}-${seed.name}`;
  if (r.chance(0.01)) {
    const [w, h] = r.pick([[1, 1], [13, 9], [1000, 1000]]);
    return {
      name: `${String(index).padStart(5, "0")}-bomb.png`,
      kind: `zlib bomb: ${w} x ${h}, ${BOMB_MIB} MiB`,
      bytes: await zlibBomb(w, h, BOMB_MIB),
      expect: /decompression bomb/,
    };
  }
  let [kind, bytes] = mutate(r, seed);
  if (r.chance(0.15)) { // a second mutation on top
    const [k2, b2] = mutate(r, { name: seed.name, bytes });
    [kind, bytes] = [`${kind}+${k2}`, b2];
  }
  return { name, kind: `${seed.name} ${kind}`, bytes };
}

/** The files of a case: case 0 is every seed as it is; the others are BATCH mutated files each. */
async function batchFiles(c: number, total: number): Promise<FuzzFile[]> {
  if (c === 0) {
    const seeds: FuzzFile[] = SEEDS.map((s) => ({
      name: s.name,
      kind: `${s.name} as it is`,
      bytes: s.bytes,
      expect: UNSUPPORTED.test(s.name) ? /RLE|unknown image type/ : "decoded",
    }));
    return [...seeds, ...await knownFiles(), ...await strips()];
  }
  const first = (c - 1) * BATCH;
  const n = Math.min(BATCH, total - first);
  return await Promise.all(Array.from({ length: n }, (_, i) => fuzzFile(first + i)));
}

/** How a case decodes: threads, channels, side, and whether through the folder dataset. */
function plan(c: number): { threads: number; channels: 1 | 3; side: number; folder: boolean; shapes: Shape[] } {
  if (c === 0) return { threads: 2, channels: 3, side: 8, folder: false, shapes: [[0, 1], [1, 1], [8, 8]] };
  const r = new Rng(FUZZ_SEED + 1, c);
  const s = new Rng(FUZZ_SEED + 2, c);
  return {
    threads: 1 + (c % 2),
    channels: r.chance(0.7) ? 3 : 1,
    side: r.pick([1, 5, 8, 16, 32]),
    folder: c % 3 === 2,
    shapes: [s.pick(SHAPES), s.pick(SHAPES)],
  };
}

/**
 * decodeImage's [short side, multiple]: none where side / multiple is a half (rounding could go either way); side 0
 * is none given, the image at its own size (as `attention`, `propagate` and copy detection decode).
 */
type Shape = [side: number, multiple: number];
const SHAPES: Shape[] = [[0, 1], [1, 1], [3, 1], [5, 1], [8, 8], [13, 4], [16, 16], [30, 16], [32, 8], [224, 16]];
/** The largest side decodeImage gives. */
const MAX_SIDE = 16384;
/** decodeImage's reasons that come from the resize it plans, not from the file's decoding. */
const PLANNING = /too elongated|cannot be resized to a short side|past the largest side/;

/** [width, height] that decodeImage gives a w x h image at this shape, as the shim computes it. */
function fitted(w: number, h: number, [side, multiple]: Shape): [number, number] {
  if (side === 0) return [w, h];
  const s = side / Math.min(w, h);
  const snap = (x: number) => Math.max(multiple, Math.round(x / multiple) * multiple);
  return [snap(w * s), snap(h * s)];
}

/**
 * Valid gray PNGs of extreme aspect ratios, up to 1 x 100,000: decodeImages crops them; decodeImage keeps them
 * whole, so a long side past 16384 at the batch's shape is refused.
 */
async function strips(): Promise<FuzzFile[]> {
  const out: FuzzFile[] = [];
  for (const [w, h] of [[1, 16384], [16384, 1], [2, 9000], [9000, 3], [1, 100_000], [7, 2048]]) {
    const rows = new Uint8Array((w + 1) * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) rows[y * (w + 1) + 1 + x] = (x * 7 + y * 13) & 255;
    const z = new Uint8Array(
      await new Response(new Blob([rows]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer(),
    );
    const ihdr = new Uint8Array(13);
    new DataView(ihdr.buffer).setUint32(0, w);
    new DataView(ihdr.buffer).setUint32(4, h);
    ihdr.set([8, 0, 0, 0, 0], 8);
    out.push({
      name: `strip-${w}x${h}.png`,
      kind: `a valid ${w} x ${h} gray PNG`,
      bytes: concat(
        new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        pngChunk("IHDR", ihdr),
        pngChunk("IDAT", z),
        pngChunk("IEND", new Uint8Array()),
      ),
      expect: "decoded",
      gray: true,
      size: [w, h],
    });
  }
  return out;
}

/** The reason of a file that the folder dataset skipped, other than the first. */
const FOLDER_SKIP = "(skipped by the folder dataset)";

/** The shape of a skip reason, numbers and paths left out, to count them by kind. */
function reasonKind(reason: string): string {
  return reason.replace(/\/\S+/g, "<path>").replace(/-?\d+(\.\d+)?/g, "N").slice(0, 90);
}

/** Decodes one case's files (in a child); `only` decodes one of them alone (to find which one crashed). */
async function runCase(c: number, total: number, only?: number): Promise<Record<string, unknown>> {
  // In the parent's folder, which it removes: a child that dies leaves its files behind.
  const dir = Deno.makeTempDirSync({ dir: Deno.env.get("DINO_FUZZ_IMAGES_DIR"), prefix: "batch" });
  try {
    let files = await batchFiles(c, total);
    if (only !== undefined) files = [files[only]];
    const { threads, channels, side, folder, shapes } = plan(c);
    // A folder lists torchvision's extensions only; stb goes by the bytes, so every file may be named .png there.
    const named = (name: string) => folder ? `${name}.png` : name;
    for (const f of files) Deno.writeFileSync(join(dir, named(f.name)), f.bytes);
    const paths = files.map((f) => join(dir, named(f.name)));
    const problems: string[] = [];
    const decoded = new Set<number>();
    const reasons = new Map<number, string>();
    if (folder) {
      using ds = imageFolder(dir, { side, threads, channels, maxImagePixels: MAX_PIXELS });
      if (ds.length !== files.length) problems.push(`the folder lists ${ds.length} of ${files.length} files`);
      const batch = await ds.load([...Array(ds.length).keys()]);
      try {
        for (const i of batch.indices) decoded.add(i);
        // The folder lists files sorted by name, as they were written.
        for (const p of batch.failed) reasons.set(paths.indexOf(p), FOLDER_SKIP);
        if (batch.images.shape.join() !== [batch.indices.length, channels, side, side].join()) {
          problems.push(`images of shape [${batch.images.shape}] for ${batch.indices.length} decoded files`);
        }
        if (batch.failed.length > 0 !== (batch.firstError !== "")) problems.push("firstError disagrees with failed");
        if (batch.failed.length > 0) {
          const m = /^(\/\S+): (.+)$/.exec(batch.firstError);
          if (!m || m[1] !== batch.failed[0]) problems.push(`firstError ${JSON.stringify(batch.firstError)}`);
          else reasons.set(paths.indexOf(m[1]), m[2]);
        }
      } finally {
        dispose([batch.images, batch.labels]);
      }
    } else {
      const r = await decodeImages(paths, { side, threads, channels, maxPixels: MAX_PIXELS });
      try {
        for (const i of r.ok) decoded.add(i);
        for (const f of r.failed) {
          if (f.path !== paths[f.index]) problems.push(`failed entry ${f.index} names ${f.path}`);
          reasons.set(f.index, f.reason);
        }
        if (r.images.shape.join() !== [r.ok.length, channels, side, side].join()) {
          problems.push(`images of shape [${r.images.shape}] for ${r.ok.length} decoded files`);
        } else if (channels === 3) {
          const pixels = data(r.images) as Uint8Array, plane = side * side;
          r.ok.forEach((i, k) => {
            const [red, green, blue] = [0, 1, 2].map((ch) =>
              pixels.subarray((3 * k + ch) * plane, (3 * k + ch + 1) * plane)
            );
            if (files[i].gray && !(red.every((v, j) => v === green[j] && v === blue[j]))) {
              problems.push(`${files[i].name} (${files[i].kind}) is gray but decoded to different red, green and blue`);
            }
          });
        }
      } finally {
        r.images.dispose();
      }
    }
    // The single-image decoder, on every file, at the batch's shapes: the whole image or a one-line reason, the
    // same as the batch decoder's unless one of them is about the resize.
    let singleDecoded = 0, singleSkipped = 0;
    for (const [i, f] of files.entries()) {
      for (const shape of shapes) {
        const [s, multiple] = shape;
        const r = await decodeImage(paths[i], { side: s || undefined, multiple, channels, maxPixels: MAX_PIXELS });
        const what = `${f.name} (${f.kind}) through decodeImage at side ${s}, multiple ${multiple}`;
        const batchWhy = reasons.get(i), batchOk = decoded.has(i);
        const planned = batchWhy !== undefined && PLANNING.test(batchWhy);
        if (r.image) {
          singleDecoded++;
          try {
            const [ch, h, w] = r.image.shape;
            const short = Math.max(multiple, Math.round(s / multiple) * multiple);
            if (
              r.image.ndim !== 3 || ch !== channels || h % multiple !== 0 || w % multiple !== 0 ||
              (s > 0 && (Math.min(h, w) !== short || Math.max(h, w) > MAX_SIDE))
            ) {
              problems.push(`${what} gave an image of shape [${r.image.shape}]`);
            }
            if (f.size) {
              const [ew, eh] = fitted(f.size[0], f.size[1], shape);
              if (w !== ew || h !== eh) problems.push(`${what} is ${w} x ${h}, expected ${ew} x ${eh}`);
            }
            if (channels === 3 && f.gray) {
              const px = data(r.image) as Uint8Array, plane = h * w;
              if (!px.subarray(0, plane).every((v, j) => v === px[plane + j] && v === px[2 * plane + j])) {
                problems.push(`${what} is gray but decoded to different red, green and blue`);
              }
            }
          } finally {
            r.image.dispose();
          }
          if (!batchOk && !planned && batchWhy !== FOLDER_SKIP) {
            problems.push(`${what} decoded, but decodeImages skipped it: ${batchWhy}`);
          }
          if (f.expect instanceof RegExp) problems.push(`${what} decoded, expected a skip for ${f.expect}`);
        } else {
          singleSkipped++;
          const p = messageProblem(r.reason, 255);
          if (p) problems.push(`${what}: ${p} as its reason`);
          if (PLANNING.test(r.reason)) {
            // At its own size nothing is resized: a resize's reason is always wrong there.
            if (s === 0 || (f.size && Math.max(...fitted(f.size[0], f.size[1], shape)) <= MAX_SIDE)) {
              problems.push(`${what} was refused for its size: ${r.reason}`);
            }
          } else if (batchOk) {
            problems.push(`${what} was skipped (${r.reason}), but decodeImages decoded it`);
          } else if (batchWhy !== undefined && batchWhy !== FOLDER_SKIP && !planned && batchWhy !== r.reason) {
            problems.push(
              `${what} was skipped for ${JSON.stringify(r.reason)}, decodeImages for ${JSON.stringify(batchWhy)}`,
            );
          }
          if (f.expect === "decoded" && !PLANNING.test(r.reason)) problems.push(`${what} was skipped: ${r.reason}`);
          if (f.expect instanceof RegExp && !f.expect.test(r.reason)) {
            problems.push(`${what} was skipped for ${r.reason}, expected ${f.expect}`);
          }
        }
      }
    }
    const status = files.map((f, i) => {
      const ok = decoded.has(i), why = reasons.get(i);
      if (ok === (why !== undefined)) {
        problems.push(`${f.name} (${f.kind}) is ${ok ? "both decoded and skipped" : "neither decoded nor skipped"}`);
      }
      if (why !== undefined) {
        const p = messageProblem(why, 255);
        if (p) problems.push(`${f.name} (${f.kind}): ${p} as its reason`);
      }
      if (f.expect === "decoded" && !ok) problems.push(`${f.name} (${f.kind}) was skipped: ${why}`);
      // (The folder dataset gives the reason of its first skipped file only.)
      const unknown = why === FOLDER_SKIP;
      if (f.expect instanceof RegExp && (ok || (!unknown && !f.expect.test(why ?? "")))) {
        problems.push(
          `${f.name} (${f.kind}) was ${ok ? "decoded" : `skipped for ${why}`}, expected a skip for ${f.expect}`,
        );
      }
      return ok ? "decoded" : why!;
    });
    return {
      outcome: "batch",
      problems,
      files: files.length,
      decoded: status.filter((s) => s === "decoded").length,
      reasons: status.filter((s) => s !== "decoded" && s !== FOLDER_SKIP).map(reasonKind),
      singleDecoded,
      singleSkipped,
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** How many mutated files to decode: DINO_FUZZ_CASES, else 2000. */
const FILES = fuzzCases(2000);
/** The seeds' case, then the mutated files in batches. */
const CASES = 1 + Math.ceil(FILES / BATCH);
const ENV = { DINO_MAX_IMAGE_PIXELS: String(MAX_PIXELS) };

function kindOf(c: number): string {
  const p = plan(c);
  const what = c === 0
    ? `the ${SEEDS.length} seeds and the known files`
    : `files ${(c - 1) * BATCH}..${Math.min(c * BATCH, FILES) - 1}`;
  const how = p.folder ? "folder dataset" : "decodeImages";
  return `${what}, ${how}, ${p.threads} thread(s), ${p.channels} channel(s), side ${p.side}`;
}

/** For each case whose child died: its files decoded one at a time, to name those that kill the process. */
async function culprits(run: ChildRun, env: Record<string, string>): Promise<string[]> {
  const out: string[] = [];
  for (const r of run.results.filter((r) => r.status === "died").slice(0, 5)) {
    const files = await batchFiles(r.index, FILES);
    const alone = await runInChildren({
      script: new URL(import.meta.url),
      count: files.length,
      args: [String(FILES), String(r.index)],
      memoryMb: MEMORY_MB,
      caseTimeoutMs: 20_000,
      maxDeaths: files.length,
      env,
    });
    for (const a of alone.results) {
      if (a.status === "died") out.push(`  file ${files[a.index].name} (${files[a.index].kind}): ${a.why}`);
    }
  }
  return out;
}

if (isFuzzChild()) {
  // fuzz-child first end files [case]: cases first..end-1, or the files of one case one at a time.
  const only = Deno.args[4] === undefined ? undefined : Number(Deno.args[4]);
  await childMain((i) => only === undefined ? runCase(i, FILES) : runCase(only, FILES, i));
} else {
  Deno.test(`image fuzz: the ${SEEDS.length} seed images and ${FILES} mutated ones are each decoded or skipped with a one-line reason, on 1 and 2 threads, and through decodeImage at two shapes each (the seeds at three, their own size among them), without a crash, abort, hang or runaway memory`, async () => {
    const t0 = performance.now();
    const root = Deno.makeTempDirSync({ prefix: "fuzz_images" });
    const env = { ...ENV, DINO_FUZZ_IMAGES_DIR: root };
    let run: ChildRun;
    const failures: string[] = [];
    try {
      run = await runInChildren({
        script: new URL(import.meta.url),
        count: CASES,
        args: [String(FILES)],
        memoryMb: MEMORY_MB,
        caseTimeoutMs: 20_000,
        env,
      });
      failures.push(...judge(run, CASES, kindOf, BATCH_GROWTH_MB).failures);
      if (run.results.some((r) => r.status === "died")) {
        failures.push("files that kill the process:", ...await culprits(run, env));
      }
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
    assert.deepEqual(failures, [], summarize(failures, 30));
    assert.ok(run.peakKb < MEMORY_MB * 1024, `peak resident memory of a child: ${run.peakKb >> 10} MiB`);
    // What happened, for the record: decoded and skipped files, and the commonest reasons.
    const done = run.results.flatMap((r) =>
      r.status === "done"
        ? [
          r.value as {
            files: number;
            decoded: number;
            reasons: string[];
            singleDecoded: number;
            singleSkipped: number;
          },
        ]
        : []
    );
    const byReason = new Map<string, number>();
    for (const v of done) for (const k of v.reasons) byReason.set(k, (byReason.get(k) ?? 0) + 1);
    const decoded = done.reduce((n, v) => n + v.decoded, 0);
    console.log(
      `${done.reduce((n, v) => n + v.files, 0)} files in ${CASES} batches, ${run.children} child(ren), ` +
        `${Math.round((performance.now() - t0) / 100) / 10} s, peak ${
          run.peakKb >> 10
        } MiB: ${decoded} decoded; skipped: ` +
        [...byReason].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, n]) => `${n} ${k}`).join("; ") +
        `; decodeImage: ${done.reduce((n, v) => n + v.singleDecoded + v.singleSkipped, 0)} calls, ` +
        `${done.reduce((n, v) => n + v.singleDecoded, 0)} decoded`,
    );
    assert.ok(decoded > FILES / 10, `only ${decoded} files decoded: the mutations are too destructive to test much`);
  });
}
