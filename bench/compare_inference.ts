/**
 * Inference throughput, the "im/s" column of the paper's tables: feature
 * extraction (no gradients, evaluation mode) of ViT-S/16 (the CLS after the
 * final norm) and ResNet-50 (the pooled feature, fc as identity) at 224 px,
 * beside PyTorch eager on the same weights and images in the same run, with
 * the same thread count. PyTorch runs before and after this project, and the
 * median batch time of each side gives images per second. Both sides' features
 * of the first images are compared, so the two computed the same thing. On a
 * machine with CUDA (this project's libtorch and the reference's PyTorch
 * both), the same is measured on the GPU.
 *
 * The default batch is 128 on a GPU, as the paper's throughput; on a CPU it is
 * 8 (`--batch 128` for the paper's), since a batch of 128 ViT-S/16 images is
 * about 600 GFLOP.
 *
 * @example
 * ```sh
 * deno run -A bench/compare_inference.ts --iters 3 --threads 2
 * deno run -A bench/compare_inference.ts --device cuda --batch 128 --iters 10
 * ```
 * @module
 */
import { benchFlags, positiveInt } from "./flags.ts";
import {
  cudaAvailable,
  cudaSynchronize,
  type Device,
  dispose,
  Generator,
  noGrad,
  randn,
  setNumThreads,
  type Tensor,
  tidy,
  toArray,
  toDevice,
} from "../mod.ts";
import { initViT, vitConfig, vitForward } from "../lib/model/vit.ts";
import { initResNet, resnetConfig, resnetFeatures } from "../lib/model/resnet.ts";
import { mapTree, stateDict } from "../lib/weights/tree.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";

const values = benchFlags({
  iters: { type: "string", default: "3" },
  batch: { type: "string" },
  threads: { type: "string", default: String(navigator.hardwareConcurrency) },
  device: { type: "string", default: "auto" },
  python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3" },
});
const iters = positiveInt(values.iters, "--iters"), threads = positiveInt(values.threads, "--threads");
const devices: Device[] = values.device === "auto"
  ? (cudaAvailable() ? ["cpu", "cuda"] : ["cpu"])
  : [values.device as Device];

interface Side {
  [model: string]: { seconds: number[]; features: number[] };
}

function torchSide(path: string, device: Device): Side {
  const script = new URL("./inference_torch.py", import.meta.url).pathname;
  const r = new Deno.Command(values.python!, {
    args: [script, path, String(threads), String(iters), device],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!r.success) throw new Error(`the PyTorch reference failed:\n${new TextDecoder().decode(r.stderr)}`);
  return JSON.parse(new TextDecoder().decode(r.stdout).trim().split("\n").pop()!);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

setNumThreads(threads);
using g = new Generator(0);
const vitCfg = vitConfig("vit_small", { patchSize: 16, imgSize: 224 });
const rnCfg = resnetConfig("resnet50");
const vit = initViT(vitCfg, g), resnet = initResNet(rnCfg, g);
const dir = Deno.makeTempDirSync();
try {
  for (const device of devices) {
    const batch = values.batch === undefined ? (device === "cuda" ? 128 : 8) : positiveInt(values.batch, "--batch");
    const input = randn(g, [batch, 3, 224, 224]);
    const path = `${dir}/weights.safetensors`;
    const flat: Record<string, Tensor> = { input };
    for (const [k, v] of Object.entries(stateDict(vit))) flat[`vit.${k}`] = v;
    for (const [k, v] of Object.entries(stateDict(resnet))) flat[`resnet.${k}`] = v;
    writeSafetensors(path, flat);

    const torch1 = torchSide(path, device);
    const ours: Side = {};
    const models = [
      ["vit_small/16", vit, (p: typeof vit, x: Tensor) => vitForward(p, vitCfg, x)],
      ["resnet50", resnet, (p: typeof resnet, x: Tensor) => resnetFeatures(p, rnCfg, x)],
    ] as const;
    for (const [name, params, forward] of models) {
      const p = device === "cpu" ? params : mapTree(params, (t) => toDevice(t, device));
      const x = device === "cpu" ? input : toDevice(input, device);
      const run = () => noGrad(() => tidy(() => (forward as (p: unknown, x: Tensor) => Tensor)(p, x)));
      run().dispose(); // warmup, as on the PyTorch side
      if (device === "cuda") cudaSynchronize();
      const seconds: number[] = [];
      let y: Tensor | undefined;
      for (let i = 0; i < iters; i++) {
        y?.dispose();
        const t0 = performance.now();
        y = run();
        if (device === "cuda") cudaSynchronize();
        seconds.push((performance.now() - t0) / 1000);
      }
      const out = y!;
      const features = tidy(() => toArray(out.device === "cpu" ? out : toDevice(out, "cpu"))).slice(
        0,
        4 * out.shape[1],
      );
      out.dispose();
      if (p !== params) dispose(p);
      if (x !== input) x.dispose();
      ours[name] = { seconds, features };
    }
    const torch2 = torchSide(path, device);
    input.dispose();

    console.log(
      `inference throughput, ${device}: batch ${batch} at 224 px, no grad, ${threads} threads, ` +
        `median of ${iters} batches (PyTorch twice: before and after)`,
    );
    for (const name of Object.keys(ours)) {
      const ref = median([...torch1[name].seconds, ...torch2[name].seconds]), us = median(ours[name].seconds);
      const a = ours[name].features, b = torch1[name].features;
      const scale = Math.max(...b.map(Math.abs));
      const diff = Math.max(...a.map((v, i) => Math.abs(v - b[i])));
      console.log(
        `  ${name.padEnd(13)} PyTorch eager ${(batch / ref).toFixed(1).padStart(7)} im/s   this project ${
          (batch / us).toFixed(1).padStart(7)
        } im/s   ratio (time) ${(us / ref).toFixed(2)}   features max |diff| ${(diff / scale).toExponential(1)} of max`,
      );
    }
  }
} finally {
  dispose([vit, resnet]);
  Deno.removeSync(dir, { recursive: true });
}
