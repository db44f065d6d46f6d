/**
 * One full DINO training step beside PyTorch eager, in one run with identical
 * thread settings: ViT-T/4 at 28 px (dim 192, depth 12, heads 3, patch 4),
 * batch 64, 2 x 28 px + 6 x 12 px crops, K 4096, AdamW, clipping, EMA.
 * PyTorch uses the official-layout modules of scripts/gen_fixtures.py.
 *
 * @example
 * ```sh
 * deno run -A bench/compare_train_step.ts --steps 3 --threads 2
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { dispose, Generator, randn, setNumThreads } from "../mod.ts";
import { dinoConfig } from "../lib/model/dino.ts";
import { dinoHyper, initTrainState, trainStep } from "../lib/training/step.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    steps: { type: "string", default: "3" },
    threads: { type: "string", default: String(navigator.hardwareConcurrency) },
    python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3" },
  },
});
const steps = Number(values.steps), threads = Number(values.threads);
const B = 64, K = 4096;

function torchSide(): number[] {
  const script = new URL("./train_step_torch.py", import.meta.url).pathname;
  const r = new Deno.Command(values.python!, {
    args: [script, String(threads), String(steps)],
    stdout: "piped",
    stderr: "piped",
  })
    .outputSync();
  if (!r.success) throw new Error(`the PyTorch reference failed:\n${new TextDecoder().decode(r.stderr)}`);
  return JSON.parse(new TextDecoder().decode(r.stdout).trim().split("\n").pop()!);
}

function ourSide(): number[] {
  setNumThreads(threads);
  const cfg = dinoConfig({ arch: "vit_tiny", patchSize: 4, imgSize: 28, inChans: 1, outDim: K });
  const h = dinoHyper({ epochs: 100, itersPerEpoch: 1000, batchSize: B, warmupEpochs: 0, freezeLastLayer: 1 });
  let state = initTrainState(cfg, h, 0);
  using g = new Generator(1);
  const views = [
    ...Array.from({ length: 2 }, () => randn(g, [B, 1, 28, 28])),
    ...Array.from({ length: 6 }, () => randn(g, [B, 1, 12, 12])),
  ];
  const times: number[] = [];
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    const r = trainStep(state, views, h, cfg);
    const dt = (performance.now() - t0) / 1000;
    dispose(state);
    state = r.state;
    if (i > 0) times.push(dt); // the first step is a warmup, as on the PyTorch side
  }
  dispose([state, views]);
  return times;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const torch1 = torchSide();
const ours = ourSide();
const torch2 = torchSide();
const ref = median([...torch1, ...torch2]);
const us = median(ours);
console.log(
  `DINO step: ViT-T/4 28px, batch ${B}, 2x28 + 6x12 crops, K ${K}, ${threads} threads, median of ${steps} steps`,
);
console.log(
  `  PyTorch eager     ${ref.toFixed(3)} s/step   (runs: ${
    [...torch1, ...torch2].map((x) => x.toFixed(2)).join(", ")
  })`,
);
console.log(`  this project      ${us.toFixed(3)} s/step   (runs: ${ours.map((x) => x.toFixed(2)).join(", ")})`);
console.log(`  ratio ${(us / ref).toFixed(2)} (target <= 1.0: ${us <= ref ? "met" : "not met"})`);
