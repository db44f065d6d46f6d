/**
 * Datasets and their loading: Fashion-MNIST and MNIST IDX files (`idx.ts`), CIFAR binaries (`cifar.ts`),
 * folders of images (`folder.ts`), resolving a user's data path (`open.ts`), and seeded shuffled batches
 * (`loader.ts`). A {@linkcode Dataset} loads any set of indices as one u8 batch.
 * @module
 */
export * from "./dataset.ts";
export * from "./idx.ts";
export * from "./cifar.ts";
export * from "./folder.ts";
export * from "./open.ts";
export * from "./loader.ts";
export * from "./stats.ts";
