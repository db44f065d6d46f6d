// `deno task attention` and lib/eval/attention.ts: parity with the official visualize_attention.py computation
// (tests/fixtures/attention.safetensors, written by scripts/gen_attention_fixtures.py), the command end to end on
// PNGs of tests/fixtures/images, and its one-line errors with nothing written.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assertClose, captured, pixelDistance } from "./helpers.ts";
import { main as attention } from "../cli/attention.ts";
import {
  attentionImage,
  attentionMaps,
  clsAttention,
  IMAGENET_NORMALIZATION,
  normalizeImage,
} from "../lib/eval/attention.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { thumbnailSize } from "../lib/eval/retrieval.ts";
import { loadEvalBackbone, requireViT } from "../lib/weights/pretrained.ts";
import { saveCheckpoint } from "../lib/weights/checkpoint.ts";
import { makeSettings, networkConfig } from "../lib/settings/mod.ts";
import { dinoHyper, initTrainState } from "../lib/training/step.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const WEIGHTS = join(FIXTURES, "attention_weights.safetensors");
const IMAGES = join(FIXTURES, "images");
const RGB = join(IMAGES, "png-rgb8.png"), GRAY = join(IMAGES, "png-gray8.png");

/** The names under a folder, recursively, sorted ("" when it does not exist). */
function tree(dir: string): string[] {
  if (!t.exists(dir)) return [];
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory ? tree(join(dir, e.name)).map((n) => `${e.name}/${n}`) : [e.name]
  ).sort();
}

/** [height, width] from a PNG's IHDR chunk. */
function pngSize(path: string): [number, number] {
  const view = new DataView(Deno.readFileSync(path).buffer);
  return [view.getUint32(20), view.getUint32(16)];
}

Deno.test("the maps and masks equal the official visualize_attention.py on the same weights and image (1e-5, masks exactly)", () => {
  const before = t.liveTensors();
  const { tensors: fx, metadata } = readSafetensors(join(FIXTURES, "attention.safetensors"));
  const model = requireViT(loadEvalBackbone(WEIGHTS, { arch: "vit_tiny", patchSize: 8 }), "tests"); // bare keys
  try {
    assert.deepEqual([model.vit.numHeads, model.vit.patchSize, model.vit.imgSize], [3, 8, 32]);
    assert.deepEqual(fx.image.shape, [3, 40, 56]); // 5 x 7 patches: the 4 x 4 position embeddings are interpolated
    assert.equal(Number(metadata.threshold), 0.6);
    const maps = attentionMaps(model.backbone, model.vit, fx.image, {
      normalization: IMAGENET_NORMALIZATION,
      threshold: 0.6,
    });
    const grid = t.tidy(() =>
      clsAttention(model.backbone, model.vit, normalizeImage(fx.image, IMAGENET_NORMALIZATION))
    );
    try {
      assert.deepEqual([maps.attentions.shape, maps.masks.shape, grid.shape], [[3, 40, 56], [3, 40, 56], [3, 5, 7]]);
      assertClose(t.toArray(grid), t.toArray(fx.grid), 1e-5);
      assertClose(t.toArray(maps.attentions), t.toArray(fx.attentions), 1e-5);
      assert.equal(maps.masks.dtype, "u8");
      assert.deepEqual(t.toArray(maps.masks), t.toArray(fx.masks));
      const kept = t.toArray(fx.masks).reduce((a, b) => a + b, 0) / (3 * 40 * 56);
      assert.ok(kept > 0.1 && kept < 0.6, `the masks keep part of the image (${kept})`);
    } finally {
      t.dispose([maps, grid]);
    }
  } finally {
    t.dispose([fx, model.backbone]);
  }
  assert.equal(t.liveTensors(), before, "no tensor leaked");
});

Deno.test("decodeImage with a side resizes the whole image as PIL's Image.resize((w, h), BICUBIC), pixel for pixel", async () => {
  const { tensors } = readSafetensors(join(FIXTURES, "resize.safetensors"));
  try {
    for (const name of ["wide", "tall", "half", "even", "square", "small", "odd"]) {
      const r = await t.decodeImage(join(FIXTURES, "resize", `${name}.png`), { side: 40 });
      assert.ok(r.image, r.reason);
      using image = r.image;
      const want = tensors[`${name}.side40`];
      assert.deepEqual(image.shape, want.shape, name);
      assert.deepEqual(pixelDistance(image, want), { max: 0, mean: 0 }, name);
    }
  } finally {
    t.dispose(Object.values(tensors));
  }
});

