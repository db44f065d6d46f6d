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
import { gunzipSync } from "node:zlib";
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

/**
 * Reads an IDX file of unsigned bytes (gzipped or not): its dimensions and data.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readIdx } from "./idx.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeFileSync(path, new Uint8Array([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])); // u8, 1 dim of 3 (big-endian), data
 * assert.deepEqual(readIdx(path), { dims: [3], data: new Uint8Array([7, 8, 9]) });
 * Deno.removeSync(path);
 * ```
 */
export function readIdx(path: string): { dims: number[]; data: Uint8Array } {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read IDX file ${path}: ${e instanceof Error ? e.message : e}`);
  }
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = new Uint8Array(gunzipSync(bytes));
    } catch (e) {
      throw new Error(`${path}: corrupt gzip data (${e instanceof Error ? e.message : e})`);
    }
  }
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${path}: not an IDX file (bad magic number)`);
  }
  if (bytes[2] !== 0x08) throw new Error(`${path}: IDX element type 0x${bytes[2].toString(16)} is not unsigned bytes`);
  const ndim = bytes[3];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 + 4 * ndim) throw new Error(`${path}: truncated IDX header`);
  const dims = Array.from({ length: ndim }, (_, i) => view.getUint32(4 + 4 * i, false));
  const size = dims.reduce((a, b) => a * b, 1);
  const start = 4 + 4 * ndim;
  if (bytes.length - start !== size) {
    throw new Error(`${path}: IDX data has ${bytes.length - start} bytes, the header says ${size}`);
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
  let labels: Int32Array | undefined;
  if (labelsPath) {
    const l = readIdx(labelsPath);
    if (l.dims.length !== 1 || l.dims[0] !== N) throw new Error(`${labelsPath}: ${l.dims[0]} labels for ${N} images`);
    labels = Int32Array.from(l.data);
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
