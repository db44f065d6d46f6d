/**
 * `deno task retrieve`: image retrieval and copy detection with frozen features, as the official
 * `eval_image_retrieval.py` and `eval_copy_detection.py`. The features of every image of `--database` and
 * `--queries` are extracted, each query's nearest database images by cosine similarity are written to
 * `<output-dir>/neighbours.json` and shown in `<output-dir>/neighbours.html` (self-contained: the thumbnails are
 * inlined as base64 PNGs), and, where the images say which are true matches, the mean average precision and the
 * precision at 1, 5 and 10 are printed and written to `<output-dir>/scores.json`.
 *
 * - Retrieval (the default): the CLS token after the final norm, of each image resized so that its long side is
 *   at most `--image-size` (224; PIL's thumbnail, as the official loader); `--multiscale` averages it over the
 *   scales 1, 1/√2 and 1/2. True matches: the database images of the query's class, the classes being the first
 *   level of subfolders (`DIR/<class>/<image>`).
 * - `--copy-detection`: the CLS token concatenated with the GeM (p = 4) pooling of the patch tokens, of each
 *   image resized to `--image-size` x `--image-size` (320); with `--whitening DIR`, a PCA whitening learned on
 *   that folder's images (official: 20,000 random photos) is applied first. True matches: the database image
 *   of the query's file name (its stem); the queries' subfolders (one per attack) get their own scores.
 *
 * Exit codes: 0 written, 1 a run-time failure (an image that cannot be decoded), 2 a bad flag, value, path, weights
 * file or input (an empty folder, `--map` without what tells true matches): one line on stderr. Nothing is
 * written on any error: the files are made in a temporary folder and moved into place at the end.
 *
 * @example
 * ```sh
 * deno task retrieve --weights dino_deitsmall16_pretrain.pth --arch vit_small --patch-size 16 \
 *   --database photos/db --queries photos/queries --multiscale --output-dir out/retrieval
 * deno task retrieve --weights output/checkpoint.safetensors --copy-detection --whitening copies/whitening \
 *   --database copies/database --queries copies/queries --output-dir out/copies
 * ```
 * @module
 */
import { extname, join, relative, sep } from "node:path";
import { Buffer } from "node:buffer";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import { imageSize } from "npm:image-size@2.0.2";
import {
  cat,
  data,
  decodeImage,
  defaultMaxImagePixels,
  dispose,
  permute,
  pilResize,
  sort,
  stagingFolder,
  type Tensor,
  tidy,
  toArray,
  writeFileAtomic,
} from "../mod.ts";
import { defaultNormalization, type Normalization, normalizeImage } from "../lib/eval/attention.ts";
import {
  applyWhitening,
  clsFeatures,
  copyDetectionFeatures,
  cosineSimilarities,
  learnWhitening,
  multiScaleFeatures,
  neighboursHtml,
  type PageImage,
  type PageQuery,
  type RetrievalScores,
  retrievalScores,
  thumbnailSize,
  type Whitening,
} from "../lib/eval/retrieval.ts";
import type { EvalBackbone } from "../lib/weights/pretrained.ts";
import type { ViTConfig, ViTParams } from "../lib/model/vit.ts";
import type { BackboneConfig, BackboneParams } from "../lib/model/backbone.ts";
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

