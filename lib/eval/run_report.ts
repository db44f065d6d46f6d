/**
 * The page a training run is judged by: one self-contained HTML file (`report.html`, no network access needed:
 * SVG charts and inlined PNGs) with the training curves against step (loss, learning rate, weight decay, teacher
 * momentum, teacher temperature, teacher and student entropy, images/s), k-NN (and linear) accuracy against
 * epoch, the final accuracies beside the network at initialisation and raw pixels, the run's configuration,
 * attention maps of a few training images (per head, and masks), and 2-D maps of test features (PCA, t-SNE)
 * coloured by label. {@linkcode parseMetrics} reads `metrics.jsonl`; {@linkcode runReportHtml} writes the page
 * from what the command gathered. A small script in the page counts each chart's drawn marks and logs
 * `report-check {...}` to the console, for headless checks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMetrics, runReportHtml } from "./run_report.ts";
 * const m = parseMetrics('{"step":10,"epoch":0,"loss":5.2,"lr":0.001}\n{"step":20,"epoch":0,"loss":4.9,"lr":0.002}\n');
 * const html = runReportHtml({ title: "run", metrics: m, config: { epochs: 1 } });
 * assert.match(html, /<svg class="chart"/);
 * assert.ok(!/(src|href)="https?:/.test(html));
 * ```
 * @module
 */
import { lineChart, PALETTE, scatterChart, type Series } from "./charts.ts";

/** One row of `metrics.jsonl` (the fields a row has; others are kept). */
export type MetricRow = Record<string, unknown> & { step?: number; epoch?: number };

/** `metrics.jsonl` split by kind of row. */
export interface RunMetrics {
  /** The training rows (they have a loss), in step order. */
  steps: MetricRow[];
  /** The k-NN evaluations during training (`knn_top1` a number). */
  knn: MetricRow[];
  /** The final summary row (`knn_top1` a record of trained, init and raw pixels), if the run finished. */
  summary?: MetricRow;
  /** Lines that were not JSON objects (a row cut short by a crash). */
  skipped: number;
}

/**
 * Reads the lines of `metrics.jsonl`: training rows, k-NN rows and the final summary; unreadable lines are
 * counted, not fatal. Rows of a resumed run logged twice keep their last copy.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMetrics } from "./run_report.ts";
 * const m = parseMetrics([
 *   '{"step":10,"loss":5}', '{"step":10,"epoch":1,"knn_top1":61.5}', '{"step":10,"knn_top1":{"trained":62}}', '{"ste',
 * ].join("\n"));
 * assert.deepEqual([m.steps.length, m.knn.length, m.summary?.step, m.skipped], [1, 1, 10, 1]);
 * ```
 */
export function parseMetrics(text: string): RunMetrics {
  const steps = new Map<number, MetricRow>(), knn = new Map<number, MetricRow>();
  let summary: MetricRow | undefined, skipped = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      skipped++;
      continue;
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      skipped++;
      continue;
    }
    const r = row as MetricRow;
    const step = typeof r.step === "number" ? r.step : NaN;
    if (typeof r.knn_top1 === "object" && r.knn_top1 !== null) summary = r;
    else if (typeof r.knn_top1 === "number") knn.set(step, r);
    else if (typeof r.loss === "number") steps.set(step, r);
    else skipped++;
  }
  const byStep = (a: MetricRow, b: MetricRow) => (a.step ?? 0) - (b.step ?? 0);
  return { steps: [...steps.values()].sort(byStep), knn: [...knn.values()].sort(byStep), summary, skipped };
}

/** A picture inlined in the page. */
export interface InlineImage {
  /** A data: URL (base64 PNG). */
  url: string;
  /** Its caption. */
  caption: string;
}

/** The attention maps of one training image. */
export interface AttentionRow {
  /** What the image is (its index and label). */
  name: string;
  /** The image as the network saw it. */
  image: InlineImage;
  /** One heat map per head. */
  heads: InlineImage[];
  /** Each head's mask over the image. */
  masks: InlineImage[];
}

/** A 2-D map of test features. */
export interface FeatureMap {
  /** "PCA" or "t-SNE", and what it shows. */
  title: string;
  /** The axes' names. */
  axes: [string, string];
  /** n x 2, row-major. */
  points: ArrayLike<number>;
  /** Each point's label (-1 unknown). */
  labels: ArrayLike<number>;
}

/** What {@linkcode runReportHtml} draws; every part but the title and metrics is optional. */
export interface RunReport {
  /** The page's title. */
  title: string;
  /** The run's metrics. */
  metrics: RunMetrics;
  /** The run's configuration (config.json). */
  config?: Record<string, unknown>;
  /** summary.json, when the run finished. */
  summary?: Record<string, unknown>;
  /** Attention maps of a few training images. */
  attention?: AttentionRow[];
  /** Maps of test features, with the class names. */
  maps?: { maps: FeatureMap[]; classes: readonly string[] };
  /** Lines said at the top (where things come from, what is missing). */
  notes?: string[];
}

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/** The (x, y) points of a metric against step. */
function curve(rows: MetricRow[], key: string): [number, number][] {
  return rows.flatMap((
    r,
  ) => (typeof r[key] === "number" && typeof r.step === "number" ? [[r.step, r[key] as number]] : []));
}

