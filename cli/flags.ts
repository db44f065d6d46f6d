/**
 * The training program's command line, made from the settings' declarations:
 * each setting is a `--kebab-case` flag (the official `main_dino.py` names
 * where there is one), `--config FILE.json` holds the same names (kebab- or
 * camelCase; flags win), and `--help` lists them by group with the preset's
 * defaults. Problems are {@linkcode UsageError}s that name flags.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTrainArgs } from "./flags.ts";
 * const s = parseTrainArgs(["--epochs", "2", "--lr", "0.001"]);
 * assert(s !== "help");
 * assert.deepEqual([s.preset, s.epochs, s.arch], ["fmnist", 2, "vit_tiny"]);
 * ```
 * @module
 */
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { dirname, resolve } from "node:path";
import { exists } from "../mod.ts";
import { BACKBONE_ARCHS, type BackboneArch } from "../lib/model/backbone.ts";
import { isResNetArch } from "../lib/model/resnet.ts";
import { type EvalBackbone, loadEvalBackbone } from "../lib/weights/pretrained.ts";
import { type Dataset, openDataset } from "../lib/data/mod.ts";
import { evalResizeSide, type EvalTransform } from "../lib/eval/knn.ts";
import { defaultNormalization } from "../lib/eval/attention.ts";
import {
  type Group,
  makeSettings,
  PRESETS,
  presetSettings,
  SettingError,
  SETTINGS,
  type Settings,
} from "../lib/settings/mod.ts";

/** A bad flag, value or combination: the program prints it with the usage and exits with code 2. */
export class UsageError extends Error {
  /** A usage problem. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A setting's flag: `localCropsNumber` -> `--local-crops-number`. */
export const flagOf = (name: string): string => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * A library error as the command line says it: settings named as flags.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SettingError } from "../lib/settings/mod.ts";
 * import { usageError } from "./flags.ts";
 * const e = usageError(new SettingError(["patchSize"], (n) => `${n("patchSize")} must be positive`));
 * assert.equal(e?.message, "--patch-size must be positive");
 * assert.equal(usageError(new Error("disk full")), undefined);
 * ```
 */
export function usageError(e: unknown): UsageError | undefined {
  if (e instanceof UsageError) return e;
  if (e instanceof SettingError) return new UsageError(e.render(flagOf));
  return undefined;
}

/**
 * Prints what went wrong as one line on stderr and returns the exit code: 2 for a usage problem (the fix is in
 * the command line: `deno task <command> --help` lists it), 1 for anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { failure, UsageError } from "./flags.ts";
 * const error = console.error;
 * let printed = "";
 * console.error = (line: string) => void (printed += line);
 * try {
 *   assert.equal(failure(new UsageError("--lr takes a number"), "train"), 2);
 *   assert.equal(printed, "error: --lr takes a number (see 'deno task train --help')");
 *   assert.equal(failure(new Error("disk full\n  at somewhere"), "train"), 1);
 * } finally {
 *   console.error = error;
 * }
 * ```
 */
export function failure(e: unknown, command: string): number {
  const u = usageError(e);
  const message = (u ?? e) instanceof Error ? (u ?? e as Error).message : String(e);
  const line = message.split("\n").map((l) => l.trim()).filter((l) => l !== "")
    .reduce((joined, l) => (joined === "" ? l : `${joined}${joined.endsWith(":") ? " " : "; "}${l}`), "");
  console.error(`error: ${line}${u ? ` (see 'deno task ${command} --help')` : ""}`);
  return u ? 2 : 1;
}

const GROUPS: Record<Group, string> = {
  model: "model",
  optimisation: "optimisation",
  augmentation: "augmentation",
  data: "data",
  run: "run",
};

/**
 * The `--help` text, with each flag's default under `preset`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { trainHelp } from "./flags.ts";
 * const help = trainHelp("imagenet-vits16");
 * assert.match(help, /--epochs +training epochs \(default: 100\)/);
 * ```
 */
