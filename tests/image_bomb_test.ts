// Hostile image files (issue 12): decompression bombs, absurd declared sizes, truncated and garbage files. Each
// is skipped with its reason, whatever the thread count, and the process stays alive and small. The risky decodes
// run in a child process, so that a native abort fails a test instead of killing the runner.
import assert from "node:assert/strict";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import * as t from "../mod.ts";
import { imageFolder } from "../lib/data/folder.ts";
import { openDataset } from "../lib/data/open.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { checked, ctx, native } from "../ffi/library.ts";
import { DTYPE_CODES, wrap } from "../ffi/tensor.ts";

// ---- crafted files -----------------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const PNG_SIGNATURE = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * An 8-bit grayscale PNG declaring `w` x `h`. Without `idat` its pixels are all there (zeros, which deflate
 * about 1000:1, so a 16,000,000 x 1 image is a 15 KB file); with it, that is the whole compressed data.
 */
function png(w: number, h: number, idat?: Uint8Array): Uint8Array {
  const ihdr = new Uint8Array(13);
  const view = new DataView(ihdr.buffer);
  view.setUint32(0, w);
  view.setUint32(4, h);
  ihdr.set([8, 0, 0, 0, 0], 8); // bit depth 8, grayscale, deflate, no filter method, no interlace
  const data = idat ?? new Uint8Array(deflateSync(new Uint8Array((w + 1) * h), { level: 9 }));
  return concat([PNG_SIGNATURE, chunk("IHDR", ihdr), chunk("IDAT", data), chunk("IEND", new Uint8Array())]);
}

/** A BMP header (24 bits per pixel) declaring `w` x `h`, with no pixels after it. */
function bmpHeader(w: number, h: number): Uint8Array {
  const out = new Uint8Array(54);
  const v = new DataView(out.buffer);
  out.set([0x42, 0x4d]); // "BM"
  v.setUint32(2, 54 + w * h * 3, true);
  v.setUint32(10, 54, true); // pixel data offset
  v.setUint32(14, 40, true); // BITMAPINFOHEADER
  v.setInt32(18, w, true);
  v.setInt32(22, h, true);
  v.setUint16(26, 1, true); // planes
  v.setUint16(28, 24, true); // bits per pixel
  return out;
}

/** A GIF header declaring a `w` x `h` logical screen, with no image after it. */
function gifHeader(w: number, h: number): Uint8Array {
  const out = new Uint8Array(13);
  out.set(new TextEncoder().encode("GIF89a"));
  const v = new DataView(out.buffer);
  v.setUint16(6, w, true);
  v.setUint16(8, h, true);
  return out;
}

/** A JPEG start of image and baseline frame header declaring `w` x `h` (3 components), then nothing. */
function jpegHeader(w: number, h: number): Uint8Array {
  return new Uint8Array([
    0xff,
    0xd8, // SOI
    0xff,
    0xc0,
    0,
    17,
    8,
    h >> 8,
    h & 0xff,
    w >> 8,
    w & 0xff,
    3, // SOF0, length 17, 8 bits, 3 components
    1,
    0x11,
    0,
    2,
    0x11,
    0,
    3,
    0x11,
    0,
  ]);
}

/** A u8 [h, w, 3] image of random pixels, written with writeImage. */
function writeRandom(path: string, h: number, w: number, seed: number): void {
  using g = new t.Generator(seed);
  t.tidy(() => t.writeImage(path, t.to(t.randint(g, 0, 256, [h, w, 3]), "u8")));
}

