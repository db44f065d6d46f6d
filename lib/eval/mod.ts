/**
 * Evaluation of learned features: weighted k-NN classification (`knn.ts`), as the official `eval_knn.py`, linear
 * evaluation (`linear.ts`), as the official `eval_linear.py`, attention maps and masks (`attention.ts`), as the official
 * `visualize_attention.py`, and the report a training run ends with (`report.ts`).
 * @module
 */
export * from "./knn.ts";
export * from "./report.ts";
export * from "./linear.ts";
export * from "./attention.ts";