export function trainHelp(preset = "fmnist"): string {
  const p = presetSettings(preset) as unknown as Record<string, unknown>;
  const lines: string[] = [];
  for (const group of Object.keys(GROUPS) as Group[]) {
    lines.push("", `${GROUPS[group]}:`);
    for (const [name, d] of Object.entries(SETTINGS)) {
      if (d.group !== group) continue;
      const value = p[name];
      const shown = Array.isArray(value) ? value.join(",") : String(value ?? "");
      const snake = name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      const official = d.official && d.official !== snake ? ` [official: ${d.official}]` : "";
      lines.push(`  ${flagOf(name).padEnd(32)} ${d.help}${shown !== "" ? ` (default: ${shown})` : ""}${official}`);
    }
  }
  return [
    "usage: deno task train [--preset NAME] [--config FILE.json] [flags]",
    "",
    "Trains a ViT with DINO, then reports weighted k-NN accuracy (k 20, T 0.07) of the",
    "teacher, of the same network at initialisation, and of raw pixels.",
    "",
    `  ${"--preset NAME".padEnd(32)} ${Object.keys(PRESETS).join(", ")} (default: fmnist)`,
    `  ${"--config FILE".padEnd(32)} a JSON object of these flags (kebab- or camelCase); flags win`,
    `  ${"-h, --help".padEnd(32)} this help`,
    "",
    `flags by group (defaults of the ${preset} preset; [official: name] where the official code names it otherwise):`,
    ...lines,
  ].join("\n");
}

const camel = (k: string) => k.replace(/[-_]([a-z])/g, (_, c) => c.toUpperCase());

function readConfig(path: string, readFile: (path: string) => string): Record<string, unknown> {
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    throw new UsageError(`--config ${path} cannot be read: ${e instanceof Error ? e.message : e}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--config ${path} is not valid JSON: ${e instanceof Error ? e.message : e}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(`--config ${path} must hold a JSON object of flags`);
  }
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [camel(k), v]));
}

/**
 * Parses the training flags (and `--config`) into validated settings. Throws
 * {@linkcode UsageError} for an unknown flag, a bad value or an inconsistent
 * combination; returns `"help"` for `-h`/`--help`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTrainArgs } from "./flags.ts";
 * const s = parseTrainArgs(["--preset", "imagenet-vits16", "--data", "/data/imagenet"]);
 * assert(s !== "help");
 * assert.deepEqual([s.arch, s.patchSize, s.outDim, s.data], ["vit_small", 16, 65536, "/data/imagenet"]);
 * assert.equal(parseTrainArgs(["--help"]), "help");
 * assert.throws(() => parseTrainArgs(["--lr", "fast"]), /--lr takes a number, got "fast"/);
 * ```
 */
export function parseTrainArgs(
  args: readonly string[],
  readFile: (path: string) => string = Deno.readTextFileSync,
): Settings | "help" {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    preset: { type: "string" },
    config: { type: "string" },
    help: { type: "boolean", short: "h" },
  };
  for (const name of Object.keys(SETTINGS)) options[flagOf(name).slice(2)] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: ownArgs(args), options, strict: true, allowPositionals: false }));
  } catch (e) {
    // An official main_dino.py argument: name this project's flag for it.
    const official = /^Unknown option '--(\w+)'/.exec(e instanceof Error ? e.message : "")?.[1];
    const ours = Object.entries(SETTINGS).find(([, d]) => official && d.official === official)?.[0];
    if (ours) throw new UsageError(`--${official} is the official argument; here it is ${flagOf(ours)}`);
    throw argsError(e);
  }
  if (values.help) return "help";
  const { preset: filePreset, ...file } = typeof values.config === "string" ? readConfig(values.config, readFile) : {};
  const { preset, config: _config, help: _help, ...flags } = values;
  try {
    const given = Object.fromEntries(Object.entries(flags).map(([k, v]) => [camel(k), v]));
    const settings = makeSettings(String(preset ?? filePreset ?? "fmnist"), file, given);
    // A ViT's shape given for a ResNet would be ignored (as the official code ignores it): say so instead. A --config
    // file may hold them, as every run's config.json does.
    const vitOnly = VIT_SHAPE.find((k) => k in given);
    if (isResNetArch(settings.arch) && vitOnly) {
      throw new UsageError(`${flagOf(vitOnly)} does not apply to a ResNet (${settings.arch}): drop it`);
    }
    return settings;
  } catch (e) {
    const u = usageError(e);
    if (u && e instanceof SettingError && !(e.settings[0] in SETTINGS) && e.settings[0] !== "preset") {
      throw new UsageError(`--config: ${e.message}`);
    }
    throw u ?? e;
  }
}

/** The settings of a ViT's shape, which a ResNet (its shape its name) does not take. */
const VIT_SHAPE = ["patchSize", "embedDim", "depth", "numHeads", "dropPathRate"] as const;

/** The datasets `openDataset` knows by name; anything else is a path. */
export const NAMED = ["fmnist", "cifar10", "cifar100"];

