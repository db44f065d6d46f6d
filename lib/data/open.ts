/**
 * Opens a dataset from a command-line spec: `fmnist`, `cifar10`, `cifar100`,
 * or a folder (CIFAR binaries, IDX files, or images, detected by content).
 *
 * @example
 * ```ts
 * import { openDataset } from "./open.ts";
 * using train = openDataset("fmnist", "train");
 * ```
 * @module
 */
import { join } from "node:path";
import { homedir } from "node:os";
import { cifar10, cifar100 } from "./cifar.ts";
import type { Dataset } from "./dataset.ts";
import { imageFolder } from "./folder.ts";
import { fashionMnist, idxDataset } from "./idx.ts";
import { UsageError } from "../config.ts";
import { exists } from "../fs.ts";

/** Options of {@linkcode openDataset} for image folders. */
export interface OpenOptions {
  /** Side images of a folder are resized and cropped to (default 256; ignored for fixed-size datasets). */
  side?: number;
  /** Channels to decode a folder's images to (default 3). */
  channels?: 1 | 3;
}

function dataRoots(): string[] {
  return [Deno.env.get("DINO_DATA"), join(homedir(), ".cache", "dino-deno", "data"), "/usr/share/datasets"]
    .filter((p): p is string => !!p);
}

function named(folder: string, what: string, source: string): string {
  for (const root of dataRoots()) {
    const p = join(root, folder);
    if (exists(p)) return p;
  }
  throw new Error(
    `${what} not found in ${dataRoots().join(", ")}. Download the binary version from ${source}, unpack it there ` +
      `(or anywhere, and pass --data /path/to/${folder})`,
  );
}

/**
 * The dataset a spec names, for `split`. A folder with `train/` and `val/` (or `test/`) subfolders uses them as
 * the splits; any other image folder is the same for both splits.
 *
 * @example
 * ```ts
 * import { openDataset } from "./open.ts";
 * using test = openDataset("/data/imagenette", "test", { side: 256 });
 * ```
 */
export function openDataset(spec: string, split: "train" | "test", o: OpenOptions = {}): Dataset {
  if (spec === "fmnist") return fashionMnist(split);
  if (spec === "cifar10") {
    return cifar10(named("cifar-10-batches-bin", "CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar.html"), split);
  }
  if (spec === "cifar100") {
    return cifar100(named("cifar-100-binary", "CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar.html"), split);
  }
  let stat: Deno.FileInfo;
  try {
    stat = Deno.statSync(spec);
  } catch {
    throw new UsageError(`--data ${spec}: no such dataset or folder (use fmnist, cifar10, cifar100 or a folder path)`);
  }
  if (!stat.isDirectory) throw new UsageError(`--data ${spec}: is a file; pass the folder that holds the dataset`);
  if (exists(join(spec, "data_batch_1.bin"))) return cifar10(spec, split);
  if (exists(join(spec, "train.bin")) && exists(join(spec, "test.bin"))) return cifar100(spec, split);
  const prefix = split === "train" ? "train" : "t10k";
  for (const ext of [".gz", ""]) {
    const images = join(spec, `${prefix}-images-idx3-ubyte${ext}`);
    if (exists(images)) {
      const labels = join(spec, `${prefix}-labels-idx1-ubyte${ext}`);
      return idxDataset(images, exists(labels) ? labels : undefined, undefined, `idx-${split}`);
    }
  }
  const sub = split === "train" ? ["train"] : ["val", "test"];
  const splitDir = sub.map((s) => join(spec, s)).find(exists);
  return imageFolder(splitDir ?? spec, { side: o.side ?? 256, channels: o.channels });
}
