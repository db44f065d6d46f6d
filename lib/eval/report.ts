/**
 * The evaluation a training run ends with: weighted k-NN accuracy of the
 * trained teacher, of the same network at initialisation (what training
 * added), and of raw pixels (what the data gives for free).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, tidy, to } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { dinoConfig, initDino } from "../model/dino.ts";
 * import { evaluateRun } from "./report.ts";
 * using g = new Generator(0);
 * using images = tidy(() => to(randint(g, 0, 256, [12, 1, 16, 16]), "u8"));
 * const labels = new Int32Array(12).map((_, i) => i % 2);
 * using data = tensorDataset(images, { labels });
 * using copies = tensorDataset(images, { labels }); // a test split of the same pixels
 * const net = dinoConfig({ arch: "vit_tiny", imgSize: 16, patchSize: 8, depth: 1, inChans: 1, outDim: 32 });
 * const trained = initDino(net, g);
 * const r = await evaluateRun(trained.backbone, {
 *   net, seed: 0, train: data, test: copies, transform: { size: 16, mean: [0.5], std: [0.25] }, k: 3,
 * });
 * assert.deepEqual(Object.keys(r), ["trained", "init", "rawPixels"]);
 * assert.equal(r.rawPixels.top1, 100); // each test image's copy in the memory is its nearest neighbour
 * const own = await evaluateRun(trained.backbone, {
 *   net, seed: 0, train: data, test: data, transform: { size: 16, mean: [0.5], std: [0.25] }, k: 3, leaveOneOut: true,
 * });
 * assert.ok(own.rawPixels.top1 < 100); // each left out of its own neighbours: noise has no nearer image of its class
 * dispose(trained);
 * ```
 * @module
 */
import { dispose, Generator } from "../../ffi/mod.ts";
import type { Dataset } from "../data/dataset.ts";
import { backboneConfig, type DinoConfig, initDino } from "../model/dino.ts";
import type { BackboneConfig, BackboneParams } from "../model/backbone.ts";
import {
  type EvalTransform,
  extractFeatures,
  type Features,
  knnClassify,
  type KnnResult,
  pixelFeatures,
  selfRows,
} from "./knn.ts";

/** Top-1 and top-5 accuracy, in percent. */
export interface Accuracy {
  /** Top-1 accuracy (%). */
  top1: number;
  /** Top-5 accuracy (%). */
  top5: number;
}

/** The k-NN protocol: the data, its preparation, and the vote. */
export interface KnnProtocol {
  /** The memory: its features and labels vote. */
  train: Dataset;
  /** The images classified. */
  test: Dataset;
  /** How images are prepared for the backbone. */
  transform: EvalTransform;
  /** Neighbours (20). */
  k?: number;
  /** Vote temperature (0.07). */
  temperature?: number;
  /** Stops the evaluation between batches, throwing the signal's reason, once it is aborted. */
  signal?: AbortSignal;
  /** Told of each pass's files that could not be decoded (default: a warning per pass). */
  onSkipped?: (files: string[], why: string) => void;
  /** Told after each batch of every pass how many images it held (for a progress display). */
  onProgress?: (images: number) => void;
  /**
   * The test images are the memory's own (a data set without a test split): each is left out of its own
   * neighbours, matched by dataset item (see {@linkcode selfRows}).
   */
  leaveOneOut?: boolean;
}

/**
 * Weighted k-NN accuracy of a backbone's features.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, zeros } from "../../mod.ts";
 * import { tensorDataset } from "../data/dataset.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { knnAccuracy } from "./report.ts";
 * using g = new Generator(0);
 * const vit = vitConfig("vit_tiny", { imgSize: 8, patchSize: 4, inChans: 1, depth: 1 });
 * const backbone = initViT(vit, g);
 * using images = zeros([4, 1, 8, 8], { dtype: "u8" });
 * using data = tensorDataset(images, { labels: new Int32Array([1, 1, 1, 1]) });
 * const r = await knnAccuracy(backbone, vit, { train: data, test: data, transform: { size: 8, mean: [0], std: [1] } });
 * assert.equal(r.top1, 100); // one class
 * dispose(backbone);
 * ```
 */
export async function knnAccuracy(
  backbone: BackboneParams,
  vit: BackboneConfig,
  p: KnnProtocol,
): Promise<KnnResult> {
  const o = { signal: p.signal, onSkipped: p.onSkipped, onProgress: p.onProgress };
  const a = await extractFeatures(backbone, vit, p.train, p.transform, o);
  try {
    const b = await extractFeatures(backbone, vit, p.test, p.transform, o);
    try {
      return classify(a, b, p);
    } finally {
      b.features.dispose();
    }
  } finally {
    a.features.dispose();
  }
}

/** Weighted k-NN of the test features by the memory's, leave-one-out where the protocol says so. */
function classify(memory: Features, queries: Features, p: KnnProtocol): KnnResult {
  return knnClassify(memory.features, memory.labels, queries.features, queries.labels, {
    k: p.k,
    temperature: p.temperature,
    numClasses: p.train.classes.length,
    exclude: p.leaveOneOut ? selfRows(memory.indices, queries.indices) : undefined,
  });
}

/**
 * The end-of-run report: the trained teacher's backbone, the same network
 * initialised from the run's `seed` (as the run's student and teacher were),
 * and raw pixels, each by weighted k-NN: three passes over the train and test
 * images, so `onProgress` counts 3 × (train + test) images in all.
 */
export async function evaluateRun(
  teacher: BackboneParams,
  o: KnnProtocol & { net: DinoConfig; seed: number },
): Promise<{ trained: KnnResult; init: Accuracy; rawPixels: Accuracy }> {
  const trained = await knnAccuracy(teacher, backboneConfig(o.net), o);
  let init: Accuracy;
  {
    using g = new Generator(o.seed);
    const atInit = initDino(o.net, g);
    try {
      init = await knnAccuracy(atInit.backbone, backboneConfig(o.net), o);
    } finally {
      dispose(atInit);
    }
  }
  const passes = { signal: o.signal, onSkipped: o.onSkipped, onProgress: o.onProgress };
  const pa = await pixelFeatures(o.train, passes);
  try {
    const pb = await pixelFeatures(o.test, passes);
    try {
      const rawPixels = classify(pa, pb, o);
      return { trained, init, rawPixels };
    } finally {
      pb.features.dispose();
    }
  } finally {
    pa.features.dispose();
  }
}
