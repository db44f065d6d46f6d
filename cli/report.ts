/**
 * `deno task report --run DIR`: writes `DIR/report.html`, one self-contained page (no network access needed) of
 * a training run: its curves against step (loss, learning rate, weight decay, teacher momentum, teacher
 * temperature, teacher and student entropy, images/s) and its k-NN (and linear) accuracy against epoch as SVG
 * charts, the final accuracies beside the network at initialisation and raw pixels, the run's configuration,
 * the last block's attention maps of a few training images (per head, and masks), and 2-D maps (PCA, and
 * t-SNE of the first points) of the test features coloured by label. It reads `metrics.jsonl`, `config.json`,
 * `summary.json` and `checkpoint.safetensors`; the data the run trained on gives the images (`--data` when it
 * moved). What cannot be had (no checkpoint yet, the data gone, a ResNet's attention) is left out and said.
 *
 * Exit codes: 0 written, 1 a run-time failure, 2 a bad flag or a folder that is no training run (one line on
 * stderr). The page is written atomically: a failure leaves the previous one.
 *
 * @example
 * ```sh
 * deno task report --run runs/fmnist
 * ```
 * @module
 */
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import {
  cat,
  data,
  defaultMaxImagePixels,
  dispose,
  exists,
  select,
  type Tensor,
  tidy,
  toArray,
  writeFileAtomic,
} from "../mod.ts";
import { openDataset } from "../lib/data/open.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { attentionMaps, defaultNormalization, renderAttention } from "../lib/eval/attention.ts";
import { evalImages } from "../lib/eval/knn.ts";
import { clsFeatures } from "../lib/eval/retrieval.ts";
import { pca, tsne } from "../lib/eval/embedding.ts";
import {
  type AttentionRow,
  type FeatureMap,
  parseMetrics,
  type RunReport,
  runReportHtml,
} from "../lib/eval/run_report.ts";
import { loadEvalBackbone } from "../lib/weights/pretrained.ts";
import type { ViTConfig, ViTParams } from "../lib/model/vit.ts";
import type { BackboneConfig, BackboneParams } from "../lib/model/backbone.ts";
import { failure, integer, parseFlags, UsageError } from "./flags.ts";
import { Bar } from "./bar.ts";
import { configKind } from "./run_folder.ts";

const HELP = `usage: deno task report --run DIR [options]

Writes DIR/report.html: a training run's curves, accuracies, configuration, attention maps and maps of its
test features, in one self-contained page.

options:
  --run DIR             a training run's output folder (metrics.jsonl, config.json, summary.json,
                        checkpoint.safetensors) (required)
  --data DATA           the data the run trained on, when it moved (default: the run's config.json)
  --images N            training images whose attention is shown, 0 to 32 (default 4)
  --points N            test images in the feature maps, 0 to 20000 (default 2000, at most the run's
                        --test-limit; t-SNE of the first 500)
  --max-image-pixels N  largest image (width x height) a folder decodes
                        (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help            this help`;

/** t-SNE is exact (O(n²)): at most this many points. */
const TSNE_POINTS = 500;

