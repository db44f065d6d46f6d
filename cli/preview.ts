/**
 * `deno task preview`: writes a PNG grid of the DINO views of a few images, so
 * a person can see what the model sees. Each row is one image: the input, the
 * 2 global views, then the local views (padded to the global size).
 *
 * @example
 * ```sh
 * deno task preview --data fmnist --output-dir out/
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import {
  cat,
  clamp,
  defaultMaxImagePixels,
  dispose,
  Generator,
  interpolate,
  pad,
  permute,
  reshape,
  tidy,
  to,
  writeImage,
} from "../mod.ts";
import { AUGMENT_PRESETS, dinoViews, toPixels } from "../lib/augment/mod.ts";
import { openDataset } from "../lib/data/open.ts";

const HELP = `usage: deno task preview --data DATA --output-dir DIR [options]

Writes DIR/views.png: one row per image (input, 2 global views, local views).

options:
  --data DATA          fmnist, cifar10, cifar100 or an image folder (required)
  --output-dir DIR     where views.png goes (required)
  --preset NAME        augmentation preset: fmnist28, cifar32, imagenet (default: from the data)
  --count N            images to show (default 6)
  --seed N             random seed (default 0)
  --max-image-pixels N largest image (width x height) decoded; larger files are skipped
                       (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help           this help`;

function fail(message: string): never {
  console.error(`error: ${message}\n\n${HELP}`);
  Deno.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    args: Deno.args,
    options: {
      data: { type: "string" },
      "output-dir": { type: "string" },
      preset: { type: "string" },
      count: { type: "string", default: "6" },
      seed: { type: "string", default: "0" },
      "max-image-pixels": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  }));
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}
if (values.help) {
  console.log(HELP);
  Deno.exit(0);
}
if (!values.data) fail("--data is required");
if (!values["output-dir"]) fail("--output-dir is required");
const count = Number(values.count), seed = Number(values.seed);
if (!(Number.isInteger(count) && count > 0)) fail(`--count must be a positive integer, got ${values.count}`);
if (!Number.isInteger(seed)) fail(`--seed must be an integer, got ${values.seed}`);
let maxImagePixels = 0;
try {
  maxImagePixels = Number(values["max-image-pixels"] ?? defaultMaxImagePixels());
} catch (e) {
  fail(e instanceof Error ? e.message : String(e));
}
if (!(Number.isSafeInteger(maxImagePixels) && maxImagePixels > 0)) {
  fail(`--max-image-pixels must be a positive integer, got ${values["max-image-pixels"]}`);
}

const ds = (() => {
  try {
    return openDataset(values.data!, "train", { maxImagePixels });
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
})();
const presetName = values.preset ?? (ds.size <= 28 ? "fmnist28" : ds.size <= 32 ? "cifar32" : "imagenet");
const preset = AUGMENT_PRESETS[presetName as keyof typeof AUGMENT_PRESETS];
if (!preset) fail(`unknown preset "${presetName}": use ${Object.keys(AUGMENT_PRESETS).join(", ")}`);
const cfg = preset.mean.length === ds.channels ? preset : {
  ...preset,
  mean: Array(ds.channels).fill(preset.mean[0]),
  std: Array(ds.channels).fill(preset.std[0]),
};

const batch = await ds.load(Array.from({ length: Math.min(count, ds.length) }, (_, i) => i));
if (batch.images.shape[0] === 0) {
  console.error(`error: none of the first ${count} images of ${values.data} could be read (${batch.firstError})`);
  Deno.exit(1);
}
using g = new Generator(seed);
const grid = tidy(() => {
  const G = cfg.globalCropsSize, gap = 2, C = ds.channels, B = batch.images.shape[0];
  const views = dinoViews(batch.images, cfg, g); // normalised
  const input = clamp(
    interpolate(to(batch.images, "f32"), { size: [G, G], mode: "bilinear", antialias: true }),
    0,
    255,
  );
  const pixels = views.map((v) => to(permute(toPixels(v, cfg.mean, cfg.std), [0, 3, 1, 2]), "f32")); // [B, C, s, s]
  const cells = [input, ...pixels].map((px) => {
    const room = G - px.shape[2];
    return pad(px, [gap, gap + room, gap, gap + room], "constant", 255); // white frame, locals top-left
  });
  const rows = cat(cells, 3); // [B, C, G + 2 gap, cells x (G + 2 gap)]
  const [, , h, w] = rows.shape;
  const tall = reshape(permute(rows, [1, 0, 2, 3]), [C, B * h, w]); // rows stacked vertically
  return to(permute(tall, [1, 2, 0]), "u8"); // [H, W, C]
});
Deno.mkdirSync(values["output-dir"]!, { recursive: true });
const out = join(values["output-dir"]!, "views.png");
writeImage(out, grid);
dispose([grid, batch.images, batch.labels]);
ds.dispose();
console.log(`wrote ${out}: ${count} images x ${2 + cfg.localCropsNumber} views (${presetName})`);
