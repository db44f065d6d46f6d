/**
 * Charts as SVG text, for self-contained HTML reports: line charts of series against a shared x axis, and scatter
 * charts of labelled points, each with a title, axes with ticks at round numbers, axis labels with units, grid
 * lines and a legend. Every drawn data element has the class `mark`, so a page can check that a chart drew.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lineChart } from "./charts.ts";
 * const svg = lineChart([{ name: "loss", points: [[0, 5], [10, 4], [20, 3.5]] }], {
 *   title: "Loss", xLabel: "step", yLabel: "loss (nats)",
 * });
 * assert.match(svg, /^<svg/);
 * assert.match(svg, /class="mark"/);
 * ```
 * @module
 */

/** A named series of (x, y) points. */
export interface Series {
  /** Its name in the legend. */
  name: string;
  /** The points, in x order; non-finite ones are left out. */
  points: readonly (readonly [number, number])[];
  /** Its colour (default: the palette's next). */
  color?: string;
  /** Draw it dashed (reference lines). */
  dashed?: boolean;
}

/** Options of {@linkcode lineChart} and {@linkcode scatterChart}. */
export interface ChartOptions {
  /** The chart's title. */
  title: string;
  /** The x axis' label, with its unit. */
  xLabel: string;
  /** The y axis' label, with its unit. */
  yLabel: string;
  /** Pixels (560 x 300). */
  width?: number;
  /** Pixels. */
  height?: number;
  /** Draw a dot at each point too (default: when a series has under 40 points). */
  dots?: boolean;
}

/** Colours for series and classes (colour-blind-safe first: Okabe-Ito, then Tableau). */
export const PALETTE: readonly string[] = [
  "#0072B2",
  "#D55E00",
  "#009E73",
  "#CC79A7",
  "#E69F00",
  "#56B4E9",
  "#000000",
  "#8C564B",
  "#7F7F7F",
  "#BCBD22",
  "#17BECF",
  "#9467BD",
];

/**
 * About `count` ticks at round numbers (1, 2 or 5 times a power of ten) covering [min, max].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { niceTicks } from "./charts.ts";
 * assert.deepEqual(niceTicks(0, 937, 5), [0, 200, 400, 600, 800, 1000]);
 * assert.deepEqual(niceTicks(0.02, 0.02), [0.019, 0.02, 0.021]); // a flat series gets a small span
 * ```
 */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(Number.isFinite(min) && Number.isFinite(max))) return [0, 1];
  if (max < min) [min, max] = [max, min];
  if (max === min) {
    const d = min === 0 ? 1 : Math.abs(min) * 0.05;
    const step0 = niceStep((2 * d) / 2);
    return [min - step0, min, min + step0].map((v) => round(v, step0));
  }
  const step = niceStep((max - min) / Math.max(count, 1));
  const lo = Math.floor(min / step + 1e-9) * step, hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(round(v, step));
  return ticks;
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

/** v rounded to the precision of `step` (no 0.30000000000000004). */
function round(v: number, step: number): number {
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  return Number(v.toFixed(Math.min(digits, 15)));
}

/** A tick's label: short, with exponents for tiny or huge values. */
function label(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);

interface Frame {
  svg: string[];
  x: (v: number) => number;
  y: (v: number) => number;
  plot: { left: number; top: number; right: number; bottom: number };
}

/** The chart's frame: title, axes, ticks, grid and labels, for data in [x0, x1] x [y0, y1]. */
function frame(o: ChartOptions, xs: number[], ys: number[], legend: { name: string; color: string }[]): Frame {
  const W = o.width ?? 560, H = o.height ?? 300;
  const xt = niceTicks(Math.min(...xs), Math.max(...xs)), yt = niceTicks(Math.min(...ys), Math.max(...ys));
  const legendRows = Math.ceil(legend.length / 3);
  const plot = { left: 64, top: 34 + (legend.length > 1 ? 16 * legendRows : 0), right: W - 16, bottom: H - 46 };
  const [x0, x1] = [xt[0], xt[xt.length - 1]], [y0, y1] = [yt[0], yt[yt.length - 1]];
  const x = (v: number) => plot.left + ((v - x0) / (x1 - x0 || 1)) * (plot.right - plot.left);
  const y = (v: number) => plot.bottom - ((v - y0) / (y1 - y0 || 1)) * (plot.bottom - plot.top);
  const svg = [
    `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" ` +
    `role="img" aria-label="${esc(o.title)}" font-family="system-ui, sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">${esc(o.title)}</text>`,
  ];
  legend.forEach((l, i) => {
    const lx = plot.left + (i % 3) * ((plot.right - plot.left) / 3), ly = 34 + 16 * Math.floor(i / 3);
    svg.push(
      `<rect x="${lx}" y="${ly - 8}" width="14" height="4" fill="${l.color}"/>` +
        `<text x="${lx + 18}" y="${ly - 3}">${esc(l.name)}</text>`,
    );
  });
  for (const t of xt) {
    const px = x(t).toFixed(1);
    svg.push(
      `<line x1="${px}" x2="${px}" y1="${plot.top}" y2="${plot.bottom}" stroke="#eee"/>` +
        `<text x="${px}" y="${plot.bottom + 14}" text-anchor="middle">${label(t)}</text>`,
    );
  }
  for (const t of yt) {
    const py = y(t).toFixed(1);
    svg.push(
      `<line x1="${plot.left}" x2="${plot.right}" y1="${py}" y2="${py}" stroke="#eee"/>` +
        `<text x="${plot.left - 5}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${label(t)}</text>`,
    );
  }
  svg.push(
    `<line x1="${plot.left}" x2="${plot.right}" y1="${plot.bottom}" y2="${plot.bottom}" stroke="#333"/>`,
    `<line x1="${plot.left}" x2="${plot.left}" y1="${plot.top}" y2="${plot.bottom}" stroke="#333"/>`,
    `<text x="${(plot.left + plot.right) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(14 ${(plot.top + plot.bottom) / 2}) rotate(-90)" text-anchor="middle">${
      esc(o.yLabel)
    }</text>`,
  );
  return { svg, x, y, plot };
}

