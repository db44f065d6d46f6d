// `deno task propagate`, lib/eval/propagate.ts and lib/eval/masks.ts: parity with the official
// eval_video_segmentation.py propagation and the DAVIS 2017 J and F (tests/fixtures/propagate.safetensors, written by
// scripts/gen_propagate_fixtures.py), indexed PNGs read and written with their palette (files PIL wrote), the command
// end to end on the synthetic video of scripts/gen_video.py, and its one-line errors with nothing written.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assertClose, captured, pixelDistance } from "./helpers.ts";
import { main as propagate } from "../cli/propagate.ts";
import {
  davisFrame,
  davisFrameSize,
  LabelPropagator,
  labelsFromSoft,
  neighborhoodMask,
  oneHotLabels,
  patchFeatures,
} from "../lib/eval/propagate.ts";
import {
  boundaryMap,
  contourAccuracy,
  davisScores,
  decodeIndexedPng,
  decodeLabelPng,
  encodeIndexedPng,
  regionSimilarity,
  resizeLabels,
} from "../lib/eval/masks.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const VIDEO = join(FIXTURES, "video");
const FRAMES = join(VIDEO, "JPEGImages"), ANNOTATIONS = join(VIDEO, "Annotations");
const FIRST = join(ANNOTATIONS, "00000.png");
const WEIGHTS = join(FIXTURES, "attention_weights.safetensors"); // a random ViT (3 heads, patch 8, RGB)
const IMAGES = join(FIXTURES, "images");

Deno.test("propagation equals the official eval_video_segmentation.py loop on the same features (1e-5)", () => {
  const before = t.liveTensors();
  const { tensors: fx, metadata } = readSafetensors(join(FIXTURES, "propagate.safetensors"));
  try {
    const h = Number(metadata.h), w = Number(metadata.w), P = Number(metadata.patch);
    const [T] = fx.features.shape;
    const [, H, W] = fx.masks.shape;
    // the first mask to the grid as the official read_seg (PIL nearest)
    t.tidy(() => assert.deepEqual(t.toArray(resizeLabels(fx.first_mask, h, w)), t.toArray(fx.first_small)));
    const seg = oneHotLabels(fx.first_small, 3);
    const feats = t.tidy(() => t.chunk(fx.features, T, 0).map((f) => t.reshape(f, [h * w, -1])));
    {
      using prop = new LabelPropagator(feats[0], seg, {
        h,
        w,
        nLastFrames: Number(metadata.n_last_frames),
        neighborhood: Number(metadata.size_mask_neighborhood),
        topk: Number(metadata.topk),
      });
      for (let i = 1; i < T; i++) {
        t.tidy(() => {
          const soft = prop.next(feats[i]);
          assertClose(t.toArray(soft), t.toArray(t.select(fx.soft, 0, i - 1)), 1e-5);
          const labels = labelsFromSoft(soft, P);
          assert.deepEqual(t.toArray(labels), t.toArray(t.select(fx.labels, 0, i - 1)), `labels of frame ${i}`);
          assert.deepEqual(t.toArray(resizeLabels(labels, H, W)), t.toArray(t.select(fx.masks, 0, i - 1)));
        });
      }
    }
    t.dispose([seg, feats]);
  } finally {
    t.dispose(fx);
  }
  assert.equal(t.liveTensors(), before);
});