/** A value for the configuration table. */
function shown(v: unknown): string {
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "object" && v !== null) return JSON.stringify(v);
  return String(v);
}

/** The accuracy table of summary.json: k-NN top-1 and top-5 of trained, init and raw pixels; linear if present. */
function accuracyTable(summary: Record<string, unknown>, config: Record<string, unknown> | undefined): string {
  const get = (k: string) => summary[k] as Record<string, number> | undefined;
  const t1 = get("knn_top1"), t5 = get("knn_top5"), lin = get("linear");
  const pct = (v: unknown) => (typeof v === "number" ? `${v.toFixed(2)}%` : "—");
  const features = String(config?.arch ?? "").startsWith("resnet") ? "pooled" : "CLS";
  const images = summary.knn_test_images, limit = config?.testLimit;
  const on = typeof images === "number"
    ? `${images} test image${images === 1 ? "" : "s"}`
    : typeof limit === "number" && limit > 0
    ? `the first ${limit} test images at most`
    : "the test split";
  const rows = [
    ["DINO teacher, trained", pct(t1?.trained), pct(t5?.trained)],
    ["the same network at initialisation", pct(t1?.init), pct(t5?.init)],
    ["raw pixels", pct(t1?.raw_pixels), pct(t5?.raw_pixels)],
    ...(lin ? [["linear probe on the trained features", pct(lin.top1), pct(lin.top5)]] : []),
  ];
  return `<table class="acc"><tr><th>features</th><th>top-1</th><th>top-5</th></tr>${
    rows.map((r) => `<tr><td>${r[0]}</td><td>${r[1]}</td><td>${r[2]}</td></tr>`).join("")
  }</table><p class="note">k-NN: k ${esc(shown(config?.knnK ?? 20))}, weighted votes, cosine similarity of the ` +
    `teacher's L2-normalised ${features} features, on ${esc(on)}.</p>`;
}

/** Counts the page's errors (uncaught, and console.error) for the self-check; first in the page. */
const ERROR_HOOK = `<script>
window.reportErrors = [];
window.addEventListener("error", (e) => window.reportErrors.push(String(e.message || e.type)), true);
const consoleError = console.error;
console.error = (...a) => { window.reportErrors.push(a.join(" ")); consoleError(...a); };
</script>`;

/** The page's self-check: each chart's marks counted and logged as `report-check {...}`. */
const CHECK_SCRIPT = `<script>
window.addEventListener("load", () => {
  const charts = [...document.querySelectorAll("svg.chart")];
  const marks = charts.map((c) => [...c.querySelectorAll(".mark")].filter((m) => {
    const b = m.getBBox();
    return b.width > 0 || b.height > 0;
  }).length);
  const images = [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length;
  console.log("report-check " + JSON.stringify({
    charts: charts.length, marks, images, allImages: document.images.length, errors: window.reportErrors,
  }));
});
</script>`;

/**
 * The report page as HTML text: charts of the training curves against step and of the accuracies against
 * epoch (SVG, axes with units), the final accuracies table, the attention maps and feature maps when given, and
 * the configuration. Self-contained: it loads nothing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseMetrics, runReportHtml } from "./run_report.ts";
 * const metrics = parseMetrics('{"step":1,"epoch":0,"loss":6,"teacher_entropy":3,"student_entropy":6}\n');
 * const html = runReportHtml({
 *   title: "fmnist", metrics, summary: { knn_top1: { trained: 73.1, init: 70.2, raw_pixels: 84.6 } },
 *   maps: { classes: ["a", "b"], maps: [{ title: "PCA", axes: ["PC 1", "PC 2"], points: [0, 0, 1, 1], labels: [0, 1] }] },
 * });
 * assert.match(html, /73\.10%/);
 * assert.equal(html.match(/<svg class="chart/g)?.length, 9); // 7 curves (5 with no data here), accuracy, PCA
 * assert.equal(html.match(/<svg class="chart empty"/g)?.length, 5); // lr, wd, momentum, temperature, images/s
 * ```
 */