const HELP = `usage: deno task retrieve --weights FILE --database DIR --queries DIR --output-dir DIR [options]

Image retrieval (official eval_image_retrieval.py) or, with --copy-detection, copy detection (official
eval_copy_detection.py) with frozen features: each query's nearest database images by cosine similarity, in
DIR/neighbours.json and DIR/neighbours.html (thumbnails inlined); with true matches known, mAP and precision at
1, 5 and 10 (official compute_map) printed and in DIR/scores.json.

options:
  --weights FILE        a checkpoint of this project, or official weights (.pth as published, or .safetensors) (required)
  --database DIR        the images searched (required); for retrieval scores, one subfolder per class
  --queries DIR         the query images (required); for retrieval scores, one subfolder per class
  --output-dir DIR      where neighbours.json, neighbours.html and scores.json go; made if missing (required)
  --top N               neighbours listed per query, 1 to 1000 (default 10)
  --multiscale          retrieval: average the CLS features at scales 1, 1/sqrt 2 and 1/2 (official --multiscale)
  --copy-detection      features CLS + GeM (p = 4) of the patch tokens; a query's true match is the database
                        image of its file name (stem); query subfolders (attacks) are scored apart; the
                        average precision counts each query's 20 nearest (official topk(20))
  --whitening DIR       copy detection: learn a PCA whitening on these images and apply it first
  --map                 require the scores: an error when the folders cannot tell true matches
  --image-size N        retrieval: the long side images are shrunk to (default 224, as PIL's thumbnail);
                        copy detection: the side of the square images are resized to (default 320)
${modelHelp()}
  --max-image-pixels N  largest image (width x height) decoded
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

/** Thumbnails on the page: the long side. */
const THUMBNAIL = 96;

/** A folder given by `flag`: it must exist and be a folder. */
function folder(flag: string, path: string): string {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    throw new UsageError(`${flag} ${path}: no such folder`);
  }
  if (!info.isDirectory) throw new UsageError(`${flag} ${path} is a file; name a folder of images`);
  return path;
}

function parse(args: string[]) {
  const v = parseFlags(args, {
    weights: { type: "string" },
    database: { type: "string" },
    queries: { type: "string" },
    "output-dir": { type: "string" },
    top: { type: "string", default: "10" },
    multiscale: { type: "boolean", default: false },
    "copy-detection": { type: "boolean", default: false },
    whitening: { type: "string" },
    map: { type: "boolean", default: false },
    "image-size": { type: "string" },
    ...MODEL_FLAGS,
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  for (const k of ["weights", "database", "queries", "output-dir"] as const) {
    if (!v[k]) throw new UsageError(`--${k} is required`);
  }
  const copy = v["copy-detection"];
  if (copy && v.multiscale) throw new UsageError("--multiscale is for retrieval; copy detection uses one scale");
  if (!copy && v.whitening !== undefined) throw new UsageError("--whitening needs --copy-detection");
  const maxPixels = v["max-image-pixels"];
  return {
    ...modelOptions(v),
    top: integer("--top", v.top, 1, 1000),
    multiscale: v.multiscale,
    copy,
    map: v.map,
    imageSize: v["image-size"] === undefined ? (copy ? 320 : 224) : integer("--image-size", v["image-size"], 1, 8192),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    weights: weightsFile("--weights", v.weights!),
    database: folder("--database", v.database!),
    queries: folder("--queries", v.queries!),
    whitening: v.whitening === undefined ? undefined : folder("--whitening", v.whitening),
    outputDir: v["output-dir"]!,
  };
}

/** An image of a folder: its path, its name under the folder, its first subfolder (class or attack), its size. */
interface Entry {
  path: string;
  name: string;
  group?: string;
  stem: string;
  height: number;
  width: number;
}

/** The images under a folder (recursively, hidden files skipped), sorted by name, each with its header's size. */
function listImages(flag: string, root: string): Entry[] {
  const out: Entry[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.startsWith(".")) continue;
      const path = join(dir, e.name);
      if (e.isDirectory) walk(path);
      else if (isImageFile(e.name)) {
        const name = relative(root, path).split(sep).join("/");
        const parts = name.split("/");
        out.push({
          path,
          name,
          group: parts.length > 1 ? parts[0] : undefined,
          stem: parts[parts.length - 1].slice(0, -extname(e.name).length),
          height: 0,
          width: 0,
        });
      }
    }
  };
  walk(root);
  if (out.length === 0) {
    throw new UsageError(
      `${flag} ${root} holds no images (${IMAGE_EXTENSIONS.join(" ")}, in it or its subfolders)`,
    );
  }
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of out) {
    try {
      const { width, height } = imageSize(Deno.readFileSync(e.path));
      e.height = height;
      e.width = width;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new Error(
        `${flag} ${e.path}: not a readable image (${
          /unsupported file type/.test(why) ? "its bytes are no image format" : why
        }): replace it or move it out of the folder`,
      );
    }
  }
  return out;
}

/** What the features need: the backbone, how images are prepared, and which features. */
interface Extractor {
  backbone: BackboneParams;
  vit: BackboneConfig;
  norm: Normalization;
  copy: boolean;
  multiscale: boolean;
  imageSize: number;
  maxPixels: number;
  /** Retrieval decodes truncated JPEGs, as its official loader sets PIL's `LOAD_TRUNCATED_IMAGES`. */
  loadTruncated: boolean;
}

/**
 * One image's features [1, D]: decoded with the network's channels, resized as the mode says, normalised; and
 * whether it was a truncated JPEG.
 */
async function imageFeatures(flag: string, e: Entry, x: Extractor): Promise<{ row: Tensor; truncated: boolean }> {
  const { vit, backbone } = x;
  const C = vit.inChans as 1 | 3;
  // Both from the image's own size, as PIL: copy detection's Resize((S, S), bicubic), retrieval's
  // thumbnail((S, S), ANTIALIAS), that is Image.resize with LANCZOS and a reducing gap of 2.
  const r = await decodeImage(e.path, { channels: C, maxPixels: x.maxPixels, loadTruncated: x.loadTruncated });
  if (!r.image) throw new Error(`${flag} ${e.path}: ${r.reason}`);
  using decoded = r.image;
  try {
    const [, H, W] = decoded.shape;
    const [h, w] = x.copy ? [x.imageSize, x.imageSize] : thumbnailSize(H, W, x.imageSize);
    // (at its own size, a copy: PIL leaves such an image as it is)
    using image = x.copy
      ? pilResize(decoded, [h, w], "bicubic")
      : pilResize(decoded, [h, w], "lanczos", { reducingGap: 2 });
    const row = tidy(() => {
      const input = normalizeImage(image, x.norm); // [1, C, H, W]
      if (x.copy) return copyDetectionFeatures(backbone as ViTParams, vit as ViTConfig, input);
      return x.multiscale ? multiScaleFeatures(backbone, vit, input) : clsFeatures(backbone, vit, input);
    });
    return { row, truncated: r.truncated };
  } catch (err) {
    // Such as an image too elongated for a patch at this size: which file it is.
    throw new Error(`${flag} ${e.path}: ${err instanceof Error ? err.message : err}`, { cause: err });
  }
}

/** The features [N, D] of a list of images, with a progress bar; a warning names the truncated JPEGs among them. */
async function features(flag: string, label: string, entries: Entry[], x: Extractor): Promise<Tensor> {
  const rows: Tensor[] = [];
  const truncated: string[] = [];
  const bar = new Bar(label, entries.length, { unit: "image" });
  try {
    for (const e of entries) {
      const r = await imageFeatures(flag, e, x);
      rows.push(r.row);
      if (r.truncated) truncated.push(e.path);
      bar.tick();
    }
    bar.finish();
    if (truncated.length > 0) console.warn(truncatedWarning(flag, truncated));
    return tidy(() => cat(rows, 0));
  } finally {
    bar.finish();
    dispose(rows);
  }
}

/**
 * The warning for the truncated JPEGs of `flag`'s folder that retrieval decoded, as the official loader does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { truncatedWarning } from "./retrieve.ts";
 * assert.match(truncatedWarning("--database", ["db/a.jpg"]), /^warning: --database: 1 truncated JPEG .* db\/a\.jpg$/);
 * ```
 */
