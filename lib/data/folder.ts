/**
 * An image folder: one subfolder per class (as torchvision's ImageFolder), or
 * a flat folder of unlabeled images. Files are decoded in the native shim on
 * native threads (JPEGs with libjpeg, as PIL decodes them; the rest with
 * stb_image), resized to a short side and centre-cropped as PIL resizes;
 * unreadable files, and files larger than the pixel budget, are skipped and
 * reported.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { full, writeImage } from "../../mod.ts";
 * import { imageFolder } from "./folder.ts";
 * const dir = Deno.makeTempDirSync(); // a flat folder: unlabeled images
 * using gray = full([8, 12, 3], 128, { dtype: "u8" }); // an 8 x 12 RGB image
 * for (const name of ["a.png", "b.png", "c.png"]) writeImage(join(dir, name), gray);
 * using ds = imageFolder(dir, { side: 4 });
 * const batch = await ds.load([0, 1, 2]);
 * assert.deepEqual(batch.images.shape, [3, 3, 4, 4]); // short side to 4, centre crop
 * batch.images.dispose();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 * @module
 */
import { join } from "node:path";
import { decodeImages, defaultMaxImagePixels, tensor } from "../../ffi/mod.ts";
import type { Dataset } from "./dataset.ts";

/**
 * The file name extensions that torchvision's ImageFolder lists (its `IMG_EXTENSIONS`), so that a folder holds the
 * same images, in the same order, with the same labels. The shim reads all but .tif, .tiff and .webp, which are
 * listed all the same, so that the loader reports each as unreadable (naming the fix) instead of the data set
 * silently shrinking.
 */
export const IMAGE_EXTENSIONS: readonly string[] = [
  ".jpg",
  ".jpeg",
  ".png",
  ".ppm",
  ".bmp",
  ".pgm",
  ".tif",
  ".tiff",
  ".webp",
];

/**
 * Whether a file name ends in one of {@linkcode IMAGE_EXTENSIONS} (in any case).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isImageFile } from "./folder.ts";
 * assert.deepEqual(["a.JPG", "b.webp", "c.gif", "notes.txt"].map(isImageFile), [true, true, false, false]);
 * ```
 */
