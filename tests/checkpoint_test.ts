import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/mod.ts";
import { loadCheckpoint, saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { readSafetensors, writeSafetensors } from "../lib/weights/safetensors.ts";

/** A valid checkpoint's tensors and metadata, to craft bad ones from. */
function valid(): { tensors: Record<string, t.Tensor>; metadata: Record<string, string> } {
  const config = makeSettings("fmnist", { depth: 2, embedDim: 32, numHeads: 2, outDim: 64, hiddenDim: 32 });
  const state = initTrainState(networkConfig(config, 1), dinoHyper(config), 0);
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  saveCheckpoint(path, state, { config, channels: 1, epoch: 0, normalization: { mean: [0.5], std: [0.5] } });
  t.dispose(state);
  const saved = readSafetensors(path);
  Deno.removeSync(path);
  return saved;
}

Deno.test("crafted checkpoint metadata is a one-line error naming the field, before anything is allocated, and leaks nothing", () => {
  const { tensors, metadata } = valid();
  const config = JSON.parse(metadata.config);
  const withConfig = (o: Record<string, unknown>) => ({ config: JSON.stringify({ ...config, ...o }) });
  const cases: [Record<string, string>, RegExp][] = [
    [{ step: "-5" }, /metadata field step is "-5", not a whole number/],
    [{ step: "abc" }, /metadata field step is "abc"/],
    [{ step: "1e30" }, /metadata field step is "1e30"/],
    [{ epoch: "" }, /metadata field epoch/],
    [{ channels: "0" }, /metadata field channels is "0"/],
    [{ channels: "1000000000" }, /metadata field channels/],
    [{ rng: "{}" }, /metadata field rng is "\{\}", not \{"seed": integer/],
    [{ rng: "not json" }, /metadata field rng/],
    [{ optimizer_steps: "[1]" }, /metadata field optimizer_steps/],
    [{ normalization: '{"mean":[0.5],"std":[0]}' }, /metadata field normalization/],
    [{ config: "{" }, /metadata field config is not JSON/],
    [{ config: "[]" }, /config is not a JSON object/],
    [withConfig({ preset: "nope" }), /config.preset is "nope"/],
    [withConfig({ depth: 1e6 }), /config.depth must be at most 128, got 1000000/],
    [withConfig({ embedDim: 1e9 }), /config.embedDim must be at most 8192/],
    [withConfig({ depth: -1 }), /config.depth must be positive/],
    [withConfig({ depth: "2" }), /config.depth takes a number/],
    [withConfig({ depth: 3 }), /config.depth says 3, but the tensors hold 2/],
    [withConfig({ embedDim: 64, numHeads: 2 }), /config.embedDim says 64, but the tensors hold 32/],
    [withConfig({ outDim: 128 }), /config.outDim says 128, but the tensors hold 64/],
    [withConfig({ patchSize: 1 }), /config.patchSize says 1, but the tensors hold 7/],
    [withConfig({ optimizer: "sgd" }), /optimizer.momentum_buffer lacks/],
    [{ format: "other/1" }, /not a training checkpoint of this project/],
  ];
  const missingSteps = { ...metadata };
  delete missingSteps.optimizer_steps;
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  const before = t.liveTensors();
  for (const [change, says] of [...cases, [missingSteps, /metadata field optimizer_steps is null/]] as const) {
    const crafted = change === missingSteps ? missingSteps : { ...metadata, ...change };
    writeSafetensors(path, tensors, crafted);
    assert.throws(() => loadCheckpoint(path), (e: Error) => {
      assert.match(e.message, says, e.message);
      assert.match(e.message, /^cannot load checkpoint \S+: [^\n]+$/, e.message);
      return true;
    });
    assert.equal(t.liveTensors(), before, `a failed load leaks nothing: ${JSON.stringify(change)}`);
  }
  // A tensor missing, or of another shape, is named too.
  const { center: _center, ...noCenter } = tensors;
  writeSafetensors(path, noCenter, metadata);
  assert.throws(() => loadCheckpoint(path), /lacks a tensor it needs/);
  using wrong = t.zeros([1, 7]);
  writeSafetensors(path, { ...tensors, center: wrong }, metadata);
  assert.throws(() => loadCheckpoint(path), /center has shape \[1,7\], not \[1, 64\]/);
  assert.equal(t.liveTensors(), before + 1);
  Deno.removeSync(path);
  t.dispose(tensors);
});

Deno.test("saveCheckpoint refuses a config that does not describe the state, writing nothing", () => {
  const config = makeSettings("fmnist", { depth: 2, embedDim: 32, numHeads: 2, outDim: 64, hiddenDim: 32 });
  const state = initTrainState(networkConfig(config, 1), dinoHyper(config), 0);
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  Deno.removeSync(path);
  try {
    const other = makeSettings("fmnist", { depth: 2, embedDim: 64, numHeads: 2, outDim: 64, hiddenDim: 32 });
    const info = { channels: 1, epoch: 0, normalization: { mean: [0.5], std: [0.5] } };
    assert.throws(
      () => saveCheckpoint(path, state, { ...info, config: other }),
      /saveCheckpoint: the config does not describe the state: config.embedDim says 64, but the tensors hold 32/,
    );
    assert.ok(!t.exists(path), "nothing written");
  } finally {
    t.dispose(state);
  }
});
