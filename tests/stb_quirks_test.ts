// stb_image 2.27's quirks that do not crash but give wrong results (issue 12), and what native/images.cpp does about
// each: palettized BMPs whose palette stb reads short (it took the missing colours from uninitialised stack
// memory); PNM samples not scaled by their maximum value; failure reasons left over from earlier files (stb's reason
// is thread-local but never cleared); a resize at scale 1 that blurred an image already at its size; and the JPEG
// Huffman check (which keeps stb from overflowing a table of more than 256 codes) refusing valid files, or missing
// a table after 0xff fill bytes. Files that could crash the shim if a check regressed are decoded in a child.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";

const FIXTURES = new URL("./fixtures/images/", import.meta.url).pathname;
const fixture = (name: string) => Deno.readFileSync(join(FIXTURES, name));

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

const u16le = (v: number) => [v & 255, (v >> 8) & 255];
const u32le = (v: number) => [...u16le(v & 0xffff), ...u16le(v >>> 16)];

/** The decoded pixels, C x H x W, of a file decoded at its own size (scale 1: no resampling). */
async function pixelsOf(path: string, short: number, channels: 1 | 3 = 3): Promise<number[] | string> {
  const r = await t.decodeImage(path, { side: short, multiple: 1, channels });
  if (!r.image) return r.reason;
  try {
    return t.toArray(r.image);
  } finally {
    r.image.dispose();
  }
}

// ---- BMP palettes ----------------------------------------------------------------------------------------------

interface Bmp {
  /** Pixel indices, top row first. */
  rows: number[][];
  bpp: 1 | 4 | 8;
  /** The palette entries the file holds, [r, g, b]. */
  palette: number[][];
  /** 12: OS/2; 40: Windows. */
  header: 12 | 40;
  topDown?: boolean;
}

/** A palettized BMP: file header, info header, the palette entries given, then the pixel rows (4-byte aligned). */
function bmp(o: Bmp): Uint8Array {
  const h = o.rows.length, w = o.rows[0].length;
  const rows = (o.topDown ? o.rows : [...o.rows].reverse()).map((row) => {
    const bits = row.map((i) => i.toString(2).padStart(o.bpp, "0")).join("");
    const bytes = Array.from(
      { length: Math.ceil(bits.length / 8) },
      (_, k) => parseInt(bits.slice(8 * k, 8 * k + 8).padEnd(8, "0"), 2),
    );
    return [...bytes, ...Array((4 - (bytes.length % 4)) % 4).fill(0)];
  }).flat();
  const info = o.header === 12 ? [...u32le(12), ...u16le(w), ...u16le(h), ...u16le(1), ...u16le(o.bpp)] : [
    ...u32le(40),
    ...u32le(w),
    ...u32le(o.topDown ? -h : h),
    ...u16le(1),
    ...u16le(o.bpp),
    ...u32le(0),
    ...u32le(rows.length),
    ...u32le(2835),
    ...u32le(2835),
    ...u32le(o.palette.length),
    ...u32le(0),
  ];
  const pal = o.palette.flatMap(([r, g, b]) => o.header === 12 ? [b, g, r] : [b, g, r, 0]);
  const offset = 14 + info.length + pal.length;
  return Uint8Array.from([
    66,
    77,
    ...u32le(offset + rows.length),
    0,
    0,
    0,
    0,
    ...u32le(offset),
    ...info,
    ...pal,
    ...rows,
  ]);
}

/** What the BMP shows, C x H x W: a pixel's palette entry, or past a short palette the gray ramp (as PIL 9.4). */
function expectedBmp(o: Bmp): number[] {
  const out: number[] = [];
  for (let c = 0; c < 3; c++) {
    for (const row of o.rows) for (const i of row) out.push(i < o.palette.length ? o.palette[i][c] : i);
  }
  return out;
}

