// `deno task report`: the page of a small run made here (a checkpoint of this project on an RGB image folder, and
// metrics.jsonl rows as training writes them), checked in headless Chromium (Debian's chromium, installed by
// `scripts/setup.ts --browser`, which `deno task test` runs): no console error, every chart drew marks, every image
// loaded, and a screenshot that is not blank; and the command's one-line errors.
import assert from "node:assert/strict";
import { join } from "node:path";
import { decode } from "npm:fast-png@8.0.0";
import * as t from "../mod.ts";
import { captured } from "./helpers.ts";
import { main as report } from "../cli/report.ts";
import { saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/step.ts";

const COPIES = new URL("./fixtures/copies/", import.meta.url).pathname;

/** A run folder as `deno task train` leaves it, on an image folder of two classes (train/ and val/). */
function makeRun(network: Record<string, unknown> = { depth: 1 }): string {
  const root = Deno.makeTempDirSync();
  const data = join(root, "data"), run = join(root, "run");
  for (const [split, prefix] of [["train", "img"], ["val", "dis"]]) {
    for (const [c, first] of [["circles", 0], ["squares", 4]] as const) {
      Deno.mkdirSync(join(data, split, c), { recursive: true });
      for (let i = first; i < first + 4; i++) {
        const name = `${prefix}${String(i).padStart(2, "0")}.${prefix === "img" ? "png" : "jpg"}`;
        Deno.copyFileSync(join(COPIES, "database", name), join(data, split, c, name));
      }
    }
  }
  Deno.mkdirSync(run);
  const config = makeSettings("fmnist", { data, ...network, outDim: 64, outputDir: run });
  const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
  const state = initTrainState(networkConfig(config, 3), dinoHyper(), 0);
  saveCheckpoint(join(run, "checkpoint.safetensors"), state, { config, channels: 3, epoch: 2, normalization: norm });
  t.dispose(state);
  Deno.writeTextFileSync(join(run, "config.json"), JSON.stringify({ ...config, normalization: norm }, null, 2));
  const rows: Record<string, unknown>[] = [];
  for (let step = 1; step <= 40; step++) {
    rows.push({
      step,
      epoch: step <= 20 ? 0 : 1,
      loss: 6 - step / 20 + Math.sin(step) / 5,
      lr: 1e-3 * Math.min(1, step / 10),
      wd: 0.04 + (0.36 * step) / 40,
      momentum: 0.99 + (0.01 * step) / 40,
      teacher_temp: 0.04,
      teacher_entropy: 3 - step / 40,
      student_entropy: 6 - step / 40,
      images_per_s: 100 + 10 * Math.cos(step),
    });
    if (step === 20) rows.push({ step, epoch: 1, knn_top1: 55, knn_top5: 90 }); // after the first of 2 epochs
  }
  const summary = {
    knn_top1: { trained: 62.5, init: 50, raw_pixels: 75 },
    knn_top5: { trained: 100, init: 100, raw_pixels: 100 },
    knn_test_images: 8,
    steps: 40,
  };
  rows.push({ step: 40, epoch: 2, ...summary });
  Deno.writeTextFileSync(join(run, "metrics.jsonl"), rows.map((r) => JSON.stringify(r) + "\n").join("") + '{"step":4');
  Deno.writeTextFileSync(join(run, "summary.json"), JSON.stringify(summary));
  return run;
}

/** Runs headless Chromium on a page: what the page logged to its console, and a screenshot. */
async function chromium(page: string, screenshot: string): Promise<string[]> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("chromium", {
      args: [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2400",
        `--screenshot=${screenshot}`,
        `file://${page}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    throw new Error(
      `headless Chromium could not be started (${e instanceof Error ? e.message : e}); ` +
        `install it: deno run -A scripts/setup.ts --browser (Debian's chromium package)`,
    );
  }
  assert.ok(out.success, new TextDecoder().decode(out.stderr).slice(-2000));
  return new TextDecoder().decode(out.stderr).split("\n").filter((l) => l.includes(":CONSOLE"))
    .map((l) => /\] "(.*)", source:/.exec(l)?.[1] ?? l);
}

Deno.test("deno task report: a self-contained page that draws every chart in headless Chromium, no console error", async () => {
  const run = makeRun();
  const before = t.liveTensors();
  const r = await captured(() => report(["--run", run, "--points", "16", "--images", "2"]));
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before, "the command frees every tensor");
  const page = join(run, "report.html");
  const html = Deno.readTextFileSync(page);
  assert.ok(!/(src|href)="https?:/.test(html) && !/url\(https?:/.test(html), "nothing fetched from the network");
  for (const title of ["Loss", "Learning rate", "Weight decay", "Teacher momentum", "Teacher temperature"]) {
    assert.match(html, new RegExp(`>${title}</text>`));
  }
  assert.match(html, />Entropy of the output distributions</);
  assert.match(html, />Throughput over training</);
  assert.match(html, />Accuracy</);
  assert.match(html, /62\.50%/); // the final accuracies table
  assert.match(
    html,
    /k 20, weighted votes, cosine similarity of the teacher's L2-normalised CLS features, on 8 test images/,
  );
  assert.match(html, /PCA of 8 test features/);
  assert.match(html, /t-SNE of 8 test features/);
  assert.match(html, /1 line\(s\) of metrics\.jsonl could not be read/);
  const shot = join(run, "screenshot.png");
  const console = await chromium(page, shot);
  const checks = console.filter((l) => l.startsWith("report-check "));
  assert.equal(checks.length, 1, `the page's self-check ran: ${console.join("; ")}`);
  assert.deepEqual(console.filter((l) => !l.startsWith("report-check ")), [], "nothing else on the console");
  const c = JSON.parse(checks[0].slice("report-check ".length).replaceAll('\\"', '"'));
  assert.deepEqual(c.errors, []);
  assert.equal(c.charts, 10, "7 curves, accuracy, PCA, t-SNE");
  c.marks.forEach((m: number, i: number) => assert.ok(m > 0, `chart ${i} drew marks`));
  assert.equal(c.images, c.allImages, "every inlined image decoded");
  assert.equal(c.allImages, 2 * (1 + 2 * 4), "2 images, each with 4 heads and 4 masks");
  // the screenshot is not blank: many colours, and dark pixels (text, lines) on the white page
  const png = decode(Deno.readFileSync(shot));
  const colors = new Set<number>();
  let dark = 0;
  for (let i = 0; i < png.data.length; i += png.channels) {
    colors.add((png.data[i] << 16) | (png.data[i + 1] << 8) | png.data[i + 2]);
    if (png.data[i] + png.data[i + 1] + png.data[i + 2] < 200) dark++;
  }
  assert.ok(colors.size > 200 && dark > 5000, `${colors.size} colours, ${dark} dark pixels`);
});

Deno.test("deno task report on a ResNet run: feature maps of the pooled features within its test limit, no attention, said so", async () => {
  const run = makeRun({ arch: "resnet18", useBnInHead: true, testLimit: 7 });
  const r = await captured(() => report(["--run", run, "--points", "16", "--images", "2"]));
  assert.equal(r.value, 0, r.err);
  const html = Deno.readTextFileSync(join(run, "report.html"));
  assert.match(html, /the network is a ResNet: no attention maps/);
  assert.match(html, /PCA of 7 test features \(pooled\)/); // the run's --test-limit 7
  assert.match(html, /t-SNE of 7 test features/);
  assert.match(html, /L2-normalised pooled features, on 8 test images/);
});

Deno.test("headless Chromium's console is read: an error on a page is seen", async () => {
  const dir = Deno.makeTempDirSync();
  const page = join(dir, "broken.html");
  Deno.writeTextFileSync(page, "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>");
  const console = await chromium(page, join(dir, "shot.png"));
  assert.ok(console.some((l) => /Uncaught ReferenceError: undefinedFunction/.test(l)), console.join("; "));
});

Deno.test("deno task report: bad flags and folders are one line, exit 2", async () => {
  const tmp = Deno.makeTempDirSync();
  Deno.writeTextFileSync(join(tmp, "file.txt"), "x");
  // the folders of the other programs that write metrics.jsonl
  for (const [name, config] of [["finetune", { layerDecay: 0.65 }], ["linear", { nLastBlocks: 4 }]] as const) {
    Deno.mkdirSync(join(tmp, name));
    Deno.writeTextFileSync(join(tmp, name, "metrics.jsonl"), '{"epoch":0,"test_top1":50}\n');
    Deno.writeTextFileSync(join(tmp, name, "config.json"), JSON.stringify(config));
  }
  const cases: [string[], RegExp][] = [
    [[], /--run is required/],
    [["--run", join(tmp, "nowhere")], /--run .*nowhere: no such folder/],
    [["--run", join(tmp, "file.txt")], /is a file; name the run's output folder/],
    [["--run", tmp], /holds no metrics\.jsonl: not a training run's output folder/],
    [["--run", tmp, "--images", "-1"], /--images needs a value|--images must be between 0 and 32/],
    [
      ["--run", join(tmp, "finetune")],
      /is the output folder of `deno task finetune`: report reads the folder of `deno task train`/,
    ],
    [["--run", join(tmp, "linear")], /is the output folder of `deno task linear`/],
  ];
  for (const [args, message] of cases) {
    const r = await captured(() => report(args));
    assert.equal(r.value, 2, `${args.join(" ")}: ${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1);
    assert.match(r.err, message);
    assert.ok(!t.exists(join(tmp, "report.html")) && !t.exists(join(tmp, "finetune", "report.html")));
  }
});

Deno.test("report notes the images it could not read for the attention maps and the feature maps", async () => {
  const run = makeRun();
  const data = join(run, "..", "data");
  Deno.writeTextFileSync(join(data, "train", "circles", "000.png"), "not an image"); // the first training image
  Deno.writeTextFileSync(join(data, "val", "circles", "000.jpg"), "not an image either");
  const r = await captured(() => report(["--run", run, "--points", "16", "--images", "2"]));
  assert.equal(r.value, 0, r.err);
  const html = Deno.readTextFileSync(join(run, "report.html"));
  assert.match(
    html,
    /1 of the 2 images chosen for attention maps could not be read: \S+000\.png: not a readable image/,
  );
  assert.match(html, /1 of the 9 test images for the feature maps could not be read: \S+000\.jpg/);
});