export function truncatedWarning(flag: string, paths: readonly string[]): string {
  const shown = paths.slice(0, 5).join(", ") + (paths.length > 5 ? `, and ${paths.length - 5} more` : "");
  return `warning: ${flag}: ${paths.length} truncated JPEG${paths.length === 1 ? "" : "s"} decoded as the official ` +
    `retrieval loader decodes them (PIL's LOAD_TRUNCATED_IMAGES: what is missing mid-gray or black): ${shown}`;
}

/** An image's RGB thumbnail (long side {@linkcode THUMBNAIL} at most) as a data: URL of a PNG. */
async function thumbnail(e: Entry, maxPixels: number, loadTruncated: boolean): Promise<PageImage> {
  const [h, w] = thumbnailSize(e.height, e.width, THUMBNAIL);
  const r = await decodeImage(e.path, { side: Math.min(h, w), channels: 3, maxPixels, loadTruncated });
  if (!r.image) throw new Error(`${e.path}: ${r.reason}`);
  using image = r.image;
  const [, H, W] = image.shape;
  const rgb = tidy(() => data(permute(image, [1, 2, 0])) as Uint8Array);
  const png = encodePng({ width: W, height: H, data: rgb, channels: 3, depth: 8 });
  return { url: `data:image/png;base64,${Buffer.from(png).toString("base64")}`, width: W, height: H };
}

/** eval_copy_detection.py scores each query's 20 nearest (`topk(20)`): a copy ranked lower adds nothing. */
const COPY_DETECTION_DEPTH = 20;

/** The scores of a subset of queries (their indices), or undefined when none has a true match. */
function scoresOf(
  rankings: number[][],
  positives: Set<number>[],
  subset: number[],
  depth: number,
): RetrievalScores | undefined {
  const idx = subset.filter((q) => positives[q].size > 0);
  if (idx.length === 0) return undefined;
  return retrievalScores(idx.map((q) => rankings[q]), idx.map((q) => positives[q]), [1, 5, 10], depth);
}

