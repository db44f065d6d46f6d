/**
 * Evaluation inputs per second beside the official pipeline (torchvision's
 * ImageFolder loader + `Resize(256, bicubic)`, `CenterCrop(224)`, `ToTensor`,
 * `Normalize`; one process, one thread), in one run, on the same JPEGs:
 * this project's `decodeImages` (libjpeg, Pillow's resampling, on native
 * threads) + `evalImages`, the same pixels. Printed per core, with the scaling
 * from one thread to `--threads`; the two sides alternate for `--rounds`
 * rounds and each side's best counts, since the machine's speed drifts.
 *
 * @example
 * ```sh
 * deno run -A bench/compare_decode.ts --threads 2
 * ```
 * @module
 */
import { join } from "node:path";
import { benchFlags, positiveInt } from "./flags.ts";
import { decodeImages, setNumThreads, tidy } from "../mod.ts";
import { evalImages } from "../lib/eval/knn.ts";
import { IMAGENET_NORMALIZATION } from "../lib/eval/attention.ts";

const values = benchFlags({
  threads: { type: "string", default: String(navigator.hardwareConcurrency) },
  images: { type: "string", default: "128" },
  python: { type: "string", default: Deno.env.get("DINO_BENCH_PYTHON") ?? "/usr/bin/python3" },
  rounds: { type: "string", default: "3" },
});
const threads = positiveInt(values.threads, "--threads"), N = positiveInt(values.images, "--images");
const rounds = positiveInt(values.rounds, "--rounds");
const script = new URL("./decode_torchvision.py", import.meta.url).pathname;
const { mean, std } = IMAGENET_NORMALIZATION;

function reference(dir: string, write = false): number {
  const r = new Deno.Command(values.python!, {
    args: [script, dir, ...(write ? ["--write", String(N)] : [])],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!r.success) throw new Error(`the torchvision reference failed:\n${new TextDecoder().decode(r.stderr)}`);
  return JSON.parse(new TextDecoder().decode(r.stdout).trim().split("\n").pop()!).images_per_s;
}

async function ours(paths: string[], threads: number): Promise<number> {
  setNumThreads(threads);
  let best = 0;
  for (let pass = 0; pass < 3; pass++) {
    const t0 = performance.now();
    const r = await decodeImages(paths, { side: 256, crop: 224, threads });
    using images = r.images;
    if (r.failed.length > 0) throw new Error(`decoding failed: ${r.failed[0].reason}`);
    using x = tidy(() => evalImages(images, { size: 224, mean: [...mean], std: [...std] }));
    if (x.shape[0] !== paths.length) throw new Error(`decoded ${x.shape[0]} of ${paths.length} images`);
    best = Math.max(best, paths.length / ((performance.now() - t0) / 1000));
  }
  return best;
}

const dir = Deno.makeTempDirSync({ prefix: "compare_decode_" });
try {
  let ref = reference(dir, true); // writes the JPEGs, then reads them
  const paths = [...Deno.readDirSync(dir)].map((e) => join(dir, e.name)).sort();
  const settings = [...new Set([1, threads])];
  const rates = new Map(settings.map((n) => [n, 0]));
  const perRound: string[] = [];
  for (let round = 0; round < rounds; round++) {
    const tv = round === 0 ? ref : reference(dir);
    ref = Math.max(ref, tv);
    const mine: number[] = [];
    for (const n of settings) mine.push(await ours(paths, n));
    settings.forEach((n, i) => rates.set(n, Math.max(rates.get(n)!, mine[i])));
    perRound.push((mine[0] / tv).toFixed(2));
  }
  console.log(
    `evaluation inputs: ${N} JPEGs of 500 x 375 (quality 90) to normalised 224 x 224 (Resize 256, CenterCrop)`,
  );
  console.log(`  torchvision + PIL, 1 process   ${ref.toFixed(1)} images/s`);
  for (const [n, us] of rates) {
    const scaling = n > 1 ? `, ${(us / rates.get(1)!).toFixed(2)}x the 1-thread rate` : "";
    console.log(
      `  this project, ${n} thread(s)     ${us.toFixed(1)} images/s: ${(us / n / ref).toFixed(2)}x per core${scaling}`,
    );
  }
  console.log(`  (best of ${rounds} alternating rounds; 1-thread ratio by round: ${perRound.join(", ")})`);
} finally {
  Deno.removeSync(dir, { recursive: true });
}
