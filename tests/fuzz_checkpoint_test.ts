// Fuzzing checkpoint metadata (lib/weights/checkpoint.ts's loadCheckpoint): a valid checkpoint of a tiny network
// is rewritten with crafted metadata (step, epoch, rng, optimizer_steps, channels, normalization, format and the
// config JSON with absurd, negative, mistyped or tensor-contradicting settings), and every load must either
// succeed with a consistent state or throw an Error whose one-line message names the file and the field at
// fault. It must never allocate what the crafted numbers ask for (depth 1e6, embedDim 1e9, 1e9 channels): each
// case runs in a child process under a memory and time limit, which also catches native crashes, and must leave
// no tensor alive.
//
// The fixed cases document the required behaviour; DINO_FUZZ_CASES=5000 adds that many random combinations
// (100 by default) of those mutations and of garbage values.
import assert from "node:assert/strict";
import { dispose, type Tensor } from "../mod.ts";
import { makeSettings, networkConfig, type Settings, validateSettings } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/step.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { readSafetensors, writeSafetensors } from "../lib/weights/safetensors.ts";
import {
  childMain,
  FUZZ_SEED,
  fuzzCases,
  isFuzzChild,
  judge,
  messageProblem,
  Rng,
  runInChildren,
  summarize,
} from "./fuzz_helpers.ts";

/** The tiny network every case starts from. */
const TINY = { depth: 1, embedDim: 32, numHeads: 2, outDim: 64, hiddenDim: 32, bottleneckDim: 16 };

// ---- the mutations ---------------------------------------------------------------------------------------------

type Meta = Record<string, string>;
/** What a load must do: "load" (and be consistent), "error" (naming the field), or "either". */
type Expect = "load" | "error" | "either";
interface Mutation {
  name: string;
  /** The metadata field or config setting it changes ("config.depth"). */
  key: string;
  apply: (m: Meta) => void;
  expect: Expect;
  /** What an error's message must match: the field at fault. */
  field: RegExp;
}

const FIELD: Record<string, RegExp> = {
  format: /format|not a training checkpoint/,
  step: /\bstep\b/,
  epoch: /\bepoch\b/,
  rng: /\brng\b/,
  optimizer: /optimizer/,
  optimizer_steps: /optimizer_steps/,
  channels: /channels/,
  normalization: /normali[sz]ation/,
  config: /config/,
};

/** A metadata field set to `value` (undefined: removed). */
function field(name: string, value: string | undefined, expect: Expect = "error"): Mutation {
  return {
    name: `${name} ${value === undefined ? "missing" : JSON.stringify(value.length > 40 ? value.slice(0, 40) : value)}`,
    key: name,
    apply: (m) => {
      if (value === undefined) delete m[name];
      else m[name] = value;
    },
    expect,
    field: FIELD[name] ?? new RegExp(name),
  };
}

/** A setting in the config JSON set to `value` (undefined: removed). */
function setting(name: string, value: unknown, expect: Expect = "error", pattern?: RegExp): Mutation {
  return {
    name: `config.${name} ${value === undefined ? "missing" : JSON.stringify(value)?.slice(0, 40)}`,
    key: `config.${name}`,
    apply: (m) => {
      const c = JSON.parse(m.config);
      if (value === undefined) delete c[name];
      else c[name] = value;
      m.config = JSON.stringify(c);
    },
    expect,
    field: pattern ?? new RegExp(`\\b${name}\\b`),
  };
}

