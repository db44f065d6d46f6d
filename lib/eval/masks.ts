/**
 * Label masks as video object segmentation keeps them: indexed-colour (palette) PNGs, as DAVIS stores its
 * annotations and as its tools read results (pixel value = object id, 0 the background, 255 "void"), read and
 * written here with their palette (`npm:fast-png` does the PNG coding); label maps resized as PIL's nearest
 * filter does; and the DAVIS 2017 scores of a segmented video: region similarity J (intersection over union)
 * and contour accuracy F (the F-measure of boundary pixels matched within a tolerance), per object, as the
 * official `davis2017-evaluation` computes them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy } from "../../mod.ts";
 * import { decodeIndexedPng, encodeIndexedPng, regionSimilarity } from "./masks.ts";
 * using labels = tensor([[0, 1, 1], [0, 2, 2]], { dtype: "u8" });
 * const png = encodeIndexedPng(labels, [[0, 0, 0], [128, 0, 0], [0, 128, 0]]);
 * const back = decodeIndexedPng(png);
 * assert.deepEqual(back.palette.slice(0, 3), [[0, 0, 0], [128, 0, 0], [0, 128, 0]]);
 * using truth = tensor([[0, 1, 0], [0, 0, 0]], { dtype: "u8" });
 * assert.equal(tidy(() => regionSimilarity(back.labels, truth, 1)), 0.5); // 1 pixel shared of 2
 * back.labels.dispose();
 * ```
 * @module
 */
import { decode, encode } from "npm:fast-png@8.0.0";
import {
  add,
  arange,
  cat,
  conv2d,
  eq,
  gt,
  indexSelect,
  le,
  logicalAnd,
  logicalNot,
  logicalOr,
  mul,
  ne,
  reshape,
  slice,
  sum,
  type Tensor,
  tensor,
  tidy,
  to,
  toArray,
  zeros,
} from "../../ffi/mod.ts";

/** A palette: one [r, g, b] (or [r, g, b, a]) colour per index, as PNG's PLTE (and tRNS) chunks hold. */
export type Palette = number[][];

/** A decoded label PNG: the labels, and the palette when the file had one. */
export interface LabelImage {
  /** u8 [H, W]: each pixel's palette index (its object id). */
  labels: Tensor;
  /** The file's palette (indexed PNGs only). */
  palette?: Palette;
}

/** An indexed PNG's labels and palette: what {@linkcode decodeIndexedPng} returns. */
export interface IndexedImage extends LabelImage {
  /** The file's palette. */
  palette: Palette;
}

const COLOR_KINDS: Record<number, string> = { 1: "grayscale", 2: "grayscale with alpha", 3: "RGB", 4: "RGBA" };

/** "a" or "an" before a kind of PNG ("an 8-bit ..."). */
const article = (kind: string) => (/^(8|11|18)\b|^[aeiou]/i.test(kind) ? "an" : "a");

/** The PNG's pixels, rows unpacked to one byte per pixel when its depth is under 8 bits. */
function unpack(data: ArrayLike<number>, width: number, height: number, depth: number): Uint8Array<ArrayBuffer> {
  if (depth === 8) return Uint8Array.from(data);
  const out = new Uint8Array(width * height), row = Math.ceil((width * depth) / 8), mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      out[y * width + x] = (data[y * row + (bit >> 3)] >> (8 - depth - (bit & 7))) & mask;
    }
  }
  return out;
}

function decodePng(bytes: Uint8Array) {
  try {
    return decode(bytes);
  } catch (e) {
    throw new Error(`is not a readable PNG (${e instanceof Error ? e.message : e})`);
  }
}

/**
 * Reads a label PNG: an indexed-colour (palette) PNG as DAVIS stores masks, or a plain 8-bit (or lower)
 * grayscale PNG whose values are the labels. Any other PNG (RGB, with alpha, 16-bit) is an error that says
 * what it is; so is a file that is no PNG.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, toArray } from "../../mod.ts";
 * import { decodeLabelPng, encodeIndexedPng } from "./masks.ts";
 * using labels = tensor([[3, 0]], { dtype: "u8" });
 * const { labels: back, palette } = decodeLabelPng(encodeIndexedPng(labels, [[0, 0, 0], [9, 9, 9], [1, 2, 3], [4, 5, 6]]));
 * assert.deepEqual([toArray(back), palette?.[3]], [[3, 0], [4, 5, 6]]);
 * back.dispose();
 * assert.throws(() => decodeLabelPng(new TextEncoder().encode("GIF89a")), /is not a readable PNG/);
 * ```
 */