Deno.test("BMP palettes: each pixel is its entry's colour, or past a short palette the gray ramp as in PIL, never uninitialised memory", async () => {
  let seed = 5;
  const byte = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256;
  const colours = (n: number) => Array.from({ length: n }, () => [byte(), byte(), byte()]);
  const grid = (w: number, h: number, n: number) =>
    Array.from({ length: h }, (_, y) => Array.from({ length: w }, (_, x) => (y * w + x) % n));
  const cases: [string, Bmp][] = [
    // stb read 252 of the 256 colours of an OS/2 file (it counts 24 bytes of header, not 12)
    ["OS/2, 8 bits, every one of 256 entries", { rows: grid(16, 16, 256), bpp: 8, palette: colours(256), header: 12 }],
    ["OS/2, 4 bits, every one of 16 entries", { rows: grid(7, 5, 16), bpp: 4, palette: colours(16), header: 12 }],
    // stb counted -2 entries, read none, and read the pixels 6 bytes late
    ["OS/2, 1 bit", {
      rows: grid(13, 3, 2).map((r, y) => r.map((v, x) => (v + x * y) % 2)),
      bpp: 1,
      palette: colours(2),
      header: 12,
    }],
    ["OS/2, 8 bits, 4 of 256 entries", { rows: grid(16, 16, 256), bpp: 8, palette: colours(4), header: 12 }],
    ["Windows, 8 bits, 4 of 256 entries", { rows: grid(16, 16, 256), bpp: 8, palette: colours(4), header: 40 }],
    ["Windows, 4 bits, top-down, 3 of 16 entries", {
      rows: grid(9, 4, 16),
      bpp: 4,
      palette: colours(3),
      header: 40,
      topDown: true,
    }],
    ["Windows, 8 bits, every one of 256 entries (read as it is)", {
      rows: grid(16, 16, 256),
      bpp: 8,
      palette: colours(256),
      header: 40,
    }],
  ];
  const dir = Deno.makeTempDirSync();
  const live = t.liveTensors();
  try {
    for (const [what, o] of cases) {
      const path = join(dir, "a.bmp");
      Deno.writeFileSync(path, bmp(o));
      const short = Math.min(o.rows.length, o.rows[0].length);
      const want = expectedBmp(o);
      // Twice, a batch of other files between: uninitialised colours would differ from run to run.
      assert.deepEqual(await pixelsOf(path, short), want, what);
      const other = await t.decodeImages(
        ["bmp-8bit.bmp", "png-pal8.png", "gif-32colors.gif"].map((f) => join(FIXTURES, f)),
        { side: 9, threads: 2 },
      );
      other.images.dispose();
      assert.deepEqual(await pixelsOf(path, short), want, `${what}, again`);
    }
    // A palettized file that holds no palette at all: refused (PIL takes colours from the pixel bytes).
    for (const header of [12, 40] as const) {
      const path = join(dir, `none-${header}.bmp`);
      Deno.writeFileSync(path, bmp({ rows: grid(4, 4, 4), bpp: 8, palette: [], header }));
      assert.match(String(await pixelsOf(path, 4)), /cannot decode \(a palettized BMP that holds no palette\)/);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  assert.equal(t.liveTensors(), live, "every tensor freed");
  // The seeds written by make.py for this decode (PIL 9.4 gives these files the same pixels; checked when written).
  for (
    const name of ["bmp-8bit-os2-every-entry.bmp", "bmp-4bit-os2.bmp", "bmp-1bit-os2.bmp", "bmp-8bit-short-palette.bmp"]
  ) {
    const once = await pixelsOf(join(FIXTURES, name), 9);
    assert.ok(Array.isArray(once), `${name}: ${once}`);
    assert.deepEqual(await pixelsOf(join(FIXTURES, name), 9), once, name);
  }
});

Deno.test("a PNG with a side over 2^24 pixels is refused as such, within the pixel budget", async () => {
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, 2 ** 24 + 1);
  new DataView(ihdr.buffer).setUint32(4, 1);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const dir = Deno.makeTempDirSync();
  try {
    const path = join(dir, "wide.png");
    Deno.writeFileSync(
      path,
      concat(fixture("png-gray8.png").subarray(0, 8), pngChunk("IHDR", ihdr), pngChunk("IEND", new Uint8Array())),
    );
    const r = await t.decodeImage(path, { side: 4 });
    assert.match(String(r.reason), /^16777217 x 1 pixels: a side over 16777216 pixels, which this decoder/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- PNM maximum values ----------------------------------------------------------------------------------------

Deno.test("PNM samples are scaled from 0..maxval to 0..255 (rounded, as PIL), in 8 and 16 bits", async () => {
  const dir = Deno.makeTempDirSync();
  const live = t.liveTensors();
  try {
    const pnm = (magic: string, w: number, h: number, max: number, samples: number[]) => {
      const head = new TextEncoder().encode(`${magic}\n# a comment\n${w} ${h}\n${max}\n`);
      const body = max > 255 ? samples.flatMap((v) => [v >> 8, v & 255]) : samples;
      return concat(head, Uint8Array.from(body));
    };
    const scale = (v: number, max: number) => Math.round(Math.min(v, max) * 255 / max);
    // [name, magic, channels, max, samples (interleaved)]; 2 x 3 pixels
    const cases: [string, string, number, number, number[]][] = [
      ["gray, max 100", "P5", 1, 100, [0, 1, 50, 99, 100, 37]],
      ["gray, max 100, samples past it", "P5", 1, 100, [101, 200, 255, 0, 100, 7]],
      ["RGB, max 15", "P6", 3, 15, [0, 15, 7, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 0]],
      ["gray, 16 bits, max 1023", "P5", 1, 1023, [0, 1, 511, 512, 1022, 1023]],
      ["RGB, 16 bits, max 65535", "P6", 3, 65535, [
        0,
        65535,
        32767,
        32768,
        128,
        127,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        65534,
      ]],
      ["gray, max 255 (as it is)", "P5", 1, 255, [0, 1, 128, 254, 255, 77]],
    ];
    for (const [what, magic, n, max, samples] of cases) {
      const path = join(dir, "a.pnm");
      Deno.writeFileSync(path, pnm(magic, 3, 2, max, samples));
      const want: number[] = [];
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < 6; i++) want.push(scale(samples[i * n + (n === 3 ? c : 0)], max));
      }
      assert.deepEqual(await pixelsOf(path, 2), want, what);
    }
    assert.equal(t.liveTensors(), live, "every tensor freed");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- scale 1 ---------------------------------------------------------------------------------------------------

Deno.test("an image already at its size is not filtered: its pixels come out as they are", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    using g = new t.Generator(3);
    using rgb = t.tidy(() => t.to(t.randint(g, 0, 256, [30, 20, 3]), "u8")); // H 30, W 20
    using gray = t.tidy(() => t.to(t.randint(g, 0, 256, [12, 40, 1]), "u8")); // H 12, W 40
    t.writeImage(join(dir, "rgb.png"), rgb);
    t.writeImage(join(dir, "gray.png"), gray);
    const chw = (x: t.Tensor) => t.tidy(() => t.toArray(t.permute(x, [2, 0, 1])));
    // The whole image: short side to its own size, sides to multiples of 10 and 4 (which they are).
    assert.deepEqual(await pixelsOf(join(dir, "rgb.png"), 20), chw(rgb));
    const r = await t.decodeImage(join(dir, "rgb.png"), { side: 20, multiple: 10 });
    assert.deepEqual(t.toArray(r.image!), chw(rgb));
    r.image!.dispose();
    assert.deepEqual(await pixelsOf(join(dir, "gray.png"), 12, 1), chw(gray));
    // The centre crops of the batch decoder: rows 5..24 of the first, columns 14..25 of the second.
    const b = await t.decodeImages([join(dir, "rgb.png")], { side: 20 });
    assert.deepEqual(t.toArray(b.images), t.tidy(() => t.toArray(t.permute(t.narrow(rgb, 0, 5, 20), [2, 0, 1]))));
    b.images.dispose();
    const c = await t.decodeImages([join(dir, "gray.png")], { side: 12, channels: 1 });
    assert.deepEqual(t.toArray(c.images), t.tidy(() => t.toArray(t.permute(t.narrow(gray, 1, 14, 12), [2, 0, 1]))));
    c.images.dispose();
    // One side kept, the other resized (30 is snapped to 32): each kept column is the image's column, resampled.
    const column = (x: number) => (x * 37) % 256;
    using cols = t.tidy(() =>
      t.reshape(t.tensor(Array.from({ length: 30 * 20 }, (_, i) => column(i % 20)), { dtype: "u8" }), [30, 20, 1])
    );
    t.writeImage(join(dir, "cols.png"), cols);
    const k = await t.decodeImage(join(dir, "cols.png"), { side: 20, multiple: 4, channels: 1 });
    assert.deepEqual(k.image!.shape, [1, 32, 20]);
    const px = t.toArray(k.image!);
    for (let y = 0; y < 32; y++) {
      assert.deepEqual(px.slice(y * 20, y * 20 + 20), Array.from({ length: 20 }, (_, x) => column(x)), `row ${y}`);
    }
    k.image!.dispose();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- failure reasons ---------------------------------------------------------------------------------------------

const CRC = Array.from({ length: 256 }, (_, n) => {
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
  for (const x of out.subarray(4, 8 + data.length)) c = CRC[(c ^ x) & 0xff] ^ (c >>> 8);
  view.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
  return out;
}

/** The JPEG's segments, each scan's entropy-coded data skipped: [offset of the 0xff, marker, length]. */
function jpegSegments(b: Uint8Array): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let p = 2; p + 4 <= b.length && b[p] === 0xff && b[p + 1] !== 0xd9;) {
    const marker = b[p + 1], length = (b[p + 2] << 8) | b[p + 3];
    out.push([p, marker, length]);
    p += 2 + length;
    if (marker === 0xda) { // to the next marker other than a restart
      while (p + 1 < b.length && !(b[p] === 0xff && b[p + 1] !== 0 && (b[p + 1] < 0xd0 || b[p + 1] > 0xd7))) p++;
    }
  }
  return out;
}

/** A DHT segment of one table of class/id `q` whose code counts add up to 765 (at most 256 fit). */
function oversizedDht(q: number): Uint8Array {
  const counts = [...Array(13).fill(0), 255, 255, 255];
  const n = 765;
  return Uint8Array.from([
    0xff,
    0xc4,
    (2 + 17 + n) >> 8,
    (2 + 17 + n) & 255,
    q,
    ...counts,
    ...Array.from({ length: n }, (_, i) => (i * 7) & 255),
  ]);
}

/** Bad files of many kinds, and what each one's reason says. */
function badFiles(dir: string): [string, RegExp][] {
  const write = (name: string, bytes: Uint8Array) => {
    Deno.writeFileSync(join(dir, name), bytes);
    return join(dir, name);
  };
  const png = fixture("png-gray8.png");
  const idat = png.findIndex((_, i) => String.fromCharCode(...png.subarray(i, i + 4)) === "IDAT");
  const type3 = png.slice();
  type3[idat + 6] = 0x07; // after the 2-byte zlib header: the final block, of the reserved type 3
  const jpeg = fixture("jpeg-gray.jpg");
  const sos = jpegSegments(jpeg).find(([, m]) => m === 0xda)![0];
  const wrongComponent = jpeg.slice();
  wrongComponent[sos + 5] = 9; // the scan names component 9; the frame has only component 1
  const [dht, , dhtLength] = jpegSegments(jpeg).find(([, m]) => m === 0xc4)!;
  const hugeTable = concat(jpeg.subarray(0, dht), oversizedDht(jpeg[dht + 4]), jpeg.subarray(dht + 2 + dhtLength));
  const ihdr = (w: number, h: number) => {
    const d = new Uint8Array(13);
    new DataView(d.buffer).setUint32(0, w);
    new DataView(d.buffer).setUint32(4, h);
    d.set([8, 0, 0, 0, 0], 8);
    return d;
  };
  const sig = png.subarray(0, 8);
  const hdr = fixture("hdr-rle.hdr");
  const hdrData = hdr.indexOf(0x0a, new TextDecoder().decode(hdr).indexOf("+X 16")) + 1;
  const psd = fixture("psd-rgb8.psd").slice();
  psd[5] = 2; // version 2
  const lzw255 = fixture("gif-32colors.gif").slice();
  lzw255[lzw255.indexOf(0x2c) + 10] = 255; // the LZW code size of the first image: at most 12
  const rgb = fixture("png-rgb8.png");
  Deno.mkdirSync(join(dir, "folder.png"));
  const signedCompression = bmp({ rows: [[200, 7], [3, 0]], bpp: 8, palette: [[1, 2, 3]], header: 40 });
  signedCompression[33] = 0x80;
  return [
    // failures that stb gives no reason for: it said what its probing for other formats left ("no SOI" for a PNG,
    // "bad png sig" for a JPEG), or whatever an earlier file left on the same thread
    [write("type3.png", type3), /^cannot decode \(corrupt PNG data\)$/],
    [write("half.png", rgb.subarray(0, rgb.length >> 1)), /^cannot decode \(corrupt PNG data\)$/],
    [write("component.jpg", wrongComponent), /^cannot decode \(corrupt JPEG data(: Invalid component ID 9 in SOS)?\)$/],
    [
      write("no-image.gif", Uint8Array.from([...new TextEncoder().encode("GIF89a"), 4, 0, 4, 0, 0, 0, 0, 0x3b])),
      /^cannot decode \(corrupt GIF data\)$/,
    ],
    [write("lzw-255.gif", lzw255), /^cannot decode \(corrupt GIF data\)$/],
    // failures that stb names
    [
      write("chunk.png", concat(rgb.subarray(0, 33), pngChunk("ABCD", new Uint8Array(4)), rgb.subarray(33))),
      /^cannot decode \(ABCD PNG chunk not known\)$/,
    ],
    [write("short.pic", fixture("pic-rgb.pic").slice(0, 300)), /^cannot decode \(bad file\)$/],
    // headers that no format of stb's takes
    [
      write("zero-width.png", concat(sig, pngChunk("IHDR", ihdr(0, 9)), pngChunk("IEND", new Uint8Array()))),
      /^not a readable image \(unknown image type\)$/,
    ],
    [write("psd-v2.psd", psd), /^not a readable image \(unknown image type\)$/],
    // formats that stb does not read, named
    [join(FIXTURES, "bmp-rle8.bmp"), /^a BMP with RLE compression, which this decoder \(stb_image\) does not read/],
    [
      write("ascii.ppm", new TextEncoder().encode("P3\n2 1\n255\n255 0 0 0 255 0\n")),
      /^PNM in its text or 1-bit form \(P1-P4\), which this decoder \(stb_image\) does not read: convert/,
    ],
    [
      write("text.png", new TextEncoder().encode("not an image at all")),
      /^not a readable image \(unknown image type\)$/,
    ],
    [write("empty.jpg", new Uint8Array()), /^not a readable image \(unknown image type\)$/],
    // the shim's own checks
    [write("no-palette.bmp", bmp({ rows: [[1, 2], [3, 0]], bpp: 8, palette: [], header: 40 })), /holds no palette/],
    // stb reads the compression as signed: with its top bit set it passed, and pixels came from unwritten memory
    [write("compression-2^31.bmp", signedCompression), /^a BMP with an unknown compression, .*convert it to PNG$/],
    [write("huge-table.jpg", hugeTable), /Huffman table of more than 256 codes/],
    [write("fill-huge-table.jpg", concat(Uint8Array.of(0xff), hugeTable)), /Huffman table of more than 256 codes/],
    [
      write("big.png", concat(sig, pngChunk("IHDR", ihdr(100, 100)), pngChunk("IEND", new Uint8Array()))),
      /exceeds the decoding budget of 1000/,
    ],
    [write("run.hdr", hdr.slice(0, hdrData + 20)), /ends inside a run-length encoded scanline/],
    [join(dir, "missing.png"), /^cannot open: No such file/],
    [join(dir, "folder.png"), /^not a regular file$/],
    // and files that decode
    [join(FIXTURES, "png-rgb8.png"), /^decoded$/],
    [join(FIXTURES, "jpeg-gray.jpg"), /^decoded$/],
    [join(FIXTURES, "bmp-4bit-os2.bmp"), /^decoded$/],
  ];
}

/** How the files decode, in a child process (a regressed check could crash the shim), for the test below. */
async function reasonsOf(paths: string[]) {
  const alone = async (order: number[]) => {
    const out: string[] = [];
    for (const i of order) {
      const r = await t.decodeImages([paths[i]], { side: 4, maxPixels: 1000, threads: 1 });
      r.images.dispose();
      out[i] = r.failed[0]?.reason ?? "decoded";
    }
    return out;
  };
  const forward = await alone(paths.map((_, i) => i));
  const reverse = await alone(paths.map((_, i) => paths.length - 1 - i));
  // Four copies of every file, shuffled, in one batch on 2 and 4 threads.
  let seed = 11;
  const order = [...paths.keys(), ...paths.keys(), ...paths.keys(), ...paths.keys()]
    .map((i) => [i, seed = (seed * 1103515245 + 12345) % 2 ** 31])
    .sort((a, b) => a[1] - b[1])
    .map(([i]) => i);
  const batches: string[][] = [];
  for (const threads of [2, 4]) {
    const r = await t.decodeImages(order.map((i) => paths[i]), { side: 4, maxPixels: 1000, threads });
    r.images.dispose();
    const got = order.map(() => "decoded");
    for (const f of r.failed) got[f.index] = f.reason;
    batches.push(got);
  }
  // The single-image decoder shares the decoding, and its reasons.
  const single: string[] = [];
  for (const path of paths) {
    const r = await t.decodeImage(path, { side: 4, maxPixels: 1000 });
    r.image?.dispose();
    single.push(r.reason ?? "decoded");
  }
  return { forward, reverse, order, batches, single };
}

Deno.test("failure reasons: each file's is its own, the same alone, in either order, and in parallel batches with other bad files", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const files = badFiles(dir);
    const r: Awaited<ReturnType<typeof reasonsOf>> = await inChild("reasons-child", files.map(([p]) => p));
    files.forEach(([path, says], i) => assert.match(r.forward[i], says, `${path}: ${r.forward[i]}`));
    assert.deepEqual(r.reverse, r.forward, "alone, in reverse order");
    r.batches.forEach((got, k) => {
      assert.deepEqual(got, r.order.map((i) => r.forward[i]), `in one batch on ${[2, 4][k]} threads`);
    });
    assert.deepEqual(r.single, r.forward, "through decodeImage");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("PNGs with unknown critical chunks, decoded on many threads, each name their own chunk's type", async () => {
  // stb writes the type into one buffer that all threads share; a file once came back with its neighbour's type.
  const dir = Deno.makeTempDirSync();
  try {
    const png = fixture("png-gray8.png");
    const letters = (i: number) =>
      [i % 26, (i / 26 | 0) % 26, (i / 676 | 0) % 26].map((k) => String.fromCharCode(97 + k));
    const types = Array.from({ length: 400 }, (_, i) => "Q" + letters(i).join(""));
    const paths = types.map((type, i) => {
      const path = join(dir, `${i}.png`);
      Deno.writeFileSync(path, concat(png.subarray(0, 33), pngChunk(type, new Uint8Array(4)), png.subarray(33)));
      return path;
    });
    // Cut inside the next chunk's header, where stb reads zeros: a cut file, whatever the other threads decode.
    const cut = join(dir, "cut.png");
    Deno.writeFileSync(cut, png.subarray(0, 33 + 6));
    for (const threads of [2, 4, 8]) {
      const r = await t.decodeImages([...paths, cut], { side: 4, threads });
      r.images.dispose();
      const reasons = new Map(r.failed.map((f) => [f.index, f.reason]));
      types.forEach((type, i) =>
        assert.equal(reasons.get(i), `cannot decode (${type} PNG chunk not known)`, `${threads}`)
      );
      assert.equal(reasons.get(paths.length), "cannot decode (corrupt PNG data)");
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- the JPEG Huffman check ----------------------------------------------------------------------------------------

/** Runs this file in a child process in `mode` on `paths` (a regressed check could crash the shim): its JSON. */
async function inChild(mode: string, paths: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", new URL(import.meta.url).pathname, mode, ...paths],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, `the decoding child ended with ${r.code} ${r.signal ?? ""}: ${err}`);
  return JSON.parse(new TextDecoder().decode(r.stdout));
}

/** Each file's reason, or "decoded", decoded in a child process. */
async function decodeInChild(paths: string[]): Promise<string[]> {
  return await inChild("decode-child", paths);
}

if (Deno.args[0] === "decode-child") {
  const out: string[] = [];
  for (const path of Deno.args.slice(1)) {
    const r = await t.decodeImages([path], { side: 8, threads: 1 });
    r.images.dispose();
    out.push(r.failed[0]?.reason ?? "decoded");
  }
  console.log(JSON.stringify(out));
} else if (Deno.args[0] === "reasons-child") {
  console.log(JSON.stringify(await reasonsOf(Deno.args.slice(1))));
}

Deno.test("the JPEG Huffman check refuses a table of more than 256 codes wherever stb reads one, and no valid file", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const segment = (marker: number, payload: Uint8Array) =>
      concat(Uint8Array.of(0xff, marker, (payload.length + 2) >> 8, (payload.length + 2) & 255), payload);
    // Bytes that look like a DHT segment of 16 x 255 codes, where stb never reads a segment.
    const lookalike = concat(
      Uint8Array.of(0xff, 0xc4, 0x00, 0x30, 0x00),
      new Uint8Array(16).fill(255),
      Uint8Array.of(1, 2),
    );
    const valid: [string, Uint8Array, string][] = []; // [name, bytes, the fixture it must decode as]
    const refused: [string, Uint8Array][] = [];
    for (const name of ["jpeg-rgb-420.jpg", "jpeg-prog-rgb.jpg", "jpeg-restart.jpg", "jpeg-prog-restart.jpg"]) {
      const b = fixture(name);
      const segs = jpegSegments(b);
      const [sof, , sofLength] = segs.find(([, m]) => m >= 0xc0 && m <= 0xc2)!;
      const afterSof = sof + 2 + sofLength;
      const eoi = b.length - 2;
      assert.deepEqual([b[eoi], b[eoi + 1]], [0xff, 0xd9], `${name} ends with EOI`);
      valid.push(
        [
          `comment-after-frame-${name}`,
          concat(b.subarray(0, afterSof), segment(0xfe, lookalike), b.subarray(afterSof)),
          name,
        ],
        [
          `app-after-frame-${name}`,
          concat(b.subarray(0, afterSof), segment(0xe5, lookalike), b.subarray(afterSof)),
          name,
        ],
        // data after the end of the image (a motion photo's video, another JPEG): stb stops at EOI
        [`trailing-${name}`, concat(b, lookalike, lookalike, oversizedDht(0x10)), name],
        [
          `trailing-jpeg-${name}`,
          concat(b, concat(b.subarray(0, afterSof), oversizedDht(0x00), b.subarray(afterSof))),
          name,
        ],
        [`fill-byte-${name}`, concat(Uint8Array.of(0xff), b), name],
      );
      // Where stb reads a table: before the frame, between it and the first scan, between scans.
      const [dht, , dhtLength] = segs.find(([, m]) => m === 0xc4)!;
      refused.push(
        [`before-frame-${name}`, concat(b.subarray(0, dht), oversizedDht(b[dht + 4]), b.subarray(dht + 2 + dhtLength))],
        [`after-frame-${name}`, concat(b.subarray(0, afterSof), oversizedDht(0x11), b.subarray(afterSof))],
        [
          `fill-byte-before-frame-${name}`,
          concat(Uint8Array.of(0xff, 0xff), b.subarray(0, dht), oversizedDht(0x00), b.subarray(dht)),
        ],
      );
      const firstScan = segs.findIndex(([, m]) => m === 0xda);
      const between = segs.slice(firstScan).find(([, m]) => m === 0xc4);
      if (name.includes("prog")) {
        assert.ok(between, `${name} has a table between its scans`);
        const [at, , length] = between;
        refused.push([
          `between-scans-${name}`,
          concat(b.subarray(0, at), oversizedDht(b[at + 4]), b.subarray(at + 2 + length)),
        ]);
      }
    }
    const write = (name: string, bytes: Uint8Array) => {
      Deno.writeFileSync(join(dir, name), bytes);
      return join(dir, name);
    };
    const validPaths = valid.map(([name, bytes]) => write(name, bytes));
    const refusedPaths = refused.map(([name, bytes]) => write(name, bytes));
    const reasons = await decodeInChild([...validPaths, ...refusedPaths]);
    valid.forEach(([name], i) => assert.equal(reasons[i], "decoded", name));
    refused.forEach(([name], i) => {
      assert.match(reasons[valid.length + i], /^cannot decode \(a JPEG Huffman table of more than 256 codes\)$/, name);
    });
    // The valid ones decode to the same pixels as the file they were made from.
    const r = await t.decodeImages([...valid.map(([, , from]) => join(FIXTURES, from)), ...validPaths], { side: 16 });
    const px = t.toArray(r.images), size = px.length / (2 * valid.length);
    r.images.dispose();
    valid.forEach(([name], i) => {
      const got = px.slice((valid.length + i) * size, (valid.length + i + 1) * size);
      assert.deepEqual(got, px.slice(i * size, (i + 1) * size), name);
    });
    // Every fixture JPEG (baseline, progressive, gray, CMYK, subsamplings, optimised tables, restart markers).
    const all = [...Deno.readDirSync(FIXTURES)].map((e) => e.name).filter((n) => n.endsWith(".jpg")).sort();
    assert.ok(all.length >= 9);
    assert.deepEqual(await decodeInChild(all.map((n) => join(FIXTURES, n))), all.map(() => "decoded"));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- files cut short ---------------------------------------------------------------------------------------------

Deno.test("files cut short inside their pixels decode the same every time: what is missing is 0 (TGA, PNM) or the file is refused (HDR)", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    // Freed memory full of noise, for uninitialised memory to show: a large random image, decoded first.
    using g = new t.Generator(1);
    using noise = t.tidy(() => t.to(t.randint(g, 0, 256, [200, 300, 3]), "u8"));
    t.writeImage(join(dir, "noise.png"), noise);
    const cut = (name: string, keep: number) => {
      const b = fixture(name);
      const path = join(dir, `cut-${name}`);
      Deno.writeFileSync(path, b.subarray(0, keep));
      return path;
    };
    // The header's length: the file's, less its pixels (13 x 9, in `bytes` a pixel).
    const header = (name: string, bytes: number) => fixture(name).length - 13 * 9 * bytes;
    // 13 x 9 images: the PNMs keep their first 5 rows (stored top first), the TGAs about half their bytes.
    const files: [string, number[] | undefined][] = [
      [cut("pnm-rgb.ppm", header("pnm-rgb.ppm", 3) + 13 * 3 * 5), [5, 9]],
      [cut("pnm-gray16.pgm", header("pnm-gray16.pgm", 2) + 13 * 2 * 5), [5, 9]],
      [cut("pnm-gray.pgm", header("pnm-gray.pgm", 1) + 13 * 5 + 7), undefined],
      [cut("tga-rgb.tga", 18 + 13 * 3 * 4), undefined],
      [cut("tga-l.tga", 18 + 13 * 5), undefined],
    ];
    const decode = async () => {
      const out: (number[] | string)[] = [];
      for (const [path] of files) {
        (await t.decodeImages([join(dir, "noise.png")], { side: 64, threads: 1 })).images.dispose();
        out.push(await pixelsOf(path, 9));
      }
      return out;
    };
    const first = await decode();
    assert.deepEqual(await decode(), first, "the same pixels every time");
    files.forEach(([path, zeroRows], i) => {
      const px = first[i];
      assert.ok(Array.isArray(px), `${path}: ${px}`);
      if (zeroRows) {
        for (let c = 0; c < 3; c++) {
          const rows: number[] = (px as number[]).slice(c * 117 + zeroRows[0] * 13, c * 117 + zeroRows[1] * 13);
          assert.deepEqual(rows, rows.map(() => 0), `${path}: the rows past the end are 0`);
        }
      }
    });
    assert.match(
      String(await pixelsOf(cut("hdr-flat.hdr", fixture("hdr-flat.hdr").length - 10), 9)),
      /ends inside its pixels/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
