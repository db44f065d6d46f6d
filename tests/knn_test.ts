// lib/eval/knn.ts: parity with the official eval_knn.py's weighted k-NN (tests/fixtures/knn.safetensors, written by
// scripts/gen_knn_fixtures.py), ties between classes included.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { evalImages, extractFeatures, knnClassify, selfRows } from "../lib/eval/knn.ts";
import { evaluateRun } from "../lib/eval/report.ts";
import { tensorDataset } from "../lib/data/dataset.ts";
import { backboneConfig, dinoConfig, initDino } from "../lib/model/mod.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

Deno.test("weighted k-NN's top-1 and top-5 equal the official knn_classifier's, ties broken in its order", () => {
  const before = t.liveTensors();
  const { tensors: fx, metadata } = readSafetensors(join(FIXTURES, "knn.safetensors"));
  try {
    const labels = (x: t.Tensor) => Int32Array.from(t.toArray(x));
    for (const [name, json] of Object.entries(metadata)) {
      const { k, T, num_classes } = JSON.parse(json);
      const got = knnClassify(
        fx[`${name}.train`],
        labels(fx[`${name}.train_labels`]),
        fx[`${name}.test`],
        labels(fx[`${name}.test_labels`]),
        { k, temperature: T, numClasses: num_classes },
      );
      assert.deepEqual([got.top1, got.top5], t.toArray(fx[`${name}.expected`]), name);
    }
  } finally {
    t.dispose(Object.values(fx));
  }
  assert.equal(t.liveTensors(), before);
});

Deno.test("the evaluation tells its progress: each batch's images, three passes over both splits in evaluateRun", async () => {
  using g = new t.Generator(0);
  using images = t.tidy(() => t.to(t.randint(g, 0, 256, [12, 1, 16, 16]), "u8"));
  using train = tensorDataset(images, { labels: new Int32Array(12).map((_, i) => i % 2) });
  using queries = t.tidy(() => t.to(t.randint(g, 0, 256, [5, 1, 16, 16]), "u8"));
  using test = tensorDataset(queries, { labels: new Int32Array([0, 1, 0, 1, 0]) });
  const net = dinoConfig({ arch: "vit_tiny", imgSize: 16, patchSize: 8, depth: 1, inChans: 1, outDim: 32 });
  const trained = initDino(net, g);
  try {
    const transform = { size: 16, mean: [0.5], std: [0.5] };
    const batches: number[] = [];
    const f = await extractFeatures(trained.backbone, backboneConfig(net), train, transform, {
      batchSize: 5,
      onProgress: (n) => batches.push(n),
    });
    f.features.dispose();
    assert.deepEqual(batches, [5, 5, 2]);
    let seen = 0;
    await evaluateRun(trained.backbone, { train, test, transform, net, seed: 0, onProgress: (n) => seen += n });
    assert.equal(seen, 3 * (12 + 5));
  } finally {
    t.dispose(trained);
  }
});

