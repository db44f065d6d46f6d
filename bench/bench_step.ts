/**
 * The training step the step benchmarks measure (`compare_train_step.ts`, `profile_step.ts`): ViT-T/4 at 28 px
 * (dim 192, depth 12, heads 3, patch 4), batch 64, 2 x 28 px + 6 x 12 px crops, K 4096, AdamW, clipping, EMA, as
 * `train_step_torch.py` builds it on the PyTorch side.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dispose } from "../mod.ts";
 * import { B, benchStep } from "./bench_step.ts";
 * const { state, views } = benchStep("fp32");
 * assert.deepEqual([views.length, views[0].shape], [8, [B, 1, 28, 28]]);
 * dispose([state, views]);
 * ```
 * @module
 */
import { Generator, randn, type Tensor } from "../mod.ts";
import { type DinoConfig, dinoConfig } from "../lib/model/dino.ts";
import { type DinoHyper, dinoHyper, initTrainState, type TrainState } from "../lib/training/step.ts";

/** Images per step. */
export const B = 64;
/** The head's output dimension. */
export const K = 4096;

/** The network, hyperparameters, a fresh state and the 8 views of the benchmark step (the caller owns them). */
export function benchStep(precision: "fp32" | "bf16"): {
  cfg: DinoConfig;
  h: DinoHyper;
  state: TrainState;
  views: Tensor[];
} {
  const cfg = dinoConfig({ arch: "vit_tiny", patchSize: 4, imgSize: 28, inChans: 1, outDim: K });
  const h = dinoHyper({
    epochs: 100,
    itersPerEpoch: 1000,
    batchSize: B,
    warmupEpochs: 0,
    freezeLastLayer: 1,
    precision,
  });
  using g = new Generator(1);
  const views = [
    ...Array.from({ length: 2 }, () => randn(g, [B, 1, 28, 28])),
    ...Array.from({ length: 6 }, () => randn(g, [B, 1, 12, 12])),
  ];
  return { cfg, h, state: initTrainState(cfg, h, 0), views };
}