Deno.test("images are prepared as visualize_attention.py (Resize, PIL's bilinear, then cut to the patch), eval_copy_detection.py (Resize((S, S)), bicubic) and eval_image_retrieval.py (thumbnail((S, S), ANTIALIAS): LANCZOS after Image.reduce), pixel for pixel", async () => {
  const { tensors } = readSafetensors(join(FIXTURES, "resize.safetensors"));
  try {
    const every = ["attention", "attention_hw", "copy", "thumb40", "thumb20"];
    const names = ["wide", "tall", "half", "even", "square", "small", "odd"].map((n) => [n, every] as const);
    for (const [name, keys] of [...names, ["strip", ["thumb40", "thumb20"]] as const]) {
      const decoded = await t.decodeImage(join(FIXTURES, "resize", `${name}.png`)); // its own size
      assert.ok(decoded.image, decoded.reason);
      using image = decoded.image;
      const [, H, W] = image.shape;
      const prepared: Record<string, () => t.Tensor> = {
        attention: () => attentionImage(image, 40, 8),
        attention_hw: () => attentionImage(image, [44, 70], 8),
        copy: () => t.pilResize(image, [48, 48], "bicubic"),
        // Image.reduce by (int(W / w / 2), int(H / h / 2)) first, where that is over 1 (2 x 2 to 4 x 4 for some of
        // these; the strip's 25 x 15 and 12 x 15 leave a remainder on both axes, averaged alone), as PIL
        thumb40: () => t.pilResize(image, thumbnailSize(H, W, 40), "lanczos", { reducingGap: 2 }),
        thumb20: () => t.pilResize(image, thumbnailSize(H, W, 20), "lanczos", { reducingGap: 2 }),
      };
      for (const key of keys) {
        const prepare = prepared[key];
        const want = tensors[`${name}.${key}`];
        using got = prepare();
        assert.deepEqual(got.shape, want.shape, `${name} ${key}`);
        // PIL's own fixed point (libtorch's antialiased f32 filters were a level off now and then)
        assert.deepEqual(pixelDistance(got, want), { max: 0, mean: 0 }, `${name} ${key}`);
      }
    }
  } finally {
    t.dispose(tensors);
  }
});

Deno.test("pilResize rounds halves up as PIL's fixed point, on one image and on a batch", () => {
  t.tidy(() => {
    // [1, 0] shrunk to one pixel by the antialiased bilinear is 0.5: PIL's fixed point gives 1 (a round to even, 0)
    assert.deepEqual(t.toArray(t.pilResize(t.tensor([[[1, 0]]], { dtype: "u8" }), [1, 1], "bilinear")), [1]);
    const batch = t.tensor([[[[1, 0]]], [[[3, 0]]]], { dtype: "u8" }); // [2, 1, 1, 2]: 0.5 and 1.5
    const out = t.pilResize(batch, [1, 1], "bilinear");
    assert.deepEqual([out.shape, t.toArray(out)], [[2, 1, 1, 1], [1, 2]]);
  });
});