const f3 = (x: number) => x.toFixed(3);
const summaryLine = (name: string, s: RetrievalScores, n: number) =>
  `${name}: mAP ${f3(s.map)}, mP@1 ${f3(s.precision[0])}, mP@5 ${f3(s.precision[1])}, mP@10 ${f3(s.precision[2])}` +
  ` (${n} queries)`;

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let model: EvalBackbone | undefined, undo: (() => void) | undefined;
  let staging: ReturnType<typeof stagingFolder> | undefined;
  const owned: Tensor[] = [];
  let whitening: Whitening | undefined;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    // Every input is listed and checked before the weights load.
    const database = listImages("--database", o.database);
    const queries = listImages("--queries", o.queries);
    const whiteSet = o.whitening ? listImages("--whitening", o.whitening) : undefined;
    // True matches: the class (retrieval) or the file stem (copy detection).
    let positives: Set<number>[] | undefined;
    if (o.copy) {
      const byStem = new Map<string, number[]>();
      database.forEach((d, j) => byStem.set(d.stem, [...(byStem.get(d.stem) ?? []), j]));
      const p = queries.map((q) => new Set(byStem.get(q.stem) ?? []));
      if (p.some((s) => s.size > 0)) positives = p;
      else if (o.map) {
        throw new UsageError(
          `--map: no query of --queries ${o.queries} has an original of its file name in --database ${o.database}`,
        );
      }
    } else {
      const flat = (list: Entry[]) => list.filter((e) => e.group === undefined).length;
      const [fq, fd] = [flat(queries), flat(database)];
      if (fq === 0 && fd === 0) {
        positives = queries.map((q) => new Set(database.flatMap((d, j) => (d.group === q.group ? [j] : []))));
      } else if (o.map) {
        const [flag, dir, n] = fq > 0 ? ["--queries", o.queries, fq] : ["--database", o.database, fd];
        throw new UsageError(
          `--map needs labels: ${n} image(s) of ${flag} ${dir} lie outside class subfolders (${dir}/<class>/<image>)`,
        );
      }
    }
    undo = prepareOutputDir(o.outputDir).undo;
    model = loadModel("--weights", o.weights, o);
    const vit = model.resnet ?? model.vit;
    if (o.copy && model.resnet) {
      throw new UsageError(
        `--weights ${o.weights} is a ${model.resnet.arch}: copy detection uses a ViT's CLS and patch tokens`,
      );
    }
    const norm: Normalization = model.normalization ?? defaultNormalization(vit.inChans);
    const x: Extractor = {
      backbone: model.backbone,
      vit,
      norm,
      copy: o.copy,
      multiscale: o.multiscale,
      imageSize: o.imageSize,
      maxPixels: o.maxImagePixels,
      loadTruncated: !o.copy,
    };
    const start = performance.now();
    let db = await features("--database", "database", database, x);
    owned.push(db);
    let qf = await features("--queries", "queries", queries, x);
    owned.push(qf);
    if (whiteSet) {
      const wf = await features("--whitening", "whitening", whiteSet, x);
      try {
        whitening = learnWhitening(wf);
      } finally {
        wf.dispose();
      }
      db = applyWhitening(db, whitening);
      qf = applyWhitening(qf, whitening);
      owned.push(db, qf);
      console.log(
        `whitening learned on ${whiteSet.length} image(s), ${whitening.projection.shape[0]} directions ` +
          `(${(100 * whitening.energy).toFixed(2)}% of the energy)`,
      );
    }
    const seconds = (performance.now() - start) / 1000;
    const images = database.length + queries.length + (whiteSet?.length ?? 0);
    const { scores, order } = tidy(() => {
      const sim = cosineSimilarities(qf, db);
      const sorted = sort(sim, 1, true);
      return { scores: toArray(sorted.values), order: toArray(sorted.indices).map(Number) };
    });
    const N = database.length;
    const rankings = queries.map((_, q) => order.slice(q * N, (q + 1) * N));
    const top = Math.min(o.top, N);

    let results: Record<string, unknown> | undefined;
    const summary: string[] = [];
    let overall: RetrievalScores | undefined;
    if (positives) {
      const all = queries.map((_, q) => q);
      const depth = o.copy ? COPY_DETECTION_DEPTH : Infinity;
      overall = scoresOf(rankings, positives, all, depth);
      const groups: Record<string, RetrievalScores> = {};
      const names = [...new Set(queries.map((q) => q.group ?? ""))].filter((g) => g !== "").sort();
      for (const g of names) {
        const s = scoresOf(rankings, positives, all.filter((q) => queries[q].group === g), depth);
        if (s) groups[g] = s;
      }
      const count = (g?: string) =>
        all.filter((q) => positives![q].size > 0 && (g === undefined || queries[q].group === g)).length;
      if (overall) summary.push(summaryLine("all queries", overall, count()));
      for (const [g, s] of Object.entries(groups)) {
        summary.push(summaryLine(`${o.copy ? "attack" : "class"} ${g}`, s, count(g)));
      }
      const missed = all.filter((q) => positives![q].size === 0).length;
      if (missed) summary.push(`${missed} quer${missed === 1 ? "y has" : "ies have"} no true match in the database`);
      const pack = (s: RetrievalScores) => ({
        map: s.map,
        precision_at: Object.fromEntries(s.ks.map((k, i) => [k, s.precision[i]])),
      });
      results = {
        ...(overall && pack(overall)),
        groups: Object.fromEntries(Object.entries(groups).map(([g, s]) => [g, { ...pack(s), queries: count(g) }])),
        per_query: queries.map((q, i) => ({
          image: q.name,
          ap: positives![i].size ? overall!.aps[all.filter((k) => positives![k].size > 0).indexOf(i)] : null,
          first_match_rank: positives![i].size ? rankings[i].findIndex((j) => positives![i].has(j)) + 1 : null,
        })),
      };
    }
    staging = stagingFolder(o.outputDir, "retrieve"); // removed by the next run if this one is killed
    const stage = staging.path;
    const json = (name: string, value: unknown) =>
      writeFileAtomic(join(stage, name), new TextEncoder().encode(JSON.stringify(value, null, 2)));
    const settings = {
      mode: o.copy ? "copy-detection" : "retrieval",
      features: `${o.copy ? "CLS + GeM (p = 4)" : model.resnet ? "pooled output" : "CLS"}${
        o.multiscale ? ", scales 1, 1/sqrt 2, 1/2" : ""
      }`,
      whitening: o.whitening ?? null,
      image_size: o.imageSize,
      weights: o.weights,
      database_dir: o.database,
      queries_dir: o.queries,
    };
    json("neighbours.json", {
      ...settings,
      queries: queries.map((q, i) => ({
        image: q.name,
        ...(q.group !== undefined && { group: q.group }),
        neighbours: rankings[i].slice(0, top).map((j, r) => ({
          image: database[j].name,
          score: scores[i * N + r],
          ...(positives && { match: positives[i].has(j) }),
        })),
      })),
    });
    if (results) json("scores.json", { ...settings, ...results });
    // The page: every query with its neighbours' thumbnails, each image inlined once.
    const thumbs: Record<string, PageImage> = {};
    const thumb = async (key: string, e: Entry) => {
      thumbs[key] ??= await thumbnail(e, o.maxImagePixels, !o.copy);
      return key;
    };
    const page: PageQuery[] = [];
    const bar = new Bar("page", queries.length, { unit: "query" });
    for (const [i, q] of queries.entries()) {
      const apIndex = positives ? queries.map((_, k) => k).filter((k) => positives![k].size > 0).indexOf(i) : -1;
      page.push({
        name: q.name,
        image: await thumb(`q:${q.name}`, q),
        ap: apIndex >= 0 && overall ? overall.aps[apIndex] : undefined,
        neighbours: await Promise.all(
          rankings[i].slice(0, top).map(async (j, r) => ({
            name: database[j].name,
            score: scores[i * N + r],
            relevant: positives ? positives[i].has(j) : undefined,
            image: await thumb(`d:${database[j].name}`, database[j]),
          })),
        ),
      });
      bar.tick();
    }
    bar.finish();
    const title = `${o.copy ? "Copy detection" : "Retrieval"}: ${queries.length} queries, ${N} database images`;
    const lines = [
      `weights ${o.weights}; features ${settings.features}${o.whitening ? `, whitened on ${o.whitening}` : ""}; ` +
      `image size ${o.imageSize}`,
      ...summary,
    ];
    writeFileAtomic(
      join(stage, "neighbours.html"),
      new TextEncoder().encode(neighboursHtml(title, lines, thumbs, page)),
    );
    const written = ["neighbours.json", "neighbours.html", ...(results ? ["scores.json"] : [])];
    for (const name of written) Deno.renameSync(join(stage, name), join(o.outputDir, name));
    for (const line of summary) console.log(line);
    console.log(
      `wrote ${written.join(", ")} to ${o.outputDir} (features of ${images} images in ${seconds.toFixed(1)} s, ` +
        `${(images / Math.max(seconds, 1e-9)).toFixed(1)} images/s)`,
    );
    undo = undefined;
    return 0;
  } catch (e) {
    staging?.[Symbol.dispose](); // before undo, which may remove the folder it is in
    undo?.();
    return failure(e, "retrieve");
  } finally {
    staging?.[Symbol.dispose]();
    if (model) dispose(model.backbone);
    if (whitening) dispose([whitening.mean, whitening.projection]);
    dispose(owned);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
