/**
 * Image files in and out, through libjpeg and stb in the native shim. Decoding runs on
 * native threads through a nonblocking FFI call, so JavaScript (and the
 * training step) keeps running while a batch decodes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { decodeImages, full, writeImage } from "../mod.ts";
 * const dir = Deno.makeTempDirSync();
 * using gray = full([48, 64, 3], 128, { dtype: "u8" }); // [H, W, C]
 * writeImage(join(dir, "a.png"), gray);
 * writeImage(join(dir, "b.jpg"), gray);
 * const r = await decodeImages([join(dir, "a.png"), join(dir, "b.jpg")], { side: 32 });
 * assert.deepEqual([r.images.shape, r.failed], [[2, 3, 32, 32], []]); // [n, C, side, side]
 * r.images.dispose();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 * @module
 */
import { checked, ctx, native, newContext } from "../library.ts";
import { type Tensor, wrap, wrapList } from "../tensor.ts";
import { data, toArray } from "./creation.ts";

/** The default pixel budget of {@linkcode decodeImages}: PIL's decompression-bomb limit. */
export const MAX_IMAGE_PIXELS = 89_478_485;

/**
 * The pixel budget to decode with when none is given: `DINO_MAX_IMAGE_PIXELS` when set, else
 * {@linkcode MAX_IMAGE_PIXELS}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultMaxImagePixels, MAX_IMAGE_PIXELS } from "../mod.ts";
 * if (!Deno.env.get("DINO_MAX_IMAGE_PIXELS")) assert.equal(defaultMaxImagePixels(), MAX_IMAGE_PIXELS);
 * ```
 */
export function defaultMaxImagePixels(): number {
  const env = Deno.env.get("DINO_MAX_IMAGE_PIXELS");
  if (env === undefined || env.trim() === "") return MAX_IMAGE_PIXELS;
  const n = Number(env);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`DINO_MAX_IMAGE_PIXELS must be a whole number of pixels >= 1 (width x height), got "${env}"`);
  }
  return n;
}

/** Options of {@linkcode decodeImages}. */
export interface DecodeOptions {
  /** The short side every image is resized to, before a centre crop to crop x crop. */
  side: number;
  /** The side of the centre crop, at most `side` (default `side`). */
  crop?: number;
  /** 3 (RGB, the default) or 1 (grayscale). */
  channels?: 1 | 3;
  /** Decoding threads (default: the machine's cores). */
  threads?: number;
  /**
   * The largest image (width x height, as its header declares) decoded; larger files are skipped before any
   * pixel is allocated (default: {@linkcode defaultMaxImagePixels}).
   */
  maxPixels?: number;
}

/** What {@linkcode decodeImages} returns. */
export interface Decoded {
  /** u8 [ok, C, crop, crop], in the order of the files that decoded. */
  images: Tensor;
  /** Indices (into the input list) of the files in `images`. */
  ok: number[];
  /** The files that could not be decoded: their index into the input list, path, and why. */
  failed: { index: number; path: string; reason: string }[];
  /** The first failure as `path: reason`, or "" when none failed. */
  firstError: string;
}

/** The largest side {@linkcode decodeImages} resizes to (the shim's bound). */
const MAX_SIDE = 1 << 14;