/** The files of the hostile folder: good ones (loaded) and bad ones (skipped, with a reason matching the regex). */
function hostileFolder(): { dir: string; good: string[]; bad: Record<string, RegExp> } {
  const dir = Deno.makeTempDirSync({ prefix: "image-bombs-" });
  writeRandom(join(dir, "good-a.png"), 30, 20, 1);
  writeRandom(join(dir, "good-b.jpg"), 20, 30, 2);
  const goodPng = Deno.readFileSync(join(dir, "good-a.png"));
  // The reported bombs: a 15 KB 16,000,000 x 1 PNG and a 177-byte 100,000 x 1 PNG. The first cannot be resized
  // to a short side of 256 (its long side would pass stb's int coordinates); the second is a valid image whose
  // centre crop is resampled alone, in little memory.
  Deno.writeFileSync(join(dir, "good-strip-100000x1.png"), png(100_000, 1));
  const files: Record<string, Uint8Array> = {
    "bad-wide-16000000x1.png": png(16_000_000, 1),
    "bad-wide-16000000x1-small-idat.png": png(16_000_000, 1, new Uint8Array(deflateSync(new Uint8Array(100)))),
    "bad-huge-20000x20000.png": png(20_000, 20_000, new Uint8Array(deflateSync(new Uint8Array(100)))),
    "bad-huge-16000000x16000000.png": png(16_000_000, 16_000_000, new Uint8Array(deflateSync(new Uint8Array(10)))),
    "bad-huge-100000x100000.bmp": bmpHeader(100_000, 100_000),
    "bad-huge-65535x65535-gif.png": gifHeader(65535, 65535), // named .png: a folder lists no .gif (torchvision)
    "bad-huge-65535x65535.jpg": jpegHeader(65535, 65535),
    "bad-header-only-100x100.png": concat([png(100, 100).subarray(0, 8 + 25), png(1, 1).subarray(-12)]),
    "bad-truncated.png": goodPng.subarray(0, Math.floor(goodPng.length * 0.6)),
    "bad-empty.png": new Uint8Array(),
    "bad-garbage.png": concat([PNG_SIGNATURE, Uint8Array.from({ length: 200 }, (_, i) => (i * 37 + 11) & 0xff)]),
  };
  for (const [name, bytes] of Object.entries(files)) Deno.writeFileSync(join(dir, name), bytes);
  const bad: Record<string, RegExp> = {
    "bad-wide-16000000x1.png": /16000000 x 1 is too elongated/,
    "bad-wide-16000000x1-small-idat.png": /16000000 x 1 is too elongated/,
    "bad-huge-20000x20000.png": /20000 x 20000 = 400000000 pixels exceeds the decoding budget of 89478485/,
    // stb refuses the header itself ("too large", a reason its probes for other formats overwrite): the IHDR's size
    // is checked against the budget.
    "bad-huge-16000000x16000000.png": /16000000 x 16000000 = \d+ pixels exceeds the decoding budget/,
    "bad-huge-100000x100000.bmp": /exceeds the decoding budget/,
    "bad-huge-65535x65535-gif.png": /exceeds the decoding budget/,
    "bad-huge-65535x65535.jpg": /exceeds the decoding budget/,
    "bad-header-only-100x100.png": /cannot decode/,
    "bad-truncated.png": /cannot decode/,
    "bad-empty.png": /not a readable image/,
    "bad-garbage.png": /not a readable image/,
  };
  return { dir, good: ["good-a.png", "good-b.jpg", "good-strip-100000x1.png"], bad };
}

// ---- the child -----------------------------------------------------------------------------------------------

/** What the child reports: the folder dataset's batch, and decodeImages' own account with reasons. */
interface ChildReport {
  shape: number[];
  loaded: string[];
  skipped: string[];
  firstError: string;
  reasons: Record<string, string>;
  /** decodeImage of each file at its own size (as `attention` decodes): "W x H", or the reason. */
  whole: Record<string, string>;
  hwmKb: number;
}

const base = (p: string) => p.split("/").pop()!;

async function child(dir: string, threads: number, side: number): Promise<void> {
  using ds = imageFolder(dir, { side, threads });
  const all = [...Array(ds.length).keys()];
  const batch = await ds.load(all);
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  const r = await t.decodeImages(files.map((f) => join(dir, f)), { side, threads });
  const whole: Record<string, string> = {};
  for (const f of files) {
    const one = await t.decodeImage(join(dir, f));
    whole[f] = one.image ? `${one.image.shape[2]} x ${one.image.shape[1]}` : one.reason;
    one.image?.dispose();
  }
  const report: ChildReport = {
    shape: batch.images.shape as number[],
    loaded: batch.indices.map((i) => files[i]),
    skipped: batch.failed.map(base),
    firstError: batch.firstError,
    reasons: Object.fromEntries(r.failed.map((f) => [base(f.path), f.reason])),
    whole,
    hwmKb: Number(Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/)![1]),
  };
  t.dispose([batch.images, r.images]);
  console.log(JSON.stringify(report));
}

if (Deno.args[0] === "image-bomb-child") {
  await child(Deno.args[1], Number(Deno.args[2]), Number(Deno.args[3]));
  Deno.exit(0);
}

