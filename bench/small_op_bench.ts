// `deno bench`: the round trip of one small op, add two 2x2 tensors and release the result,
// 1,000 times per iteration (so µs per iteration = ns per op). `deno task bench` runs the
// same loop beside PyTorch eager in one run and prints the ratio.
import { add, ones, tidy } from "../mod.ts";

const a = ones([2, 2]), b = ones([2, 2]);
const N = 1000;

Deno.bench("1000 x (add 2x2, dispose) in a tidy scope", { group: "small op", baseline: true }, () => {
  tidy(() => {
    for (let i = 0; i < N; i++) add(a, b).dispose();
  });
});
Deno.bench("1000 x (add 2x2, dispose) caller-owned", { group: "small op" }, () => {
  for (let i = 0; i < N; i++) add(a, b).dispose();
});
