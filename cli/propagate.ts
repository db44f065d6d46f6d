/**
 * `deno task propagate`: video object segmentation by label propagation, as the official
 * `eval_video_segmentation.py` (DAVIS 2017, semi-supervised). The first frame's labels (an indexed-colour PNG,
 * the DAVIS layout) are carried through the video: each next frame's soft labels come from the last block's
 * patch features of the first frame and the previous `--n-last-frames` frames (affinity exp(cos / 0.1), within
 * `--size-mask-neighborhood` patches, the `--topk` largest per patch), upsampled to the frame. The masks are
 * written to `<output-dir>/<frame stem>.png` as indexed PNGs with the first mask's palette, so DAVIS's tools read
 * them. With `--annotations DIR` (the true masks, one `<frame stem>.png` per frame), the DAVIS scores J (region
 * similarity), F (contour accuracy) and J&F are printed per object and on average, beside those of copying the
 * first mask to every frame, and saved to `<output-dir>/scores.json`.
 *
 * Frames are read in name order and prepared as the official `read_frame` does (`davisFrame`): the short side
 * resized to `--image-size` (480) and the long side to the multiple of 64 below its share, with OpenCV's bilinear
 * filter, then cut at the bottom and right to multiples of the patch size; and normalised as the weights were
 * trained.
 *
 * Exit codes: 0 written, 1 a run-time failure (a frame that cannot be decoded), 2 a bad flag, value, path, weights
 * file or input (frames of different sizes, a mask whose size differs from the frames', a mask PNG without a
 * palette, a folder without frames, a missing annotation, fewer than 3 frames with `--annotations`, an
 * `--image-size` at which a frame is smaller than a patch): one line on stderr. Every input is checked before the
 * weights load (the size against the patch size just after), and nothing is written on any error: the files are made in a temporary folder and moved into
 * place at the end.
 *
 * @example
 * ```sh
 * deno task propagate --weights dino_deitsmall16_pretrain.pth --arch vit_small --patch-size 16 \
 *   --frames DAVIS/JPEGImages/480p/bike-packing --first-mask DAVIS/Annotations/480p/bike-packing/00000.png \
 *   --annotations DAVIS/Annotations/480p/bike-packing --output-dir out/bike-packing
 * ```
 * @module
 */
import { basename, extname, join, resolve } from "node:path";
import { imageSize } from "npm:image-size@2.0.2";
import {
  decodeImage,
  defaultMaxImagePixels,
  dispose,
  exists,
  stagingFolder,
  type Tensor,
  tidy,
  toArray,
  writeFileAtomic,
} from "../mod.ts";
import { defaultNormalization, MAX_RESIZED_SIDE, type Normalization, normalizeImage } from "../lib/eval/attention.ts";
import {
  type DavisScores,
  davisScores,
  decodeIndexedPng,
  decodeLabelPng,
  encodeIndexedPng,
  type Palette,
  resizeLabels,
} from "../lib/eval/masks.ts";
import {
  davisFrame,
  davisFrameSize,
  LabelPropagator,
  labelsFromSoft,
  oneHotLabels,
  patchFeatures,
} from "../lib/eval/propagate.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
import {
  failure,
  integer,
  loadModel,
  MODEL_FLAGS,
  modelHelp,
  modelOptions,
  parseFlags,
  UsageError,
  weightsFile,
} from "./flags.ts";
import { prepareOutputDir } from "./run_folder.ts";
import { Bar } from "./bar.ts";
import { IMAGE_EXTENSIONS, isImageFile } from "../lib/data/folder.ts";

const HELP = `usage: deno task propagate --weights FILE --frames DIR --first-mask PNG --output-dir DIR [options]

Video object segmentation by label propagation, as the official eval_video_segmentation.py (DAVIS): the
first frame's labels are carried to each next frame through the affinities of the last block's patch
features. Masks go to DIR/<frame stem>.png as indexed PNGs with the first mask's palette.

options:
  --weights FILE                a checkpoint of this project, or official weights (.pth as published, or .safetensors) (required)
  --frames DIR                  the video's frames, image files read in name order (required)
  --first-mask PNG              the first frame's labels: an indexed-colour (palette) PNG of the frames' size,
                                0 the background, 1, 2, ... the objects (the DAVIS layout) (required)
  --output-dir DIR              where the masks go; made if missing (required)
  --annotations DIR             the true masks, DIR/<frame stem>.png for every frame: prints J, F and J&F
                                (DAVIS 2017; first and last frames not scored) and writes them to
                                scores.json in --output-dir
${modelHelp(32)}
  --n-last-frames N             previous frames each frame looks back at, besides the first, 0 to 100 (default 7)
  --size-mask-neighborhood N    half-width in patches of the window labels come from, 0 for none (default 12)
  --topk N                      largest affinities kept per patch, 1 to 1000 (default 5)
  --image-size N                short side the frames are resized to, 1 to 8192 (default 480); the long
                                side is floored to a multiple of 64, as the official read_frame does
  --max-image-pixels N          largest frame (width x height) decoded
                                (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help                    this help`;

