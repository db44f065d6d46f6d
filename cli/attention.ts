/**
 * `deno task attention`: the attention maps of the official `visualize_attention.py`, for any number of images
 * of any size. For each image, the last block's CLS-to-patch attention of every head (upsampled by the patch
 * size, nearest) is drawn as a heat map per head, each head's mask (the smallest set of patches holding
 * `--threshold` of its attention) is drawn over the image, and a grid shows every head over the image; all the
 * maps and masks are also written as arrays to `<output-dir>/attention.safetensors`:
 *
 * - `<index>.<stem>.attentions`: f32 [heads, H, W], the attention (a softmax weight per pixel's patch)
 * - `<index>.<stem>.masks`: u8 [heads, H, W], 1 inside the head's mask
 *
 * where `<index>` is the image's place among the `--image` flags (from 0) and `<stem>` its file name without
 * the extension (characters other than letters and digits of any script, `_` and `-` made `_`). The pictures go to
 * `<output-dir>/<index>.<stem>/`: `img.png` (the image as the network saw it), `attn-head<j>.png`,
 * `mask_th<threshold>_head<j>.png` (the official names) and `grid.png`.
 *
 * Images are prepared as the official script prepares them (`attentionImage`): torchvision's `Resize` with PIL's
 * bilinear filter, to a short side of `--image-size N` (aspect kept; the default, 480) or to `--image-size H,W`
 * (the official default is 480,480, which squashes a non-square image), then cut at the bottom and right to
 * multiples of the patch size; and normalised as the weights were trained (the checkpoint's normalisation, else
 * ImageNet's; 0.5 / 0.5 for 1-channel weights without one). They are decoded with the weights' channels
 * (grayscale for a Fashion-MNIST checkpoint).
 *
 * Exit codes: 0 written, 1 a run-time failure (an image that cannot be decoded), 2 a bad flag, value, path or
 * weights file (one line on stderr). Every image path is checked before the weights load, and nothing is
 * written on any error: the files are made in a temporary folder and moved into place at the end.
 *
 * @example
 * ```sh
 * deno task attention --weights output/checkpoint.safetensors --image shoe.png --image-size 56 --output-dir attn
 * deno task attention --weights dino_deitsmall8_pretrain.pth --arch vit_small --patch-size 8 \
 *   --image a.jpg --image b.png --output-dir attn
 * ```
 * @module
 */
import { basename, extname, join } from "node:path";
import {
  decodeImage,
  defaultMaxImagePixels,
  dispose,
  exists,
  stagingFolder,
  type Tensor,
  tidy,
  writeFileAtomic,
  writeImage,
} from "../mod.ts";
import {
  attentionImage,
  attentionMaps,
  defaultNormalization,
  type Normalization,
  renderAttention,
  resizedSize,
} from "../lib/eval/attention.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
import { encodeSafetensors } from "../lib/weights/safetensors.ts";
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