/**
 * The flags of a command (strict, no positionals), or a usage error with parseArgs' complaint.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFlags } from "./flags.ts";
 * const v = parseFlags(["--k", "5"], { k: { type: "string", default: "20" }, help: { type: "boolean" } });
 * assert.equal(v.k, "5");
 * assert.throws(() => parseFlags(["--nope"], { k: { type: "string" } }), /Unknown option '--nope'/);
 * assert.equal(parseFlags(["--", "--k", "5"], { k: { type: "string" } }).k, "5"); // npm's `run x -- --k 5`
 * ```
 */
export function parseFlags<const O extends ParseArgsOptionsConfig>(args: string[], options: O) {
  try {
    return parseArgs({ args: ownArgs(args), options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw argsError(e);
  }
}

/** The flags without a leading `--`, which npm's habit (`npm run x -- --flag`) puts before them. */
function ownArgs(args: readonly string[]): string[] {
  return args[0] === "--" ? args.slice(1) : [...args];
}

/** parseArgs' complaint as a usage error (without its advice on positionals). Shared by the commands. */
export function argsError(e: unknown): UsageError {
  const message = e instanceof Error ? e.message : String(e);
  const ambiguous = /^Option '(--[\w-]+)' argument is ambiguous/.exec(message);
  if (ambiguous) return new UsageError(`${ambiguous[1]} needs a value; write a negative one as ${ambiguous[1]}=-1`);
  const plain = message.replace(/\. To specify.*$/s, "");
  // The official scripts' spellings: --weight_decay, and two numbers after one flag (--global_crops_scale 0.14 1).
  const snake = /^Unknown option '(--\w*_[\w-]*)'/.exec(plain);
  if (snake) return new UsageError(`${plain}: flags are kebab-case here (${snake[1].replaceAll("_", "-")})`);
  const number = /^Unexpected argument '(-?[\d.]+(?:e-?\d+)?)'/.exec(plain);
  if (number) {
    return new UsageError(`${plain}: a flag of two numbers takes them as one value, as --global-crops-scale 0.14,1`);
  }
  return new UsageError(plain);
}

/**
 * An integer flag in [min, max], or a usage error naming it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { integer } from "./flags.ts";
 * assert.equal(integer("--k", "20", 1, 100000), 20);
 * assert.throws(() => integer("--k", "NaN", 1, 100000), /--k takes an integer, got "NaN"/);
 * assert.throws(() => integer("--k", "0", 1, 100000), /--k must be between 1 and 100000, got 0/);
 * ```
 */
export function integer(flag: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = v.trim() === "" ? NaN : Number(v);
  if (!Number.isSafeInteger(n)) throw new UsageError(`${flag} takes an integer, got "${v}"`);
  if (n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `between ${min} and ${max}`;
    throw new UsageError(`${flag} must be ${range}, got ${n}`);
  }
  return n;
}

/** An existing weights file: a usage error names the flag when the path is missing or a folder. */
export function weightsFile(flag: string, path: string): string {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    throw new UsageError(`${flag} ${path}: no such file`);
  }
  if (info.isDirectory) throw new UsageError(`${flag} ${path} is a folder, not a weights file`);
  return path;
}

/**
 * The file to write must be a file (or nothing yet) in an existing folder this process can write; checked
 * before anything is loaded, so that nothing is computed for nothing.
 */
export function outputFile(flag: string, out: string): string {
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.statSync(out);
  } catch {
    // Not there yet (or under something that is no folder: the folder's check below says which).
  }
  if (info?.isDirectory) throw new UsageError(`${flag} ${out} is a folder; name the .safetensors file to write`);
  if (info && !info.isFile) throw new UsageError(`${flag} ${out} is not a regular file`);
  const dir = dirname(resolve(out));
  let folder: Deno.FileInfo;
  try {
    folder = Deno.statSync(dir);
  } catch {
    throw new UsageError(`${flag} ${out}: its folder ${dir} does not exist`);
  }
  if (!folder.isDirectory) throw new UsageError(`${flag} ${out}: ${dir} is a file, not a folder`);
  try {
    Deno.removeSync(Deno.makeTempFileSync({ dir, prefix: ".write-check-" }));
  } catch (e) {
    throw new UsageError(`${flag} ${out} cannot be written: ${e instanceof Error ? e.message : e}`);
  }
  return out;
}

/** The data path, when it is one, must exist (checked before the weights are loaded). */
export function dataSpec(spec: string): string {
  if (!NAMED.includes(spec) && !exists(spec)) {
    throw new UsageError(
      `--data ${spec}: no such dataset, file or folder (use fmnist, cifar10, cifar100, an IDX file or a folder path)`,
    );
  }
  return spec;
}

