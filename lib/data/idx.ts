/**
 * IDX files (MNIST, Fashion-MNIST), gzipped or not.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fashionMnist } from "./idx.ts";
 * using train = fashionMnist("train"); // needs: apt-get install dataset-fashion-mnist
 * assert.deepEqual([train.length, train.classes[0]], [60000, "T-shirt/top"]);
 * ```
 * @module
 */
import { constants as bufferConstants } from "node:buffer";
import { constants, gunzipSync } from "node:zlib";
import { join } from "node:path";
import { fromBytes } from "../../ffi/mod.ts";
import { type Dataset, tensorDataset } from "./dataset.ts";

/** Where Debian's `dataset-fashion-mnist` package puts the files. */
export const FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist";

/** Fashion-MNIST's class names, by label. */
export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

/** The most bytes of data an IDX file may hold unless `DINO_IDX_MAX_BYTES` says otherwise: 2 GiB. */
export const IDX_MAX_BYTES = 2 ** 31;
/** The longest IDX header: the magic number and 255 dimensions. */
const IDX_HEADER_MAX = 4 + 4 * 255;

/**
 * The most bytes of data {@linkcode readIdx} accepts: `DINO_IDX_MAX_BYTES` if set, else {@linkcode IDX_MAX_BYTES}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IDX_MAX_BYTES, idxMaxBytes } from "./idx.ts";
 * if (!Deno.env.get("DINO_IDX_MAX_BYTES")) assert.equal(idxMaxBytes(), IDX_MAX_BYTES); // 2 GiB
 * ```
 */
export function idxMaxBytes(): number {
  const env = Deno.env.get("DINO_IDX_MAX_BYTES");
  if (env === undefined || env === "") return IDX_MAX_BYTES;
  const n = Number(env);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new Error(`DINO_IDX_MAX_BYTES must be a positive whole number of bytes, got "${env}"`);
  }
  return n;
}

/** The header's dimensions, where the data starts and how many bytes it implies; throws on a bad header. */
function idxHeader(bytes: Uint8Array, path: string, maxBytes: number): { dims: number[]; start: number; size: number } {
  if (bytes.length < 4) throw new Error(`${path}: not an IDX file (${bytes.length} bytes, too short for a header)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${path}: not an IDX file (bad magic number 0x${hex(bytes[0])}${hex(bytes[1])}, expected 0x0000)`);
  }
  if (bytes[2] !== 0x08) throw new Error(`${path}: IDX element type 0x${hex(bytes[2])} is not unsigned bytes (0x08)`);
  const ndim = bytes[3];
  const start = 4 + 4 * ndim;
  if (bytes.length < start) {
    throw new Error(`${path}: truncated IDX header (${bytes.length} bytes, ${ndim} dimensions need ${start})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: ndim }, (_, i) => view.getUint32(4 + 4 * i, false));
  const size = dims.reduce((a, b) => a * b, 1); // may round or reach Infinity, but then it is far over maxBytes
  if (size > maxBytes) {
    throw new Error(
      `${path}: the IDX header's dimensions [${dims}] imply ${size} bytes of data, over the limit of ${maxBytes} ` +
        `(raise it with DINO_IDX_MAX_BYTES)`,
    );
  }
  return { dims, start, size };
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}

/** Whether `e` is node:zlib's "output over maxOutputLength". */
function tooLarge(e: unknown): boolean {
  return (e as { code?: string })?.code === "ERR_BUFFER_TOO_LARGE";
}

/**
 * The first `need` bytes of a gzip stream's content (or all of it, if shorter), inflating at most 64 KiB: prefixes
 * of the compressed bytes are inflated, doubling, then bisected once a prefix inflates to more than 64 KiB. One
 * more compressed byte inflates to at most about 1 KiB, so the longest prefix within 64 KiB holds `need` bytes.
 */
function gunzipHead(bytes: Uint8Array, path: string, need: number): Uint8Array {
  const LIMIT = 1 << 16;
  // undefined: over LIMIT; null: an error (a prefix may end anywhere, so only the whole stream's error counts)
  const inflate = (n: number): Uint8Array | undefined | null => {
    try {
      const out = gunzipSync(bytes.subarray(0, n), { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: LIMIT });
      return new Uint8Array(out.buffer, out.byteOffset, out.length);
    } catch (e) {
      if (tooLarge(e)) return undefined;
      if (n === bytes.length) throw new Error(`${path}: corrupt gzip data (${e instanceof Error ? e.message : e})`);
      return null;
    }
  };
  let lo = 0; // a prefix that inflates to LIMIT or less
  let hi = 0; // one that inflates to more
  for (let n = 256;; n *= 2) {
    const len = Math.min(n, bytes.length);
    const out = inflate(len); // never null for the whole stream: that error is thrown
    if (out === undefined) {
      hi = len;
      break;
    }
    if (out && (out.length >= need || len === bytes.length)) return out;
    lo = len;
  }
  let best: Uint8Array = new Uint8Array(0);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const out = inflate(mid);
    if (out === undefined) hi = mid;
    else {
      if (out && out.length >= need) return out;
      if (out) best = out;
      lo = mid;
    }
  }
  return best; // shorter than need only for streams no real gzip writer makes; the header check then fails
}