function parse(args: string[]) {
  const v = parseFlags(args, {
    run: { type: "string" },
    data: { type: "string" },
    images: { type: "string", default: "4" },
    points: { type: "string", default: "2000" },
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  if (!v.run) throw new UsageError("--run is required");
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(v.run);
  } catch {
    throw new UsageError(`--run ${v.run}: no such folder`);
  }
  if (!info.isDirectory) throw new UsageError(`--run ${v.run} is a file; name the run's output folder`);
  if (!exists(join(v.run, "metrics.jsonl"))) {
    throw new UsageError(`--run ${v.run} holds no metrics.jsonl: not a training run's output folder`);
  }
  const config = readJson(join(v.run, "config.json")), kind = configKind(config);
  if (config && kind !== "train") {
    throw new UsageError(
      `--run ${v.run} is ${
        kind ? `the output folder of \`deno task ${kind}\`` : "not a DINO training run's output folder"
      }: ` +
        "report reads the folder of `deno task train` (its --output-dir)",
    );
  }
  const maxPixels = v["max-image-pixels"];
  return {
    run: v.run,
    data: v.data,
    images: integer("--images", v.images, 0, 32),
    points: integer("--points", v.points, 0, 20000),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
  };
}

/** A u8 [H, W, C] picture as a data: URL of a PNG. */
function pngUrl(picture: Tensor): string {
  const [height, width, channels] = picture.shape;
  const png = encodePng({ width, height, data: data(picture) as Uint8Array, channels, depth: 8 });
  return `data:image/png;base64,${Buffer.from(png).toString("base64")}`;
}

/** A JSON file of the run, or undefined when absent; unreadable JSON is an error naming the file. */
function readJson(path: string): Record<string, unknown> | undefined {
  if (!exists(path)) return undefined;
  try {
    return JSON.parse(Deno.readTextFileSync(path));
  } catch (e) {
    throw new Error(`${path} is not valid JSON (${e instanceof Error ? e.message : e})`);
  }
}

/** Attention rows of `count` training images spread over the split. */
async function attentionRows(
  vit: ViTConfig,
  backbone: ViTParams,
  ds: Dataset,
  count: number,
  norm: { mean: number[]; std: number[] },
  notes: string[],
): Promise<AttentionRow[]> {
  const n = Math.min(count, ds.length);
  const indices = Array.from({ length: n }, (_, i) => Math.floor((i * ds.length) / n));
  const batch = await ds.load(indices);
  if (batch.failed.length > 0) {
    notes.push(
      `${batch.failed.length} of the ${n} images chosen for attention maps could not be read: ${batch.firstError}`,
    );
  }
  try {
    const labels = batch.labels ? toArray(batch.labels).map(Number) : undefined;
    return batch.indices.map((index, i) =>
      tidy(() => {
        const image = select(batch.images, 0, i);
        const maps = attentionMaps(backbone, vit, image, { normalization: norm });
        const p = renderAttention(image, maps.attentions, maps.masks);
        const label = labels ? ds.classes[labels[i]] ?? String(labels[i]) : undefined;
        return {
          name: `training image ${index}${label !== undefined ? ` (${label})` : ""}`,
          image: { url: pngUrl(p.image), caption: "image" },
          heads: p.heatmaps.map((h, j) => ({ url: pngUrl(h), caption: `head ${j}` })),
          masks: p.masks.map((m, j) => ({ url: pngUrl(m), caption: `mask ${j}` })),
        };
      })
    );
  } finally {
    batch.images.dispose();
    batch.labels?.dispose();
  }
}

/** Features [n, D] (a ViT's CLS, a ResNet's pooled output) and labels of the first `count` test images. */
async function testFeatures(
  cfg: BackboneConfig,
  backbone: BackboneParams,
  ds: Dataset,
  count: number,
  transform: { size: number; mean: number[]; std: number[] },
  notes: string[],
): Promise<{ features: Float64Array; labels: number[]; dim: number }> {
  const n = Math.min(count, ds.length), rows: Tensor[] = [], labels: number[] = [];
  let unread = 0, firstError = "";
  const bar = new Bar("feature maps", n, { unit: "image" });
  try {
    for (let start = 0; start < n; start += 256) {
      const indices = Array.from({ length: Math.min(256, n - start) }, (_, i) => start + i);
      const batch = await ds.load(indices);
      unread += batch.failed.length;
      firstError ||= batch.firstError;
      try {
        rows.push(tidy(() => clsFeatures(backbone, cfg, evalImages(batch.images, transform))));
        const l = batch.labels ? toArray(batch.labels).map(Number) : batch.indices.map(() => -1);
        labels.push(...l);
      } finally {
        batch.images.dispose();
        batch.labels?.dispose();
      }
      bar.tick(indices.length);
    }
    bar.finish();
    if (unread > 0) {
      notes.push(`${unread} of the ${n} test images for the feature maps could not be read: ${firstError}`);
    }
    const all = tidy(() => toArray(cat(rows, 0)));
    return { features: Float64Array.from(all), labels, dim: cfg.embedDim };
  } finally {
    bar.finish();
    dispose(rows);
  }
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const open: Dataset[] = [];
  let backbone: unknown;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    const metrics = parseMetrics(Deno.readTextFileSync(join(o.run, "metrics.jsonl")));
    const config = readJson(join(o.run, "config.json"));
    const summary = readJson(join(o.run, "summary.json"));
    const notes: string[] = [`run folder ${o.run}`];
    if (metrics.skipped) notes.push(`${metrics.skipped} line(s) of metrics.jsonl could not be read and were skipped`);
    const report: RunReport = { title: `DINO run: ${o.run}`, metrics, config, summary, notes };
    const checkpoint = join(o.run, "checkpoint.safetensors");
    if (!exists(checkpoint)) notes.push("no checkpoint.safetensors yet: no attention maps or feature maps");
    else if (o.images > 0 || o.points > 0) {
      const model = loadEvalBackbone(checkpoint, {});
      backbone = model.backbone;
      const cfg: BackboneConfig = model.vit ?? model.resnet;
      const spec = o.data ?? (typeof config?.data === "string" ? config.data : undefined);
      if (!spec) notes.push("config.json names no data (give --data): no attention maps or feature maps");
      else {
        const given = model.normalization ?? defaultNormalization(cfg.inChans);
        const norm = { mean: [...given.mean], std: [...given.std] };
        const trainedOn = model.vit ? model.vit.imgSize : model.imageSize;
        const side = typeof config?.imageSize === "number" ? config.imageSize : trainedOn;
        const size = typeof config?.globalCropsSize === "number" ? config.globalCropsSize : trainedOn;
        const channels = cfg.inChans as 1 | 3;
        let train: Dataset | undefined, test: Dataset | undefined;
        try {
          train = openDataset(spec, "train", { side, channels, maxImagePixels: o.maxImagePixels });
          open.push(train);
          test = openDataset(spec, "test", { side, channels, maxImagePixels: o.maxImagePixels });
          open.push(test);
        } catch (e) {
          notes.push(
            `the data ${spec} could not be opened (${e instanceof Error ? e.message : e}); give --data: ` +
              `no attention maps or feature maps`,
          );
        }
        if (train && o.images > 0) {
          if (model.vit) {
            report.attention = await attentionRows(model.vit, model.backbone, train, o.images, norm, notes);
          } else notes.push("the network is a ResNet: no attention maps");
        }
        if (test && o.points > 0 && test.length > 0) {
          // The run's --test-limit bounds these points as it bounded the k-NN's queries.
          const limit = typeof config?.testLimit === "number" && config.testLimit > 0 ? config.testLimit : Infinity;
          const f = await testFeatures(cfg, model.backbone, test, Math.min(o.points, limit), { size, ...norm }, notes);
          const n = f.labels.length;
          const maps: FeatureMap[] = [];
          const pc = pca(f.features, n, f.dim, 2);
          maps.push({
            title: `PCA of ${n} test features (${model.vit ? "CLS" : "pooled"})`,
            axes: [
              `PC 1 (${(100 * pc.variance[0]).toFixed(1)}% of the variance)`,
              `PC 2 (${(100 * pc.variance[1]).toFixed(1)}%)`,
            ],
            points: pc.points,
            labels: f.labels,
          });
          if (n >= 6) {
            const m = Math.min(n, TSNE_POINTS);
            const y = tsne(f.features.subarray(0, m * f.dim), m, f.dim, { iterations: 500 });
            maps.push({
              title: `t-SNE of ${m} test features (perplexity 30)`,
              axes: ["t-SNE 1", "t-SNE 2"],
              points: y,
              labels: f.labels.slice(0, m),
            });
          }
          report.maps = { maps, classes: test.classes };
        }
      }
    }
    const out = join(o.run, "report.html");
    writeFileAtomic(out, new TextEncoder().encode(runReportHtml(report)));
    console.log(`wrote ${out}`);
    return 0;
  } catch (e) {
    return failure(e, "report");
  } finally {
    if (backbone) dispose(backbone);
    for (const d of open) d.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
