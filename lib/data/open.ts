/**
 * Opens a dataset from a command-line spec: `fmnist`, `cifar10`, `cifar100`,
 * or a folder (CIFAR binaries, IDX files, or images, detected by content).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openDataset } from "./open.ts";
 * using train = openDataset("fmnist", "train");
 * assert.equal(train.length, 60000);
 * ```
 * @module
 */
import { basename, dirname, join } from "node:path";
import { homedir } from "node:os";
import { cifar10, cifar100 } from "./cifar.ts";
import type { Dataset } from "./dataset.ts";
import { folderClasses, imageFolder } from "./folder.ts";
import { fashionMnist, idxDataset } from "./idx.ts";
import { SettingError } from "../settings/settings.ts";
import { exists } from "../../ffi/mod.ts";

/** Options of {@linkcode openDataset} for image folders. */
export interface OpenOptions {
  /** Side images of a folder are resized to (short side; default 256; ignored for fixed-size datasets). */
  side?: number;
  /** Side of the centre crop of a folder's images, at most `side` (default `side`). */
  crop?: number;
  /** Channels to decode a folder's images to (default 3). */
  channels?: 1 | 3;
  /** The largest image (width x height) a folder decodes; larger files are skipped (see {@linkcode imageFolder}). */
  maxImagePixels?: number;
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
  throw new SettingError(
    ["data"],
    (n) =>
      `${what} not found in ${dataRoots().join(", ")}. Download the binary version from ${source}, unpack it there ` +
      `(or anywhere, and pass ${n("data")} /path/to/${folder})`,
  );
}

/**
 * The dataset a spec names, for `split`. A folder with `train/` and `val/` (or `test/`) subfolders, or with nothing
 * but split folders, uses them as the splits, the validation split labelled by the training split's classes; any
 * other image folder is the same for both splits, its subfolders the classes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dirname, join } from "node:path";
 * import { full, writeImage } from "../../mod.ts";
 * import { openDataset } from "./open.ts";
 * const dir = Deno.makeTempDirSync();
 * using gray = full([6, 6, 3], 100, { dtype: "u8" });
 * for (const file of ["train/cat/1.png", "train/dog/2.png", "val/cat/3.png", "val/dog/4.png", "val/dog/5.png"]) {
 *   Deno.mkdirSync(dirname(join(dir, file)), { recursive: true });
 *   writeImage(join(dir, file), gray);
 * }
 * using test = openDataset(dir, "test", { side: 4 }); // reads val/
 * assert.deepEqual([test.length, test.classes, test.size], [3, ["cat", "dog"], 4]);
 * Deno.removeSync(dir, { recursive: true });
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
    throw new SettingError(
      ["data"],
      (n) =>
        `${
          n("data")
        } ${spec}: no such dataset, file or folder (use fmnist, cifar10, cifar100, an IDX file or a folder path)`,
    );
  }
  if (!stat.isDirectory) return idxFile(spec, split);
  if (exists(join(spec, "data_batch_1.bin"))) return cifar10(spec, split);
  if (exists(join(spec, "train.bin")) && exists(join(spec, "test.bin"))) return cifar100(spec, split);
  const prefix = split === "train" ? "train" : "t10k";
  const images = Array.from(Deno.readDirSync(spec)).map((e) => e.name).sort()
    .find((n) => new RegExp(`^${prefix}-images[.-]idx3-ubyte(\\.gz)?$`).test(n));
  if (images) return idxDataset(join(spec, images), idxLabels(join(spec, images)), undefined, `idx-${split}`);
  // A folder holds the splits where it has train/ beside val/ or test/, or nothing but split folders: the test split
  // is then val/ or test/, else train/. Otherwise its subfolders are classes for both splits (as ImageFolder reads
  // a folder), since a folder of classes may have one named "train", "val" or "test".
  const at = (names: string[]) =>
    names.map((d) => join(spec, d)).find((d) => exists(d) && Deno.statSync(d).isDirectory);
  const splits = at(["val", "test"]) && at(["train"]) ||
    folderClasses(spec).every((d) => ["train", "val", "test"].includes(d));
  const splitDir = !splits
    ? undefined
    : split === "train"
    ? at(["train", "val", "test"])
    : at(["val", "test", "train"]);
  // The validation split's labels index the training split's classes (torchvision opens the two folders apart,
  // so that a class missing from val/ would shift every label after it).
  const trainDir = join(spec, "train");
  const classes = split === "test" && splitDir && exists(trainDir) ? folderClasses(trainDir) : [];
  return imageFolder(splitDir ?? spec, {
    side: o.side ?? 256,
    crop: o.crop,
    channels: o.channels,
    maxImagePixels: o.maxImagePixels,
    classes: classes.length > 0 ? classes : undefined,
  });
}

/** The label file beside an IDX image file by the usual name (`x-images-idx3-ubyte` -> `x-labels-idx1-ubyte`). */
function idxLabels(images: string): string | undefined {
  const name = basename(images).replace(/images([.-])idx3/, "labels$1idx1");
  if (name === basename(images)) return undefined;
  const plain = name.replace(/\.gz$/, "");
  return [name, plain, `${plain}.gz`].map((n) => join(dirname(images), n)).find(exists);
}

/**
 * A single IDX image file (plain or gzipped), with its labels when they lie beside it. The test split is its
 * `t10k-` sibling when there is one (the MNIST naming); otherwise both splits are the file itself.
 */
function idxFile(path: string, split: "train" | "test"): Dataset {
  if (/labels[.-]idx1/.test(basename(path))) {
    throw new SettingError(
      ["data"],
      (n) => `${n("data")} ${path}: is a label file; pass the images file (its labels are found beside it)`,
    );
  }
  const sibling = join(dirname(path), basename(path).replace(/^train-/, "t10k-"));
  const file = split === "test" && sibling !== path && exists(sibling) ? sibling : path;
  try {
    return idxDataset(file, idxLabels(file), undefined, `idx-${basename(file)}`);
  } catch (e) {
    if (e instanceof Error && /not an IDX file/.test(e.message)) {
      throw new SettingError(
        ["data"],
        (n) =>
          `${n("data")} ${path}: not an IDX file. A file must be IDX images (plain or .gz); ` +
          `for CIFAR binaries or images, pass their folder`,
      );
    }
    throw e;
  }
}
