/**
 * Checks that weights this project writes load into the official PyTorch
 * modules with `load_state_dict(strict=True)`: the full network, the bare
 * backbone, and a checkpoint's `teacher.` keys. Needs a Python with torch
 * (`DINO_PYTHON`, default /usr/bin/python3). The reverse direction (PyTorch's
 * files loading here, strictly) is covered by tests/parity_test.ts.
 *
 * @example
 * ```sh
 * deno run -A scripts/check_interop.ts
 * ```
 * @module
 */
import { dispose, Generator } from "../mod.ts";
import { dinoConfig, initDino } from "../lib/model/dino.ts";
import { writeSafetensors } from "../lib/weights/safetensors.ts";
import { stateDict } from "../lib/weights/tree.ts";
import { saveWeights } from "../lib/weights/weights.ts";

const python = Deno.env.get("DINO_PYTHON") ?? "/usr/bin/python3";
const cases = [
  {
    arch: "vit_tiny" as const,
    vit: { img_size: 16, patch_size: 4, in_chans: 3, embed_dim: 192, depth: 2, num_heads: 3 },
    head: { out_dim: 256 },
  },
  {
    arch: "vit_small" as const,
    vit: { img_size: 32, patch_size: 8, in_chans: 1, embed_dim: 384, depth: 1, num_heads: 6 },
    head: { out_dim: 128, use_bn: true, norm_last_layer: false, nlayers: 2 },
  },
];
const dir = Deno.makeTempDirSync();
let failed = 0;
for (const c of cases) {
  const cfg = dinoConfig({
    arch: c.arch,
    imgSize: c.vit.img_size,
    patchSize: c.vit.patch_size,
    inChans: c.vit.in_chans,
    depth: c.vit.depth,
    outDim: c.head.out_dim,
    useBn: c.head.use_bn,
    normLastLayer: c.head.norm_last_layer,
    nlayers: c.head.nlayers,
  });
  using g = new Generator(0);
  const model = initDino(cfg, g);
  const full = `${dir}/${c.arch}-full.safetensors`;
  const ckpt = `${dir}/${c.arch}-ckpt.safetensors`;
  const bare = `${dir}/${c.arch}-backbone.safetensors`;
  saveWeights(full, model);
  saveWeights(bare, model.backbone);
  const flat = stateDict(model);
  writeSafetensors(ckpt, Object.fromEntries(Object.entries(flat).map(([k, v]) => [`teacher.${k}`, v])));
  dispose(model);
  const arch = JSON.stringify({ vit: c.vit, head: c.head });
  for (
    const [name, path, mode] of [["full", full, "check-load"], ["checkpoint", ckpt, "check-load"], [
      "backbone",
      bare,
      "check-load-backbone",
    ]]
  ) {
    const r = new Deno.Command(python, {
      args: ["scripts/gen_fixtures.py", mode, path, arch],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const out = new TextDecoder().decode(r.success ? r.stdout : r.stderr).trim().split("\n").pop();
    console.log(`${r.success ? "ok  " : "FAIL"} ${c.arch} ${name}: ${out}`);
    if (!r.success) failed++;
  }
}
Deno.removeSync(dir, { recursive: true });
Deno.exit(failed ? 1 : 0);