/** Runs the child on `dir`; fails (instead of dying with it) if it crashes, hangs or prints no report. */
async function inChild(dir: string, threads: number, side: number, env: Record<string, string> = {}) {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      new URL(import.meta.url).pathname,
      "image-bomb-child",
      dir,
      `${threads}`,
      `${side}`,
    ],
    env: { DINO_CPU_CACHE_MB: "0", NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => cmd.kill("SIGKILL"), 180_000);
  const out = await cmd.output();
  clearTimeout(timer);
  const text = new TextDecoder().decode(out.stdout), err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `the child died (code ${out.code}, signal ${out.signal}):\n${err.slice(-3000)}`);
  const line = text.split("\n").find((l) => l.startsWith("{"));
  assert.ok(line, `no report from the child:\n${text}\n${err.slice(-3000)}`);
  return JSON.parse(line) as ChildReport;
}

// ---- the tests -----------------------------------------------------------------------------------------------

for (const threads of [1, 2]) {
  Deno.test(`bombs, absurd sizes, truncated and garbage files are skipped with a reason (${threads} thread(s))`, async () => {
    const { dir, good, bad } = hostileFolder();
    try {
      const r = await inChild(dir, threads, 256);
      assert.deepEqual(r.loaded, good);
      assert.deepEqual(r.shape, [good.length, 3, 256, 256]);
      assert.deepEqual(r.skipped, Object.keys(bad).sort());
      assert.match(r.firstError, /^\/.*bad-\S+: .+/);
      assert.deepEqual(Object.keys(r.reasons).sort(), Object.keys(bad).sort());
      for (const [name, why] of Object.entries(bad)) assert.match(r.reasons[name], why, name);
      // Decoded whole, the same files are refused for the same reasons, but for the resize's: a 16,000,000 x 1 strip
      // is 16 MP, within the budget, so whole it decodes, or, its data cut short, is refused for that, not its size.
      for (const name of Object.keys(bad)) {
        if (!/too elongated|cannot be resized/.test(r.reasons[name])) {
          assert.equal(r.whole[name], r.reasons[name], name);
        } else {assert.match(
            r.whole[name],
            /^16000000 x 1$|^cannot decode \(not enough pixels\)$/,
            `${name}: ${r.whole[name]}`,
          );}
      }
      assert.equal(r.whole["good-strip-100000x1.png"], "100000 x 1");
      for (const name of good) assert.match(r.whole[name], /^\d+ x \d+$/, name);
      assert.ok(r.hwmKb < 2 * 1024 * 1024, `peak resident memory ${r.hwmKb >> 10} MiB`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

Deno.test("a 16,000,000 x 1 PNG within the budget decodes at a side that keeps it in int range, in little memory", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "image-bombs-" });
  try {
    Deno.writeFileSync(join(dir, "wide.png"), png(16_000_000, 1));
    const r = await inChild(dir, 2, 32);
    assert.deepEqual([r.loaded, r.skipped, r.shape], [["wide.png"], [], [1, 3, 32, 32]]);
    assert.ok(r.hwmKb < 2 * 1024 * 1024, `peak resident memory ${r.hwmKb >> 10} MiB`);
    // The environment's budget reaches the child's default.
    const low = await inChild(dir, 1, 32, { DINO_MAX_IMAGE_PIXELS: "15999999" });
    assert.deepEqual([low.loaded, low.skipped], [[], ["wide.png"]]);
    assert.match(low.reasons["wide.png"], /16000000 pixels exceeds the decoding budget of 15999999/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a FIFO, a folder and a device named like images are skipped, not waited on", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "image-special-" });
  try {
    writeRandom(join(dir, "a.png"), 8, 8, 5);
    Deno.symlinkSync("/dev/zero", join(dir, "zero.png"));
    const made = await new Deno.Command("mkfifo", { args: [join(dir, "fifo.png")] }).output();
    assert.ok(made.success, "mkfifo");
    const r = await inChild(dir, 2, 8); // the folder lists only a.png; decodeImages is given every entry
    assert.deepEqual(r.loaded, ["a.png"]);
    assert.deepEqual(r.reasons, {
      "fifo.png": "not a regular file",
      "zero.png": "not a regular file",
    });
    Deno.mkdirSync(join(dir, "sub", "folder.png"), { recursive: true }); // (a folder beside images is a class)
    const d = await t.decodeImages([join(dir, "sub", "folder.png"), join(dir, "missing.png")], { side: 8 });
    assert.deepEqual(d.failed.map((f) => f.reason), ["not a regular file", "cannot open: No such file or directory"]);
    d.images.dispose();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the pixel budget: an image just over it is skipped, one at it is loaded (option and env)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "image-budget-" });
  const saved = Deno.env.get("DINO_MAX_IMAGE_PIXELS");
  try {
    writeRandom(join(dir, "a-40x30.png"), 30, 40, 3); // 1200 pixels
    writeRandom(join(dir, "b-10x10.png"), 10, 10, 4); // 100 pixels
    const names = async (ds: Dataset) => {
      const b = await ds.load([0, 1]);
      t.dispose([b.images, b.labels]);
      return { loaded: b.indices, skipped: b.failed.map(base), firstError: b.firstError };
    };
    using over = imageFolder(dir, { side: 8, maxImagePixels: 1199 });
    const o = await names(over);
    assert.deepEqual([o.loaded, o.skipped], [[1], ["a-40x30.png"]]);
    assert.match(o.firstError, /a-40x30\.png: 40 x 30 = 1200 pixels exceeds the decoding budget of 1199/);
    using at = imageFolder(dir, { side: 8, maxImagePixels: 1200 });
    assert.deepEqual((await names(at)).loaded, [0, 1]);

    Deno.env.set("DINO_MAX_IMAGE_PIXELS", "1199");
    assert.equal(t.defaultMaxImagePixels(), 1199);
    using fromEnv = openDataset(dir, "train", { side: 8 });
    assert.deepEqual((await names(fromEnv)).skipped, ["a-40x30.png"]);
    using option = openDataset(dir, "train", { side: 8, maxImagePixels: 1200 }); // the option wins
    assert.deepEqual((await names(option)).loaded, [0, 1]);
    const direct = await t.decodeImages([join(dir, "a-40x30.png")], { side: 8 });
    assert.deepEqual([direct.ok, direct.failed.map((f) => f.index)], [[], [0]]);
    direct.images.dispose();
    Deno.env.set("DINO_MAX_IMAGE_PIXELS", "1200");
    using atEnv = imageFolder(dir, { side: 8 });
    assert.deepEqual((await names(atEnv)).loaded, [0, 1]);

    for (const wrong of ["0", "-5", "1.5", "many"]) {
      Deno.env.set("DINO_MAX_IMAGE_PIXELS", wrong);
      assert.throws(() => t.defaultMaxImagePixels(), /DINO_MAX_IMAGE_PIXELS must be a whole number of pixels >= 1/);
    }
    Deno.env.delete("DINO_MAX_IMAGE_PIXELS");
    assert.equal(t.defaultMaxImagePixels(), 89_478_485);
    assert.throws(() => imageFolder(dir, { side: 8, maxImagePixels: 0 }), /maxImagePixels must be a whole number/);
    await assert.rejects(() => t.decodeImages([join(dir, "a-40x30.png")], { side: 8, maxPixels: NaN }), /maxPixels/);
    await assert.rejects(() => t.decodeImages([join(dir, "a-40x30.png")], { side: 0 }), /side must be an integer/);
    await assert.rejects(() => t.decodeImages(["a\0b.png"], { side: 8 }), /NUL/);
  } finally {
    if (saved === undefined) Deno.env.delete("DINO_MAX_IMAGE_PIXELS");
    else Deno.env.set("DINO_MAX_IMAGE_PIXELS", saved);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("writeImage checks dtype and shape before stb sees the tensor, and writes nothing on error", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "write-image-" });
  try {
    const path = join(dir, "x.png");
    const cases: [number[], t.DType, RegExp][] = [
      [[2, 2, 5], "u8", /C = 1, 3 or 4 channels.*\[2, 2, 5\]/],
      [[0, 0, 3], "u8", /H >= 1 and W >= 1.*\[0, 0, 3\]/],
      [[4, 0, 3], "u8", /H >= 1 and W >= 1/],
      [[2, 2, 0], "u8", /C = 1, 3 or 4/],
      [[2, 2], "u8", /\[H, W, C\]/],
      [[2, 2, 3], "f32", /takes a u8 \[H, W, C\] tensor, got f32.*to\(image, "u8"\)/],
      [[1, 70000, 3], "u8", /too large for JPEG/],
    ];
    for (const [shape, dtype, why] of cases) {
      using img = t.zeros(shape, { dtype });
      const target = shape[1] === 70000 ? join(dir, "x.jpg") : path;
      assert.throws(() => t.writeImage(target, img), why, `${dtype} [${shape}]`);
      assert.equal(t.exists(target), false, `nothing written for ${dtype} [${shape}]`);
    }
    // The shim checks on its own too, for any caller that goes around writeImage.
    const raw = (img: t.Tensor, format: number) =>
      checked(native.write_image(ctx, new TextEncoder().encode(path + "\0"), img.ptr, format, 95), "write_image");
    for (const [shape, format] of [[[2, 2, 5], 0], [[0, 0, 3], 0], [[1, 0, 1], 1], [[1, 70000, 1], 1]] as const) {
      using img = t.zeros([...shape], { dtype: "u8" });
      assert.throws(() => raw(img, format), /write_image: .*(C must be 1, 3 or 4|H >= 1 and W >= 1|too large)/);
      assert.equal(t.exists(path), false);
    }
    using ok = t.full([3, 2, 3], 7, { dtype: "u8" });
    assert.throws(() => t.writeImage(path, ok, 0), /quality must be an integer in 1\.\.100/);
    assert.throws(() => t.writeImage(join(dir, "a\0b.png"), ok), /NUL/);
    // A channels-first tensor seen through a permute (not contiguous) is written as it reads.
    using chw = t.tidy(() => t.permute(t.to(t.reshape(t.arange(0, 18), [3, 3, 2]), "u8"), [1, 2, 0]));
    t.writeImage(path, chw);
    const back = await t.decodeImages([path], { side: 2 });
    assert.deepEqual([back.images.shape, back.failed], [[1, 3, 2, 2], []]);
    back.images.dispose();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("fromBytes checks the data's bytes against the shape and dtype before the shim allocates", () => {
  const before = t.liveTensors();
  const bytes = new Uint8Array(4);
  assert.throws(
    () => t.fromBytes(bytes, "f32", [1_000_000, 1_000_000]),
    /has 4 bytes but shape and dtype need 4000000000000/,
  );
  assert.throws(() => t.fromBytes(bytes, "f32", [2]), /has 4 bytes but shape and dtype need 8/);
  assert.throws(() => t.fromBytes(bytes, "u8", [-1, -4]), /integers >= 0/);
  assert.throws(() => t.fromBytes(bytes, "u8", [2 ** 60, 0]), /integers >= 0/);
  assert.throws(() => t.fromBytes(bytes, "u8", [1.5]), /integers >= 0/);
  assert.throws(() => t.fromBytes(bytes, "q8" as t.DType, [4]), /unknown dtype "q8"/);
  assert.throws(() => t.fromBytes(new DataView(bytes.buffer) as unknown as Uint8Array, "u8", [4]), /TypedArray/);
  assert.throws(() => t.tensor(new Uint8Array(6), { shape: [4, 4] }), /6 bytes but shape and dtype need 16/);
  assert.throws(() => t.zeros([2 ** 60]), /expected integers/);
  assert.throws(() => t.zeros([Infinity]), /expected integers/);
  // The shim checks on its own too, before it allocates.
  const raw = (shape: number[], dtype: number) =>
    wrap(native.from_data(ctx, bytes, 4n, dtype, new Float64Array(shape), shape.length), "from_data");
  assert.throws(() => raw([1e6, 1e6, 1e6, 1e6], DTYPE_CODES.f32), /4 bytes but shape .* need more than 2\^64/);
  assert.throws(() => raw([1e6, 1e6], DTYPE_CODES.f32), /4 bytes but shape .* need 4000000000000/);
  assert.throws(() => raw([-1], DTYPE_CODES.u8), /negative size/);
  assert.throws(() => raw([4], 999), /unknown dtype code 999/);
  // Codes from other entry points are checked too: an error, not an abort or uninitialised memory.
  const shape = new Float64Array([2]);
  assert.throws(() => wrap(native.empty(ctx, shape, 1, 99, -1), "empty"), /unknown dtype code 99/);
  {
    using img = t.ones([1, 1, 2, 2]), grid = t.zeros([1, 1, 1, 2]);
    assert.throws(() => wrap(native.grid_sample(ctx, img.ptr, grid.ptr, 7, 0, false), "gs"), /grid_sample mode code 7/);
    assert.throws(() => wrap(native.grid_sample(ctx, img.ptr, grid.ptr, 0, 9, false), "gs"), /padding code 9/);
  }
  using viaShim = raw([2, 2], DTYPE_CODES.u8);
  assert.deepEqual(viaShim.shape, [2, 2]);
  using empty = t.fromBytes(new Uint8Array(0), "f32", [0, 3]);
  assert.deepEqual(empty.shape, [0, 3]);
  using ok = t.fromBytes(new Uint8Array(new Int16Array([-2, 5]).buffer), "i16", [2, 1]);
  assert.deepEqual(t.toArray(ok), [-2, 5]);
  assert.equal(t.liveTensors(), before + 3);
});