/**
 * Reads an IDX file of unsigned bytes (gzipped or not): its dimensions and data. The header's dimensions bound
 * the work: a file whose data would exceed `maxBytes` (default {@linkcode idxMaxBytes}) is refused before it is
 * read, and gzip data is never inflated past the size its header implies, so a gzip bomb is an error, not an
 * exhausted memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readIdx } from "./idx.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeFileSync(path, new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])); // u8, 1 dim of 3 (big-endian), data
 * assert.deepEqual(readIdx(path), { dims: [3], data: new Uint8Array([7, 8, 9]) });
 * assert.throws(() => readIdx(path, 2), /imply 3 bytes of data, over the limit of 2/);
 * Deno.removeSync(path);
 * ```
 */
export function readIdx(path: string, maxBytes: number = idxMaxBytes()): { dims: number[]; data: Uint8Array } {
  let bytes: Uint8Array;
  try {
    const info = Deno.statSync(path);
    // Reading a device or a pipe could take forever.
    if (!info.isFile) throw new Error("not a regular file");
    // Even incompressible data gzips to little more than its size.
    if (info.size > IDX_HEADER_MAX + maxBytes * 1.01 + 2 ** 20) {
      throw new Error(`${info.size} bytes is more than an IDX file within the limit of ${maxBytes} bytes of data`);
    }
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read IDX file ${path}: ${e instanceof Error ? e.message : e}`);
  }
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    const { dims, start, size } = idxHeader(gunzipHead(bytes, path, IDX_HEADER_MAX), path, maxBytes);
    const expected = start + size;
    try {
      // A few bytes beyond, so that a little trailing data is reported by its size below.
      const out = gunzipSync(bytes, { maxOutputLength: Math.min(expected + 4096, bufferConstants.MAX_LENGTH) });
      bytes = new Uint8Array(out.buffer, out.byteOffset, out.length);
    } catch (e) {
      if (tooLarge(e)) {
        throw new Error(
          `${path}: the gzip data inflates to more than the ${expected} bytes its IDX header implies ` +
            `(dimensions [${dims}]); not inflating further`,
        );
      }
      throw new Error(`${path}: corrupt gzip data (${e instanceof Error ? e.message : e})`);
    }
  }
  const { dims, start, size } = idxHeader(bytes, path, maxBytes);
  if (bytes.length - start !== size) {
    throw new Error(
      `${path}: IDX data has ${bytes.length - start} bytes, the header says ${size} (dimensions [${dims}])`,
    );
  }
  return { dims, data: bytes.subarray(start) };
}

/**
 * A dataset from an IDX image file ([N, H, W]) and, optionally, a label file ([N]).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { gzipSync } from "node:zlib";
 * import { idxDataset } from "./idx.ts";
 * const dir = Deno.makeTempDirSync();
 * // u8 magic, then dims [2, 2, 2] as big-endian u32s, then 2 black 2 x 2 images
 * const images = new Uint8Array([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, ...new Uint8Array(2 * 2 * 2)]);
 * const labels = new Uint8Array([0, 0, 8, 1, 0, 0, 0, 2, 3, 9]); // [2]: 3 and 9
 * Deno.writeFileSync(join(dir, "images-idx3-ubyte.gz"), gzipSync(images));
 * Deno.writeFileSync(join(dir, "labels-idx1-ubyte"), labels);
 * using ds = idxDataset(join(dir, "images-idx3-ubyte.gz"), join(dir, "labels-idx1-ubyte"));
 * assert.deepEqual([ds.length, ds.channels, ds.size, [...ds.labels!]], [2, 1, 2, [3, 9]]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function idxDataset(
  imagesPath: string,
  labelsPath?: string,
  classes?: readonly string[],
  name = "idx",
): Dataset {
  const images = readIdx(imagesPath);
  if (images.dims.length !== 3 || images.dims[1] !== images.dims[2]) {
    throw new Error(`${imagesPath}: expected square images [N, S, S], got [${images.dims}]`);
  }
  const [N, S] = images.dims;
  if (N === 0 || S === 0) {
    throw new Error(`${imagesPath}: no images to train on: the IDX dimensions are [${images.dims}]`);
  }
  let labels: Int32Array | undefined;
  if (labelsPath) {
    const l = readIdx(labelsPath);
    if (l.dims.length !== 1) throw new Error(`${labelsPath}: expected labels [N], got dimensions [${l.dims}]`);
    if (l.dims[0] !== N) throw new Error(`${labelsPath}: ${l.dims[0]} labels for the ${N} images of ${imagesPath}`);
    labels = Int32Array.from(l.data);
    const bad = classes ? labels.findIndex((c) => c >= classes.length) : -1;
    if (bad >= 0) {
      throw new Error(`${labelsPath}: label ${labels[bad]} at ${bad} is not one of the ${classes!.length} classes`);
    }
  }
  using t = fromBytes(images.data, "u8", [N, 1, S, S]);
  return tensorDataset(t, { labels, classes, name });
}

/**
 * Fashion-MNIST, train (60,000) or test (10,000), from Debian's package or `root`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fashionMnist } from "./idx.ts";
 * using test = fashionMnist("test");
 * assert.deepEqual([test.length, test.channels, test.size], [10000, 1, 28]);
 * ```
 */
export function fashionMnist(split: "train" | "test", root = FASHION_MNIST_ROOT): Dataset {
  const prefix = split === "train" ? "train" : "t10k";
  const images = join(root, `${prefix}-images-idx3-ubyte.gz`);
  try {
    Deno.statSync(images);
  } catch {
    throw new Error(
      `Fashion-MNIST not found at ${root}. Install it with: sudo apt-get install dataset-fashion-mnist ` +
        `(or give a folder holding the IDX files as the data)`,
    );
  }
  return idxDataset(images, join(root, `${prefix}-labels-idx1-ubyte.gz`), FASHION_MNIST_CLASSES, `fmnist-${split}`);
}
