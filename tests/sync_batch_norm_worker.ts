// One rank of tests/distributed_test.ts's SyncBatchNorm check: rank r takes its rows of a seeded global batch (rank 0
// the first `split` rows, rank 1 the rest), runs syncBatchNorm in training, and writes its output, the moved running
// statistics and the gradients of sum(output * upstream) to a safetensors file.
// Usage: deno run -A tests/sync_batch_norm_worker.ts RANK PORT OUT
import * as t from "../mod.ts";
import { syncBatchNorm } from "../lib/model/batch_norm.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";

/** The global batch and the module's tensors, the same on every rank and in the one-process reference. */
export function syncBatchNormCase(shape: readonly number[]) {
  using g = new t.Generator(7);
  const c = shape[1];
  return {
    x: t.add(t.mul(t.randn(g, shape), 3), 1.5),
    upstream: t.randn(g, shape),
    weight: t.randn(g, [c]),
    bias: t.randn(g, [c]),
    runningMean: t.randn(g, [c]),
    runningVar: t.rand(g, [c]),
  };
}

/** The two shapes checked (a ResNet's [B, C, H, W], a head's [B, C]) and rank 0's share of each batch. */
export const SYNC_BN_SHAPES = [{ shape: [7, 3, 4, 5], split: 4 }, { shape: [9, 6], split: 3 }] as const;

if (import.meta.main) {
  const [rank, port, out] = [Number(Deno.args[0]), Number(Deno.args[1]), Deno.args[2]];
  using group = t.ProcessGroup.join({ rank, worldSize: 2, port, timeoutSeconds: 30 });
  const results: Record<string, t.Tensor> = {};
  for (const [i, { shape, split }] of SYNC_BN_SHAPES.entries()) {
    const one = t.tidy(() => {
      const c = syncBatchNormCase(shape);
      const [start, length] = rank === 0 ? [0, split] : [split, shape[0] - split];
      const x = t.requiresGrad(t.narrow(c.x, 0, start, length));
      const weight = t.requiresGrad(c.weight), bias = t.requiresGrad(c.bias);
      const { runningMean, runningVar } = c;
      const r = syncBatchNorm(x, { weight, bias, runningMean, runningVar, training: true }, group);
      const loss = t.sum(t.mul(r.output, t.narrow(c.upstream, 0, start, length)));
      const [gx, gw, gb] = t.grad(loss, [x, weight, bias]);
      return {
        output: t.detach(r.output),
        running_mean: r.runningMean!,
        running_var: r.runningVar!,
        grad_x: gx,
        grad_weight: gw,
        grad_bias: gb,
      };
    });
    for (const [k, v] of Object.entries(one)) results[`${i}.${k}`] = v;
  }
  writeSafetensors(out, results);
  t.dispose(results);
}