/**
 * A line chart of one or more series as SVG text: round-number ticks on both axes, grid lines, the axis labels
 * (give their units), a legend when there are several series, and a dot per point for short series. A chart
 * with no finite point says so in place of lines.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lineChart } from "./charts.ts";
 * const svg = lineChart([
 *   { name: "teacher", points: [[0, 3.4], [10, 3.1]] },
 *   { name: "student", points: [[0, 6.2], [10, 5.9]] },
 * ], { title: "Entropy", xLabel: "step", yLabel: "entropy (nats)" });
 * assert.equal(svg.match(/<path class="mark"/g)?.length, 2);
 * assert.match(svg, />teacher</);
 * ```
 */
export function lineChart(series: readonly Series[], o: ChartOptions): string {
  const finite = series.map((s) => ({
    ...s,
    points: s.points.filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b)),
  }));
  const all = finite.flatMap((s) => s.points);
  const colors = finite.map((s, i) => s.color ?? PALETTE[i % PALETTE.length]);
  if (all.length === 0) return empty(o);
  const f = frame(
    o,
    all.map((p) => p[0]),
    all.map((p) => p[1]),
    finite.length > 1 ? finite.map((s, i) => ({ name: s.name, color: colors[i] })) : [],
  );
  finite.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map(([a, b], k) => `${k ? "L" : "M"}${f.x(a).toFixed(1)},${f.y(b).toFixed(1)}`).join("");
    f.svg.push(
      `<path class="mark" d="${d}" fill="none" stroke="${colors[i]}" stroke-width="1.6"${
        s.dashed ? ` stroke-dasharray="5 4"` : ""
      }><title>${esc(s.name)}</title></path>`,
    );
    if (o.dots ?? s.points.length < 40) {
      for (const [a, b] of s.points) {
        f.svg.push(
          `<circle class="mark" cx="${f.x(a).toFixed(1)}" cy="${f.y(b).toFixed(1)}" r="3" fill="${colors[i]}">` +
            `<title>${esc(s.name)}: ${label(a)}, ${label(b)}</title></circle>`,
        );
      }
    }
  });
  f.svg.push("</svg>");
  return f.svg.join("\n");
}

/** A chart with nothing to draw: its frame and a note. */
function empty(o: ChartOptions): string {
  const W = o.width ?? 560, H = o.height ?? 300;
  return `<svg class="chart empty" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" ` +
    `font-family="system-ui, sans-serif"><rect width="${W}" height="${H}" fill="#fff" stroke="#ddd"/>` +
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">${esc(o.title)}</text>` +
    `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#777">no data</text></svg>`;
}

/** A point of {@linkcode scatterChart}. */
export interface ScatterPoint {
  /** Its x. */
  x: number;
  /** Its y. */
  y: number;
  /** Its class (an index into the class names). */
  label: number;
}

/**
 * A scatter chart of labelled points as SVG text, one colour per class with a legend of class names.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scatterChart } from "./charts.ts";
 * const svg = scatterChart([{ x: 0, y: 1, label: 0 }, { x: 2, y: -1, label: 1 }], ["shirt", "shoe"], {
 *   title: "PCA", xLabel: "PC 1", yLabel: "PC 2",
 * });
 * assert.equal(svg.match(/<circle class="mark"/g)?.length, 2);
 * assert.match(svg, />shoe</);
 * ```
 */
export function scatterChart(points: readonly ScatterPoint[], classes: readonly string[], o: ChartOptions): string {
  const pts = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  if (pts.length === 0) return empty(o);
  const used = [...new Set(pts.map((p) => p.label))].sort((a, b) => a - b);
  const color = (l: number) => (l < 0 ? "#999" : PALETTE[l % PALETTE.length]);
  const f = frame(
    o,
    pts.map((p) => p.x),
    pts.map((p) => p.y),
    used.map((l) => ({ name: classes[l] ?? (l < 0 ? "unlabelled" : String(l)), color: color(l) })),
  );
  const r = pts.length > 2000 ? 1.5 : pts.length > 500 ? 2 : 3;
  for (const p of pts) {
    f.svg.push(
      `<circle class="mark" cx="${f.x(p.x).toFixed(1)}" cy="${f.y(p.y).toFixed(1)}" r="${r}" fill="${
        color(p.label)
      }" fill-opacity="0.75"/>`,
    );
  }
  f.svg.push("</svg>");
  return f.svg.join("\n");
}