/** The `parseArgs` options of every command that loads weights: which network, and its shape for files without metadata. */
export const MODEL_FLAGS = {
  arch: { type: "string" },
  "patch-size": { type: "string" },
  "checkpoint-key": { type: "string", default: "teacher" },
} as const;

/**
 * The help lines of {@linkcode MODEL_FLAGS}, their descriptions from `column` (the command's own column).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { modelHelp } from "./flags.ts";
 * assert.match(modelHelp(30), /^  --arch NAME {17}for weights without metadata/);
 * ```
 */
export function modelHelp(column = 24): string {
  return [
    ["--arch NAME", `for weights without metadata: ${BACKBONE_ARCHS.join(", ")}`],
    ["--patch-size N", "for weights without metadata: checked against the weights (1 to 64)"],
    ["--checkpoint-key K", "the network of a full checkpoint: teacher (default) or student"],
  ].map(([flag, text]) => `  ${flag.padEnd(column - 2)}${text}`).join("\n");
}

/** What {@linkcode loadModel} needs from the {@linkcode MODEL_FLAGS} values, checked. */
export interface ModelOptions {
  /** The architecture, for weights without metadata. */
  arch?: BackboneArch;
  /** The patch size the weights must have. */
  patchSize?: number;
  /** The network of a full checkpoint. */
  checkpointKey: string;
}

/** Checks the {@linkcode MODEL_FLAGS} values. */
export function modelOptions(
  values: { arch?: string; "patch-size"?: string; "checkpoint-key"?: string },
): ModelOptions {
  if (values.arch !== undefined && !BACKBONE_ARCHS.includes(values.arch as BackboneArch)) {
    throw new UsageError(`--arch must be one of ${BACKBONE_ARCHS.join(", ")}, got "${values.arch}"`);
  }
  const key = values["checkpoint-key"] ?? "teacher";
  if (!/^[A-Za-z_][\w]*$/.test(key)) {
    throw new UsageError(`--checkpoint-key takes a name such as teacher or student, got "${key}"`);
  }
  return {
    arch: values.arch as BackboneArch | undefined,
    patchSize: values["patch-size"] === undefined ? undefined : integer("--patch-size", values["patch-size"], 1, 64),
    checkpointKey: key,
  };
}

/** The backbone of a checkpoint or weights file; a file that is no usable weights is a usage error of `flag`. */
export function loadModel(
  flag: string,
  path: string,
  o: { arch?: BackboneArch; patchSize?: number; checkpointKey?: string },
): EvalBackbone {
  try {
    return loadEvalBackbone(path, o);
  } catch (e) {
    const u = usageError(e);
    if (u) throw u;
    const message = e instanceof Error ? e.message : String(e);
    throw new UsageError(`${flag} ${message.includes(path) ? message : `${path}: ${message}`}`);
  }
}

/** The labelled splits a frozen-feature evaluation reads, and how its images are prepared. */
export interface EvalSplits {
  /** The training split (the k-NN memory, the classifier's training images). */
  train: Dataset;
  /** The test split. */
  test: Dataset;
  /** Side and normalisation (the weights' own, else ImageNet's for RGB and 0.5 for grayscale). */
  transform: EvalTransform;
}

/**
 * Opens `data`'s labelled train and test splits for `model` (a folder's images decoded as the official
 * `Resize(256)` + `CenterCrop(224)`, in that ratio to the evaluation side; with `augmentTrain`, the training
 * images as the resized square, for random crops), after checking `--image-size` against the patch size, the
 * channels against the weights and the images' side against the evaluation side. `what` names the evaluation in
 * the message for unlabelled data. On any failure the splits are closed again.
 */
