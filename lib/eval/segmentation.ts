/**
 * How well a ViT's last-block attention segments objects without labels, as the DINO paper's Table 8 measures it:
 * each head's 60%-mass mask of the CLS token's attention ({@linkcode attentionMaps}) against the true object mask,
 * by the Jaccard similarity (intersection over union), per head and image; summarised as the best head's mean
 * over the images and the mean over heads.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../../mod.ts";
 * import { headJaccards, summarizeJaccards } from "./segmentation.ts";
 * using masks = tensor([[[1, 1], [0, 0]], [[0, 0], [1, 1]]], { dtype: "u8" }); // 2 heads over 2 x 2 pixels
 * using truth = tensor([[1, 0], [0, 0]], { dtype: "u8" });
 * assert.deepEqual(headJaccards(masks, truth), [0.5, 0]);
 * const s = summarizeJaccards([[0.5, 0], [0.3, 0.1]]); // two images
 * assert.deepEqual([s.bestHead, s.best.toFixed(2), s.mean.toFixed(2)], [0, "0.40", "0.23"]);
 * ```
 * @module
 */
import { select, type Tensor, tidy } from "../../ffi/mod.ts";
import type { ViTConfig, ViTParams } from "../model/vit.ts";
import { attentionMaps, type Normalization } from "./attention.ts";
import { regionSimilarity } from "./masks.ts";

/**
 * The Jaccard similarity of each head's mask (u8 [heads, H, W], 1 inside) with the true mask (u8 [H, W], 1 on
 * the object): one number per head, 1 where both are empty.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "../../mod.ts";
 * import { headJaccards } from "./segmentation.ts";
 * using masks = tensor([[[1, 1, 1, 0]]], { dtype: "u8" }); // one head over 1 x 4 pixels
 * using truth = tensor([[0, 1, 1, 1]], { dtype: "u8" });
 * assert.deepEqual(headJaccards(masks, truth), [0.5]); // 2 shared of 4
 * ```
 */
export function headJaccards(masks: Tensor, truth: Tensor): number[] {
  if (masks.ndim !== 3 || truth.ndim !== 2 || masks.shape[1] !== truth.shape[0] || masks.shape[2] !== truth.shape[1]) {
    throw new RangeError(
      `headJaccards takes masks [heads, H, W] and a true mask [H, W], got [${masks.shape}] and [${truth.shape}]`,
    );
  }
  return tidy(() => Array.from({ length: masks.shape[0] }, (_, h) => regionSimilarity(select(masks, 0, h), truth, 1)));
}

/** What {@linkcode summarizeJaccards} returns. */
export interface JaccardSummary {
  /** Each head's mean Jaccard over the images. */
  perHead: number[];
  /** The head with the highest mean (the first of equals). */
  bestHead: number;
  /** That head's mean: the paper's number. */
  best: number;
  /** The mean over heads of their means. */
  mean: number;
  /** How many images. */
  images: number;
}

/**
 * Per-image, per-head Jaccard similarities (`[image][head]`) summarised: each head's mean over the images, the
 * best head and its mean, and the mean over heads.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { summarizeJaccards } from "./segmentation.ts";
 * const s = summarizeJaccards([[0.2, 0.6], [0.4, 0.2]]);
 * assert.deepEqual([s.perHead.map((j) => j.toFixed(1)), s.bestHead, s.images], [["0.3", "0.4"], 1, 2]);
 * ```
 */
export function summarizeJaccards(perImage: readonly (readonly number[])[]): JaccardSummary {
  const heads = perImage[0]?.length ?? 0;
  if (heads === 0 || perImage.some((r) => r.length !== heads)) {
    throw new RangeError("summarizeJaccards takes one row per image with one Jaccard per head, every row alike");
  }
  const perHead = Array.from({ length: heads }, (_, h) => perImage.reduce((s, r) => s + r[h], 0) / perImage.length);
  const bestHead = perHead.indexOf(Math.max(...perHead));
  const mean = perHead.reduce((s, j) => s + j, 0) / heads;
  return { perHead, bestHead, best: perHead[bestHead], mean, images: perImage.length };
}

/**
 * Every head's Jaccard on each image: the 60%-mass (or `threshold`) masks of `p`'s CLS attention on u8
 * [C, H, W] images against their true masks (u8 [H, W], 1 on the object). Returns `[image][head]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose, Generator, randint, zeros } from "../../mod.ts";
 * import { initViT, vitConfig } from "../model/vit.ts";
 * import { attentionJaccards } from "./segmentation.ts";
 * using g = new Generator(0);
 * const cfg = vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, inChans: 3, depth: 1 });
 * const vit = initViT(cfg, g);
 * using image = randint(g, 0, 256, [3, 32, 32], { dtype: "u8" });
 * using truth = zeros([32, 32], { dtype: "u8" });
 * const rows = attentionJaccards(vit, cfg, [image], [truth]);
 * assert.deepEqual(rows, [[0, 0, 0]]); // 3 heads, none overlaps an empty object
 * dispose(vit);
 * ```
 */
export function attentionJaccards(
  p: ViTParams,
  cfg: ViTConfig,
  images: readonly Tensor[],
  truths: readonly Tensor[],
  o: { normalization?: Normalization; threshold?: number } = {},
): number[][] {
  if (images.length !== truths.length) {
    throw new RangeError(`attentionJaccards: ${images.length} images but ${truths.length} true masks`);
  }
  return images.map((image, i) =>
    tidy(() => {
      const { masks } = attentionMaps(p, cfg, image, o);
      return headJaccards(masks, truths[i]);
    })
  );
}