Deno.test("frames are prepared as the official read_frame: cv2.resize to the long side floored to 64, within a level", async () => {
  const { tensors } = readSafetensors(join(FIXTURES, "resize.safetensors"));
  try {
    for (const name of ["wide", "tall", "half", "even", "square", "small", "odd"]) {
      const decoded = await t.decodeImage(join(FIXTURES, "resize", `${name}.png`));
      assert.ok(decoded.image, decoded.reason);
      using image = decoded.image;
      const want = tensors[`${name}.davis`];
      const [, H, W] = image.shape;
      assert.deepEqual(davisFrameSize(H, W, 100), want.shape.slice(1), name);
      using got = davisFrame(image, 100, 1);
      const { max, mean } = pixelDistance(got, want);
      // OpenCV's weights are fixed point (11 bits): a rounding one level off now and then (means 0-0.10 here).
      assert.ok(max <= 1 && mean < 0.15, `${name}: max ${max}, mean ${mean}`);
      using cut = davisFrame(image, 100, 7); // the patch embedding's stride leaves the rest out
      assert.deepEqual(cut.shape.slice(1), want.shape.slice(1).map((n) => n - (n % 7)));
      assert.deepEqual(
        t.toArray(cut),
        t.tidy(() => t.toArray(t.slice(t.slice(got, 1, 0, cut.shape[1]), 2, 0, cut.shape[2]))),
      );
    }
  } finally {
    t.dispose(tensors);
  }
});

Deno.test("davisFrame rounds halves up as OpenCV's fixed point", () => {
  t.tidy(() => {
    // 2 x 128 to 1 x 64 (the long side floored to 64 at a short side of 1): each pixel the mean of a 2 x 2 block,
    // here 0.5 everywhere: OpenCV gives 1 (libtorch's round, 0)
    const frame = t.cat([t.ones([1, 1, 128], { dtype: "u8" }), t.zeros([1, 1, 128], { dtype: "u8" })], 1);
    const out = davisFrame(frame, 1, 1);
    assert.deepEqual(out.shape, [1, 1, 64]);
    assert.ok(t.toArray(out).every((v) => v === 1));
  });
});

Deno.test("J and F equal the official davis2017-evaluation db_eval_iou and f_measure", () => {
  const before = t.liveTensors();
  const { tensors: fx } = readSafetensors(join(FIXTURES, "propagate.safetensors"));
  try {
    const J = t.toArray(fx.davis_J), F = t.toArray(fx.davis_F);
    for (let f = 0; f < fx.davis_pred.shape[0]; f++) {
      t.tidy(() => {
        const pred = t.select(fx.davis_pred, 0, f), truth = t.select(fx.davis_true, 0, f);
        const voids = t.eq(truth, 255);
        for (const k of [1, 2]) {
          assertClose([regionSimilarity(pred, truth, k, voids)], [J[2 * f + k - 1]], 1e-12);
          assertClose([contourAccuracy(pred, truth, k, voids)], [F[2 * f + k - 1]], 1e-12);
        }
      });
    }
    assert.ok(J.some((j) => j === 0) && J.some((j) => j > 0.5), "the fixture has a lost object and good ones");
  } finally {
    t.dispose(fx);
  }
  assert.equal(t.liveTensors(), before);
});

Deno.test("boundaryMap, neighborhoodMask and davisScores on hand-made cases", () => {
  t.tidy(() => {
    // a 2 x 2 square in a 4 x 4 image: DAVIS marks the square's pixels and those just before its left/top edges
    const m = t.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], { dtype: "u8" });
    assert.deepEqual(t.toArray(boundaryMap(m)), [1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0]);
    const n = neighborhoodMask(3, 3, 1);
    assert.deepEqual(t.toArray(t.sum(n, 1)), [4, 6, 4, 6, 9, 6, 4, 6, 4]);
    const a = t.tensor([[1, 1, 0, 2]], { dtype: "u8" });
    const s = davisScores([a, a, a, a], [a, a, a, a]);
    assert.deepEqual([s.frames, s.objects.map((o) => o.object), s.J, s.F, s.JF], [[1, 2], [1, 2], 1, 1, 1]);
    // PIL's NEAREST picks, summed a step at a time: 854 -> 53 takes 426 at 26 where (26 + 0.5) 854 / 53 is 427
    const row = t.reshape(t.arange(0, 854), [1, 854]);
    assert.deepEqual(t.toArray(resizeLabels(row, 1, 53)).slice(24, 29), [394, 410, 426, 443, 459]);
    assert.deepEqual(t.toArray(resizeLabels(t.reshape(t.arange(0, 104), [1, 104]), 1, 100)).slice(10, 14), [
      10,
      11,
      12,
      14,
    ]);
    // 255 in a true mask counts as background, as the official semi-supervised evaluation passes no void masks
    const truth = t.tensor([[1, 255, 0, 2]], { dtype: "u8" }), pred = t.tensor([[1, 1, 0, 2]], { dtype: "u8" });
    assert.equal(davisScores([pred, pred, pred], [truth, truth, truth]).objects[0].J, 0.5);
    assert.throws(() => davisScores([a, a], [a, a]), /a video of 2 frame\(s\) has none to score/);
  });
});

