/**
 * Evaluation of learned features: weighted k-NN classification (`knn.ts`), as the official `eval_knn.py`.
 * @module
 */
export * from "./knn.ts";
