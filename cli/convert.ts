/**
 * `deno task convert`: a PyTorch `.pth` (the official DINO weights and full
 * checkpoints as published) rewritten as safetensors, which every command and
 * other tools read without running Python's pickle. Every tensor keeps its
 * official key (`teacher.backbone.cls_token`, `student.module.head...`,
 * `dino_loss.center`); `args` and `epoch` go into the metadata. With
 * `--checkpoint-key`, only that network is written, as `backbone.*`/`head.*`.
 *
 * Exit codes: 0 done, 1 a run-time failure, 2 a bad flag, path or file (one
 * line on stderr; nothing written).
 *
 * @example
 * ```sh
 * deno task convert --in dino_deitsmall16_pretrain.pth --out dino_vits16.safetensors
 * ```
 * @module
 */
import { dispose, exists } from "../mod.ts";
import { readWeights, selectNetwork } from "../lib/weights/read.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";
import { failure, outputFile, parseFlags, UsageError, weightsFile } from "./flags.ts";

const HELP = `usage: deno task convert --in FILE.pth --out FILE.safetensors [--checkpoint-key K]

Rewrites a PyTorch .pth (torch.save, PyTorch >= 1.6) as safetensors, keeping the official key names.
Reading never runs code: a pickle naming anything but tensors, containers and argparse.Namespace is refused.

options:
  --in FILE             the .pth to read (a bare state dict or a full checkpoint) (required)
  --out FILE            the .safetensors to write, in an existing folder (required)
  --checkpoint-key K    write only this network of a full checkpoint (teacher or student), as backbone.*/head.*
  -h, --help            this text`;

function parse(args: string[]) {
  const v = parseFlags(args, {
    in: { type: "string" },
    out: { type: "string" },
    "checkpoint-key": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (v.help) return "help";
  for (const k of ["in", "out"] as const) if (!v[k]) throw new UsageError(`--${k} is required`);
  const input = weightsFile("--in", v.in!);
  const out = outputFile("--out", v.out!);
  if (exists(out) && Deno.realPathSync(out) === Deno.realPathSync(input)) {
    throw new UsageError(`--out ${out} is the --in file; name another file`);
  }
  return { input, out, checkpointKey: v["checkpoint-key"] };
}

/** Runs the program; returns the exit code. */
export function main(args: string[]): number {
  try {
    const o = parse(args);
    if (o === "help") {
      console.log(HELP);
      return 0;
    }
    let file;
    try {
      file = readWeights(o.input);
    } catch (e) {
      throw new UsageError(`--in ${e instanceof Error ? e.message : e}`);
    }
    try {
      if (file.format !== "pth") throw new UsageError(`--in ${o.input} is already safetensors: nothing to convert`);
      let tensors = file.tensors;
      if (o.checkpointKey !== undefined) {
        try {
          tensors = selectNetwork(tensors, { key: o.checkpointKey, source: o.input });
        } catch (e) {
          throw new UsageError(`--checkpoint-key ${e instanceof Error ? e.message : e}`);
        }
      }
      if (Object.keys(tensors).length === 0) {
        throw new UsageError(`--in ${o.input} holds no tensors: not a weights file (nothing written)`);
      }
      const metadata = { ...file.metadata, converted_from: o.input.split("/").pop()! };
      writeSafetensors(o.out, tensors, metadata);
      const count = Object.keys(tensors).length;
      console.log(`wrote ${o.out}: ${count} tensors${file.metadata.args ? ", args in the metadata" : ""}`);
    } finally {
      dispose(file.tensors);
    }
    return 0;
  } catch (e) {
    return failure(e, "convert");
  }
}

if (import.meta.main) Deno.exit(main(Deno.args));
