/**
 * Every setting of a training run, declared once: its name (the field of
 * {@linkcode Settings}), type, default (the official `main_dino.py` value), the
 * official argument it mirrors, a help line and the group it belongs to. The
 * command line's flags and `--help`, the `--config` JSON, validation, the
 * checkpoint's saved configuration and the values handed to the model,
 * training and augmentation all derive from {@linkcode SETTINGS}.
 *
 * Errors are {@linkcode SettingError}s that name settings, not flags: a
 * program renders the names its own way (the CLI as `--kebab-case` flags).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SETTINGS } from "./settings.ts";
 * assert.deepEqual([SETTINGS.lr.default, SETTINGS.lr.official, SETTINGS.lr.group], [0.0005, "lr", "optimisation"]);
 * ```
 * @module
 */
import { defaultMaxImagePixels, MAX_IMAGE_PIXELS } from "../../ffi/mod.ts";
import { BACKBONE_ARCHS } from "../model/backbone.ts";
import { PRECISIONS } from "../model/precision.ts";

/** What a setting is about; `--help` lists the settings by group. */
export type Group = "model" | "optimisation" | "augmentation" | "data" | "run";

/** The constraint a number setting must meet. */
export type Range = "positive" | "nonNegative" | "unit" | "belowOne";

/** One setting's declaration. */
export interface Declaration<T> {
  /** How a value is read: a string, integer, number, boolean, `lo,hi` pair, or one of `choices`. */
  kind: "string" | "int" | "number" | "bool" | "pair" | "choice";
  /** The official default (presets override it). */
  default: T;
  /** The official argument of `main_dino.py` (or the official class) it mirrors; "" for settings of this project. */
  official: string;
  /** One line for `--help`. */
  help: string;
  /** The group it belongs to. */
  group: Group;
  /** The allowed values of a choice. */
  choices?: readonly string[];
  /** The range of a number; pairs are area fractions 0 < lo <= hi <= 1. */
  range?: Range;
  /** The largest value a number may take: a bound on what a flag or a file can make the program allocate. */
  max?: number;
  /** Whether a resumed run may change it (it does not change what is trained). */
  resumable?: boolean;
}

type Extra = { official?: string; range?: Range; max?: number; resumable?: boolean };
const declare =
  <T>(kind: Declaration<T>["kind"]) => (d: T, help: string, group: Group, o: Extra = {}): Declaration<T> => ({
    kind,
    default: d,
    help,
    group,
    official: "",
    ...o,
  });
const str = declare<string>("string"), int = declare<number>("int"), num = declare<number>("number");
const bool = declare<boolean>("bool"), pair = declare<[number, number]>("pair");
function choice<const C extends readonly string[]>(
  choices: C,
  d: C[number],
  help: string,
  group: Group,
  o: Extra = {},
): Declaration<C[number]> {
  return { kind: "choice", choices, default: d, help, group, official: "", ...o };
}

const ARCH_NAMES = BACKBONE_ARCHS;

