// Linear layers forward and backward for a while with a signal listener installed, for the signal-storm test in
// signals_test.ts: a signal taken while oneDNN's f32 gemm kernel runs used to write its frame into the heap.
// Usage: deno run -A tests/signal_storm_worker.ts SECONDS THREADS; prints "ready", then "steps S signals N".
import { Generator, grad, linear, randn, requiresGrad, setNumThreads, sum, tidy } from "../mod.ts";

let signals = 0;
const count = () => signals++;
Deno.addSignalListener("SIGWINCH", count);
setNumThreads(Number(Deno.args[1]));
using g = new Generator(0);
console.log("ready");
const end = Date.now() + Number(Deno.args[0]) * 1000;
let steps = 0;
while (Date.now() < end) {
  tidy(() => {
    // [rows, in, out]: the shapes of a small ViT's attention and MLP layers and of a head's last layer
    for (const [n, i, o] of [[2048, 32, 128], [2048, 128, 32], [64, 32, 64], [1024, 64, 256]]) {
      const x = requiresGrad(randn(g, [n, i])), w = requiresGrad(randn(g, [o, i]));
      grad(sum(linear(x, w)), [x, w]);
    }
  });
  if (++steps % 20 === 0) await new Promise((r) => setTimeout(r, 0)); // let the listener run
}
Deno.removeSignalListener("SIGWINCH", count);
console.log(`steps ${steps} signals ${signals}`);