Deno.test("indexed PNGs: PIL's files read with their palette at every bit depth; others refused by kind", () => {
  const before = t.liveTensors();
  for (const name of ["png-pal1.png", "png-pal2.png", "png-pal4.png", "png-pal8.png", "png-pal8-trns.png"]) {
    const { labels, palette } = decodeIndexedPng(Deno.readFileSync(join(IMAGES, name)));
    try {
      const top = Math.max(...t.toArray(labels));
      assert.ok(top < palette.length, `${name}: labels index the palette`);
      // written back with the same palette, read again: the same labels and colours
      const again = decodeIndexedPng(encodeIndexedPng(labels, palette));
      assert.deepEqual(t.toArray(again.labels), t.toArray(labels), name);
      assert.deepEqual(again.palette, palette, name);
      again.labels.dispose();
    } finally {
      labels.dispose();
    }
  }
  const first = decodeIndexedPng(Deno.readFileSync(FIRST)); // written by PIL with putpalette (DAVIS)
  assert.deepEqual([first.labels.shape, first.palette.slice(0, 3)], [[120, 160], [[0, 0, 0], [128, 0, 0], [
    0,
    128,
    0,
  ]]]);
  assert.deepEqual([...new Set(t.toArray(first.labels))].sort(), [0, 1, 2]);
  first.labels.dispose();
  assert.throws(
    () => decodeIndexedPng(Deno.readFileSync(join(IMAGES, "png-rgb8.png"))),
    /8-bit RGB PNG, not an indexed/,
  );
  assert.throws(() => decodeIndexedPng(Deno.readFileSync(join(IMAGES, "png-gray8.png"))), /8-bit grayscale PNG/);
  assert.throws(() => decodeIndexedPng(Deno.readFileSync(join(IMAGES, "jpeg-rgb-444.jpg"))), /not a readable PNG/);
  // fast-png 8.0.0 cannot de-interlace palettes of under 8 bits: a one-line error, not a crash
  assert.throws(() => decodeIndexedPng(Deno.readFileSync(join(IMAGES, "png-pal4-adam7.png"))), /not a readable PNG/);
  const gray = decodeLabelPng(Deno.readFileSync(join(IMAGES, "png-gray8.png")));
  assert.equal(gray.palette, undefined);
  gray.labels.dispose();
  assert.equal(t.liveTensors(), before);
});

Deno.test("patchFeatures gives one row per patch of the last block, after the final norm", () => {
  const before = t.liveTensors();
  const g = new t.Generator(0);
  const cfg = t.vitConfig("vit_tiny", { patchSize: 8, imgSize: 32, depth: 2 });
  const vit = t.initViT(cfg, g);
  t.tidy(() => {
    const x = t.randn(g, [1, 3, 24, 32]);
    const f = patchFeatures(vit, cfg, x);
    const all = t.intermediateLayers(vit, cfg, x, 1)[0];
    assert.deepEqual(f.shape, [12, 192]);
    assertClose(t.toArray(f), t.toArray(t.slice(t.select(all, 0, 0), 0, 1)), 0);
  });
  t.dispose(vit);
  g.dispose();
  assert.equal(t.liveTensors(), before);
});

/** The names under a folder, recursively, sorted ([] when it does not exist). */
function tree(dir: string): string[] {
  if (!t.exists(dir)) return [];
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory ? tree(join(dir, e.name)).map((n) => `${e.name}/${n}`) : [e.name]
  ).sort();
}