/** The declarations, in the order `--help` lists them within a group. */
export const SETTINGS = {
  // model
  arch: choice(
    ARCH_NAMES,
    "vit_small",
    `backbone: ${ARCH_NAMES.join(", ")} (a ResNet takes no ViT shape flags)`,
    "model",
    { official: "arch" },
  ),
  patchSize: int(16, "patch side in pixels", "model", { max: 64, official: "patch_size", range: "positive" }),
  embedDim: int(384, "token width D (the arch's unless set)", "model", { max: 8192, range: "positive" }),
  depth: int(12, "number of blocks", "model", { max: 128, range: "positive" }),
  numHeads: int(6, "attention heads", "model", { max: 128, range: "positive" }),
  outDim: int(65536, "K, the head's output dimension", "model", {
    max: 1 << 20,
    official: "out_dim",
    range: "positive",
  }),
  hiddenDim: int(2048, "head MLP hidden width", "model", {
    max: 16384,
    official: "DINOHead hidden_dim",
    range: "positive",
  }),
  bottleneckDim: int(256, "head bottleneck width", "model", {
    max: 8192,
    official: "DINOHead bottleneck_dim",
    range: "positive",
  }),
  useBnInHead: bool(false, "batch norm in the head MLP (true/false)", "model", { official: "use_bn_in_head" }),
  normLastLayer: bool(true, "fix the last layer's weight_g at 1 (true/false)", "model", {
    official: "norm_last_layer",
  }),
  dropPathRate: num(0.1, "stochastic depth of the student's last block", "model", {
    official: "drop_path_rate",
    range: "belowOne",
  }),
  predictorDim: int(0, "ablation: hidden width of a predictor MLP on the student's output (0: none)", "model", {
    max: 65536,
    range: "nonNegative",
  }),
  // optimisation
  optimizer: choice(
    ["adamw", "sgd", "lars"] as const,
    "adamw",
    "adamw, sgd (momentum 0.9) or lars (the official utils.LARS, for convnets)",
    "optimisation",
    { official: "optimizer" },
  ),
  lr: num(0.0005, "peak learning rate at batch 256 (scaled by batch/256)", "optimisation", {
    official: "lr",
    range: "nonNegative",
  }),
  minLr: num(1e-6, "final learning rate", "optimisation", { official: "min_lr", range: "nonNegative" }),
  warmupEpochs: num(10, "linear lr warmup, in epochs (may be fractional)", "optimisation", {
    official: "warmup_epochs",
    range: "nonNegative",
  }),
  weightDecay: num(0.04, "weight decay at the start (cosine schedule)", "optimisation", {
    official: "weight_decay",
    range: "nonNegative",
  }),
  weightDecayEnd: num(0.4, "weight decay at the end", "optimisation", {
    official: "weight_decay_end",
    range: "nonNegative",
  }),
  clipGrad: num(3, "per-parameter gradient norm clip; 0 disables", "optimisation", {
    official: "clip_grad",
    range: "nonNegative",
  }),
  batchSize: int(64, "images per step", "optimisation", {
    max: 1 << 16,
    official: "batch_size_per_gpu",
    range: "positive",
  }),
  accumSteps: int(1, "micro-batches per step (gradient accumulation)", "optimisation", {
    max: 1 << 16,
    range: "positive",
  }),
  epochs: int(100, "training epochs", "optimisation", { max: 100000, official: "epochs", range: "positive" }),
  freezeLastLayer: int(1, "epochs with the head's last layer frozen", "optimisation", {
    max: 100000,
    official: "freeze_last_layer",
    range: "nonNegative",
  }),
  momentumTeacher: num(0.996, "teacher EMA momentum, cosine to --momentum-teacher-end", "optimisation", {
    official: "momentum_teacher",
    range: "unit",
  }),
  momentumTeacherEnd: num(
    1,
    "teacher EMA momentum at the end (the official code: 1, a frozen teacher; solo-learn's final_tau)",
    "optimisation",
    { range: "unit" },
  ),
  teacherMode: choice(
    ["ema", "student"] as const,
    "ema",
    "ablation: the teacher is the student's EMA (ema) or the student itself (student)",
    "optimisation",
  ),
  warmupTeacherTemp: num(0.04, "teacher temperature at the start of its warmup", "optimisation", {
    official: "warmup_teacher_temp",
    range: "unit",
  }),
  teacherTemp: num(0.04, "teacher temperature after the warmup", "optimisation", {
    official: "teacher_temp",
    range: "unit",
  }),
  warmupTeacherTempEpochs: int(0, "epochs of teacher temperature warmup", "optimisation", {
    max: 100000,
    official: "warmup_teacher_temp_epochs",
    range: "nonNegative",
  }),
  studentTemp: num(0.1, "student temperature", "optimisation", { official: "DINOLoss student_temp", range: "unit" }),
  centerMomentum: num(0.9, "momentum of the teacher-output center", "optimisation", {
    official: "DINOLoss center_momentum",
    range: "unit",
  }),
  criterion: choice(
    ["ce", "mse"] as const,
    "ce",
    "ablation: cross-entropy (ce) or mean squared error (mse)",
    "optimisation",
  ),
  centering: choice(
    ["center", "none", "sinkhorn"] as const,
    "center",
    "ablation: how teacher targets are made: center, none or sinkhorn (Sinkhorn-Knopp)",
    "optimisation",
  ),
  precision: choice(
    PRECISIONS,
    "fp32",
    "matrix products in fp32, bf16 (autocast; CPU or CUDA) or fp16 (autocast with dynamic loss scaling; CUDA, " +
      "the official --use_fp16 true); softmax, norms, the loss and the optimizer stay fp32",
    "optimisation",
    { official: "use_fp16", resumable: true },
  ),
  // augmentation
  augmentation: choice(
    ["imagenet", "cifar32", "fmnist28"] as const,
    "imagenet",
    "colour, blur and solarisation recipe: imagenet (official), cifar32 or fmnist28",
    "augmentation",
  ),
  globalCropsScale: pair([0.4, 1], "area range of the global crops, as lo,hi", "augmentation", {
    official: "global_crops_scale",
  }),
  localCropsNumber: int(8, "local crops per image; 0 disables multi-crop", "augmentation", {
    max: 64,
    official: "local_crops_number",
    range: "nonNegative",
  }),
  localCropsScale: pair([0.05, 0.4], "area range of the local crops, as lo,hi", "augmentation", {
    official: "local_crops_scale",
  }),
  globalCropsSize: int(224, "side of the global crops", "augmentation", { max: 4096, range: "positive" }),
  localCropsSize: int(96, "side of the local crops", "augmentation", { max: 4096, range: "nonNegative" }),
  // data
  data: str("", "fmnist, cifar10, cifar100 or a path (IDX file or folder, CIFAR binaries, image classes)", "data", {
    official: "data_path",
  }),
  imageSize: int(256, "side image folders are decoded to", "data", { max: 8192, range: "positive" }),
  trainLimit: int(0, "use only the first N training images (0: all)", "data", { range: "nonNegative" }),
  testLimit: int(0, "use only the first N test images (0: all)", "data", { range: "nonNegative", resumable: true }),
  numWorkers: int(0, "image decoding threads (0: the machine's cores)", "data", {
    max: 1024,
    official: "num_workers",
    range: "nonNegative",
    resumable: true,
  }),
  maxImagePixels: {
    ...int(
      MAX_IMAGE_PIXELS,
      "largest image (width x height) decoded; larger files are skipped (env DINO_MAX_IMAGE_PIXELS)",
      "data",
      { range: "positive", resumable: true },
    ),
    // The environment's budget, read when the settings are (a wrong value is then an error of the run, not of
    // every import of this module).
    get default() {
      return defaultMaxImagePixels();
    },
  },
  // run
  outputDir: str("output", "where checkpoints and metrics.jsonl go", "run", {
    official: "output_dir",
    resumable: true,
  }),
  resume: str("", "a checkpoint to continue from, or 'latest' (the output dir's)", "run", { resumable: true }),
  initWeights: str(
    "",
    "weights to start from, with a fresh optimizer and schedules: a full checkpoint's student and teacher, " +
      "heads included (official .pth or this project's), or a backbone (fresh heads)",
    "run",
    { resumable: true },
  ),
  device: choice(["auto", "cpu", "cuda"] as const, "auto", "auto, cpu or cuda", "run", { resumable: true }),
  augmentOn: choice(
    ["cpu", "device"] as const,
    "cpu",
    "where a GPU run makes its views: cpu (native threads, during the previous step) or device (op by op, between steps)",
    "run",
    { resumable: true },
  ),
  seed: int(0, "random seed", "run", { max: Number.MAX_SAFE_INTEGER, official: "seed", range: "nonNegative" }),
  saveckpFreq: int(20, "also keep a checkpoint every N epochs (0: none)", "run", {
    max: 100000,
    official: "saveckp_freq",
    range: "nonNegative",
    resumable: true,
  }),
  knnEvery: int(0, "k-NN accuracy every N epochs (0: only at the end)", "run", {
    max: 100000,
    range: "nonNegative",
    resumable: true,
  }),
  knnK: int(20, "neighbours of the k-NN evaluation", "run", {
    max: 100000,
    official: "eval_knn nb_knn",
    range: "positive",
    resumable: true,
  }),
  knnTemperature: num(0.07, "temperature of the k-NN vote weights", "run", {
    official: "eval_knn temperature",
    range: "unit",
    resumable: true,
  }),
  report: bool(true, "write report.html (deno task report) at each k-NN evaluation and at the end", "run", {
    resumable: true,
  }),
  evalLinear: bool(false, "also report a linear probe at the end (cached features, as deno task linear)", "run", {
    resumable: true,
  }),
  logEvery: int(10, "steps between metrics records", "run", { range: "positive", resumable: true }),
  maxSteps: int(0, "stop after N steps (0: run all epochs)", "run", { range: "nonNegative", resumable: true }),
  threads: int(0, "compute threads of libtorch and OpenBLAS alike (0: one per core)", "run", {
    max: 1024,
    range: "nonNegative",
    resumable: true,
  }),
  nprocPerNode: int(
    1,
    "data-parallel processes to start on this machine, as torchrun's (--batch-size is per process; " +
      "a program started by torchrun or SLURM joins their group instead)",
    "run",
    { max: 1024, range: "positive", resumable: true },
  ),
  distBackend: choice(
    ["auto", "gloo", "nccl"] as const,
    "auto",
    "collective backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl",
    "run",
    { official: "dist_url", resumable: true },
  ),
  distTimeout: num(300, "seconds the ranks wait for each other (to join, in a collective) before stopping", "run", {
    max: 86400,
    range: "positive",
    resumable: true,
  }),
  masterPort: int(29500, "rendezvous port of --nproc-per-node runs (as MASTER_PORT)", "run", {
    max: 65535,
    range: "positive",
    resumable: true,
  }),
} as const;

