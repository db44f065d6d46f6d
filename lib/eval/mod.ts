/**
 * Evaluation of learned features: weighted k-NN classification (`knn.ts`), as the official `eval_knn.py`, linear
 * evaluation (`linear.ts`), as the official `eval_linear.py`, fine-tuning of the whole backbone (`finetune.ts`),
 * attention maps and masks (`attention.ts`), as the official `visualize_attention.py`, and the Jaccard of those masks
 * against true object masks (`segmentation.ts`), as the paper's Table 8, video object segmentation by
 * label propagation (`propagate.ts`), as the official `eval_video_segmentation.py`, with label masks as indexed PNGs
 * and the DAVIS scores J and F (`masks.ts`), image retrieval and copy detection (`retrieval.ts`, with the
 * eigendecomposition its whitening needs in `eigen.ts`), as the official `eval_image_retrieval.py` and
 * `eval_copy_detection.py`, the evaluation a training run ends with
 * (`report.ts`), and the page that shows a run (`run_report.ts`, with SVG charts in `charts.ts` and 2-D maps of
 * features, PCA and t-SNE, in `embedding.ts`).
 * @module
 */
export * from "./knn.ts";
export * from "./report.ts";
export * from "./linear.ts";
export * from "./finetune.ts";
export * from "./attention.ts";
export * from "./segmentation.ts";
export * from "./propagate.ts";
export * from "./masks.ts";
export * from "./retrieval.ts";
export * from "./eigen.ts";
export * from "./charts.ts";
export * from "./embedding.ts";
export * from "./run_report.ts";