/**
 * Decodes image files (JPEG with libjpeg, as PIL decodes it, or with stb_image
 * where the shim is built without libjpeg's headers; PNG, BMP, GIF, TGA, PSD,
 * HDR, PIC and PNM with stb_image) into one u8 batch. Corrupt, truncated or unsupported
 * files, and files whose header declares more than `maxPixels` pixels, are
 * skipped and reported with their reason, never fatal, whatever the thread count.
 * Each image is resized and cropped as torchvision's `Resize(side)` +
 * `CenterCrop(crop)` with bicubic interpolation: the long side to
 * int(side x long / short), the crop's offset rounded half to even, and PIL's
 * antialiased BICUBIC resampling in its own fixed point: a PNG gives the
 * pixels torchvision gives, to the level.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { decodeImages, full, writeImage } from "../mod.ts";
 * const dir = Deno.makeTempDirSync();
 * using white = full([40, 40, 3], 255, { dtype: "u8" });
 * writeImage(join(dir, "cat.png"), white);
 * Deno.writeTextFileSync(join(dir, "broken.png"), "not an image");
 * const paths = [join(dir, "broken.png"), join(dir, "cat.png")];
 * const { images, ok, failed } = await decodeImages(paths, { side: 32, channels: 1 });
 * assert.deepEqual([images.shape, ok, failed.map((f) => f.index)], [[1, 1, 32, 32], [1], [0]]);
 * images.dispose();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export async function decodeImages(paths: readonly string[], o: DecodeOptions): Promise<Decoded> {
  const { side, crop = o.side, channels = 3, threads = navigator.hardwareConcurrency } = o;
  const maxPixels = o.maxPixels ?? defaultMaxImagePixels();
  if (!Number.isInteger(side) || side < 1 || side > MAX_SIDE) {
    throw new RangeError(`decodeImages: side must be an integer in 1..${MAX_SIDE}, got ${side}`);
  }
  if (!Number.isInteger(crop) || crop < 1 || crop > side) {
    throw new RangeError(`decodeImages: crop must be an integer in 1..side (${side}), got ${crop}`);
  }
  if (channels !== 1 && channels !== 3) throw new RangeError(`decodeImages: channels must be 1 or 3, got ${channels}`);
  if (!Number.isInteger(threads) || threads < 1) {
    throw new RangeError(`decodeImages: threads must be an integer >= 1, got ${threads}`);
  }
  if (!(maxPixels >= 1) || maxPixels === Infinity) {
    throw new RangeError(`decodeImages: maxPixels must be a finite number of pixels >= 1, got ${maxPixels}`);
  }
  const bad = paths.find((p) => p.includes("\0"));
  if (bad !== undefined) throw new TypeError(`decodeImages: a path holds a NUL character: ${JSON.stringify(bad)}`);
  const enc = new TextEncoder();
  const parts = paths.map((p) => enc.encode(p + "\0"));
  const buf = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  const c = newContext();
  const list = await native.decode_images(
    c,
    buf,
    paths.length,
    side,
    crop,
    channels,
    Math.min(threads, 256),
    maxPixels,
  );
  const [images, ok, skipped, why] = wrapList(list, "decodeImages", c);
  try {
    const reasons = new TextDecoder().decode(data(why)).split("\0");
    const failed = toArray(skipped).map((i, k) => ({ index: i, path: paths[i], reason: reasons[k] }));
    return {
      images,
      ok: toArray(ok),
      failed,
      firstError: failed.length ? `${failed[0].path}: ${failed[0].reason}` : "",
    };
  } finally {
    ok.dispose();
    skipped.dispose();
    why.dispose();
  }
}

/** Options of {@linkcode decodeImage}. */
export interface DecodeImageOptions {
  /**
   * The short side the image is resized to, its aspect kept (before each side is snapped to `multiple`); by default
   * the image's own (with `multiple` 1, the pixels as they are).
   */
  side?: number;
  /** Each side of the result is the nearest multiple of this, at least one (default 1: no snapping). */
  multiple?: number;
  /** 3 (RGB, the default) or 1 (grayscale). */
  channels?: 1 | 3;
  /** The largest image (width x height, as its header declares) decoded (default: {@linkcode defaultMaxImagePixels}). */
  maxPixels?: number;
  /**
   * Decode a JPEG whose data ends early, or breaks after its header, as PIL does under
   * `ImageFile.LOAD_TRUNCATED_IMAGES = True` (which the official retrieval loader sets): libjpeg is given an
   * end-of-image marker once where the data ends, so the missing blocks come out mid-gray and a progressive file from
   * the scans it has; rows the decoding never reaches (it stopped short, or on an error) are black (white for CMYK),
   * all of them where libjpeg refuses a header that PIL's parser takes. The result says `truncated`. By default such
   * a file is refused, as PIL refuses it. (JPEGs only, and only with the shim's libjpeg; the decompression-bomb caps
   * still refuse.)
   */
  loadTruncated?: boolean;
}