export function decodeLabelPng(bytes: Uint8Array): LabelImage {
  const png = decodePng(bytes);
  const { width, height, depth } = png;
  if (png.palette) {
    const labels = tensor(unpack(png.data, width, height, depth), { shape: [height, width], dtype: "u8" });
    return { labels, palette: png.palette.map((c) => [...c]) };
  }
  if (png.channels !== 1 || depth > 8) {
    const kind = png.channels === 1 ? "16-bit grayscale" : `${depth}-bit ${COLOR_KINDS[png.channels] ?? "colour"}`;
    throw new Error(
      `is ${article(kind)} ${kind} PNG, not a label image; save it as an indexed (palette) PNG, PIL's mode "P"`,
    );
  }
  return { labels: tensor(unpack(png.data, width, height, depth), { shape: [height, width], dtype: "u8" }) };
}

/**
 * Reads an indexed-colour (palette) PNG: its labels and its palette. Any other PNG is an error saying what it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../../mod.ts";
 * import { decodeIndexedPng, encodeIndexedPng } from "./masks.ts";
 * using labels = tensor([[1, 0]], { dtype: "u8" });
 * const png = encodeIndexedPng(labels, [[0, 0, 0], [255, 0, 0]]);
 * const { labels: back, palette } = decodeIndexedPng(png);
 * assert.deepEqual([back.shape, palette.length], [[1, 2], 2]);
 * back.dispose();
 * ```
 */
export function decodeIndexedPng(bytes: Uint8Array): IndexedImage {
  const png = decodePng(bytes);
  if (!png.palette) {
    const kind = png.channels === 1 ? `${png.depth}-bit grayscale` : `${png.depth}-bit ${COLOR_KINDS[png.channels]}`;
    throw new Error(
      `is ${
        article(kind)
      } ${kind} PNG, not an indexed-colour (palette) one; save the mask with a palette (PIL's mode "P", the DAVIS layout)`,
    );
  }
  const labels = tensor(unpack(png.data, png.width, png.height, png.depth), {
    shape: [png.height, png.width],
    dtype: "u8",
  });
  return { labels, palette: png.palette.map((c) => [...c]) };
}

/**
 * Writes u8 [H, W] labels as an 8-bit indexed-colour PNG with `palette` (as PIL's `putpalette` then `save`, the
 * DAVIS layout). Every label must have a colour in the palette.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../../mod.ts";
 * import { encodeIndexedPng } from "./masks.ts";
 * using labels = tensor([[0, 1]], { dtype: "u8" });
 * const png = encodeIndexedPng(labels, [[0, 0, 0], [128, 0, 0]]);
 * assert.equal(png[25], 3); // colour type 3: indexed
 * assert.throws(() => encodeIndexedPng(labels, [[0, 0, 0]]), /label 1 has no colour/);
 * ```
 */
export function encodeIndexedPng(labels: Tensor, palette: Palette): Uint8Array<ArrayBuffer> {
  if (labels.ndim !== 2 || labels.dtype !== "u8") {
    throw new TypeError(`encodeIndexedPng takes u8 [H, W] labels, got ${labels.dtype} [${labels.shape}]`);
  }
  if (palette.length < 1 || palette.length > 256) {
    throw new RangeError(`encodeIndexedPng: a palette holds 1 to 256 colours, got ${palette.length}`);
  }
  const [height, width] = labels.shape;
  const data = Uint8Array.from(toArray(labels));
  let top = 0;
  for (const v of data) if (v > top) top = v;
  if (top >= palette.length) {
    throw new RangeError(`encodeIndexedPng: label ${top} has no colour in the palette of ${palette.length}`);
  }
  const alpha = palette.some((c) => c.length === 4);
  const colors = palette.map((c) => alpha ? [c[0], c[1], c[2], c[3] ?? 255] : [c[0], c[1], c[2]]);
  return encode({
    width,
    height,
    data,
    depth: 8,
    channels: 1,
    palette: colors as [number, number, number][],
  }) as Uint8Array<
    ArrayBuffer
  >;
}

