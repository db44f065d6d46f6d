/**
 * CIFAR-10 and CIFAR-100 in their binary format (`cifar-10-batches-bin`,
 * `cifar-100-binary`): records of label byte(s) and 3 x 32 x 32 pixels, planar RGB.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { cifar10 } from "./cifar.ts";
 * const dir = Deno.makeTempDirSync();
 * const records = new Uint8Array(2 * (1 + 3 * 32 * 32)); // two records: label byte, then 3 x 32 x 32 pixels
 * records[1 + 3 * 32 * 32] = 7; // the second image's label
 * Deno.writeFileSync(join(dir, "test_batch.bin"), records);
 * using test = cifar10(dir, "test");
 * assert.deepEqual([test.length, test.classes[test.labels![1]]], [2, "horse"]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 * @module
 */
import { join } from "node:path";
import { fromBytes } from "../../ffi/mod.ts";
import { type Dataset, tensorDataset } from "./dataset.ts";

const PIXELS = 3 * 32 * 32;

function readAll(
  paths: string[],
  labelBytes: number,
  labelAt: number,
  classes: number,
): { images: Uint8Array; labels: Int32Array } {
  const files = paths.map((p) => {
    try {
      return Deno.readFileSync(p);
    } catch (e) {
      throw new Error(`cannot read CIFAR file ${p}: ${e instanceof Error ? e.message : e}`);
    }
  });
  const record = labelBytes + PIXELS;
  files.forEach((f, i) => {
    if (f.length % record !== 0) {
      throw new Error(`${paths[i]}: ${f.length} bytes is not a whole number of ${record}-byte records`);
    }
  });
  const n = files.reduce((s, f) => s + f.length / record, 0);
  const images = new Uint8Array(n * PIXELS);
  const labels = new Int32Array(n);
  let k = 0;
  for (const f of files) {
    for (let r = 0; r < f.length; r += record, k++) {
      labels[k] = f[r + labelAt];
      if (labels[k] >= classes) {
        throw new Error(
          `${paths[files.indexOf(f)]}: record ${r / record} has label ${labels[k]}, not one of the ${classes} ` +
            "classes: not a CIFAR file of this kind, or a corrupt one",
        );
      }
      images.set(f.subarray(r + labelBytes, r + record), k * PIXELS);
    }
  }
  return { images, labels };
}

function readNames(path: string): string[] | undefined {
  try {
    return Deno.readTextFileSync(path).split("\n").map((s) => s.trim()).filter(Boolean);
  } catch {
    return undefined;
  }
}

/**
 * CIFAR-10 from the folder holding `data_batch_{1..5}.bin` and `test_batch.bin`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { cifar10 } from "./cifar.ts";
 * const dir = Deno.makeTempDirSync();
 * const record = new Uint8Array(1 + 3 * 32 * 32); // label 0, a black image
 * for (let i = 1; i <= 5; i++) Deno.writeFileSync(join(dir, `data_batch_${i}.bin`), record);
 * using train = cifar10(dir, "train"); // the real batches hold 10,000 images each
 * assert.deepEqual([train.length, train.channels, train.size], [5, 3, 32]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function cifar10(root: string, split: "train" | "test"): Dataset {
  const files = split === "train"
    ? [1, 2, 3, 4, 5].map((i) => join(root, `data_batch_${i}.bin`))
    : [join(root, "test_batch.bin")];
  const { images, labels } = readAll(files, 1, 0, 10);
  using t = fromBytes(images, "u8", [labels.length, 3, 32, 32]);
  const classes = readNames(join(root, "batches.meta.txt")) ??
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
  return tensorDataset(t, { labels, classes, name: `cifar10-${split}` });
}

/**
 * CIFAR-100 (fine labels) from the folder holding `train.bin` and `test.bin`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { cifar100 } from "./cifar.ts";
 * const dir = Deno.makeTempDirSync();
 * const records = new Uint8Array(2 * (2 + 3 * 32 * 32)); // coarse label, fine label, pixels; twice
 * records[1] = 42; // the first image's fine label
 * Deno.writeFileSync(join(dir, "test.bin"), records);
 * using test = cifar100(dir, "test");
 * assert.deepEqual([...test.labels!], [42, 0]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function cifar100(root: string, split: "train" | "test"): Dataset {
  const { images, labels } = readAll([join(root, `${split}.bin`)], 2, 1, 100);
  using t = fromBytes(images, "u8", [labels.length, 3, 32, 32]);
  const classes = readNames(join(root, "fine_label_names.txt")) ?? Array.from({ length: 100 }, (_, i) => String(i));
  return tensorDataset(t, { labels, classes, name: `cifar100-${split}` });
}