/**
 * What {@linkcode decodeImage} returns: the image (with `truncated` when it was a truncated JPEG decoded under
 * `loadTruncated`), or why the file cannot be decoded.
 */
export type DecodedImage =
  | { image: Tensor; reason?: undefined; truncated: boolean }
  | { image?: undefined; reason: string; truncated?: undefined };

/**
 * Decodes one whole image file, its aspect kept, giving u8 [C, H, W]: without `side` at its own size, pixel for
 * pixel; with `side`, resized as PIL's `Image.resize((w, h), BICUBIC)` to the size whose short side is `side`, each
 * side then snapped to its nearest multiple of `multiple`. Nothing is cropped. A file that cannot be decoded (missing,
 * corrupt, unsupported, over the pixel budget, or so elongated that a side would pass 16384) gives its reason
 * instead, never an exception; the same defences against hostile files apply as in {@linkcode decodeImages}.
 * Decoding runs off the JavaScript thread.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeImage, full, writeImage } from "../mod.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".png" });
 * using wide = full([30, 50, 3], 200, { dtype: "u8" }); // [H, W, C]: 50 wide, 30 high
 * writeImage(path, wide);
 * const r = await decodeImage(path, { side: 60, multiple: 8 }); // 60 x 100, then to multiples of 8
 * assert.deepEqual(r.image?.shape, [3, 64, 104]);
 * r.image?.dispose();
 * using whole = (await decodeImage(path)).image; // its own size, pixel for pixel
 * assert.deepEqual(whole?.shape, [3, 30, 50]);
 * assert.match((await decodeImage(path + ".missing", { side: 60 })).reason ?? "", /cannot open/);
 * Deno.removeSync(path);
 * ```
 */
export async function decodeImage(path: string, o: DecodeImageOptions = {}): Promise<DecodedImage> {
  const { side, multiple = 1, channels = 3 } = o;
  const maxPixels = o.maxPixels ?? defaultMaxImagePixels();
  for (const [name, v] of [["side", side ?? 1], ["multiple", multiple]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE) {
      throw new RangeError(`decodeImage: ${name} must be an integer in 1..${MAX_SIDE}, got ${v}`);
    }
  }
  if (channels !== 1 && channels !== 3) throw new RangeError(`decodeImage: channels must be 1 or 3, got ${channels}`);
  if (!(maxPixels >= 1) || maxPixels === Infinity) {
    throw new RangeError(`decodeImage: maxPixels must be a finite number of pixels >= 1, got ${maxPixels}`);
  }
  if (path.includes("\0")) throw new TypeError(`decodeImage: the path holds a NUL character: ${JSON.stringify(path)}`);
  const c = newContext();
  const path0 = new TextEncoder().encode(path + "\0");
  const load = o.loadTruncated ? 1 : 0;
  const list = await native.decode_image(c, path0, side ?? 0, multiple, channels, maxPixels, load); // 0: its own size
  const [image, why, cut] = wrapList(list, "decodeImage", c);
  try {
    if (why.shape[0] === 0) return { image, truncated: data(cut)[0] === 1 };
    image.dispose();
    return { reason: new TextDecoder().decode(data(why)) };
  } finally {
    why.dispose();
    cut.dispose();
  }
}

/**
 * Writes a u8 [H, W, C] image (C = 1, 3 or 4) as PNG, or JPEG when the path ends in .jpg/.jpeg.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, writeImage } from "../mod.ts";
 * using img = tensor([[[255, 0, 0]]], { dtype: "u8" }); // one red pixel
 * const path = Deno.makeTempFileSync({ suffix: ".png" });
 * writeImage(path, img);
 * assert.deepEqual([...Deno.readFileSync(path).subarray(1, 4)], [..."PNG"].map((c) => c.charCodeAt(0)));
 * Deno.removeSync(path);
 * ```
 */