/**
 * Resizes a label map [h, w] (any dtype) to [H, W] as PIL's `Image.resize(size, Image.NEAREST)`: output pixel
 * (y, x) takes input pixel (about (y + 0.5) h / H, (x + 0.5) w / W, truncated: summed a step at a time from the
 * first centre in double, as PIL does, so that every pick is PIL's). No label is blended.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { resizeLabels } from "./masks.ts";
 * using x = tensor([[1, 2, 3]], { dtype: "u8" });
 * assert.deepEqual(tidy(() => toArray(resizeLabels(x, 1, 2))), [1, 3]); // centres 0.75 and 2.25
 * assert.deepEqual(tidy(() => toArray(resizeLabels(x, 1, 6))), [1, 1, 2, 2, 3, 3]);
 * ```
 */
export function resizeLabels(labels: Tensor, H: number, W: number): Tensor {
  if (labels.ndim !== 2) throw new RangeError(`resizeLabels takes an [h, w] label map, got [${labels.shape}]`);
  if (!(Number.isInteger(H) && Number.isInteger(W) && H >= 1 && W >= 1)) {
    throw new RangeError(`resizeLabels: the size must be whole and positive, got ${H} x ${W}`);
  }
  const [h, w] = labels.shape;
  if (h === H && w === W) return tidy(() => add(labels, 0));
  const index = (n: number, N: number) => {
    // PIL (ImagingScaleAffine) adds the step to the first centre one output pixel at a time, in double, and
    // truncates: (i + 0.5) n / N computed at once lands on the other side of a whole number now and then (854 to 53
    // at 26).
    const step = n / N, picks = new BigInt64Array(N);
    let at = step * 0.5;
    for (let i = 0; i < N; i++, at += step) picks[i] = BigInt(Math.min(n - 1, Math.trunc(at)));
    return tensor(picks);
  };
  return tidy(() => indexSelect(indexSelect(labels, 0, index(h, H)), 1, index(w, W)));
}

/**
 * Region similarity J of one object: |prediction ∩ truth| / |prediction ∪ truth| of the pixels labelled
 * `object` in each label map (u8 [H, W]), leaving out `voids` (a u8 [H, W] map, 1 where the truth is unknown);
 * 1 when both are empty, as DAVIS's `db_eval_iou`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy } from "../../mod.ts";
 * import { regionSimilarity } from "./masks.ts";
 * using pred = tensor([[1, 1, 0, 0]], { dtype: "u8" });
 * using truth = tensor([[0, 1, 1, 0]], { dtype: "u8" });
 * assert.equal(tidy(() => regionSimilarity(pred, truth, 1)), 1 / 3);
 * assert.equal(tidy(() => regionSimilarity(pred, truth, 2)), 1); // absent from both
 * ```
 */
export function regionSimilarity(prediction: Tensor, truth: Tensor, object: number, voids?: Tensor): number {
  sameSize(prediction, truth, voids);
  return tidy(() => {
    const keep = voids ? logicalNot(gt(voids, 0)) : undefined;
    const p = eq(prediction, object), t = eq(truth, object);
    const within = (m: Tensor) => (keep ? logicalAnd(m, keep) : m);
    const inter = toArray(sum(to(within(logicalAnd(p, t)), "f64")))[0];
    const union = toArray(sum(to(within(logicalOr(p, t)), "f64")))[0];
    return union === 0 ? 1 : inter / union;
  });
}

function sameSize(a: Tensor, b: Tensor, c?: Tensor): void {
  for (const x of c ? [a, b, c] : [a, b]) {
    if (x.ndim !== 2 || x.shape[0] !== a.shape[0] || x.shape[1] !== a.shape[1]) {
      throw new RangeError(
        `the label maps must be [H, W] of one size, got [${a.shape}], [${b.shape}]${c ? `, [${c.shape}]` : ""}`,
      );
    }
  }
}

/**
 * The boundary pixels of a binary mask (any dtype, [H, W], nonzero = inside), as DAVIS's `_seg2bmap`: a pixel
 * whose value differs from its east, south or south-east neighbour (outside the image counts as 0, the last row
 * and column compared along themselves only, the corner never). Returns u8 [H, W] of 0 and 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, tidy, toArray } from "../../mod.ts";
 * import { boundaryMap } from "./masks.ts";
 * using m = tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]], { dtype: "u8" });
 * assert.deepEqual(tidy(() => toArray(boundaryMap(m))), [1, 1, 0, 1, 1, 0, 0, 0, 0]); // the pixel and those before it
 * ```
 */