export function isImageFile(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

/** Python's order of strings (by code point), which torchvision sorts classes and files by; JavaScript's `<`
 * compares UTF-16 units, which puts characters beyond U+FFFF before U+E000-U+FFFF. */
function byCodePoint(a: string, b: string): number {
  for (let i = 0; i < a.length && i < b.length;) { // equal so far: a surrogate pair sits at the same i in both
    const x = a.codePointAt(i)!, y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    i += x > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/** Throws for an entry whose name Deno could not give as it is (not UTF-8), naming it and the fix. */
function unreachable(dir: string, name: string): void {
  try {
    Deno.lstatSync(join(dir, name));
  } catch {
    throw new Error(
      `${join(dir, name)} (\uFFFD marks bytes that are not UTF-8): its name is not UTF-8, which Deno cannot open; ` +
        `rename it in UTF-8 (for example: convmv -f latin1 -t utf8 -r --notest ${dir})`,
    );
  }
}

/** A folder's visible entries, sorted by name, with symbolic links resolved to what they point at. */
function list(dir: string): { name: string; isFile: boolean; isDirectory: boolean }[] {
  return [...Deno.readDirSync(dir)]
    .filter((e) => !e.name.startsWith("."))
    .map((e) => {
      // Deno gives a name that is not UTF-8 with U+FFFD in place of its bytes: a path that leads nowhere.
      if (e.name.includes("\uFFFD") && (e.isDirectory || e.isSymlink || isImageFile(e.name))) unreachable(dir, e.name);
      if (!e.isSymlink) return e;
      try {
        const s = Deno.statSync(join(dir, e.name));
        return { name: e.name, isFile: s.isFile, isDirectory: s.isDirectory };
      } catch {
        return { name: e.name, isFile: false, isDirectory: false }; // a dangling link
      }
    })
    .sort((a, b) => byCodePoint(a.name, b.name));
}

/**
 * Every image under `dir`, recursively, in torchvision's ImageFolder order (`sorted(os.walk(dir))`, then each
 * folder's files sorted): folders by their whole path, so that a folder's files come before its subfolders'. A
 * linked folder that leads back to one of its own ancestors is not entered again: a loop would never end.
 */
function imagesUnder(dir: string, ancestors: ReadonlySet<string> = new Set()): string[] {
  const folders: { path: string; files: string[] }[] = [];
  const walk = (path: string, above: ReadonlySet<string>) => {
    const real = Deno.realPathSync(path);
    if (above.has(real)) return;
    const inside = new Set(above).add(real);
    const entries = list(path);
    folders.push({
      path,
      files: entries.filter((e) => e.isFile && isImageFile(e.name)).map((e) => join(path, e.name)),
    });
    for (const e of entries) if (e.isDirectory) walk(join(path, e.name), inside);
  };
  walk(dir, ancestors);
  return folders.sort((a, b) => byCodePoint(a.path, b.path)).flatMap((f) => f.files);
}

/**
 * The class names of an image folder: its visible subfolders, sorted as torchvision sorts them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { folderClasses } from "./folder.ts";
 * const dir = Deno.makeTempDirSync();
 * for (const name of ["dog", "cat", ".cache"]) Deno.mkdirSync(join(dir, name));
 * assert.deepEqual(folderClasses(dir), ["cat", "dog"]);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function folderClasses(root: string): string[] {
  return list(root).filter((e) => e.isDirectory).map((e) => e.name);
}

/** Options of {@linkcode imageFolder}. */
export interface FolderOptions {
  /** The side images are resized to (short side), then centre-cropped to `crop`. */
  side: number;
  /** The side of the centre crop, at most `side` (default `side`): an evaluation's Resize(256) + CenterCrop(224). */
  crop?: number;
  /** 3 (RGB, default) or 1 (grayscale). */
  channels?: 1 | 3;
  /** Decoding threads (default: the machine's cores). */
  threads?: number;
  /**
   * The largest image (width x height, read from the file's header) decoded; larger files are skipped before
   * their pixels are allocated (default: the env DINO_MAX_IMAGE_PIXELS, else 89,478,485 as PIL's limit).
   */
  maxImagePixels?: number;
  /**
   * The class names that the subfolders' labels index, in order: a validation split labelled by its training
   * split's classes (`folderClasses`), so that a class missing from it shifts no label. A subfolder not among them
   * is an error. By default the subfolders themselves.
   */
  classes?: readonly string[];
}

/**
 * A dataset over the images under `root`. With subfolders, each is a class (sorted by name; its images are
 * found recursively) and images directly under `root` are ignored; without, every image is an unlabeled item.
 * Symbolic links are followed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dirname, join } from "node:path";
 * import { full, writeImage } from "../../mod.ts";
 * import { imageFolder } from "./folder.ts";
 * const dir = Deno.makeTempDirSync();
 * using white = full([4, 4, 3], 255, { dtype: "u8" });
 * for (const file of ["cat/1.png", "cat/2.png", "dog/1.png"]) {
 *   Deno.mkdirSync(dirname(join(dir, file)), { recursive: true });
 *   writeImage(join(dir, file), white);
 * }
 * using ds = imageFolder(dir, { side: 4 });
 * assert.deepEqual([ds.classes, [...ds.labels!]], [["cat", "dog"], [0, 0, 1]]);
 * assert.deepEqual(ds.files, ["cat/1.png", "cat/2.png", "dog/1.png"].map((f) => join(dir, f)));
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function imageFolder(root: string, o: FolderOptions): Dataset {
  let entries: ReturnType<typeof list>;
  try {
    entries = list(root);
  } catch (e) {
    throw new Error(`image folder ${root} cannot be read: ${e instanceof Error ? e.message : e}`);
  }
  const dirs = entries.filter((e) => e.isDirectory);
  const files: string[] = [];
  let labels: Int32Array | undefined;
  let classes: string[] = [];
  if (dirs.length > 0) {
    classes = o.classes ? [...o.classes] : dirs.map((d) => d.name);
    const known = new Set(classes), present = new Set(dirs.map((d) => d.name));
    const strangers = [...present].filter((d) => !known.has(d));
    if (strangers.length > 0) {
      throw new Error(
        `image folder ${root}: class folder(s) ${strangers.join(", ")} not among the ${classes.length} classes ` +
          `of the training split (${classes.slice(0, 10).join(", ")}${classes.length > 10 ? ", ..." : ""}): ` +
          "rename or remove them",
      );
    }
    const top = new Set([Deno.realPathSync(root)]);
    const perClass = classes.map((c) => present.has(c) ? imagesUnder(join(root, c), top) : []);
    labels = new Int32Array(perClass.reduce((n, f) => n + f.length, 0));
    let k = 0;
    perClass.forEach((paths, c) => {
      for (const p of paths) {
        files.push(p);
        labels![k++] = c;
      }
    });
  } else {
    files.push(...entries.filter((e) => e.isFile && isImageFile(e.name)).map((e) => join(root, e.name)));
  }
  if (files.length === 0) {
    throw new Error(
      `image folder ${root} holds no images (${IMAGE_EXTENSIONS.join(" ")}, as torchvision's ImageFolder lists), ` +
        `directly or in class subfolders`,
    );
  }
  const channels = o.channels ?? 3;
  const maxPixels = o.maxImagePixels ?? defaultMaxImagePixels();
  if (!Number.isSafeInteger(maxPixels) || maxPixels < 1) {
    throw new RangeError(`maxImagePixels must be a whole number of pixels >= 1, got ${maxPixels}`);
  }
  return {
    name: `folder:${root}`,
    length: files.length,
    classes,
    channels,
    size: o.crop ?? o.side,
    labels,
    files,
    async load(indices) {
      const r = await decodeImages(indices.map((i) => files[i]), {
        side: o.side,
        crop: o.crop,
        channels,
        threads: o.threads,
        maxPixels,
      });
      const kept = r.ok.map((k) => indices[k]);
      return {
        images: r.images,
        labels: labels ? tensor(BigInt64Array.from(kept, (i) => BigInt(labels![i]))) : undefined,
        indices: kept,
        failed: r.failed.map((f) => f.path),
        firstError: r.firstError,
        reasons: r.failed.map((f) => f.reason),
      };
    },
    dispose() {},
    [Symbol.dispose]() {},
  };
}