/** --first-mask's path, refused when it is a folder (an existing path only: a missing one is said when read). */
function maskFile(path: string): string {
  if (exists(path) && Deno.statSync(path).isDirectory) {
    throw new UsageError(`--first-mask ${path} is a folder; name the first frame's mask PNG in it`);
  }
  return path;
}

/** A folder given by `flag`: it must exist and be a folder. */
function folder(flag: string, path: string): string {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    throw new UsageError(`${flag} ${path}: no such folder`);
  }
  if (!info.isDirectory) throw new UsageError(`${flag} ${path} is a file; name the folder`);
  return path;
}

function parse(args: string[]) {
  const v = parseFlags(args, {
    weights: { type: "string" },
    frames: { type: "string" },
    "first-mask": { type: "string" },
    "output-dir": { type: "string" },
    annotations: { type: "string" },
    ...MODEL_FLAGS,
    "n-last-frames": { type: "string", default: "7" },
    "size-mask-neighborhood": { type: "string", default: "12" },
    topk: { type: "string", default: "5" },
    "image-size": { type: "string", default: "480" },
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  for (const k of ["weights", "frames", "first-mask", "output-dir"] as const) {
    if (!v[k]) throw new UsageError(`--${k} is required`);
  }
  const maxPixels = v["max-image-pixels"];
  return {
    ...modelOptions(v),
    nLastFrames: integer("--n-last-frames", v["n-last-frames"], 0, 100),
    neighborhood: integer("--size-mask-neighborhood", v["size-mask-neighborhood"], 0, 10000),
    topk: integer("--topk", v.topk, 1, 1000),
    imageSize: integer("--image-size", v["image-size"], 1, 8192),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    weights: weightsFile("--weights", v.weights!),
    frames: folder("--frames", v.frames!),
    firstMask: maskFile(v["first-mask"]!),
    annotations: v.annotations === undefined ? undefined : folder("--annotations", v.annotations),
    outputDir: v["output-dir"]!,
  };
}

/** The frames of a folder: its image files, in name order. */
function listFrames(dir: string): string[] {
  const names = [...Deno.readDirSync(dir)]
    .filter((e) => !e.name.startsWith(".") && isImageFile(e.name))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (names.length === 0) {
    throw new UsageError(`--frames ${dir} holds no frames (image files: ${IMAGE_EXTENSIONS.join(" ")})`);
  }
  const byStem = new Map<string, string>();
  for (const n of names) {
    const other = byStem.get(stemOf(n));
    if (other) {
      throw new UsageError(
        `--frames ${dir}: ${other} and ${n} are both frame ${stemOf(n)} (their masks would both be ` +
          `${stemOf(n)}.png); keep one of them`,
      );
    }
    byStem.set(stemOf(n), n);
  }
  return names.map((n) => join(dir, n));
}

/** An image's [height, width] from its header. */
function sizeOf(flag: string, path: string): [number, number] {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new UsageError(`${flag} ${path} cannot be read: ${e instanceof Error ? e.message : e}`);
  }
  try {
    const { width, height } = imageSize(bytes);
    return [height, width];
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new UsageError(
      `${flag} ${path}: cannot read its size (${
        /unsupported file type/.test(why) ? "its bytes are no image format" : why
      })`,
    );
  }
}

const shown = ([h, w]: readonly number[]) => `${w} x ${h}`;

/** A mask PNG given by `flag` at `path`, decoded; a file that is no mask of the right kind is a usage error. */
function readMask(flag: string, path: string, indexed: boolean): { labels: Tensor; palette?: Palette } {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    const missing = e instanceof Deno.errors.NotFound;
    throw new UsageError(`${flag} ${path}: ${missing ? "no such file" : e instanceof Error ? e.message : e}`);
  }
  try {
    return indexed ? decodeIndexedPng(bytes) : decodeLabelPng(bytes);
  } catch (e) {
    throw new UsageError(`${flag} ${path} ${e instanceof Error ? e.message : e}`);
  }
}

