/**
 * The dataset interface, and datasets held in memory as one u8 tensor.
 *
 * A dataset has a length, class names (empty when unlabeled), the channels and
 * side of its images, and loads batches of u8 [B, C, S, S] images by index.
 * It owns its tensors: dispose it (or declare it with `using`) when done.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, ones, toArray } from "../../mod.ts";
 * import { tensorDataset } from "./dataset.ts";
 * using images = ones([10, 1, 8, 8], { dtype: "u8" });
 * using ds = tensorDataset(images, { labels: new Int32Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) });
 * const batch = await ds.load([0, 3, 5]);
 * assert.deepEqual([batch.images.shape, toArray(batch.labels!)], [[3, 1, 8, 8], [0, 3, 5]]);
 * dispose([batch.images, batch.labels]);
 * ```
 * @module
 */
import { alias, indexSelect, keep, type Tensor, tensor, tidy } from "../../ffi/mod.ts";

/** A batch of images and, when known, their labels. */
export interface Batch {
  /** u8 [B, C, S, S]. */
  images: Tensor;
  /** i64 [B] class indices, when the dataset is labeled. */
  labels?: Tensor;
  /** Which dataset items these are (skipped unreadable files are missing). */
  indices: number[];
  /** Files that could not be decoded, with the reason of the first. */
  failed: string[];
  /** The reason the first file failed, or "". */
  firstError: string;
  /** Why each of `failed` could not be decoded, where the dataset knows. */
  reasons?: string[];
}

/** A source of images. */
export interface Dataset extends Disposable {
  /** A short name for logs and checkpoints. */
  readonly name: string;
  /** The number of items. */
  readonly length: number;
  /** Class names by label index; empty when unlabeled. */
  readonly classes: readonly string[];
  /** Image channels (1 or 3). */
  readonly channels: number;
  /** Image side in pixels. */
  readonly size: number;
  /** Every item's label (-1 when unknown), or undefined when unlabeled. */
  readonly labels: Int32Array | undefined;
  /** Every item's file, for datasets of one file an image (image folders); undefined otherwise. */
  readonly files?: readonly string[];
  /** Loads the items at `indices`. */
  load(indices: readonly number[]): Promise<Batch>;
  /** Frees the dataset's tensors. */
  dispose(): void;
}

/** Options of {@linkcode tensorDataset}. */
export interface TensorDatasetOptions {
  /** Per-item labels (class indices). */
  labels?: Int32Array;
  /** Class names; by default "0".."K-1" when labels are given. */
  classes?: readonly string[];
  /** The dataset's name ("tensors"). */
  name?: string;
}

/**
 * A dataset over u8 [N, C, S, S] images in memory. It keeps its own handle:
 * the caller may dispose `images` afterwards.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeros } from "../../mod.ts";
 * import { tensorDataset } from "./dataset.ts";
 * const images = zeros([4, 3, 32, 32], { dtype: "u8" });
 * using ds = tensorDataset(images);
 * images.dispose(); // the dataset holds its own handle
 * assert.deepEqual([ds.length, ds.channels, ds.size, ds.labels, ds.classes], [4, 3, 32, undefined, []]);
 * ```
 */
export function tensorDataset(images: Tensor, o: TensorDatasetOptions = {}): Dataset {
  if (images.ndim !== 4 || images.shape[2] !== images.shape[3]) {
    throw new Error(`a tensor dataset takes square images [N, C, S, S], got [${images.shape}]`);
  }
  if (images.dtype !== "u8") throw new Error(`a tensor dataset takes u8 images (0..255), got ${images.dtype}`);
  const [N, C, S] = images.shape;
  if (o.labels && o.labels.length !== N) throw new Error(`${o.labels.length} labels for ${N} images`);
  const own = keep(alias(images)); // the dataset owns this handle, whatever scope it is made in
  const classes = o.classes ?? (o.labels ? classNames(o.labels) : []);
  const ds: Dataset = {
    name: o.name ?? "tensors",
    length: N,
    classes,
    channels: C,
    size: S,
    labels: o.labels,
    load(indices) {
      for (const i of indices) {
        if (!(Number.isInteger(i) && i >= 0 && i < N)) {
          throw new RangeError(`index ${i} is outside the dataset's 0..${N - 1}`);
        }
      }
      return Promise.resolve(tidy(() => {
        const idx = tensor(new BigInt64Array(indices.map(BigInt)));
        const batch: Batch = { images: indexSelect(own, 0, idx), indices: [...indices], failed: [], firstError: "" };
        if (o.labels) batch.labels = tensor(BigInt64Array.from(indices, (i) => BigInt(o.labels![i])));
        return batch;
      }));
    },
    dispose: () => own.dispose(),
    [Symbol.dispose]: () => own.dispose(),
  };
  return ds;
}

function classNames(labels: Int32Array): string[] {
  let max = -1;
  for (const l of labels) max = Math.max(max, l);
  return Array.from({ length: max + 1 }, (_, i) => String(i));
}
