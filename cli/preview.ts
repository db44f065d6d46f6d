/**
 * `deno task preview`: writes a PNG grid of the DINO views of a few images, so
 * a person can see what the model sees: the views `deno task train` makes
 * with the same preset and the training flags given after `--`. Each row is
 * one image: the input, the 2 global views, then the local views (padded to
 * the global size).
 *
 * Exit codes: 0 written, 1 a run-time failure (unreadable images), 2 a bad
 * flag, value or path (one line on stderr). The output folder is checked
 * before the data is opened and made only once the images are read; nothing
 * is written on any error.
 *
 * @example
 * ```sh
 * deno task preview --data fmnist --output-dir out/
 * deno task preview --data fmnist --output-dir out/ -- --global-crops-size 28 --local-crops-number 6
 * ```
 * @module
 */
import { dirname, join, resolve } from "node:path";
import {
  cat,
  clamp,
  defaultMaxImagePixels,
  dispose,
  exists,
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
import { skippedWarning } from "../lib/data/loader.ts";
import type { Dataset } from "../lib/data/dataset.ts";
import { augmentConfig, PRESETS, type Settings } from "../lib/settings/mod.ts";
import { failure, integer, parseFlags, parseTrainArgs, splitPassthrough, UsageError } from "./flags.ts";

const HELP = `usage: deno task preview --data DATA --output-dir DIR [options] [-- training flags]

Writes DIR/views.png: one row per image (input, 2 global views, local views), the views
deno task train makes with the same preset and the training flags given after --
(--global-crops-size, --local-crops-number, --global-crops-scale, ...).

options:
  --data DATA          fmnist, cifar10, cifar100 or an image folder (required)
  --output-dir DIR     where views.png goes (required; made if need be)
  --preset NAME        training preset: ${Object.keys(PRESETS).join(", ")}
                       (default fmnist, as deno task train's)
  --count N            images to show, 1 to 1024 (default 6)
  --seed N             random seed, >= 0 (default 0)
  --max-image-pixels N largest image (width x height) decoded; larger files are skipped
                       (default: env DINO_MAX_IMAGE_PIXELS, else 89478485)
  -h, --help           this help`;

/** The training settings of `preset` with the training flags given after `--`. */
function trainingSettings(preset: string, data: string, flags: string[]): Settings {
  const s = parseTrainArgs(["--preset", preset, "--data", data, ...flags]);
  if (s === "help") throw new UsageError("--help after -- is a training flag: use deno task train --help");
  return s;
}

function parse(allArgs: string[]) {
  const { own: args, extra: trainFlags } = splitPassthrough(allArgs);
  const values = parseFlags(args, {
    data: { type: "string" },
    "output-dir": { type: "string" },
    preset: { type: "string" },
    count: { type: "string", default: "6" },
    seed: { type: "string", default: "0" },
    "max-image-pixels": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return "help";
  if (!values.data) throw new UsageError("--data is required");
  if (!values["output-dir"]) throw new UsageError("--output-dir is required");
  if (values.preset !== undefined && !Object.hasOwn(PRESETS, values.preset)) {
    throw new UsageError(`--preset must be one of ${Object.keys(PRESETS).join(", ")}, got "${values.preset}"`);
  }
  const maxPixels = values["max-image-pixels"];
  return {
    data: values.data,
    // Checked before the data opens; an image folder is then read at the preset's --image-size, as training reads it.
    settings: trainingSettings(values.preset ?? "fmnist", values.data, trainFlags),
    count: integer("--count", values.count, 1, 1024),
    seed: integer("--seed", values.seed, 0),
    maxImagePixels: maxPixels === undefined ? defaultMaxImagePixels() : integer("--max-image-pixels", maxPixels, 1),
    outputDir: writableFolder(values["output-dir"]),
  };
}

/**
 * The output folder must be a folder this process can write, or a place one can be made: checked (by writing
 * and removing a temporary file in the nearest existing folder) without creating anything.
 */
function writableFolder(dir: string): string {
  let d = resolve(dir);
  while (!exists(d) && dirname(d) !== d) d = dirname(d);
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(d);
  } catch (e) {
    throw new UsageError(`--output-dir ${dir} cannot be written: ${e instanceof Error ? e.message : e}`);
  }
  if (!info.isDirectory) {
    throw new UsageError(
      d === resolve(dir) ? `--output-dir ${dir} is a file, not a folder` : `--output-dir ${dir}: ${d} is a file`,
    );
  }
  try {
    Deno.removeSync(Deno.makeTempFileSync({ dir: d, prefix: ".write-check-" }));
  } catch (e) {
    throw new UsageError(`--output-dir ${dir} cannot be written: ${e instanceof Error ? e.message : e}`);
  }
  return dir;
}

/** Makes `dir` (and its missing parents); `undo` removes what it made. */
function makeFolder(dir: string): { undo(): void } {
  let top: string | undefined; // the outermost folder this call creates
  for (let d = resolve(dir); !exists(d); d = dirname(d)) top = d;
  Deno.mkdirSync(dir, { recursive: true });
  return { undo: () => top && Deno.removeSync(top, { recursive: true }) };
}

/** Runs the program; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let ds: Dataset | undefined;
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    const { settings } = o;
    ds = openDataset(o.data, "train", { maxImagePixels: o.maxImagePixels, side: settings.imageSize });
    // The normalisation only round-trips here (the views are drawn as pixels again): the recipe's own constants.
    const recipe = AUGMENT_PRESETS[settings.augmentation];
    const fill = (v: number[]) => v.length === ds!.channels ? v : Array(ds!.channels).fill(v[0]);
    const cfg = augmentConfig(settings, { mean: fill(recipe.mean), std: fill(recipe.std) });
    const n = Math.min(o.count, ds.length);
    const batch = await ds.load(Array.from({ length: n }, (_, i) => i));
    try {
      const B = batch.images.shape[0], C = ds.channels;
      if (B === 0) throw new Error(`none of the first ${n} image(s) of ${o.data} could be read (${batch.firstError})`);
      if (B < n) console.warn(skippedWarning(batch.failed, batch.firstError, `among the first ${n}, so ${B} rows`));
      using g = new Generator(o.seed);
      using grid = tidy(() => {
        const G = cfg.globalCropsSize, gap = 2;
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
      const out = join(o.outputDir, "views.png");
      const made = makeFolder(o.outputDir); // only now: the data opened and the grid is made
      try {
        writeImage(out, grid);
      } catch (e) {
        made.undo();
        throw e;
      }
      console.log(
        `wrote ${out}: ${B} images x ${2 + cfg.localCropsNumber} views (preset ${settings.preset}: ` +
          `2 x ${cfg.globalCropsSize} + ${cfg.localCropsNumber} x ${cfg.localCropsSize} px)`,
      );
    } finally {
      dispose([batch.images, batch.labels]);
    }
    return 0;
  } catch (e) {
    return failure(e, "preview");
  } finally {
    ds?.dispose();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