const stemOf = (path: string) => basename(path, extname(path));

/** Whether two paths are one folder (through links too); a folder not made yet is no other's. */
function sameFolder(a: string, b: string): boolean {
  try {
    return Deno.realPathSync(a) === Deno.realPathSync(b);
  } catch {
    return resolve(a) === resolve(b);
  }
}

/** The scores as printed: J&F, J and F. */
const line = (s: DavisScores) => `J&F ${s.JF.toFixed(3)} (J ${s.J.toFixed(3)}, F ${s.F.toFixed(3)})`;

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let model: EvalBackbone | undefined, undo: (() => void) | undefined;
  let staging: ReturnType<typeof stagingFolder> | undefined;
  let prop: LabelPropagator | undefined;
  const owned: Tensor[] = [];
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    // Every input is checked before anything is loaded or written.
    for (const [flag, dir] of [["--frames", o.frames], ["--annotations", o.annotations]] as const) {
      if (dir !== undefined && sameFolder(dir, o.outputDir)) {
        throw new UsageError(
          `--output-dir ${o.outputDir} is the ${flag} folder: the masks (<frame stem>.png) would replace its files; ` +
            "give another folder",
        );
      }
    }
    const frames = listFrames(o.frames);
    if (o.annotations && frames.length < 3) {
      throw new UsageError(
        `--annotations: DAVIS scores neither the first frame nor the last, and --frames ${o.frames} has ` +
          `${frames.length}: give 3 frames or more, or drop --annotations`,
      );
    }
    const size = sizeOf("--frames", frames[0]);
    for (const f of frames.slice(1)) {
      const s = sizeOf("--frames", f);
      if (s[0] !== size[0] || s[1] !== size[1]) {
        throw new UsageError(
          `--frames: ${basename(f)} is ${shown(s)} but ${basename(frames[0])} is ${shown(size)}; ` +
            `a video's frames must all be one size`,
        );
      }
    }
    const first = readMask("--first-mask", o.firstMask, true);
    owned.push(first.labels);
    const palette = first.palette!;
    if (first.labels.shape[0] !== size[0] || first.labels.shape[1] !== size[1]) {
      throw new UsageError(
        `--first-mask ${o.firstMask} is ${shown(first.labels.shape)} but the frames are ${shown(size)}; ` +
          `give the first frame's mask at the frames' size`,
      );
    }
    const labelsOfFirst = toArray(first.labels);
    const classes = labelsOfFirst.reduce((m, v) => Math.max(m, v), 0) + 1;
    // DAVIS's objects: 1 to the largest label other than 255 (void), which the official script propagates as a label
    const objects = labelsOfFirst.reduce((m, v) => v === 255 ? m : Math.max(m, v), 0);
    const voidNote = classes === 256 ? " and void (255), propagated as a label as the official script does" : "";
    const truths: Tensor[] = [];
    if (o.annotations) {
      for (const f of frames) {
        const path = join(o.annotations, `${stemOf(f)}.png`);
        const { labels } = readMask("--annotations", path, false);
        owned.push(labels);
        if (labels.shape[0] !== size[0] || labels.shape[1] !== size[1]) {
          throw new UsageError(`--annotations ${path} is ${shown(labels.shape)} but the frames are ${shown(size)}`);
        }
        truths.push(labels);
      }
    }
    undo = prepareOutputDir(o.outputDir).undo;
    model = loadModel("--weights", o.weights, o);
    if (model.resnet) {
      throw new UsageError(
        `--weights ${o.weights} is a ${model.resnet.arch}: label propagation uses a ViT's patch tokens`,
      );
    }
    const { vit, backbone } = model;
    const C = vit.inChans, P = vit.patchSize;
    const seen = davisFrameSize(size[0], size[1], o.imageSize);
    if (Math.min(...seen) < P || Math.max(...seen) > MAX_RESIZED_SIDE) {
      throw new UsageError(
        `--image-size ${o.imageSize}: the ${shown(size)} frames would be seen at ${shown(seen)}, ` +
          `${
            Math.min(...seen) < P ? `smaller than one patch (${P} pixels)` : `past the largest side ${MAX_RESIZED_SIDE}`
          } on a side`,
      );
    }
    const norm: Normalization = model.normalization ?? defaultNormalization(C);
    staging = stagingFolder(o.outputDir, "propagate"); // removed by the next run if this one is killed
    const stage = staging.path;

    const features = async (path: string) => {
      const r = await decodeImage(path, { channels: C as 1 | 3, maxPixels: o.maxImagePixels }); // its own size
      if (!r.image) throw new Error(`--frames ${path}: ${r.reason}`);
      using decoded = r.image;
      let image: Tensor;
      try {
        image = davisFrame(decoded, o.imageSize, P);
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        throw new UsageError(`--frames ${path}: ${e.message} (--image-size)`);
      }
      using _image = image;
      const [, H, W] = image.shape;
      return { f: tidy(() => patchFeatures(backbone, vit, normalizeImage(image, norm))), h: H / P, w: W / P };
    };
    const written: string[] = [];
    const write = (path: string, labels: Tensor) => {
      writeFileAtomic(join(stage, `${stemOf(path)}.png`), encodeIndexedPng(labels, palette));
      written.push(`${stemOf(path)}.png`);
    };
    const predictions: Tensor[] = [first.labels];
    write(frames[0], first.labels);
    const start = performance.now();
    const bar = new Bar("propagate", frames.length - 1, { unit: "frame" });
    {
      const { f, h, w } = await features(frames[0]);
      using _f = f;
      using seg = tidy(() => oneHotLabels(resizeLabels(first.labels, h, w), classes));
      prop = new LabelPropagator(f, seg, {
        h,
        w,
        nLastFrames: o.nLastFrames,
        neighborhood: o.neighborhood,
        topk: o.topk,
      });
      console.log(
        `${frames.length} frames of ${shown(size)}, seen at ${shown([h * P, w * P])} (${w} x ${h} patches of ${P}); ` +
          `${objects} object(s)${voidNote}`,
      );
    }
    for (const path of frames.slice(1)) {
      const { f } = await features(path);
      using _f = f;
      const mask = tidy(() => resizeLabels(labelsFromSoft(prop!.next(f), P), size[0], size[1]));
      owned.push(mask);
      write(path, mask);
      if (o.annotations) predictions.push(mask);
      else mask.dispose();
      bar.tick();
    }
    bar.finish();
    const seconds = (performance.now() - start) / 1000;
    let scores: { propagation: DavisScores; copy_first_mask: DavisScores } | undefined;
    if (o.annotations) {
      const propagation = davisScores(predictions, truths);
      const copy = davisScores(frames.map(() => first.labels), truths);
      scores = { propagation, copy_first_mask: copy };
      writeFileAtomic(
        join(stage, "scores.json"),
        new TextEncoder().encode(
          JSON.stringify(
            {
              ...scores,
              frames: frames.map((f) => basename(f)),
              settings: {
                weights: o.weights,
                n_last_frames: o.nLastFrames,
                size_mask_neighborhood: o.neighborhood,
                topk: o.topk,
                image_size: o.imageSize,
                patch_size: P,
              },
            },
            null,
            2,
          ),
        ),
      );
      written.push("scores.json");
      for (const obj of propagation.objects) {
        const c = copy.objects[obj.object - 1];
        console.log(
          `object ${obj.object}: J ${obj.J.toFixed(3)} F ${obj.F.toFixed(3)}  ` +
            `(copying the first mask: J ${c.J.toFixed(3)} F ${c.F.toFixed(3)})`,
        );
      }
      console.log(`propagation: ${line(propagation)} over ${propagation.frames.length} scored frame(s)`);
      console.log(`copying the first mask: ${line(copy)}`);
    }
    for (const name of written) Deno.renameSync(join(stage, name), join(o.outputDir, name));
    console.log(
      `wrote ${frames.length} mask(s)${scores ? " and scores.json" : ""} to ${o.outputDir} ` +
        `(${((frames.length - 1) / Math.max(seconds, 1e-9)).toFixed(2)} frames/s)`,
    );
    undo = undefined;
    return 0;
  } catch (e) {
    staging?.[Symbol.dispose](); // before undo, which may remove the folder it is in
    undo?.();
    return failure(e, "propagate");
  } finally {
    staging?.[Symbol.dispose]();
    prop?.dispose();
    if (model) dispose(model.backbone);
    dispose(owned);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