export function writeImage(path: string, image: Tensor, quality = 95): void {
  const jpeg = /\.jpe?g$/i.test(path);
  const [h, w, c] = image.shape;
  const what = `${image.dtype} [${image.shape.join(", ")}]`;
  if (image.dtype !== "u8") {
    throw new TypeError(`writeImage: takes a u8 [H, W, C] tensor, got ${what}; convert with to(image, "u8")`);
  }
  if (image.ndim !== 3 || !(c >= 1 && c <= 4)) {
    throw new RangeError(
      `writeImage: takes a u8 [H, W, C] tensor with C = 1, 3 or 4 channels (2: gray and alpha), got ${what}; ` +
        `put the channels last (permute [C, H, W] to [H, W, C])`,
    );
  }
  if (h < 1 || w < 1) throw new RangeError(`writeImage: an image needs H >= 1 and W >= 1, got ${what}`);
  if (jpeg ? h > 65535 || w > 65535 : (w * c + 1) * h > 2 ** 31 - 1) {
    throw new RangeError(
      `writeImage: ${what} is too large for ${
        jpeg ? "JPEG (sides of at most 65535)" : "stb's PNG writer (rows totalling under 2 GiB)"
      }; write it in tiles`,
    );
  }
  if (!Number.isInteger(quality) || quality < 1 || quality > 100) {
    throw new RangeError(`writeImage: quality must be an integer in 1..100, got ${quality}`);
  }
  if (path.includes("\0")) throw new TypeError(`writeImage: the path holds a NUL character: ${JSON.stringify(path)}`);
  checked(
    native.write_image(ctx, new TextEncoder().encode(path + "\0"), image.ptr, jpeg ? 1 : 0, quality),
    "writeImage",
  );
}

/** A filter of {@linkcode pilResize}: PIL's `BILINEAR`, `BICUBIC` or `LANCZOS` (`ANTIALIAS`). */
export type PilFilter = "bilinear" | "bicubic" | "lanczos";
const PIL_FILTERS: Record<PilFilter, number> = { bilinear: 0, bicubic: 1, lanczos: 2 };

/**
 * PIL's `Image.resize((width, height), filter, reducing_gap=reducingGap)` of u8 images [..., H, W] to
 * [..., height, width] (torchvision's `Resize` on a PIL image; with `reducingGap` 2 and LANCZOS, the official
 * retrieval's `thumbnail`): Pillow's antialiased resampling as its `Resample.c` computes it (weights in double,
 * 22-bit fixed point, the horizontal pass first, each clipped to 8 bits; a side that keeps its length is not
 * resampled), after `Image.reduce` where the gap calls for it, each [H, W] plane alone as PIL resamples each band:
 * the same pixels as PIL. Runs on the CPU; the result is on the image's device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pilResize, tensor, toArray } from "../mod.ts";
 * using row = tensor([[[0, 100, 200, 250]]], { dtype: "u8" }); // [1, 1, 4]
 * using half = pilResize(row, [1, 2], "bilinear");
 * assert.deepEqual(toArray(half), [71, 207]); // PIL: 71, 207
 * ```
 */
export function pilResize(
  image: Tensor,
  size: readonly [number, number],
  filter: PilFilter,
  o: {
    /** PIL's `reducing_gap`: 0 (the default) for none, as `Image.resize`'s; `thumbnail` passes 2. */
    reducingGap?: number;
  } = {},
): Tensor {
  if (image.dtype !== "u8" || image.ndim < 2) {
    throw new TypeError(`pilResize takes u8 [..., H, W] images, got ${image.dtype} [${image.shape}]`);
  }
  const [h, w] = size;
  if (![h, w].every((n) => Number.isInteger(n) && n >= 1 && n <= 1 << 20)) {
    throw new RangeError(`pilResize: size must be two integers in 1..1048576, got [${size}]`);
  }
  if (!Object.hasOwn(PIL_FILTERS, filter)) {
    throw new RangeError(`pilResize: filter must be "bilinear", "bicubic" or "lanczos", got ${filter}`);
  }
  const gap = o.reducingGap ?? 0;
  if (!(gap === 0 || gap >= 1)) throw new RangeError(`pilResize: reducingGap must be 0 (none) or >= 1, got ${gap}`);
  return wrap(native.pil_resize(ctx, image.ptr, h, w, PIL_FILTERS[filter], gap), "pilResize");
}