const HELP = `usage: deno task attention --weights FILE --image PATH [--image PATH ...] --output-dir DIR [options]

The last block's CLS-to-patch attention of every head, as the official visualize_attention.py: per image, a
heat map per head, each head's mask over the image, a grid of all heads, and the arrays in
DIR/attention.safetensors (<index>.<stem>.attentions f32 [heads, H, W], <index>.<stem>.masks u8 [heads, H, W]).

options:
  --weights FILE        a checkpoint of this project, or official weights (.pth as published, or .safetensors) (required)
  --image PATH          an image (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM); repeat for more (required)
  --output-dir DIR      where the pictures and attention.safetensors go; made if missing (required)
${modelHelp()}
  --image-size N|H,W    the short side images are resized to (aspect kept), or their height and width,
                        1 to 8192 (default 480; the official default squashes to 480,480); PIL's
                        bilinear filter, then the bottom and right cut to multiples of the patch size
  --threshold T         the share of each head's attention its mask keeps, in (0, 1] (default 0.6)
  --max-image-pixels N  largest image (width x height) decoded
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

/** The largest attention matrix (heads x tokens x tokens, f32) an image may need: past it, ask for a smaller size. */
const MAX_ATTENTION_BYTES = 8 * 2 ** 30;

/** An image path must be an existing regular file: checked before anything is loaded. */
function imageFile(path: string): string {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    throw new UsageError(`--image ${path}: no such file`);
  }
  if (info.isDirectory) throw new UsageError(`--image ${path} is a folder; name image files`);
  if (!info.isFile) throw new UsageError(`--image ${path} is not a regular file`);
  return path;
}

/** `--image-size`: one number (the short side) or `H,W`, as the official `--image_size` takes one or two. */
function imageSize(v: string): number | [number, number] {
  const parts = v.split(",");
  if (parts.length === 1) return integer("--image-size", v, 1, 8192);
  if (parts.length !== 2) throw new UsageError(`--image-size takes N (the short side) or H,W, got "${v}"`);
  return [integer("--image-size", parts[0].trim(), 1, 8192), integer("--image-size", parts[1].trim(), 1, 8192)];
}

function parse(args: string[]) {
  const v = parseFlags(args, {
    weights: { type: "string" },
    image: { type: "string", multiple: true },
    "output-dir": { type: "string" },
    ...MODEL_FLAGS,
    "image-size": { type: "string", default: "480" },
    threshold: { type: "string", default: "0.6" },
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  if (!v.weights) throw new UsageError("--weights is required");
  if (!v.image?.length) throw new UsageError("--image is required (repeat it for several images)");
  if (!v["output-dir"]) throw new UsageError("--output-dir is required");
  const threshold = v.threshold.trim() === "" ? NaN : Number(v.threshold);
  if (!Number.isFinite(threshold)) throw new UsageError(`--threshold takes a number, got "${v.threshold}"`);
  if (!(threshold > 0 && threshold <= 1)) throw new UsageError(`--threshold must be in (0, 1], got ${threshold}`);
  const maxPixels = v["max-image-pixels"];
  return {
    ...modelOptions(v),
    imageSize: imageSize(v["image-size"]),
    threshold,
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    weights: weightsFile("--weights", v.weights),
    images: v.image.map(imageFile),
    outputDir: v["output-dir"],
  };
}

/** `<index>.<stem>`: the image's name in the outputs. */
function imageKey(index: number, path: string): string {
  const stem = basename(path, extname(path)).normalize("NFC").replace(/[^\p{L}\p{M}\p{N}_-]/gu, "_");
  return `${index}.${stem || "image"}`;
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let model: EvalBackbone | undefined, undo: (() => void) | undefined;
  let staging: ReturnType<typeof stagingFolder> | undefined;
  const owned: Tensor[] = [];
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    undo = prepareOutputDir(o.outputDir).undo;
    model = loadModel("--weights", o.weights, o);
    if (model.resnet) {
      throw new UsageError(
        `--weights ${o.weights} is a ${model.resnet.arch}: attention maps need a ViT (a ResNet has no self-attention)`,
      );
    }
    const { vit } = model;
    const C = vit.inChans, P = vit.patchSize;
    const norm: Normalization = model.normalization ?? defaultNormalization(C);
    if (norm.mean.length !== C || norm.std.length !== C) {
      throw new Error(`--weights ${o.weights}: its normalisation has ${norm.mean.length} channel(s), the network ${C}`);
    }
    // Every image decodes before anything is computed or written.
    const images: Tensor[] = [];
    for (const path of o.images) {
      const r = await decodeImage(path, { channels: C as 1 | 3, maxPixels: o.maxImagePixels }); // its own size
      if (!r.image) throw new Error(`--image ${path}: ${r.reason}`);
      let image: Tensor;
      try {
        // The attention's size is known before the resize: a sliver of an image at 480 would be a huge one.
        const [h, w] = resizedSize(r.image.shape[1], r.image.shape[2], o.imageSize);
        const tokens = Math.floor(h / P) * Math.floor(w / P) + 1;
        const bytes = vit.numHeads * tokens * tokens * 4;
        if (bytes > MAX_ATTENTION_BYTES) {
          throw new UsageError(
            `--image ${path} at ${w} x ${h} is ${tokens - 1} patches: its attention needs ${
              (bytes / 2 ** 30).toFixed(1)
            } GiB; lower --image-size (now ${o.imageSize})`,
          );
        }
        image = attentionImage(r.image, o.imageSize, P);
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        throw new UsageError(`--image ${path}: ${e.message} (--image-size)`);
      } finally {
        r.image.dispose();
      }
      images.push(image);
      owned.push(image);
    }
    staging = stagingFolder(o.outputDir, "attention"); // removed by the next run if this one is killed
    const stage = staging.path;
    const arrays: Record<string, Tensor> = {};
    const listed: { key: string; path: string; height: number; width: number }[] = [];
    const threshold = String(o.threshold);
    for (const [i, path] of o.images.entries()) {
      const key = imageKey(i, path), image = images[i];
      const maps = attentionMaps(model.backbone, vit, image, { normalization: norm, threshold: o.threshold });
      owned.push(maps.attentions, maps.masks);
      arrays[`${key}.attentions`] = maps.attentions;
      arrays[`${key}.masks`] = maps.masks;
      const dir = join(stage, key);
      Deno.mkdirSync(dir);
      tidy(() => {
        const p = renderAttention(image, maps.attentions, maps.masks);
        writeImage(join(dir, "img.png"), p.image);
        p.heatmaps.forEach((h, j) => writeImage(join(dir, `attn-head${j}.png`), h));
        p.masks.forEach((m, j) => writeImage(join(dir, `mask_th${threshold}_head${j}.png`), m));
        writeImage(join(dir, "grid.png"), p.grid);
      });
      const [, H, W] = image.shape;
      listed.push({ key, path, height: H, width: W });
      console.log(`${key}: ${W} x ${H}, ${vit.numHeads} heads (${W / P} x ${H / P} patches)`);
    }
    writeFileAtomic(
      join(stage, "attention.safetensors"),
      encodeSafetensors(arrays, {
        format: "dino-attention",
        layout: "<index>.<stem>.attentions f32 [heads, H, W]: the last block's CLS-to-patch attention of each head, " +
          "nearest-upsampled by the patch size; <index>.<stem>.masks u8 [heads, H, W]: 1 where the patch is in the " +
          "smallest set holding `threshold` of the head's attention",
        images: JSON.stringify(listed),
        threshold,
        patch_size: String(P),
        heads: String(vit.numHeads),
        image_size: String(o.imageSize),
        normalization: JSON.stringify(norm),
        weights: o.weights,
        source: model.source,
        vit: JSON.stringify(vit),
      }),
    );
    // Into place: each picture folder's files, then the arrays.
    for (const { key } of listed) {
      const to = join(o.outputDir, key);
      if (!exists(to)) Deno.mkdirSync(to);
      for (const e of Deno.readDirSync(join(stage, key))) Deno.renameSync(join(stage, key, e.name), join(to, e.name));
    }
    Deno.renameSync(join(stage, "attention.safetensors"), join(o.outputDir, "attention.safetensors"));
    console.log(`wrote ${listed.length} image folder(s) and ${join(o.outputDir, "attention.safetensors")}`);
    undo = undefined;
    return 0;
  } catch (e) {
    staging?.[Symbol.dispose](); // before undo, which may remove the folder it is in
    undo?.();
    return failure(e, "attention");
  } finally {
    staging?.[Symbol.dispose]();
    if (model) dispose(model.backbone);
    dispose(owned);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