const MUTATIONS: Mutation[] = [
  // Valid variants: these must load, with the values they say.
  { name: "unchanged", key: "", apply: () => {}, expect: "load", field: /$^/ },
  field("step", "7", "load"),
  field("epoch", "3", "load"),
  field("note", "an extra field", "load"),
  field("rng", '{"seed":5,"counter":12}', "load"),
  // format
  field("format", undefined),
  field("format", ""),
  field("format", "dino-deno-checkpoint/2"),
  // step
  ...["-5", "abc", "1e30", "1.5", "", "NaN", "Infinity", "-0.5", "9007199254740993"].map((v) => field("step", v)),
  field("step", undefined),
  // epoch
  ...["-1", "abc", "2.5", "1e30", ""].map((v) => field("epoch", v)),
  field("epoch", undefined),
  // rng
  field("rng", undefined),
  ...[
    "",
    "not json",
    "null",
    "[]",
    "{}",
    '{"seed":1}',
    '{"seed":"a","counter":0}',
    '{"seed":1,"counter":-1}',
    '{"seed":1.5,"counter":0}',
    '{"seed":1e300,"counter":0}',
    '{"seed":1,"counter":"0"}',
  ].map((v) => field("rng", v)),
  // optimizer_steps (the config's optimizer is adamw, whose bias correction needs every parameter's count)
  field("optimizer_steps", undefined),
  ...["not json", "null", "[1]", '"3"', '{"backbone.cls_token":"a"}', '{"backbone.cls_token":-1}'].map((v) =>
    field("optimizer_steps", v)
  ),
  field("optimizer_steps", "{}"),
  // the metadata's optimizer name is informative only: the config's decides
  field("optimizer", "sgd", "either"),
  // channels
  ...["0", "1e9", "1000000000", "-1", "abc", "", "1.5", "3"].map((v) => field("channels", v)),
  field("channels", undefined),
  // normalization
  ...[
    "not json",
    "null",
    '{"mean":[0.5]}',
    '{"mean":["a"],"std":[0.5]}',
    '{"mean":[0.5,0.5],"std":[0.5,0.5]}',
    '{"mean":[0.5],"std":[0]}',
    '{"mean":[0.5],"std":[-1]}',
  ].map((v) => field("normalization", v)),
  field("normalization", undefined, "either"), // older checkpoints may lack it: a default, or an error
  // config as a whole
  field("config", undefined),
  ...["not json", "null", "[]", "42", '"text"', "{"].map((v) => field("config", v)),
  // settings that size allocations: absurd, negative, mistyped
  setting("depth", 1e6),
  setting("depth", 0),
  setting("depth", -1),
  setting("depth", 1.5),
  setting("depth", "abc"),
  setting("depth", "2"),
  setting("depth", true),
  setting("depth", null),
  setting("depth", [1]),
  setting("embedDim", 1e9),
  setting("embedDim", -32),
  setting("numHeads", -2),
  setting("numHeads", 0),
  setting("patchSize", 0),
  setting("patchSize", 1e9),
  setting("outDim", 1e9),
  setting("hiddenDim", 1e9),
  setting("bottleneckDim", -1),
  setting("globalCropsSize", 1e9),
  setting("localCropsNumber", -1),
  setting("lr", "abc"),
  setting("seed", -1),
  setting("preset", "nonexistent"),
  setting("optimizer", "bogus"),
  setting("arch", "vit_huge"),
  // settings that contradict the tensors
  setting("depth", 2),
  setting("embedDim", 64),
  setting("outDim", 128),
  setting("hiddenDim", 64),
  setting("bottleneckDim", 8),
  setting("patchSize", 14),
  setting("optimizer", "sgd"),
  // JSON tricks: an own "__proto__" key must not turn into a prototype
  {
    name: 'config with "__proto__": {"depth": 1000000}',
    key: "config.__proto__",
    apply: (m) => {
      m.config = m.config.replace(/^\{/, '{"__proto__":{"depth":1000000},');
    },
    expect: "either",
    field: /config|depth|__proto__/,
  },
];

/** Values a random case may give a field or a setting. */
const GARBAGE: unknown[] = [
  "",
  "0",
  "00",
  "-0",
  " 1",
  "0x10",
  "1e309",
  "null",
  "[]",
  "{}",
  "\u0000",
  "\n",
  "x".repeat(100_000),
  "[".repeat(50_000),
  "9007199254740993",
  0,
  -1,
  1e9,
  2 ** 31,
  0.5,
  null,
  true,
  [],
  {},
];
const FIELDS = [
  "format",
  "step",
  "epoch",
  "rng",
  "optimizer",
  "optimizer_steps",
  "channels",
  "normalization",
  "config",
];
const SETTINGS_TO_FUZZ = [
  "depth",
  "embedDim",
  "numHeads",
  "outDim",
  "hiddenDim",
  "bottleneckDim",
  "patchSize",
  "globalCropsSize",
  "localCropsNumber",
  "localCropsSize",
  "predictorDim",
  "optimizer",
  "batchSize",
  "seed",
  "preset",
];

/**
 * Case `index`: a fixed mutation, or a random combination of one to three mutations and garbage values, each of
 * another field (so that none undoes another, and settings are not combined with replacing the whole config).
 */
function makeCase(index: number): Mutation[] {
  if (index < MUTATIONS.length) return [MUTATIONS[index]];
  const r = new Rng(FUZZ_SEED, index);
  const out: Mutation[] = [];
  for (let i = 1 + r.int(3); i > 0; i--) {
    let m: Mutation;
    if (r.chance(0.4)) m = r.pick(MUTATIONS);
    else if (r.chance(0.5)) {
      const value = r.pick(GARBAGE);
      m = field(r.pick(FIELDS), typeof value === "string" ? value : JSON.stringify(value), "either");
    } else m = setting(r.pick(SETTINGS_TO_FUZZ), r.pick(GARBAGE), "either");
    const clash = out.some((o) =>
      o.key === m.key || (o.key === "config" && m.key.startsWith("config.")) ||
      (m.key === "config" && o.key.startsWith("config."))
    );
    if (!clash) out.push(m);
  }
  return out;
}

function describe(ms: Mutation[]): string {
  return ms.map((m) => m.name).join(" + ");
}

// ---- one case, in the child ------------------------------------------------------------------------------------

let base: { tensors: Record<string, Tensor>; metadata: Meta } | undefined;
const dir = isFuzzChild() ? Deno.makeTempDirSync({ prefix: "fuzz_checkpoint" }) : "";

/** The valid checkpoint, written once per child with saveCheckpoint and read back. */
function baseCheckpoint() {
  if (base) return base;
  const config = makeSettings("fmnist", TINY);
  const state = initTrainState(networkConfig(config, 1), dinoHyper(config), 0);
  const path = `${dir}/base.safetensors`;
  saveCheckpoint(path, state, { config, channels: 1, epoch: 0, normalization: { mean: [0.286], std: [0.353] } });
  dispose(state);
  base = readSafetensors(path);
  return base;
}

/** What is wrong with a state that loaded, given the metadata it was loaded from. */
function inconsistencies(loaded: ReturnType<typeof loadCheckpoint>, meta: Meta): string[] {
  const bad: string[] = [];
  const whole = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  const { state, config, channels, epoch, normalization } = loaded;
  if (!whole(state.step) || String(state.step) !== String(Number(meta.step))) bad.push(`step ${state.step}`);
  if (!whole(epoch) || String(epoch) !== String(Number(meta.epoch))) bad.push(`epoch ${epoch}`);
  if (channels !== 1) bad.push(`channels ${channels}`);
  if (!Number.isSafeInteger(state.rng?.seed) || !whole(state.rng?.counter)) {
    bad.push(`rng ${JSON.stringify(state.rng)}`);
  }
  const finite = (xs: unknown, positive: boolean) =>
    Array.isArray(xs) && xs.length === channels &&
    xs.every((x) => typeof x === "number" && Number.isFinite(x) && (!positive || x > 0));
  if (!finite(normalization?.mean, false) || !finite(normalization?.std, true)) {
    bad.push(`normalization ${JSON.stringify(normalization)}`);
  }
  try {
    validateSettings(config as Settings);
  } catch (e) {
    bad.push(`an invalid config (${(e as Error).message})`);
  }
  for (const [k, v] of Object.entries(TINY)) {
    if ((config as unknown as Record<string, unknown>)[k] !== v) bad.push(`config.${k} ${(config as never)[k]}`);
  }
  if (Object.getPrototypeOf(config) !== Object.prototype) bad.push("a config with another prototype");
  if (config.optimizer === "adamw") {
    const opt = state.optimizer as { exp_avg: Record<string, unknown>; step: Record<string, unknown> };
    const missing = Object.keys(opt.exp_avg).filter((k) => !whole(opt.step?.[k]));
    if (missing.length) bad.push(`no optimizer step count for ${missing.length} parameters (${missing[0]}...)`);
  } else bad.push(`optimizer ${config.optimizer}: the tensors are adamw's`);
  return bad;
}

function runCase(index: number): Record<string, unknown> {
  const mutations = makeCase(index);
  const { tensors, metadata } = baseCheckpoint();
  const meta: Meta = { ...metadata };
  for (const m of mutations) m.apply(meta);
  const path = `${dir}/case${index}.safetensors`;
  writeSafetensors(path, tensors, meta);
  const problems: string[] = [];
  const mustError = mutations.filter((m) => m.expect === "error");
  try {
    let loaded;
    try {
      loaded = loadCheckpoint(path);
    } catch (e) {
      const err = e as Error;
      const message = String(err?.message);
      if (!(err instanceof Error)) problems.push(`threw ${String(e)}, not an Error`);
      else if (err.name !== "Error") problems.push(`threw a ${err.name}`);
      if (!message.includes(path)) problems.push("the message does not name the file");
      const p = messageProblem(message);
      if (p) problems.push(p);
      if (mutations.every((m) => m.expect === "load")) problems.push("refused a valid checkpoint");
      else {
        const fields = mutations.filter((m) => m.expect !== "load").map((m) => m.field);
        if (!fields.some((f) => f.test(message))) {
          problems.push(`the message does not name the field at fault (${fields.join(" or ")})`);
        }
      }
      return { outcome: "rejected", message: message.slice(0, 300), problems };
    }
    try {
      if (mustError.length) problems.push(`loaded despite ${mustError.map((m) => m.name).join(", ")}`);
      else problems.push(...inconsistencies(loaded, meta).map((b) => `loaded ${b}`));
    } finally {
      dispose(loaded.state);
    }
    return { outcome: "loaded", problems };
  } finally {
    Deno.removeSync(path);
  }
}

if (isFuzzChild()) {
  baseCheckpoint(); // before the first case, whose leak check would count its tensors
  await childMain(runCase);
  Deno.removeSync(dir, { recursive: true });
} else {
  const COUNT = MUTATIONS.length + fuzzCases(100);
  Deno.test(`checkpoint metadata fuzz: ${COUNT} crafted checkpoints each load consistently or fail with a one-line error naming the file and field, without runaway allocation, crash or leak`, async () => {
    const count = COUNT;
    const run = await runInChildren({
      script: new URL(import.meta.url),
      count,
      memoryMb: 1536,
      caseTimeoutMs: 15_000,
      maxDeaths: 30,
    });
    const { failures, outcomes } = judge(run, count, (i) => describe(makeCase(i)), 256);
    assert.deepEqual(failures, [], summarize(failures, 60));
    assert.equal(run.results.length, count, `${run.results.length} of ${count} cases ran`);
    assert.ok(outcomes.loaded >= 5 && outcomes.rejected > count / 2, JSON.stringify(outcomes));
  });
}
