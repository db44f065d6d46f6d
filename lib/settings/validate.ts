/**
 * Checks of a run's settings: each one's kind and range as declared, the
 * combinations that cannot work, and what a resumed run may not change.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeSettings } from "./presets.ts";
 * import { validateSettings } from "./validate.ts";
 * assert.throws(() => validateSettings({ ...makeSettings("fmnist"), embedDim: 130 }), /embedDim 130 does not divide/);
 * ```
 * @module
 */
import { type Declaration, SettingError, type SettingName, SETTINGS, type Settings, shown } from "./settings.ts";
import { isResNetArch, RESNET_ARCHS } from "../model/resnet.ts";

/**
 * Checks every setting's kind and range, then the combinations; throws a
 * {@linkcode SettingError} naming the setting to change.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeSettings } from "./presets.ts";
 * import { validateSettings } from "./validate.ts";
 * const ok = makeSettings("fmnist");
 * assert.equal(validateSettings(ok), ok);
 * assert.throws(() => validateSettings({ ...ok, warmupEpochs: ok.epochs + 1 }), /warmupEpochs 3 exceeds epochs 2/);
 * ```
 */
export function validateSettings(s: Settings): Settings {
  const bad = (names: string[], text: (n: (name: string) => string) => string): never => {
    throw new SettingError(names, text);
  };
  for (const [name, d] of Object.entries(SETTINGS) as [SettingName, Declaration<unknown>][]) {
    const v = s[name] as unknown;
    const got = shown(v);
    if (d.kind === "choice" && !d.choices!.includes(v as string)) {
      bad([name], (n) => `${n(name)} must be one of ${d.choices!.join(", ")}, got ${got}`);
    }
    if (d.kind === "string" && typeof v !== "string") bad([name], (n) => `${n(name)} takes a string, got ${got}`);
    if (d.kind === "bool" && typeof v !== "boolean") bad([name], (n) => `${n(name)} takes true or false, got ${got}`);
    if (d.kind === "int" || d.kind === "number") {
      const x = v as number;
      if (typeof x !== "number" || !Number.isFinite(x)) bad([name], (n) => `${n(name)} takes a number, got ${got}`);
      if (d.kind === "int" && !Number.isInteger(x)) bad([name], (n) => `${n(name)} takes an integer, got ${got}`);
      if (d.range === "positive" && !(x > 0)) bad([name], (n) => `${n(name)} must be positive, got ${x}`);
      if (d.range === "nonNegative" && !(x >= 0)) bad([name], (n) => `${n(name)} must be >= 0, got ${x}`);
      if (d.range === "unit" && !(x > 0 && x <= 1)) bad([name], (n) => `${n(name)} must be in (0, 1], got ${x}`);
      if (d.range === "belowOne" && !(x >= 0 && x < 1)) bad([name], (n) => `${n(name)} must be in [0, 1), got ${x}`);
      if (d.max !== undefined && x > d.max) bad([name], (n) => `${n(name)} must be at most ${d.max}, got ${x}`);
    }
    if (d.kind === "pair") {
      const pair = Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number") ? v : undefined;
      if (!pair) bad([name], (n) => `${n(name)} takes two numbers as lo,hi, got ${got}`);
      const [lo, hi] = pair as number[];
      if (!(lo > 0 && lo <= hi && hi <= 1)) {
        bad([name], (n) => `${n(name)} must satisfy 0 < lo <= hi <= 1, got ${lo},${hi}`);
      }
    }
  }
  if (s.localCropsNumber > 0 && !(s.localCropsSize > 0)) {
    bad(["localCropsSize"], (n) => `${n("localCropsSize")} must be positive, got ${s.localCropsSize}`);
  }
  // The ViT shape settings mean nothing to a ResNet (its shape is its name), so only a ViT's are checked.
  const vit = !isResNetArch(s.arch);
  if (vit && s.embedDim % s.numHeads !== 0) {
    bad(
      ["embedDim", "numHeads"],
      (n) => `${n("embedDim")} ${s.embedDim} does not divide into ${n("numHeads")} ${s.numHeads}`,
    );
  }
  if (vit && s.globalCropsSize % s.patchSize !== 0) {
    bad(
      ["globalCropsSize", "patchSize"],
      (n) => `${n("globalCropsSize")} ${s.globalCropsSize} is not a multiple of ${n("patchSize")} ${s.patchSize}`,
    );
  }
  if (vit && s.localCropsNumber > 0 && s.localCropsSize % s.patchSize !== 0) {
    bad(
      ["localCropsSize", "patchSize"],
      (n) => `${n("localCropsSize")} ${s.localCropsSize} is not a multiple of ${n("patchSize")} ${s.patchSize}`,
    );
  }
  if (!vit && s.precision !== "fp32") {
    bad(
      ["precision", "arch"],
      (n) => `${n("precision")} ${s.precision} is implemented for ViTs; ${n("arch")} ${s.arch} trains in fp32`,
    );
  }
  if (s.batchSize % s.accumSteps !== 0) {
    bad(
      ["batchSize", "accumSteps"],
      (n) => `${n("batchSize")} ${s.batchSize} does not divide into ${n("accumSteps")} ${s.accumSteps}`,
    );
  }
  if (s.warmupEpochs > s.epochs) {
    bad(["warmupEpochs", "epochs"], (n) => `${n("warmupEpochs")} ${s.warmupEpochs} exceeds ${n("epochs")} ${s.epochs}`);
  }
  if (s.warmupTeacherTempEpochs > s.epochs) {
    bad(
      ["warmupTeacherTempEpochs", "epochs"],
      (n) => `${n("warmupTeacherTempEpochs")} ${s.warmupTeacherTempEpochs} exceeds ${n("epochs")} ${s.epochs}`,
    );
  }
  // The peak scales with the global batch: this machine's processes at least (a group that torchrun or SLURM starts
  // may be larger, and its peak higher still).
  const peak = s.lr * s.batchSize * s.nprocPerNode / 256;
  if (s.minLr > peak) bad(["minLr"], (n) => `${n("minLr")} ${s.minLr} is above the scaled peak lr ${peak}`);
  const params = parameterCount(s);
  if (params > MAX_PARAMETERS) {
    bad(
      ["depth", "embedDim"],
      (n) =>
        `the network would have ${(params / 1e9).toFixed(1)} billion parameters (${n("depth")} ${s.depth}, ` +
        `${n("embedDim")} ${s.embedDim}, ${n("outDim")} ${s.outDim}), over the bound of ${
          MAX_PARAMETERS / 1e9
        } billion`,
    );
  }
  if (!s.data) bad(["data"], (n) => `${n("data")} is required with this preset (fmnist, cifar10, cifar100 or a path)`);
  if (!s.outputDir) bad(["outputDir"], (n) => `${n("outputDir")} must not be empty`);
  return s;
}