/** A setting's name. */
export type SettingName = keyof typeof SETTINGS;

/** Everything a training run is made of: one field per declaration of {@linkcode SETTINGS}, plus its preset. */
export type Settings =
  & { -readonly [K in SettingName]: (typeof SETTINGS)[K] extends Declaration<infer T> ? T : never }
  & {
    /** The preset the defaults came from. */
    preset: string;
  };

/** The settings a preset may change: all but those of one run. */
export type Preset = Partial<Omit<Settings, "preset" | "outputDir" | "resume" | "initWeights" | "device">>;

/**
 * A bad value or combination of settings. The message names settings through
 * `nameOf` (their field names unless rendered otherwise, see
 * {@linkcode SettingError.render}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SettingError } from "./settings.ts";
 * const e = new SettingError(["lr"], (n) => `${n("lr")} must be >= 0, got -1`);
 * assert.equal(e.message, "lr must be >= 0, got -1");
 * assert.equal(e.render((name) => `--${name}`), "--lr must be >= 0, got -1");
 * ```
 */
export class SettingError extends Error {
  /** The settings the problem is about, the first being the one to change. */
  readonly settings: readonly string[];
  readonly #text: (nameOf: (name: string) => string) => string;
  /** A problem with `settings`, described by `text` given a way to name them. */
  constructor(settings: readonly string[], text: (nameOf: (name: string) => string) => string) {
    super(text((n) => n));
    this.name = "SettingError";
    this.settings = settings;
    this.#text = text;
  }
  /** The message with each setting named by `nameOf`. */
  render(nameOf: (name: string) => string): string {
    return this.#text(nameOf);
  }
}

