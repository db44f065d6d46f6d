/**
 * Views per second beside the official pipeline (torchvision + PIL, one
 * process), in one run: 2 x 224 + 8 x 96 views from decoded 256 px images.
 * Printed per core: this project's rate divided by its threads, against the
 * reference's single core, and the scaling from one thread to `--threads`. The two sides alternate for `--rounds` rounds and
 * each side's best counts, since the machine's speed drifts.
 *
 * @example
 * ```sh
 * deno run -A bench/compare_augment.ts --threads 2
 * ```
 * @module
 */
import { benchFlags, positiveInt } from "./flags.ts";
import { dispose, Generator, randint, setNumThreads, tidy, to } from "../mod.ts";
import { AUGMENT_PRESETS, dinoViews } from "../lib/augment/mod.ts";

const values = benchFlags({
  threads: { type: "string", default: String(navigator.hardwareConcurrency) },
  batch: { type: "string", default: "64" },
  python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3" },
  rounds: { type: "string", default: "3" },
});
const threads = positiveInt(values.threads, "--threads"), B = positiveInt(values.batch, "--batch");
const cfg = AUGMENT_PRESETS.imagenet;
const views = 2 + cfg.localCropsNumber;

function reference(): number {
  const script = new URL("./augment_torchvision.py", import.meta.url).pathname;
  const r = new Deno.Command(values.python!, {
    args: [script, "32", String(cfg.localCropsNumber)],
    stdout: "piped",
    stderr: "piped",
  })
    .outputSync();
  if (!r.success) throw new Error(`the torchvision reference failed:\n${new TextDecoder().decode(r.stderr)}`);
  return JSON.parse(new TextDecoder().decode(r.stdout).trim().split("\n").pop()!).images_per_s;
}

function ours(threads: number): number {
  setNumThreads(threads);
  using g = new Generator(0);
  const images = tidy(() => to(randint(g, 0, 256, [B, 3, 256, 256]), "u8"));
  let best = 0;
  for (let pass = 0; pass < 5; pass++) {
    const t0 = performance.now();
    dispose(dinoViews(images, cfg, g));
    const rate = B / ((performance.now() - t0) / 1000);
    if (pass > 0) best = Math.max(best, rate); // the first pass warms the buffer cache
  }
  images.dispose();
  return best;
}

// The machine's speed drifts: alternate the two sides for a few rounds and compare each side's best.
const rounds = positiveInt(values.rounds, "--rounds");
const settings = [...new Set([1, threads])];
let ref = 0;
const rates = new Map(settings.map((n) => [n, 0]));
const perRound: string[] = [];
for (let round = 0; round < rounds; round++) {
  const tv = reference();
  ref = Math.max(ref, tv);
  const mine = settings.map((n) => ours(n));
  settings.forEach((n, i) => rates.set(n, Math.max(rates.get(n)!, mine[i])));
  perRound.push((mine[0] / tv).toFixed(2));
}
console.log(
  `DINO views: 2 x 224 + ${cfg.localCropsNumber} x 96 from 256 px images (${views} views per image), batch ${B}`,
);
console.log(`  torchvision + PIL, 1 process   ${ref.toFixed(1)} images/s (${(ref * views).toFixed(0)} views/s)`);
for (const [n, us] of rates) {
  const perCore = us / n / ref;
  const scaling = n > 1 ? `, ${(us / rates.get(1)!).toFixed(2)}x the 1-thread rate` : "";
  console.log(
    `  this project, ${n} thread(s)     ${us.toFixed(1)} images/s: ${perCore.toFixed(2)}x per core${scaling} ` +
      `(target >= 5x per core: ${perCore >= 5 ? "met" : "not met"})`,
  );
}
console.log(`  (best of ${rounds} alternating rounds; 1-thread ratio by round: ${perRound.join(", ")})`);