export function runReportHtml(r: RunReport): string {
  const s = r.metrics.steps;
  const chart = (key: string, title: string, unit: string) =>
    lineChart([{ name: title, points: curve(s, key) }], { title, xLabel: "step", yLabel: unit });
  const curves = [
    chart("loss", "Loss", "cross-entropy (nats)"),
    chart("lr", "Learning rate", "learning rate (per step)"),
    chart("wd", "Weight decay", "weight decay (coefficient)"),
    chart("momentum", "Teacher momentum", "EMA momentum (fraction kept)"),
    chart("teacher_temp", "Teacher temperature", "temperature"),
    lineChart([
      { name: "teacher", points: curve(s, "teacher_entropy") },
      { name: "student", points: curve(s, "student_entropy") },
    ], { title: "Entropy of the output distributions", xLabel: "step", yLabel: "entropy (nats)" }),
    chart("images_per_s", "Throughput over training", "images / s"),
  ];
  // accuracy against epoch: k-NN during training, then the final evaluation; init and raw pixels as lines
  const knn: Series[] = [{
    name: "k-NN top-1, trained",
    points: r.metrics.knn.flatMap((k) => (typeof k.epoch === "number" ? [[k.epoch, k.knn_top1 as number]] : [])),
  }];
  const sum = (r.summary ?? r.metrics.summary) as Record<string, unknown> | undefined;
  const final = sum?.knn_top1 as Record<string, number> | undefined;
  const lastEpoch = typeof (r.metrics.summary?.epoch) === "number"
    ? r.metrics.summary.epoch as number
    : Math.max(1, ...knn[0].points.map((p) => p[0]));
  if (final?.trained !== undefined) {
    knn[0].points = [...knn[0].points.filter((p) => p[0] < lastEpoch), [lastEpoch, final.trained]];
  }
  const span = knn[0].points.length ? [Math.min(0, ...knn[0].points.map((p) => p[0])), lastEpoch] : [0, lastEpoch];
  if (final?.init !== undefined) {
    knn.push({
      name: "at initialisation",
      points: span.map((e) => [e, final.init] as [number, number]),
      dashed: true,
    });
  }
  if (final?.raw_pixels !== undefined) {
    knn.push({
      name: "raw pixels",
      points: span.map((e) => [e, final.raw_pixels] as [number, number]),
      dashed: true,
    });
  }
  const linear = sum?.linear as Record<string, number> | undefined;
  if (linear?.top1 !== undefined) knn.push({ name: "linear probe top-1", points: [[lastEpoch, linear.top1]] });
  const accuracy = lineChart(knn, { title: "Accuracy", xLabel: "epoch", yLabel: "top-1 accuracy (%)", dots: true });

  const parts: string[] = [];
  parts.push(`<h1>${esc(r.title)}</h1>`);
  for (const n of r.notes ?? []) parts.push(`<p class="note">${esc(n)}</p>`);
  parts.push(`<h2>Accuracy</h2>`);
  parts.push(
    sum ? accuracyTable(sum, r.config) : `<p class="note">The run has not finished: no final evaluation yet.</p>`,
  );
  parts.push(`<div class="grid">${accuracy}</div>`);
  parts.push(`<h2>Training</h2><div class="grid">${curves.join("\n")}</div>`);
  if (r.attention?.length) {
    parts.push(
      `<h2>Attention of the last block</h2><p class="note">The CLS token's attention to each patch, per head ` +
        `(viridis: dark low, yellow high), and the smallest set of patches holding 60% of each head's attention.</p>`,
    );
    for (const a of r.attention) {
      const fig = (i: { url: string; caption: string }) =>
        `<figure><img src="${i.url}" alt="${esc(i.caption)}"><figcaption>${esc(i.caption)}</figcaption></figure>`;
      parts.push(
        `<div class="att"><h3>${esc(a.name)}</h3>${fig(a.image)}${a.heads.map(fig).join("")}<br>` +
          `<span class="pad"></span>${a.masks.map(fig).join("")}</div>`,
      );
    }
  }
  if (r.maps?.maps.length) {
    parts.push(`<h2>Test features</h2><div class="grid">`);
    for (const m of r.maps.maps) {
      const n = m.labels.length;
      const points = Array.from(
        { length: n },
        (_, i) => ({ x: m.points[2 * i], y: m.points[2 * i + 1], label: m.labels[i] }),
      );
      parts.push(
        scatterChart(points, r.maps.classes, {
          title: m.title,
          xLabel: m.axes[0],
          yLabel: m.axes[1],
          width: 560,
          height: 460,
        }),
      );
    }
    parts.push(`</div>`);
  }
  if (r.config) {
    parts.push(
      `<h2>Configuration</h2><table class="cfg">${
        Object.entries(r.config).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(shown(v))}</td></tr>`).join("")
      }</table>`,
    );
  }
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
${ERROR_HOOK}
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid svg { border: 1px solid #e4e4e4; border-radius: 4px; max-width: 100%; height: auto; }
.note { color: #555; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
table.acc td:nth-child(n+2) { text-align: right; font-variant-numeric: tabular-nums; }
table.cfg td:first-child { color: #555; }
.att figure { display: inline-block; margin: 0 6px 6px 0; vertical-align: top; }
.att img { display: block; width: 112px; height: auto; image-rendering: pixelated; border: 1px solid #ddd; }
.att figcaption { font-size: 11px; text-align: center; }
.att h3 { font-size: 14px; margin: 0.8em 0 0.3em; }
.att .pad { display: inline-block; width: 120px; }
.legend { color: ${PALETTE[0]}; }
</style></head><body>
${parts.join("\n")}
${CHECK_SCRIPT}
</body></html>
`;
}