/**
 * A setting's value from text (a flag) or JSON: numbers, booleans and pairs are
 * parsed and checked for their kind; ranges are {@linkcode validateSettings}'s.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { coerceSetting } from "./settings.ts";
 * assert.deepEqual(coerceSetting("globalCropsScale", "0.3,1"), [0.3, 1]);
 * assert.equal(coerceSetting("normLastLayer", "false"), false);
 * assert.throws(() => coerceSetting("epochs", "2.5"), /epochs takes an integer/);
 * ```
 */
export function coerceSetting(name: SettingName, raw: unknown): unknown {
  const d: Declaration<unknown> = SETTINGS[name];
  const text = String(raw).trim();
  const fail = (what: string): never => {
    throw new SettingError([name], (n) => `${n(name)} ${what}, got ${shown(text)}`);
  };
  switch (d.kind) {
    case "string":
      return text;
    case "choice":
      if (!d.choices!.includes(text)) fail(`must be one of ${d.choices!.join(", ")}`);
      return text;
    case "bool":
      if (raw === true || text === "true") return true;
      if (raw === false || text === "false") return false;
      return fail("takes true or false");
    case "int":
    case "number": {
      const v = typeof raw === "number" ? raw : Number(text);
      if (text === "" || !Number.isFinite(v)) fail("takes a number");
      if (d.kind === "int" && !Number.isInteger(v)) fail("takes an integer");
      return v;
    }
    case "pair": {
      const parts = Array.isArray(raw) ? raw : text.split(/[,\s]+/);
      const v = parts.map(Number);
      if (v.length !== 2 || v.some((x) => !Number.isFinite(x))) fail("takes two numbers as lo,hi");
      return v;
    }
  }
}

/**
 * A value as an error message quotes it: JSON, on one line, cut to 60 characters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shown } from "./settings.ts";
 * assert.equal(shown("a\nb"), '"a\\nb"');
 * assert.equal(shown("x".repeat(100)).length, 60);
 * ```
 */
export function shown(value: unknown): string {
  const text = typeof value === "number" ? String(value) : JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Whether `name` is a declared setting. */
export function isSettingName(name: string): name is SettingName {
  return Object.hasOwn(SETTINGS, name);
}