Deno.test("deno task attention: pictures and arrays for two PNGs, equal to the library's, nothing leaked", async () => {
  const dir = join(Deno.makeTempDirSync(), "out"); // made by the command
  const before = t.liveTensors();
  const r = await captured(() =>
    attention([
      "--weights",
      WEIGHTS,
      "--arch",
      "vit_tiny",
      "--image",
      RGB,
      "--image",
      GRAY,
      "--image-size",
      "36", // short side 36, then cut to 32, a multiple of 8
      "--output-dir",
      dir,
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before, "the command frees every tensor");
  const pictures = ["attn-head0.png", "attn-head1.png", "attn-head2.png", "grid.png", "img.png"]
    .concat([0, 1, 2].map((j) => `mask_th0.6_head${j}.png`)).sort();
  assert.deepEqual(
    tree(dir),
    [
      ...pictures.map((p) => `0.png-rgb8/${p}`),
      ...pictures.map((p) => `1.png-gray8/${p}`),
      "attention.safetensors",
    ].sort(),
  );
  const { tensors, metadata } = readSafetensors(join(dir, "attention.safetensors"));
  const model = requireViT(loadEvalBackbone(WEIGHTS, { arch: "vit_tiny" }), "tests");
  try {
    assert.deepEqual(Object.keys(tensors).sort(), [
      "0.png-rgb8.attentions",
      "0.png-rgb8.masks",
      "1.png-gray8.attentions",
      "1.png-gray8.masks",
    ]);
    const listed = JSON.parse(metadata.images);
    assert.deepEqual(listed.map((i: { key: string }) => i.key), ["0.png-rgb8", "1.png-gray8"]);
    assert.deepEqual([metadata.threshold, metadata.patch_size, metadata.heads], ["0.6", "8", "3"]);
    for (const [i, path] of [RGB, GRAY].entries()) {
      const key = listed[i].key;
      const whole = await t.decodeImage(path);
      assert.ok(whole.image);
      const image = attentionImage(whole.image, 36, 8);
      whole.image.dispose();
      const [, H, W] = image.shape;
      assert.equal(Math.min(H, W), 32);
      assert.deepEqual([listed[i].height, listed[i].width], [H, W]);
      const a = tensors[`${key}.attentions`], m = tensors[`${key}.masks`];
      assert.deepEqual([a.dtype, a.shape, m.dtype, m.shape], ["f32", [3, H, W], "u8", [3, H, W]]);
      const expected = attentionMaps(model.backbone, model.vit, image, { normalization: IMAGENET_NORMALIZATION });
      assertClose(t.toArray(a), t.toArray(expected.attentions), 1e-6);
      assert.deepEqual(t.toArray(m), t.toArray(expected.masks));
      t.dispose([image, expected]);
      // The pictures: the image's size, and the grid of 2 rows of 1 + 3 tiles with 4-pixel gaps.
      for (const name of ["img.png", "attn-head0.png", "mask_th0.6_head2.png"]) {
        assert.deepEqual(pngSize(join(dir, key, name)), [H, W], name);
      }
      assert.deepEqual(pngSize(join(dir, key, "grid.png")), [4 + 2 * (H + 4), 4 + 4 * (W + 4)]);
    }
  } finally {
    t.dispose([tensors, model.backbone]);
  }
});

Deno.test("deno task attention: a 1-channel checkpoint of this project (its normalisation, teacher or student)", async () => {
  const tmp = Deno.makeTempDirSync();
  const ckpt = join(tmp, "checkpoint.safetensors");
  const config = makeSettings("fmnist", { depth: 1, outDim: 64 });
  const state = initTrainState(networkConfig(config, 1), dinoHyper(), 0);
  saveCheckpoint(ckpt, state, { config, channels: 1, epoch: 1, normalization: { mean: [0.286], std: [0.353] } });
  t.dispose(state);
  const before = t.liveTensors();
  const named = join(tmp, "sandale é.png"); // letters of any script stay in the outputs' names
  Deno.copyFileSync(RGB, named);
  for (const key of ["teacher", "student"]) {
    const dir = join(tmp, key);
    const r = await captured(() =>
      attention([
        "--weights",
        ckpt,
        "--checkpoint-key",
        key,
        "--image",
        named,
        "--image-size",
        "28",
        "--output-dir",
        dir,
      ])
    );
    assert.equal(r.value, 0, r.err);
    assert.ok(t.exists(join(dir, "0.sandale_é", "grid.png")));
    const { tensors, metadata } = readSafetensors(join(dir, "attention.safetensors"));
    const a = tensors["0.sandale_é.attentions"];
    assert.equal(Math.min(a.shape[1], a.shape[2]), 28); // already a multiple of the patch size 7
    assert.equal(a.shape[0], networkConfig(config, 1).vit!.numHeads);
    assert.deepEqual(JSON.parse(metadata.normalization), { mean: [0.286], std: [0.353] });
    t.dispose(tensors);
    assert.match(r.out, /0\.sandale_é: \d+ x \d+, \d+ heads/);
  }
  const bad = await captured(() =>
    attention(["--weights", ckpt, "--checkpoint-key", "bogus", "--image", RGB, "--output-dir", join(tmp, "bad")])
  );
  assert.equal(bad.value, 2);
  assert.match(bad.err, /no "bogus" network .*"student", "teacher"/);
  assert.ok(!t.exists(join(tmp, "bad")));
  assert.equal(t.liveTensors(), before, "the command frees every tensor");
});

Deno.test("deno task attention: bad input is one line, exit 2 (usage) or 1 (undecodable image), nothing written", async () => {
  const tmp = Deno.makeTempDirSync();
  const corrupt = join(tmp, "corrupt.png");
  Deno.writeFileSync(corrupt, Deno.readFileSync(RGB).subarray(0, 60)); // a PNG cut inside its first chunk
  const notImage = join(tmp, "notes.png");
  Deno.writeTextFileSync(notImage, "not an image at all");
  const sliver = join(tmp, "sliver.png");
  t.tidy(() => t.writeImage(sliver, t.full([200, 2, 3], 60, { dtype: "u8" })));
  const base = ["--weights", WEIGHTS, "--arch", "vit_tiny"];
  const cases: [string[], number, RegExp][] = [
    [[...base, "--image", join(tmp, "missing.png")], 2, /--image .*missing\.png: no such file/],
    [[...base, "--image", RGB, "--image", tmp], 2, /is a folder/],
    [[...base, "--image", RGB, "--image", corrupt], 1, /--image .*corrupt\.png: (not a readable image|cannot decode)/],
    [[...base, "--image", notImage], 1, /--image .*notes\.png: not a readable image/],
    [[...base, "--patch-size", "16", "--image", RGB], 2, /has patch size 8, not --patch-size 16/],
    [[...base, "--checkpoint-key", "bogus", "--image", RGB], 2, /bogus/],
    [[...base, "--image", RGB, "--threshold", "1.5"], 2, /--threshold must be in \(0, 1\]/],
    [[...base, "--image", RGB, "--image-size", "0"], 2, /--image-size must be between 1 and 8192/],
    [[...base, "--image", RGB, "--image-size", "40,50,60"], 2, /--image-size takes N \(the short side\) or H,W/],
    [[...base, "--image", RGB, "--image-size", "4,40"], 2, /png-rgb8\.png: .* smaller than one patch \(8 pixels\)/],
    // a sliver: 2 x 200 at a short side of 480 is 48000 x 480, refused before it is resized
    [[...base, "--image", sliver], 2, /sliver\.png at 480 x 48000 is 360000 patches: .* GiB; lower --image-size/],
    [["--weights", WEIGHTS, "--image", RGB], 2, /--arch/],
    [[...base], 2, /--image is required/],
    [["--weights", join(tmp, "none.safetensors"), "--image", RGB], 2, /no such file/],
  ];
  const before = t.liveTensors();
  for (const [args, code, message] of cases) {
    const dir = join(tmp, "out", "nested");
    const r = await captured(() => attention([...args, "--output-dir", dir]));
    assert.equal(r.value, code, `${args.join(" ")}: ${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
    assert.match(r.err, message);
    assert.equal(r.out, "");
    assert.ok(!t.exists(join(tmp, "out")), `nothing written for ${args.join(" ")}`);
  }
  // An existing output folder is left as it was.
  const existing = join(tmp, "existing");
  Deno.mkdirSync(existing);
  Deno.writeTextFileSync(join(existing, "keep.txt"), "mine");
  const r = await captured(() => attention([...base, "--image", RGB, "--image", corrupt, "--output-dir", existing]));
  assert.equal(r.value, 1);
  assert.deepEqual(tree(existing), ["keep.txt"]);
  assert.equal(t.liveTensors(), before, "no tensor leaked on any error");
});

Deno.test("decodeImage: every seed image of every format, whole and cut in half, decodes to multiples of the patch or says why", async () => {
  const tmp = Deno.makeTempDirSync();
  const before = t.liveTensors();
  let decoded = 0, refused = 0;
  for (const e of [...Deno.readDirSync(IMAGES)].filter((e) => e.isFile && !e.name.endsWith(".py"))) {
    const bytes = Deno.readFileSync(join(IMAGES, e.name));
    const half = join(tmp, `half-${e.name}`);
    Deno.writeFileSync(half, bytes.subarray(0, bytes.length >> 1));
    for (const path of [join(IMAGES, e.name), half]) {
      for (const channels of [1, 3] as const) {
        const r = await t.decodeImage(path, { side: 20, multiple: 8, channels });
        if (r.image) {
          const [C, H, W] = r.image.shape;
          assert.equal(C, channels);
          assert.ok(H % 8 === 0 && W % 8 === 0 && Math.min(H, W) === 24, `${path}: ${H} x ${W}`);
          r.image.dispose();
          decoded++;
        } else {
          assert.match(r.reason, /^[\x20-\x7e]+$/, `${path}: a printable one-line reason`);
          refused++;
        }
      }
    }
  }
  assert.ok(decoded >= 140 && refused > 0, `${decoded} decoded, ${refused} refused`);
  // Too elongated for its short side (a side past 16384), and over the pixel budget: reasons, not exceptions.
  t.tidy(() => t.writeImage(join(tmp, "strip.png"), t.full([1, 300, 3], 9, { dtype: "u8" })));
  assert.match(
    (await t.decodeImage(join(tmp, "strip.png"), { side: 100 })).reason ?? "",
    /past the largest side 16384/,
  );
  assert.match((await t.decodeImage(RGB, { side: 8, maxPixels: 10 })).reason ?? "", /exceeds the decoding budget/);
  assert.equal(t.liveTensors(), before);
});