Deno.test("evaluation images are torchvision's Resize(bicubic) + CenterCrop: the same crop, pixel for pixel", async () => {
  const { tensors, metadata } = readSafetensors(join(FIXTURES, "resize.safetensors"));
  const names = ["wide", "tall", "half", "even", "square", "small", "odd"];
  const paths = names.map((n) => join(FIXTURES, "resize", `${n}.png`));
  /** Max and mean |ours - torchvision| in levels of 255, ours [n, C, S, S] and want u8 [C, H, W] at (top, left). */
  const distance = (ours: number[], i: number, want: t.Tensor, top = 0, left = 0) => {
    const [C, H, W] = want.shape, S = Math.sqrt(ours.length / names.length / C), tv = t.toArray(want);
    let max = 0, sum = 0;
    for (let c = 0; c < C; c++) {
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const d = Math.abs(ours[((i * C + c) * S + y) * S + x] - tv[(c * H + top + y) * W + left + x]);
          max = Math.max(max, d);
          sum += d;
        }
      }
    }
    return { max, mean: sum / (C * S * S) };
  };
  const side = Number(metadata.side), size = side * 224 / 256; // eval_knn.py's 256 and 224, scaled down
  try {
    for (const [resize, crop, key] of [[side, size, "cropped"], [110, 96, "cropped96"]] as const) {
      const r = await t.decodeImages(paths, { side: resize, crop, threads: 1 });
      assert.deepEqual(r.failed, []);
      const ours = t.toArray(r.images);
      r.images.dispose();
      names.forEach((name, i) => {
        // PIL's resampling in its own fixed point: the same pixels.
        const same = distance(ours, i, tensors[`${name}.${key}`]);
        assert.deepEqual(same, { max: 0, mean: 0 }, `${name} at ${resize} / ${crop}`);
        if (key !== "cropped") return;
        // One pixel off (along the long side, where rounding differed) is far worse: the fixture can tell.
        const resized = tensors[`${name}.resized`], [, H, W] = resized.shape;
        const top = (H - crop) / 2, left = (W - crop) / 2;
        const off = H > W
          ? distance(ours, i, resized, Math.round(top) + (top >= 1 ? -1 : 1), Math.round(left))
          : distance(ours, i, resized, Math.round(top), Math.round(left) + (left >= 1 ? -1 : 1));
        assert.ok(off.mean > 1 && off.max > 50, `${name} one pixel off: ${JSON.stringify(off)}`);
      });
    }
    // Images of a fixed size larger than the network's (Fashion-MNIST's 28 px for 21): Resize(24) + CenterCrop(21).
    const fixed = await t.decodeImages([join(FIXTURES, "resize", "fixed28.png")], { side: 28, channels: 1 });
    assert.deepEqual(fixed.failed, []);
    const small = t.tidy(() => t.toArray(evalImages(fixed.images, { size: 21, mean: [0], std: [1] })));
    fixed.images.dispose();
    const tv = t.toArray(tensors["fixed28.resized"]);
    let max = 0;
    for (let y = 0; y < 21; y++) {
      for (let x = 0; x < 21; x++) max = Math.max(max, Math.abs(small[y * 21 + x] * 255 - tv[(y + 2) * 24 + x + 2]));
    }
    // PIL's pixels (CenterCrop's int(round(1.5)) = 2): pilResize is PIL's resampling
    assert.ok(max <= 1e-3, `28 px to 21: ${max} levels from torchvision`);
  } finally {
    t.dispose(Object.values(tensors));
  }
});

