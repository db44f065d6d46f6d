import assert from "node:assert/strict";
import * as t from "../mod.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  SafetensorsError,
  writeSafetensors,
} from "../lib/weights/safetensors.ts";
import { dinoConfig, initDino } from "../lib/model/dino.ts";
import { loadBackbone, loadDino, saveWeights } from "../lib/weights/weights.ts";
import { stateDict } from "../lib/weights/tree.ts";
import { noLeak } from "./helpers.ts";

function file(header: unknown, data = new Uint8Array(0), lengthOverride?: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(lengthOverride ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("safetensors round-trips every dtype, shapes, values and metadata", () =>
  noLeak(() => {
    const tensors = {
      f32: t.tensor([[1.5, -2]]),
      f64: t.tensor([3.25], { dtype: "f64" }),
      f16: t.tensor([0.5, 2], { dtype: "f16" }),
      bf16: t.tensor([1, -1], { dtype: "bf16" }),
      i64: t.tensor([2 ** 40, -3], { dtype: "i64" }),
      i32: t.tensor([7], { dtype: "i32" }),
      u8: t.tensor([255], { dtype: "u8" }),
      bool: t.tensor([1, 0], { dtype: "bool" }),
      scalar: t.tensor(5),
      empty: t.zeros([0, 3]),
    };
    const bytes = encodeSafetensors(tensors, { epoch: "3" });
    assert.equal((new DataView(bytes.buffer).getUint32(0, true) + 8) % 8, 0, "the header is padded to 8 bytes");
    const { tensors: back, metadata } = decodeSafetensors(bytes);
    assert.deepEqual(metadata, { epoch: "3" });
    assert.deepEqual(Object.keys(back), Object.keys(tensors));
    for (const [k, v] of Object.entries(tensors)) {
      assert.equal(back[k].dtype, v.dtype, k);
      assert.deepEqual(back[k].shape, v.shape, k);
      assert.deepEqual(t.toArray(back[k]), t.toArray(v), k);
    }
    t.dispose(back);
  }));

Deno.test("malformed safetensors files are clear errors that say what is wrong", () => {
  const good = { x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const data = new Uint8Array(8);
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(3), /too short for the 8-byte header length/],
    [
      new Uint8Array([0x50, 0x4b, 3, 4, 0, 0, 0, 0, 0]),
      /zip archive, as PyTorch's torch.save writes.*deno task convert --in F\.pth.*--init-weights F\.pth/,
    ],
    [file(good, data, 10_000), /runs past the end of the file/],
    [file(good, data, 2 ** 40), /over the 100 MiB limit/],
    [file("{not json", data), /the header is not JSON/],
    [file("[1, 2]", new Uint8Array(0)), /not a JSON object/],
    [file({ x: { dtype: "Q8", shape: [2], data_offsets: [0, 8] } }, data), /unsupported dtype "Q8"/],
    [file({ x: { dtype: "F32", shape: [-1], data_offsets: [0, 8] } }, data), /bad shape/],
    [file({ x: { dtype: "F32", shape: [2], data_offsets: [4, 2] } }, data), /bad data_offsets/],
    [file({ x: { dtype: "F32", shape: [2], data_offsets: [0, 16] } }, data), /past the 8 bytes of data/],
    [file({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, data), /has 8 bytes but f32 \[3\] needs 12/],
    [
      file({
        a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        b: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
      }, data),
      /overlap or hole/,
    ],
    [file(good, new Uint8Array(12)), /cover 8 bytes of data but the file has 12/],
    [file({ __metadata__: { a: 1 } }), /__metadata__ must map strings to strings/],
  ];
  const before = t.liveTensors();
  for (const [bytes, pattern] of cases) {
    assert.throws(() => decodeSafetensors(bytes, "bad.safetensors"), (e: Error) => {
      assert.ok(e instanceof SafetensorsError, e.message);
      assert.match(e.message, /^bad\.safetensors: not a valid safetensors file: /);
      assert.match(e.message, pattern);
      return true;
    });
  }
  assert.equal(t.liveTensors(), before);
  assert.throws(() => readSafetensors("/nonexistent/w.safetensors"), /cannot read weights file \/nonexistent/);
});

Deno.test("writes are atomic: no temporary file is left, and the old file survives a failed write", () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/w.safetensors`;
  using a = t.ones([2]);
  writeSafetensors(path, { a });
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["w.safetensors"]);
  using b = t.zeros([1]);
  assert.throws(() => writeSafetensors(path, { __metadata__: b }), /reserved/);
  const { tensors } = readSafetensors(path);
  assert.deepEqual(t.toArray(tensors.a), [1, 1]);
  t.dispose(tensors);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("weights load in the official layouts: full network, bare backbone, and checkpoint prefixes", () => {
  const cfg = dinoConfig({
    arch: "vit_tiny",
    depth: 1,
    imgSize: 16,
    patchSize: 8,
    outDim: 16,
    hiddenDim: 8,
    bottleneckDim: 4,
  });
  const dir = Deno.makeTempDirSync();
  const before = t.liveTensors();
  using g = new t.Generator(5);
  const model = initDino(cfg, g);
  saveWeights(`${dir}/full.safetensors`, model);
  saveWeights(`${dir}/backbone.safetensors`, model.backbone);
  const flat = stateDict(model);
  writeSafetensors(
    `${dir}/module.safetensors`,
    Object.fromEntries(Object.entries(flat).map(([k, v]) => [`module.${k}`, v])),
  );
  writeSafetensors(`${dir}/ckpt.safetensors`, {
    ...Object.fromEntries(Object.entries(flat).map(([k, v]) => [`teacher.${k}`, v])),
    ...Object.fromEntries(Object.entries(flat).map(([k, v]) => [`student.${k}`, v])),
  });
  const full = readSafetensors(`${dir}/full.safetensors`);
  assert.ok(Object.keys(full.tensors).includes("backbone.blocks.0.attn.qkv.weight"));
  assert.ok(Object.keys(full.tensors).includes("head.last_layer.weight_g"));
  t.dispose(full.tensors);
  const bare = readSafetensors(`${dir}/backbone.safetensors`);
  assert.ok(Object.keys(bare.tensors).includes("blocks.0.attn.qkv.weight"));
  t.dispose(bare.tensors);
  for (const name of ["full", "module", "ckpt"]) {
    const loaded = loadDino(`${dir}/${name}.safetensors`, cfg);
    assert.deepEqual(t.toArray(stateDict(loaded)["head.mlp.0.weight"]), t.toArray(flat["head.mlp.0.weight"]), name);
    t.dispose(loaded);
  }
  for (const name of ["backbone", "full", "ckpt"]) t.dispose(loadBackbone(`${dir}/${name}.safetensors`, cfg.vit));
  const other = dinoConfig({ ...cfg.vit, arch: "vit_tiny", ...cfg.head, outDim: 32 });
  assert.throws(
    () => loadDino(`${dir}/full.safetensors`, other),
    /head\.last_layer\.weight_v: shape \[16, 4\] in the weights, \[32, 4\] in the model/,
  );
  assert.throws(() => loadDino(`${dir}/backbone.safetensors`, cfg), /missing keys: backbone\.cls_token/);
  t.dispose(model);
  assert.equal(t.liveTensors(), before);
  Deno.removeSync(dir, { recursive: true });
});
