/**
 * The training program's configuration: presets, command-line flags named as
 * the official `main_dino.py` arguments in kebab-case, and a JSON `--config`
 * file of the same names (flags win). Parsing is pure and reports every
 * problem as a {@linkcode UsageError}, before anything is written.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTrainArgs } from "./settings.ts";
 * const cfg = parseTrainArgs(["--epochs", "2", "--lr", "0.001"]);
 * assert(cfg !== "help");
 * assert.deepEqual([cfg.preset, cfg.epochs, cfg.arch], ["fmnist", 2, "vit_tiny"]);
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { ARCHS } from "../model/vit.ts";

/** A bad flag, value or combination: the program prints it with the usage and exits with code 2. */
export class UsageError extends Error {
  /** A usage problem. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Everything a training run is made of. Field names are the flags' in camelCase. */
export interface TrainConfig {
  /** The preset the defaults come from. */
  preset: string;
  /** The data: fmnist, cifar10, cifar100 or a folder (image classes, CIFAR or IDX files). */
  data: string;
  /** The backbone's architecture. */
  arch: keyof typeof ARCHS;
  /** Patch side in pixels. */
  patchSize: number;
  /** Token width D (the arch's unless set). */
  embedDim: number;
  /** Number of blocks. */
  depth: number;
  /** Attention heads. */
  numHeads: number;
  /** K, the head's output dimension. */
  outDim: number;
  /** Head MLP hidden width. */
  hiddenDim: number;
  /** Head bottleneck width. */
  bottleneckDim: number;
  /** Batch norm in the head MLP (true/false). */
  useBnInHead: boolean;
  /** Fix the last layer's weight_g at 1 (true/false). */
  normLastLayer: boolean;
  /** Teacher EMA momentum, cosine to 1. */
  momentumTeacher: number;
  /** Teacher temperature at the start of its warmup. */
  warmupTeacherTemp: number;
  /** Teacher temperature after the warmup. */
  teacherTemp: number;
  /** Epochs of teacher temperature warmup. */
  warmupTeacherTempEpochs: number;
  /** Weight decay at the start (cosine schedule). */
  weightDecay: number;
  /** Weight decay at the end. */
  weightDecayEnd: number;
  /** Per-parameter gradient norm clip; 0 disables. */
  clipGrad: number;
  /** Images per step. */
  batchSize: number;
  /** Training epochs. */
  epochs: number;
  /** Epochs with the head's last layer frozen. */
  freezeLastLayer: number;
  /** Peak learning rate at batch 256 (scaled by batch/256). */
  lr: number;
  /** Linear lr warmup, in epochs (may be fractional). */
  warmupEpochs: number;
  /** Final learning rate. */
  minLr: number;
  /** The optimizer: adamw or sgd. */
  optimizer: "adamw" | "sgd";
  /** Stochastic depth of the student's last block. */
  dropPathRate: number;
  /** Area range of the global crops, as lo,hi. */
  globalCropsScale: [number, number];
  /** Local crops per image; 0 disables multi-crop. */
  localCropsNumber: number;
  /** Area range of the local crops, as lo,hi. */
  localCropsScale: [number, number];
  /** Side of the global crops. */
  globalCropsSize: number;
  /** Side of the local crops. */
  localCropsSize: number;
  /** Side image folders are decoded to. */
  imageSize: number;
  /** Random seed. */
  seed: number;
  /** Where checkpoints and metrics.jsonl go. */
  outputDir: string;
  /** Micro-batches per step (gradient accumulation). */
  accumSteps: number;
  /** The device: auto, cpu or cuda. */
  device: "auto" | "cpu" | "cuda";
  /** A checkpoint to continue from, or 'latest' (the output dir's). */
  resume: string;
  /** Also keep a checkpoint every N epochs. */
  saveckpFreq: number;
  /** K-NN accuracy every N epochs (0: only at the end). */
  knnEvery: number;
  /** Neighbours of the k-NN evaluation. */
  knnK: number;
  /** Temperature of the k-NN vote weights. */
  knnTemperature: number;
  /** Steps between metrics records. */
  logEvery: number;
  /** Use only the first N training images (0: all). */
  trainLimit: number;
  /** Use only the first N test images (0: all). */
  testLimit: number;
  /** Stop after N steps (0: run all epochs). */
  maxSteps: number;
  /** Image decoding threads (0: the machine's cores). */
  numWorkers: number;
  /** Libtorch compute threads (0: libtorch's default; matrix products use OpenBLAS's own). */
  threads: number;
}

/** A preset: every setting but those of one run (preset name, output folder, resume, device). */
export type Preset = Omit<TrainConfig, "preset" | "outputDir" | "resume" | "device">;

const OFFICIAL: Preset = {
  data: "",
  arch: "vit_small",
  patchSize: 16,
  embedDim: 384,
  depth: 12,
  numHeads: 6,
  outDim: 65536,
  hiddenDim: 2048,
  bottleneckDim: 256,
  useBnInHead: false,
  normLastLayer: true,
  momentumTeacher: 0.996,
  warmupTeacherTemp: 0.04,
  teacherTemp: 0.04,
  warmupTeacherTempEpochs: 0,
  weightDecay: 0.04,
  weightDecayEnd: 0.4,
  clipGrad: 3,
  batchSize: 64,
  epochs: 100,
  freezeLastLayer: 1,
  lr: 0.0005,
  warmupEpochs: 10,
  minLr: 1e-6,
  optimizer: "adamw",
  dropPathRate: 0.1,
  globalCropsScale: [0.4, 1],
  localCropsNumber: 8,
  localCropsScale: [0.05, 0.4],
  globalCropsSize: 224,
  localCropsSize: 96,
  imageSize: 256,
  seed: 0,
  accumSteps: 1,
  saveckpFreq: 20,
  knnEvery: 0,
  knnK: 20,
  knnTemperature: 0.07,
  logEvery: 10,
  trainLimit: 0,
  testLimit: 0,
  maxSteps: 0,
  numWorkers: 0,
  threads: 0,
};

/**
 * The presets. `fmnist` (the default) is sized to finish on a 2-core CPU in
 * about 10 minutes, k-NN evaluations included; `cifar10` is a small-image
 * recipe for longer or GPU runs; `imagenet-vits16` is the official recipe
 * exactly (ViT-S/16, K 65536, 2 x 224 + 8 x 96, 100 epochs).
 */
export const PRESETS: Record<string, Preset> = {
  "fmnist": {
    ...OFFICIAL,
    data: "fmnist",
    arch: "vit_tiny",
    // Sized for training and the three k-NN evaluations in about 10 minutes on a 2-core CPU (8:20 to 11:07 on a 2.5 GHz
    // Xeon), with patch 7 (16 tokens a global crop). Compared at equal cost: one epoch at batch 64 learned more than
    // two at batch 128, two local crops more than four, a sharper teacher (0.02, under the official 0.04-0.07) more
    // than 0.04 or 0.01, and lr 0.003 more than 0.002, 0.004 or 0.005, in so short a run.
    patchSize: 7,
    embedDim: 128,
    depth: 4,
    numHeads: 4,
    outDim: 1024,
    hiddenDim: 512,
    bottleneckDim: 128,
    momentumTeacher: 0.99,
    warmupTeacherTemp: 0.02,
    teacherTemp: 0.02,
    batchSize: 64,
    epochs: 1,
    freezeLastLayer: 0,
    lr: 0.003,
    warmupEpochs: 0.2,
    localCropsNumber: 2,
    globalCropsSize: 28,
    localCropsSize: 14,
    imageSize: 28,
    saveckpFreq: 1,
  },
  "cifar10": {
    ...OFFICIAL,
    data: "cifar10",
    arch: "vit_tiny",
    patchSize: 4,
    embedDim: 192,
    depth: 6,
    numHeads: 3,
    outDim: 4096,
    momentumTeacher: 0.996,
    batchSize: 256,
    epochs: 100,
    lr: 0.0005,
    localCropsNumber: 6,
    globalCropsSize: 32,
    localCropsSize: 16,
    imageSize: 32,
    knnEvery: 10,
  },
  "imagenet-vits16": { ...OFFICIAL },
};

/** Flag definitions: name, kind, help. Defaults come from the preset. */
const FLAGS: [keyof TrainConfig, "string" | "number" | "int" | "bool" | "pair", string][] = [
  ["data", "string", "fmnist, cifar10, cifar100 or a folder (image classes, CIFAR or IDX files)"],
  ["arch", "string", `backbone: ${Object.keys(ARCHS).join(", ")}`],
  ["patchSize", "int", "patch side in pixels"],
  ["embedDim", "int", "token width D (the arch's unless set)"],
  ["depth", "int", "number of blocks"],
  ["numHeads", "int", "attention heads"],
  ["outDim", "int", "K, the head's output dimension"],
  ["hiddenDim", "int", "head MLP hidden width"],
  ["bottleneckDim", "int", "head bottleneck width"],
  ["useBnInHead", "bool", "batch norm in the head MLP (true/false)"],
  ["normLastLayer", "bool", "fix the last layer's weight_g at 1 (true/false)"],
  ["momentumTeacher", "number", "teacher EMA momentum, cosine to 1"],
  ["warmupTeacherTemp", "number", "teacher temperature at the start of its warmup"],
  ["teacherTemp", "number", "teacher temperature after the warmup"],
  ["warmupTeacherTempEpochs", "int", "epochs of teacher temperature warmup"],
  ["weightDecay", "number", "weight decay at the start (cosine schedule)"],
  ["weightDecayEnd", "number", "weight decay at the end"],
  ["clipGrad", "number", "per-parameter gradient norm clip; 0 disables"],
  ["batchSize", "int", "images per step"],
  ["epochs", "int", "training epochs"],
  ["freezeLastLayer", "int", "epochs with the head's last layer frozen"],
  ["lr", "number", "peak learning rate at batch 256 (scaled by batch/256)"],
  ["warmupEpochs", "number", "linear lr warmup, in epochs (may be fractional)"],
  ["minLr", "number", "final learning rate"],
  ["optimizer", "string", "adamw or sgd"],
  ["dropPathRate", "number", "stochastic depth of the student's last block"],
  ["globalCropsScale", "pair", "area range of the global crops, as lo,hi"],
  ["localCropsNumber", "int", "local crops per image; 0 disables multi-crop"],
  ["localCropsScale", "pair", "area range of the local crops, as lo,hi"],
  ["globalCropsSize", "int", "side of the global crops"],
  ["localCropsSize", "int", "side of the local crops"],
  ["imageSize", "int", "side image folders are decoded to"],
  ["seed", "int", "random seed"],
  ["outputDir", "string", "where checkpoints and metrics.jsonl go"],
  ["accumSteps", "int", "micro-batches per step (gradient accumulation)"],
  ["device", "string", "auto, cpu or cuda"],
  ["resume", "string", "a checkpoint to continue from, or 'latest' (the output dir's)"],
  ["saveckpFreq", "int", "also keep a checkpoint every N epochs"],
  ["knnEvery", "int", "k-NN accuracy every N epochs (0: only at the end)"],
  ["knnK", "int", "neighbours of the k-NN evaluation"],
  ["knnTemperature", "number", "temperature of the k-NN vote weights"],
  ["logEvery", "int", "steps between metrics records"],
  ["trainLimit", "int", "use only the first N training images (0: all)"],
  ["testLimit", "int", "use only the first N test images (0: all)"],
  ["maxSteps", "int", "stop after N steps (0: run all epochs)"],
  ["numWorkers", "int", "image decoding threads (0: the machine's cores)"],
  ["threads", "int", "libtorch compute threads (0: libtorch's default; matrix products use OpenBLAS's own)"],
];

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * The `--help` text, with each flag's default under `preset`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { trainHelp } from "./settings.ts";
 * const help = trainHelp("imagenet-vits16");
 * assert.match(help, /--epochs +training epochs \(default: 100\)/);
 * ```
 */
export function trainHelp(preset = "fmnist"): string {
  const p = PRESETS[preset];
  const lines = FLAGS.map(([name, kind, help]) => {
    const value = (p as unknown as Record<string, unknown>)[name];
    const shown = kind === "pair" ? (value as number[]).join(",") : String(value ?? "");
    return `  --${kebab(name).padEnd(30)} ${help}${shown !== "" ? ` (default: ${shown})` : ""}`;
  });
  return [
    "usage: deno task train [--preset NAME] [--config FILE.json] [flags]",
    "",
    "Trains a ViT with DINO, then reports weighted k-NN accuracy (k 20, T 0.07) of the",
    "teacher, of the same network at initialisation, and of raw pixels.",
    "",
    "  --preset NAME                    " + Object.keys(PRESETS).join(", ") + ` (default: fmnist)`,
    "  --config FILE                    a JSON object of these flags (kebab- or camelCase); flags win",
    "  -h, --help                       this help",
    "",
    `flags (defaults of the ${preset} preset):`,
    `  --${"output-dir".padEnd(30)} where checkpoints and metrics.jsonl go (default: output)`,
    ...lines.filter((l) => !l.includes("--output-dir")),
  ].join("\n");
}

function convert(name: string, kind: string, raw: unknown): unknown {
  const flag = `--${kebab(name)}`;
  const text = String(raw).trim();
  switch (kind) {
    case "string":
      return text;
    case "bool":
      if (raw === true || text === "true") return true;
      if (raw === false || text === "false") return false;
      throw new UsageError(`${flag} takes true or false, got "${text}"`);
    case "int":
    case "number": {
      const v = typeof raw === "number" ? raw : Number(text);
      if (text === "" || !Number.isFinite(v)) throw new UsageError(`${flag} takes a number, got "${text}"`);
      if (kind === "int" && !Number.isInteger(v)) throw new UsageError(`${flag} takes an integer, got "${text}"`);
      return v;
    }
    case "pair": {
      const parts = Array.isArray(raw) ? raw : text.split(/[,\s]+/);
      const v = parts.map(Number);
      if (v.length !== 2 || v.some((x) => !Number.isFinite(x))) {
        throw new UsageError(`${flag} takes two numbers as lo,hi, got "${text}"`);
      }
      return v;
    }
  }
  throw new UsageError(`unknown flag kind for ${flag}`);
}

/**
 * Checks ranges and combinations; throws a {@linkcode UsageError} naming the fix.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTrainArgs, type TrainConfig, UsageError, validate } from "./settings.ts";
 * const ok = parseTrainArgs([]) as TrainConfig;
 * assert.equal(validate(ok), ok);
 * assert.throws(() => validate({ ...ok, warmupEpochs: ok.epochs + 1 }), UsageError);
 * ```
 */
export function validate(c: TrainConfig): TrainConfig {
  const bad = (m: string): never => {
    throw new UsageError(m);
  };
  if (!(c.arch in ARCHS)) bad(`--arch must be one of ${Object.keys(ARCHS).join(", ")}, got "${c.arch}"`);
  if (!["adamw", "sgd"].includes(c.optimizer)) bad(`--optimizer must be adamw or sgd, got "${c.optimizer}"`);
  if (!["auto", "cpu", "cuda"].includes(c.device)) bad(`--device must be auto, cpu or cuda, got "${c.device}"`);
  const positive: (keyof TrainConfig)[] = [
    "patchSize",
    "embedDim",
    "depth",
    "numHeads",
    "outDim",
    "hiddenDim",
    "bottleneckDim",
    "batchSize",
    "epochs",
    "accumSteps",
    "globalCropsSize",
    "imageSize",
    "knnK",
    "logEvery",
    "saveckpFreq",
  ];
  for (const k of positive) if (!((c[k] as number) > 0)) bad(`--${kebab(k)} must be positive, got ${c[k]}`);
  const nonNegative: (keyof TrainConfig)[] = [
    "localCropsNumber",
    "warmupEpochs",
    "warmupTeacherTempEpochs",
    "freezeLastLayer",
    "clipGrad",
    "lr",
    "minLr",
    "weightDecay",
    "weightDecayEnd",
    "dropPathRate",
    "knnEvery",
    "trainLimit",
    "testLimit",
    "maxSteps",
    "numWorkers",
    "threads",
  ];
  for (const k of nonNegative) if (!((c[k] as number) >= 0)) bad(`--${kebab(k)} must be >= 0, got ${c[k]}`);
  if (c.localCropsNumber > 0 && !(c.localCropsSize > 0)) {
    bad(`--local-crops-size must be positive, got ${c.localCropsSize}`);
  }
  for (const k of ["momentumTeacher", "teacherTemp", "warmupTeacherTemp", "knnTemperature"] as const) {
    if (!(c[k] > 0 && c[k] <= 1)) bad(`--${kebab(k)} must be in (0, 1], got ${c[k]}`);
  }
  if (c.dropPathRate >= 1) bad(`--drop-path-rate must be below 1, got ${c.dropPathRate}`);
  for (const k of ["globalCropsScale", "localCropsScale"] as const) {
    const [lo, hi] = c[k];
    if (!(lo > 0 && lo <= hi && hi <= 1)) bad(`--${kebab(k)} must satisfy 0 < lo <= hi <= 1, got ${lo},${hi}`);
  }
  if (c.embedDim % c.numHeads !== 0) bad(`--embed-dim ${c.embedDim} does not divide into --num-heads ${c.numHeads}`);
  if (c.globalCropsSize % c.patchSize !== 0) {
    bad(`--global-crops-size ${c.globalCropsSize} is not a multiple of --patch-size ${c.patchSize}`);
  }
  if (c.localCropsNumber > 0 && c.localCropsSize % c.patchSize !== 0) {
    bad(`--local-crops-size ${c.localCropsSize} is not a multiple of --patch-size ${c.patchSize}`);
  }
  if (c.batchSize % c.accumSteps !== 0) {
    bad(`--batch-size ${c.batchSize} does not divide into --accum-steps ${c.accumSteps}`);
  }
  if (c.warmupEpochs > c.epochs) bad(`--warmup-epochs ${c.warmupEpochs} exceeds --epochs ${c.epochs}`);
  if (c.warmupTeacherTempEpochs > c.epochs) {
    bad(`--warmup-teacher-temp-epochs ${c.warmupTeacherTempEpochs} exceeds --epochs ${c.epochs}`);
  }
  if (c.minLr > c.lr * c.batchSize / 256) {
    bad(`--min-lr ${c.minLr} is above the scaled peak lr ${c.lr * c.batchSize / 256}`);
  }
  if (!c.data) bad("--data is required with this preset (fmnist, cifar10, cifar100 or a folder)");
  if (!c.outputDir) bad("--output-dir must not be empty");
  return c;
}

/**
 * Parses the training flags (and `--config`) into a validated configuration.
 * Throws {@linkcode UsageError} for an unknown flag, a bad value or an
 * inconsistent combination; returns `"help"` for `-h`/`--help`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTrainArgs } from "./settings.ts";
 * const cfg = parseTrainArgs(["--preset", "imagenet-vits16", "--data", "/data/imagenet"]);
 * assert(cfg !== "help");
 * assert.deepEqual([cfg.arch, cfg.patchSize, cfg.outDim, cfg.data], ["vit_small", 16, 65536, "/data/imagenet"]);
 * assert.equal(parseTrainArgs(["--help"]), "help");
 * ```
 */
export function parseTrainArgs(
  args: readonly string[],
  readFile: (path: string) => string = Deno.readTextFileSync,
): TrainConfig | "help" {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    preset: { type: "string" },
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
    "output-dir": { type: "string" },
  };
  for (const [name] of FLAGS) options[kebab(name)] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: [...args], options, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new UsageError((e instanceof Error ? e.message : String(e)).replace(/\. To specify.*$/s, ""));
  }
  if (values.help) return "help";
  let fromFile: Record<string, unknown> = {};
  if (typeof values.config === "string") {
    let text: string;
    try {
      text = readFile(values.config);
    } catch (e) {
      throw new UsageError(`--config ${values.config} cannot be read: ${e instanceof Error ? e.message : e}`);
    }
    try {
      fromFile = JSON.parse(text);
    } catch (e) {
      throw new UsageError(`--config ${values.config} is not valid JSON: ${e instanceof Error ? e.message : e}`);
    }
    if (typeof fromFile !== "object" || fromFile === null || Array.isArray(fromFile)) {
      throw new UsageError(`--config ${values.config} must hold a JSON object of flags`);
    }
  }
  const camel = (k: string) => k.replace(/[-_]([a-z])/g, (_, c) => c.toUpperCase());
  const file: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fromFile)) file[camel(k)] = v;
  const presetName = String(values.preset ?? file.preset ?? "fmnist");
  const preset = PRESETS[presetName];
  if (!preset) throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(", ")}, got "${presetName}"`);
  const known = new Set<string>(["preset", "outputDir", ...FLAGS.map(([n]) => n)]);
  for (const k of Object.keys(file)) {
    if (!known.has(k)) throw new UsageError(`--config: unknown setting "${k}"`);
  }
  const config: Record<string, unknown> = {
    ...preset,
    preset: presetName,
    outputDir: "output",
    device: "auto",
    resume: "",
  };
  // An arch sets its width and heads unless those are given too.
  const arch = (values.arch ?? file.arch) as string | undefined;
  if (arch && arch in ARCHS) Object.assign(config, ARCHS[arch as keyof typeof ARCHS]);
  const kinds = new Map<string, string>([
    ["outputDir", "string"],
    ...FLAGS.map(([n, k]) => [n, k] as [string, string]),
  ]);
  for (const source of [file, Object.fromEntries(Object.entries(values).map(([k, v]) => [camel(k), v]))]) {
    for (const [k, v] of Object.entries(source)) {
      if (v === undefined || k === "preset" || k === "config" || k === "help") continue;
      config[k] = convert(k, kinds.get(k)!, v);
    }
  }
  return validate(config as unknown as TrainConfig);
}