export function boundaryMap(mask: Tensor): Tensor {
  if (mask.ndim !== 2) throw new RangeError(`boundaryMap takes an [H, W] mask, got [${mask.shape}]`);
  const [H, W] = mask.shape;
  return tidy(() => {
    const seg = to(gt(mask, 0), "u8");
    const zcol = zeros([H, 1], { dtype: "u8" }), zrow = zeros([1, W], { dtype: "u8" });
    const e = W > 1 ? cat([slice(seg, 1, 1), zcol], 1) : zcol; // e[:, :-1] = seg[:, 1:]
    const s = H > 1 ? cat([slice(seg, 0, 1), zrow], 0) : zrow; // s[:-1, :] = seg[1:, :]
    const se = H > 1 && W > 1
      ? cat([cat([slice(slice(seg, 0, 1), 1, 1), zeros([H - 1, 1], { dtype: "u8" })], 1), zrow], 0)
      : zeros([H, W], { dtype: "u8" });
    let b = logicalOr(logicalOr(ne(seg, e), ne(seg, s)), ne(seg, se));
    // b[-1, :] = seg[-1, :] ^ e[-1, :]; b[:, -1] = seg[:, -1] ^ s[:, -1]; b[-1, -1] = 0
    const rows = reshape(arange(0, H), [H, 1]), cols = reshape(arange(0, W), [1, W]);
    const lastRow = eq(rows, H - 1), lastCol = eq(cols, W - 1);
    const onlyE = ne(seg, e), onlyS = ne(seg, s);
    b = logicalOr(
      logicalAnd(b, logicalAnd(logicalNot(lastRow), logicalNot(lastCol))),
      logicalOr(
        logicalAnd(lastRow, logicalAnd(onlyE, logicalNot(lastCol))),
        logicalAnd(lastCol, logicalAnd(onlyS, logicalNot(lastRow))),
      ),
    );
    return to(b, "u8");
  });
}

/** skimage's `disk(r)` as a conv2d weight [1, 1, 2r + 1, 2r + 1]: 1 where x² + y² <= r². */
function disk(r: number): Tensor {
  return tidy(() => {
    const l = arange(-r, r + 1, 1, { dtype: "f32" });
    const sq = mul(l, l);
    const d2 = add(reshape(sq, [-1, 1]), reshape(sq, [1, -1]));
    return reshape(to(le(d2, r * r), "f32"), [1, 1, 2 * r + 1, 2 * r + 1]);
  });
}

/** A binary [H, W] map dilated by a disk of radius r (as OpenCV's `dilate`; outside the image adds nothing). */
function dilate(map: Tensor, r: number): Tensor {
  const [H, W] = map.shape;
  return reshape(gt(conv2d(reshape(to(map, "f32"), [1, 1, H, W]), disk(r), undefined, { padding: r }), 0.5), [H, W]);
}

/**
 * Contour accuracy F of one object, as DAVIS's `db_eval_boundary` / `f_measure`: the boundaries of the
 * pixels labelled `object` in the prediction and in the truth (u8 [H, W] label maps, `voids` masked out of
 * both) are matched within a tolerance of ceil(`boundThreshold` x the image diagonal) pixels (a disk), and F
 * is the harmonic mean of the share of predicted boundary near the true one (precision) and of true boundary
 * near the predicted one (recall); 1 when both are empty, 0 when only one is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { copyInto, full, narrow, tidy, zeros } from "../../mod.ts";
 * import { contourAccuracy } from "./masks.ts";
 * using square = zeros([20, 20], { dtype: "u8" });
 * tidy(() => copyInto(narrow(narrow(square, 0, 5, 10), 1, 5, 10), full([10, 10], 1, { dtype: "u8" })));
 * using moved = zeros([20, 20], { dtype: "u8" });
 * tidy(() => copyInto(narrow(narrow(moved, 0, 6, 10), 1, 5, 10), full([10, 10], 1, { dtype: "u8" })));
 * using none = zeros([20, 20], { dtype: "u8" });
 * assert.equal(contourAccuracy(square, square, 1), 1);
 * assert.equal(contourAccuracy(moved, square, 1), 1); // one pixel off: within the tolerance (1 pixel here)
 * assert.equal(contourAccuracy(square, none, 1), 0); // a boundary where none is true
 * ```
 */