Deno.test("deno task propagate: the synthetic video's objects are followed (J&F far above copying the first mask)", async () => {
  const dir = join(Deno.makeTempDirSync(), "out");
  const before = t.liveTensors();
  const r = await captured(() =>
    propagate([
      "--weights",
      WEIGHTS,
      "--arch",
      "vit_tiny",
      "--frames",
      FRAMES,
      "--first-mask",
      FIRST,
      "--annotations",
      ANNOTATIONS,
      "--image-size",
      "120",
      "--output-dir",
      dir,
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before, "the command frees every tensor");
  const frames = [...Deno.readDirSync(FRAMES)].map((e) => e.name.replace(".jpg", ".png")).sort();
  assert.deepEqual(tree(dir), [...frames, "scores.json"].sort());
  const { labels: firstLabels, palette } = decodeIndexedPng(Deno.readFileSync(FIRST));
  firstLabels.dispose();
  for (const name of frames) {
    const m = decodeIndexedPng(Deno.readFileSync(join(dir, name)));
    assert.deepEqual([m.labels.shape, m.palette], [[120, 160], palette], `${name}: indexed, the first mask's palette`);
    m.labels.dispose();
  }
  const scores = JSON.parse(Deno.readTextFileSync(join(dir, "scores.json")));
  const { propagation: p, copy_first_mask: c } = scores;
  assert.deepEqual([p.objects.length, p.frames.length], [2, 14]);
  // Measured: J&F 0.826 with this random RGB ViT; copying the first mask: 0.087.
  assert.ok(p.JF > 0.75 && c.JF < 0.15, `J&F ${p.JF} vs copying ${c.JF}`);
  for (const o of p.objects) assert.ok(o.J > 0.7 && o.F > 0.7, `object ${o.object}: J ${o.J}, F ${o.F}`);
  assert.match(r.out, /propagation: J&F 0\.\d{3} \(J 0\.\d{3}, F 0\.\d{3}\) over 14 scored frame/);
  assert.match(r.out, /copying the first mask: J&F 0\.0\d\d/);
});

Deno.test("deno task propagate: bad input is one line, exit 2, nothing written", async () => {
  const tmp = Deno.makeTempDirSync();
  const copyFrames = (n: number) => {
    const d = Deno.makeTempDirSync({ dir: tmp });
    for (let i = 0; i < n; i++) {
      const name = `${String(i).padStart(5, "0")}.jpg`;
      Deno.copyFileSync(join(FRAMES, name), join(d, name));
    }
    return d;
  };
  const mixed = copyFrames(3);
  t.tidy(() => t.writeImage(join(mixed, "00003.png"), t.full([60, 80, 3], 128, { dtype: "u8" })));
  const empty = Deno.makeTempDirSync({ dir: tmp });
  Deno.writeTextFileSync(join(empty, "notes.txt"), "no frames here");
  const three = copyFrames(3);
  const small = join(tmp, "small.png");
  t.tidy(() => Deno.writeFileSync(small, encodeIndexedPng(t.zeros([60, 80], { dtype: "u8" }), [[0, 0, 0]])));
  const partial = Deno.makeTempDirSync({ dir: tmp });
  Deno.copyFileSync(FIRST, join(partial, "00000.png"));
  const base = ["--weights", WEIGHTS, "--arch", "vit_tiny"];
  const cases: [string[], RegExp][] = [
    [
      [...base, "--frames", mixed, "--first-mask", FIRST],
      /00003\.png is 80 x 60 but 00000\.jpg is 160 x 120; a video's frames must all be one size/,
    ],
    [
      [...base, "--frames", three, "--first-mask", small],
      /--first-mask .*small\.png is 80 x 60 but the frames are 160 x 120/,
    ],
    [
      [...base, "--frames", three, "--first-mask", join(IMAGES, "png-rgb8.png")],
      /8-bit RGB PNG, not an indexed-colour \(palette\) one/,
    ],
    [[...base, "--frames", three, "--first-mask", join(FRAMES, "00000.jpg")], /not a readable PNG/],
    [[...base, "--frames", empty, "--first-mask", FIRST], /--frames .* holds no frames/],
    [
      [...base, "--frames", copyFrames(2), "--first-mask", FIRST, "--annotations", ANNOTATIONS],
      /--annotations: DAVIS scores neither the first frame nor the last, and --frames .* has 2: give 3 frames or more/,
    ],
    [
      [...base, "--frames", three, "--first-mask", FIRST, "--image-size", "4"],
      /seen at 5 x 4, smaller than one patch \(8 pixels\)/,
    ],
    [[...base, "--frames", join(tmp, "nowhere"), "--first-mask", FIRST], /--frames .*nowhere: no such folder/],
    [[...base, "--frames", three, "--first-mask", join(tmp, "none.png")], /--first-mask .*none\.png: no such file/],
    [[...base, "--frames", three, "--first-mask", partial], /--first-mask .* is a folder; name the first frame's mask/],
    [
      [...base, "--frames", three, "--first-mask", FIRST, "--annotations", partial],
      /--annotations .*00001\.png: no such file/,
    ],
    [[...base, "--frames", three, "--first-mask", FIRST, "--topk", "0"], /--topk must be between 1 and 1000/],
    [[...base, "--frames", three], /--first-mask is required/],
    [["--weights", WEIGHTS, "--frames", three, "--first-mask", FIRST], /--arch/],
  ];
  const before = t.liveTensors();
  for (const [args, message] of cases) {
    const dir = join(tmp, "out", "nested");
    const r = await captured(() => propagate([...args, "--output-dir", dir]));
    assert.equal(r.value, 2, `${args.join(" ")}: ${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
    assert.match(r.err, message);
    assert.ok(!t.exists(join(tmp, "out")), `nothing written for ${args.join(" ")}`);
    assert.equal(t.liveTensors(), before, `no tensor leaked for ${args.join(" ")}`);
  }
  // The output folder is the frames' (or the annotations'): its masks would replace those files. Refused, unchanged.
  const own = copyFrames(3);
  t.tidy(() => t.writeImage(join(own, "00001.png"), t.full([120, 160, 3], 9, { dtype: "u8" })));
  const ownBefore = [...Deno.readDirSync(own)].map((e) => e.name).sort();
  for (
    const [args, message] of [
      [["--frames", own, "--output-dir", own], /--output-dir .* is the --frames folder: the masks .* would replace/],
      [
        ["--frames", three, "--annotations", partial, "--output-dir", partial],
        /--output-dir .* is the --annotations folder/,
      ],
    ] as const
  ) {
    const r = await captured(() => propagate([...base, "--first-mask", FIRST, ...args]));
    assert.equal(r.value, 2, r.err);
    assert.match(r.err, message);
  }
  assert.deepEqual([...Deno.readDirSync(own)].map((e) => e.name).sort(), ownBefore);
  // Two frames with one stem (00001.jpg and 00001.png) would write one mask over the other: refused up front.
  const clash = await captured(() =>
    propagate([...base, "--frames", own, "--first-mask", FIRST, "--output-dir", join(tmp, "clash")])
  );
  assert.equal(clash.value, 2, clash.err);
  assert.match(clash.err, /00001\.jpg and 00001\.png are both frame 00001 .*keep one of them/);
  assert.ok(!t.exists(join(tmp, "clash")));
  // A frame stb cannot decode: exit 1, and the existing output folder is left as it was.
  const broken = copyFrames(3);
  Deno.writeFileSync(join(broken, "00002.jpg"), Deno.readFileSync(join(FRAMES, "00002.jpg")).subarray(0, 400));
  const existing = join(tmp, "existing");
  Deno.mkdirSync(existing);
  Deno.writeTextFileSync(join(existing, "keep.txt"), "mine");
  const r = await captured(() =>
    propagate([...base, "--frames", broken, "--first-mask", FIRST, "--image-size", "64", "--output-dir", existing])
  );
  assert.equal(r.value, 1, r.err);
  assert.match(r.err, /^error: --frames .*00002\.jpg: /);
  assert.deepEqual(tree(existing), ["keep.txt"]);
  assert.equal(t.liveTensors(), before);
});