Deno.test("JPEGs decode as PIL decodes them (libjpeg; CMYK inverted and converted as Pillow does): whole and through the evaluation crop, pixel for pixel; truncated ones refused, or under loadTruncated as PIL's LOAD_TRUNCATED_IMAGES", async () => {
  const { tensors } = readSafetensors(join(FIXTURES, "resize.safetensors"));
  const files = [
    "wide-420.jpg",
    "tall-444.jpg",
    "small-422.jpg",
    "odd-progressive.jpg",
    "half-gray.jpg",
    "even-cmyk.jpg",
  ];
  // Without libjpeg's headers (libjpeg-dev) the shim decodes JPEGs with stb's own decoder, 1-3 levels off (more for
  // CMYK): this test then names the fix.
  const fix = "is libjpeg-dev installed? (deno run -A scripts/setup.ts installs it; the shim rebuilds)";
  try {
    for (const file of files) {
      const path = join(FIXTURES, "resize", file);
      const whole = await t.decodeImage(path);
      assert.ok(whole.image, `${file}: ${whole.reason}`);
      using image = whole.image;
      assert.deepEqual(t.toArray(image), t.toArray(tensors[`${file}.whole`]), `${file} at its own size: ${fix}`);
      const r = await t.decodeImages([path], { side: 64, crop: 56, threads: 1 });
      using cropped = r.images;
      assert.deepEqual(t.toArray(cropped), t.toArray(tensors[`${file}.cropped`]), `${file} at 64 / 56: ${fix}`);
    }
    // Where the data ends, as Pillow 9.4 reads it: without its end-of-image marker this file is truncated (libjpeg
    // reads ahead of the last row's codes, and finds the end); with bytes after its data and no marker, all rows decode.
    const dir = Deno.makeTempDirSync();
    try {
      const bytes = Deno.readFileSync(join(FIXTURES, "resize", "wide-420.jpg"));
      assert.deepEqual([...bytes.subarray(-2)], [0xff, 0xd9]);
      const noMarker = join(dir, "no-marker.jpg"), trailing = join(dir, "trailing.jpg");
      Deno.writeFileSync(noMarker, bytes.subarray(0, -2));
      Deno.writeFileSync(
        trailing,
        new Uint8Array([...bytes.subarray(0, -2), ...Array.from({ length: 64 }, (_, i) => i + 1)]),
      );
      const cut = await t.decodeImage(noMarker);
      assert.match(cut.reason ?? "", /^cannot decode \(a truncated JPEG/);
      const whole = await t.decodeImage(trailing);
      assert.ok(whole.image, whole.reason);
      using image = whole.image;
      assert.deepEqual(t.toArray(image), t.toArray(tensors["wide-420.jpg.whole"]));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    // Cut at 60% of their bytes: refused by default, as PIL refuses them; under loadTruncated, PIL's pixels with
    // LOAD_TRUNCATED_IMAGES (the official retrieval loader's setting), the missing blocks mid-gray.
    for (const file of ["wide-420-cut.jpg", "odd-progressive-cut.jpg", "even-cmyk-cut.jpg"]) {
      const path = join(FIXTURES, "resize", file);
      assert.match((await t.decodeImage(path)).reason ?? "", /^cannot decode \(a truncated JPEG/, file);
      const r = await t.decodeImage(path, { loadTruncated: true });
      assert.ok(r.image, `${file}: ${r.reason}`);
      using image = r.image;
      assert.equal(r.truncated, true, file);
      assert.deepEqual(t.toArray(image), t.toArray(tensors[`${file}.whole`]), `${file} truncated: ${fix}`);
    }
    // A header that PIL's parser takes and libjpeg refuses (a quantization table index of 5): under loadTruncated,
    // PIL's fresh image, all zeros.
    const broken = Deno.makeTempFileSync({ suffix: ".jpg" });
    try {
      const bytes = Deno.readFileSync(join(FIXTURES, "resize", "wide-420.jpg"));
      const dqt = bytes.findIndex((b, i) => b === 0xff && bytes[i + 1] === 0xdb);
      bytes[dqt + 4] = 0x05;
      Deno.writeFileSync(broken, bytes);
      assert.match((await t.decodeImage(broken)).reason ?? "", /corrupt JPEG data: Bogus DQT index 5/);
      const r = await t.decodeImage(broken, { loadTruncated: true });
      assert.ok(r.image, r.reason);
      using image = r.image;
      assert.equal(r.truncated, true);
      assert.deepEqual(image.shape, tensors["wide-420.jpg.whole"].shape);
      assert.ok((t.data(image) as Uint8Array).every((v) => v === 0), "all zeros");
    } finally {
      Deno.removeSync(broken);
    }
    const intact = await t.decodeImage(join(FIXTURES, "resize", "wide-420.jpg"), { loadTruncated: true });
    assert.equal(intact.truncated, false);
    intact.image?.dispose();
  } finally {
    t.dispose(Object.values(tensors));
  }
});

Deno.test("k-NN over the memory's own images leaves each out of its own neighbours (leave-one-out)", () => {
  // Two tight pairs of opposite classes: each image's nearest other is of the other class.
  using memory = t.tensor([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]]);
  const labels = new Int32Array([0, 1, 0, 1]);
  const indices = new Int32Array([0, 1, 2, 3]);
  assert.equal(knnClassify(memory, labels, memory, labels, { k: 1 }).top1, 100); // each finds itself
  const exclude = selfRows(indices, indices);
  assert.deepEqual([...exclude], [0, 1, 2, 3]);
  assert.equal(knnClassify(memory, labels, memory, labels, { k: 1, exclude }).top1, 0);
  // k beyond the others: all three of them (two of the other class, one of its own, nearer ones weighing more)
  const all = knnClassify(memory, labels, memory, labels, { k: 10, exclude });
  assert.deepEqual([all.top1, all.top5, all.images], [0, 100, 4]);
  // Rows past the first block, and a row with none to leave out (-1), in blocks of one
  const mixed = knnClassify(memory, labels, memory, labels, { k: 1, exclude: new Int32Array([0, 1, -1, 3]), chunk: 1 });
  assert.equal(mixed.top1, 25); // the third finds itself
  using one = t.tensor([[1, 0]]);
  assert.throws(
    () => knnClassify(one, new Int32Array([0]), one, new Int32Array([0]), { exclude: new Int32Array([0]) }),
    /no image besides the test image itself/,
  );
});