export function contourAccuracy(
  prediction: Tensor,
  truth: Tensor,
  object: number,
  voids?: Tensor,
  boundThreshold = 0.008,
): number {
  sameSize(prediction, truth, voids);
  const [H, W] = prediction.shape;
  const r = boundThreshold >= 1 ? boundThreshold : Math.ceil(boundThreshold * Math.hypot(H, W));
  return tidy(() => {
    const keep = voids ? logicalNot(gt(voids, 0)) : undefined;
    const inside = (m: Tensor) => (keep ? logicalAnd(eq(m, object), keep) : eq(m, object));
    const fg = boundaryMap(inside(prediction)), gtb = boundaryMap(inside(truth));
    const count = (m: Tensor) => toArray(sum(to(m, "f64")))[0];
    const nFg = count(fg), nGt = count(gtb);
    let precision: number, recall: number;
    if (nFg === 0 && nGt > 0) [precision, recall] = [1, 0];
    else if (nFg > 0 && nGt === 0) [precision, recall] = [0, 1];
    else if (nFg === 0 && nGt === 0) [precision, recall] = [1, 1];
    else {
      precision = count(logicalAnd(gt(fg, 0), dilate(gtb, r))) / nFg;
      recall = count(logicalAnd(gt(gtb, 0), dilate(fg, r))) / nGt;
    }
    return precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  });
}

/** One object's scores over a video: what {@linkcode davisScores} gives per object. */
export interface ObjectScores {
  /** The object's id (its label). */
  object: number;
  /** Mean region similarity over the scored frames. */
  J: number;
  /** Mean contour accuracy over the scored frames. */
  F: number;
  /** The share of scored frames with J > 0.5 (DAVIS's "recall"). */
  JRecall: number;
  /** The share of scored frames with F > 0.5. */
  FRecall: number;
  /** J of each scored frame. */
  JPerFrame: number[];
  /** F of each scored frame. */
  FPerFrame: number[];
}

/** A video's scores, as the DAVIS 2017 semi-supervised evaluation reports them. */
export interface DavisScores {
  /** Per object, in id order. */
  objects: ObjectScores[];
  /** The mean over objects of their mean J. */
  J: number;
  /** The mean over objects of their mean F. */
  F: number;
  /** (J + F) / 2. */
  JF: number;
  /** The indices of the frames scored (all but the first and the last, as DAVIS). */
  frames: number[];
}

/**
 * The DAVIS 2017 semi-supervised scores of a segmented video: `predictions` and `truths` are u8 [H, W] label
 * maps, one per frame; the objects are the labels 1 to the largest label of the first true mask (other than
 * 255); the first frame (given) and the last are not scored, so a video needs 3 frames at least. As the official
 * semi-supervised evaluation (`_evaluate_semisupervised(..., None, ...)`), 255 in a true mask (void) counts as
 * background: a prediction there is a false positive.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../../mod.ts";
 * import { davisScores } from "./masks.ts";
 * using a = tensor([[1, 1, 0, 0]], { dtype: "u8" });
 * using b = tensor([[0, 1, 1, 0]], { dtype: "u8" });
 * const s = davisScores([a, a, a], [a, b, b]); // only the middle frame is scored
 * assert.deepEqual([s.frames, s.objects.length, s.J], [[1], 1, 1 / 3]);
 * ```
 */
export function davisScores(predictions: readonly Tensor[], truths: readonly Tensor[]): DavisScores {
  if (predictions.length !== truths.length || truths.length === 0) {
    throw new RangeError(
      `davisScores takes as many predictions as true masks (at least one), got ${predictions.length} and ${truths.length}`,
    );
  }
  const T = truths.length;
  if (T < 3) {
    throw new RangeError(
      `davisScores: DAVIS scores neither the first frame nor the last, so a video of ${T} frame(s) has none to score`,
    );
  }
  const frames = Array.from({ length: T - 2 }, (_, i) => i + 1);
  const first = toArray(truths[0]).filter((v) => v !== 255);
  const count = first.reduce((m, v) => Math.max(m, v), 0);
  const objects: ObjectScores[] = [];
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  for (let object = 1; object <= count; object++) {
    const JPerFrame: number[] = [], FPerFrame: number[] = [];
    for (const f of frames) {
      JPerFrame.push(regionSimilarity(predictions[f], truths[f], object));
      FPerFrame.push(contourAccuracy(predictions[f], truths[f], object));
    }
    objects.push({
      object,
      J: mean(JPerFrame),
      F: mean(FPerFrame),
      JRecall: mean(JPerFrame.map((j) => (j > 0.5 ? 1 : 0))),
      FRecall: mean(FPerFrame.map((f) => (f > 0.5 ? 1 : 0))),
      JPerFrame,
      FPerFrame,
    });
  }
  const J = objects.length ? mean(objects.map((o) => o.J)) : NaN;
  const F = objects.length ? mean(objects.map((o) => o.F)) : NaN;
  return { objects, J, F, JF: (J + F) / 2, frames };
}