/** The torchvision ResNets' parameters without `fc` (3-channel input). */
const RESNET_PARAMETERS = { resnet18: 11_176_512, resnet34: 21_284_672, resnet50: 23_508_032, resnet101: 42_500_160 };

/** The most parameters a network may have (ViT-g/14 has 1.1 billion): a bound on what settings can allocate. */
export const MAX_PARAMETERS = 2e9;

/**
 * About how many parameters the settings' network has (backbone and head, 3-channel input), to bound allocation
 * before anything is built.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeSettings } from "./presets.ts";
 * import { parameterCount } from "./validate.ts";
 * const vits16 = parameterCount(makeSettings("imagenet-vits16", { data: "/data" }));
 * assert.ok(vits16 > 21e6 && vits16 < 45e6); // ViT-S/16 (21.7M) and its head with K 65536
 * ```
 */
export function parameterCount(s: Settings): number {
  const resnet = isResNetArch(s.arch) ? RESNET_ARCHS[s.arch] : undefined;
  const D = resnet ? (resnet.block === "bottleneck" ? 2048 : 512) : s.embedDim;
  const tokens = (s.globalCropsSize / s.patchSize) ** 2 + 1;
  const backbone = resnet
    ? RESNET_PARAMETERS[s.arch as keyof typeof RESNET_PARAMETERS]
    : s.depth * (12 * D * D + 13 * D) + 3 * s.patchSize ** 2 * D + tokens * D + 3 * D;
  const head = D * s.hiddenDim + s.hiddenDim ** 2 + s.hiddenDim * s.bottleneckDim + s.bottleneckDim * s.outDim;
  const predictor = 2 * s.predictorDim * s.outDim;
  return backbone + head + predictor;
}

/**
 * The settings that differ between a saved run and this one, where a resumed
 * run may not change them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeSettings } from "./presets.ts";
 * import { resumeConflicts } from "./validate.ts";
 * const saved = makeSettings("fmnist");
 * assert.deepEqual(resumeConflicts(saved, { ...saved, maxSteps: 5 }), []); // a run's length may change
 * assert.deepEqual(resumeConflicts(saved, { ...saved, lr: 0.01 }).map((c) => c.name), ["lr"]);
 * ```
 */
export function resumeConflicts(
  saved: Settings,
  now: Settings,
): { name: SettingName; saved: unknown; now: unknown }[] {
  return (Object.keys(SETTINGS) as SettingName[])
    .filter((k) => !SETTINGS[k].resumable && JSON.stringify(saved[k]) !== JSON.stringify(now[k]))
    .map((name) => ({ name, saved: saved[name], now: now[name] }));
}
