/**
 * CIFAR-10 and CIFAR-100 in their binary format (`cifar-10-batches-bin`,
 * `cifar-100-binary`): records of label byte(s) and 3 x 32 x 32 pixels, planar RGB.
 *
 * @example
 * ```ts
 * import { cifar10 } from "./cifar.ts";
 * using test = cifar10("/data/cifar-10-batches-bin", "test");
 * ```
 * @module
 */
import { join } from "node:path";
import { fromBytes } from "../../ffi/mod.ts";
import { type Dataset, tensorDataset } from "./dataset.ts";

const PIXELS = 3 * 32 * 32;

function readAll(paths: string[], labelBytes: number, labelAt: number): { images: Uint8Array; labels: Int32Array } {
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
 * import { cifar10 } from "./cifar.ts";
 * using train = cifar10("/data/cifar-10-batches-bin", "train"); // 50,000 images
 * ```
 */
export function cifar10(root: string, split: "train" | "test"): Dataset {
  const files = split === "train"
    ? [1, 2, 3, 4, 5].map((i) => join(root, `data_batch_${i}.bin`))
    : [join(root, "test_batch.bin")];
  const { images, labels } = readAll(files, 1, 0);
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
 * import { cifar100 } from "./cifar.ts";
 * using test = cifar100("/data/cifar-100-binary", "test");
 * ```
 */
export function cifar100(root: string, split: "train" | "test"): Dataset {
  const { images, labels } = readAll([join(root, `${split}.bin`)], 2, 1);
  using t = fromBytes(images, "u8", [labels.length, 3, 32, 32]);
  const classes = readNames(join(root, "fine_label_names.txt")) ?? Array.from({ length: 100 }, (_, i) => String(i));
  return tensorDataset(t, { labels, classes, name: `cifar100-${split}` });
}