export function openEvalSplits(
  flag: string,
  weights: string,
  model: EvalBackbone,
  o: { data: string; imageSize?: number; maxImagePixels: number; augmentTrain?: boolean },
  what: string,
): EvalSplits {
  const cfg = model.resnet ?? model.vit;
  const size = o.imageSize ?? model.imageSize;
  if (model.vit && size % model.vit.patchSize !== 0) {
    throw new UsageError(`--image-size ${size} is not a multiple of the model's patch size ${model.vit.patchSize}`);
  }
  const opening = {
    side: evalResizeSide(size),
    crop: size,
    channels: cfg.inChans as 1 | 3,
    maxImagePixels: o.maxImagePixels,
  };
  const train = openDataset(o.data, "train", o.augmentTrain ? { ...opening, crop: undefined } : opening);
  let test: Dataset | undefined;
  try {
    test = openDataset(o.data, "test", opening);
    if (train.channels !== cfg.inChans) {
      throw new UsageError(
        `${flag} ${weights} takes ${cfg.inChans}-channel images; --data ${o.data} has ${train.channels}`,
      );
    }
    if (train.size < size) {
      throw new UsageError(`--data ${o.data} has ${train.size} px images, smaller than ${size}: pass --image-size`);
    }
    if (!train.labels || !test.labels) {
      throw new Error(
        `${what} needs labelled images: ${unlabelled(train, test)} (use a folder with one subfolder per class)`,
      );
    }
    if (train.name === test.name) console.warn(noTestSplit(o.data, what));
    const norm = model.normalization ?? defaultNormalization(cfg.inChans);
    return { train, test, transform: { size, mean: [...norm.mean], std: [...norm.std] } };
  } catch (e) {
    train.dispose();
    test?.dispose();
    throw e;
  }
}

/**
 * The warning for a `--train-limit` or `--test-limit` whose first images of an image folder (which lists its
 * images class by class) hold fewer of its classes than it has, or undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { limitWarning } from "./flags.ts";
 * const ds = { name: "folder:photos", length: 4, classes: ["a", "b"], labels: new Int32Array([0, 0, 1, 1]) };
 * assert.match(limitWarning(ds, 2, "--train-limit")!, /the first 2 images \(--train-limit\) hold 1 of the 2 classes/);
 * assert.equal(limitWarning(ds, 3, "--train-limit"), undefined);
 * ```
 */
export function limitWarning(
  ds: Pick<Dataset, "name" | "length" | "classes" | "labels">,
  limit: number,
  flag: string,
): string | undefined {
  const folder = ds.name.startsWith("folder:"); // data sets such as Fashion-MNIST mix their classes
  if (!folder || !(limit > 0 && limit < ds.length) || !ds.labels || ds.classes.length < 2) return undefined;
  const held = new Set(ds.labels.subarray(0, limit)).size, all = new Set(ds.labels).size; // val/ may lack a class
  if (held >= all) return undefined;
  return `warning: the first ${limit} images (${flag}) hold ${held} of the ${all} classes ` +
    "(a folder lists its images class by class)";
}

/** Prints {@linkcode limitWarning}'s warnings for the training and test splits. */
export function warnLimits(train: Dataset, test: Dataset, o: { trainLimit: number; testLimit: number }): void {
  for (
    const [ds, limit, flag] of [[train, o.trainLimit, "--train-limit"], [test, o.testLimit, "--test-limit"]] as const
  ) {
    const warning = limitWarning(ds, limit, flag);
    if (warning) console.warn(warning);
  }
}

/**
 * Which of two splits have no labels, for a message.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unlabelled } from "./flags.ts";
 * const split = (name: string, labels?: Int32Array) => ({ name, labels });
 * assert.equal(unlabelled(split("folder:a/train", new Int32Array(1)), split("folder:a/val")), "folder:a/val has no labels");
 * ```
 */
export function unlabelled(train: Pick<Dataset, "name" | "labels">, test: Pick<Dataset, "name" | "labels">): string {
  const none = [...new Set([train, test].filter((d) => !d.labels).map((d) => d.name))];
  return `${none.join(" and ")} ha${none.length === 1 ? "s" : "ve"} no labels`;
}

/**
 * The warning for data whose test split is its training split.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { noTestSplit } from "./flags.ts";
 * assert.match(noTestSplit("photos/", "k-NN"), /^warning: --data photos\/ has no separate test split/);
 * ```
 */
export function noTestSplit(data: string, what: string): string {
  return `warning: --data ${data} has no separate test split (train/ and val/ folders): ${what} is measured on the ` +
    "training images themselves" +
    (what === "k-NN" ? ", each left out of the memory for its own query (leave-one-out)" : "");
}

/**
 * A command's own arguments, and those after `--` that it passes on to the program it runs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitPassthrough } from "./flags.ts";
 * assert.deepEqual(splitPassthrough(["--seed", "1", "--", "--lr", "0.1"]), { own: ["--seed", "1"], extra: ["--lr", "0.1"] });
 * assert.deepEqual(splitPassthrough(["--seed", "1"]).extra, []);
 * ```
 */
export function splitPassthrough(args: string[]): { own: string[]; extra: string[] } {
  const dash = args.indexOf("--");
  return dash < 0 ? { own: args, extra: [] } : { own: args.slice(0, dash), extra: args.slice(dash + 1) };
}
