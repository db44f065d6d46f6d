/**
 * Image files in and out, through stb in the native shim. Decoding runs on
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
import { checked, ctx, messageOf, native, newContext } from "../library.ts";
import { type Tensor, wrapList } from "../tensor.ts";
import { toArray } from "./creation.ts";

/** Options of {@linkcode decodeImages}. */
export interface DecodeOptions {
  /** The short side every image is resized to, before a centre crop to side x side. */
  side: number;
  /** 3 (RGB, the default) or 1 (grayscale). */
  channels?: 1 | 3;
  /** Decoding threads (default: the machine's cores). */
  threads?: number;
}

/** What {@linkcode decodeImages} returns. */
export interface Decoded {
  /** u8 [ok, C, side, side], in the order of the files that decoded. */
  images: Tensor;
  /** Indices (into the input list) of the files in `images`. */
  ok: number[];
  /** Indices of the files that could not be decoded, with the reasons of the first. */
  failed: { index: number; path: string }[];
  /** The first failure's reason, or "" when none failed. */
  firstError: string;
}

/**
 * Decodes image files (every format stb_image reads: PNG, JPEG, BMP, GIF, TGA,
 * PSD, HDR, PIC, PNM) into one u8 batch. Corrupt, truncated or unsupported
 * files are skipped and reported, never fatal.
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
  const enc = new TextEncoder();
  const parts = paths.map((p) => enc.encode(p + "\0"));
  const buf = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  const c = newContext();
  const threads = o.threads ?? navigator.hardwareConcurrency;
  const list = await native.decode_images(c, buf, paths.length, o.side, o.channels ?? 3, threads);
  const [images, ok, bad] = wrapList(list, "decodeImages", c);
  try {
    const failed = toArray(bad).map((i) => ({ index: i, path: paths[i] }));
    return { images, ok: toArray(ok), failed, firstError: failed.length ? messageOf(c) : "" };
  } finally {
    ok.dispose();
    bad.dispose();
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
  checked(
    native.write_image(ctx, new TextEncoder().encode(path + "\0"), image.ptr, jpeg ? 1 : 0, quality),
    "writeImage",
  );
}
