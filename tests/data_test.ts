import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import * as t from "../mod.ts";
import { tensorDataset } from "../lib/data/dataset.ts";
import { fashionMnist, idxDataset, readIdx } from "../lib/data/idx.ts";
import { cifar10, cifar100 } from "../lib/data/cifar.ts";
import { imageFolder } from "../lib/data/folder.ts";
import { batches, batchIndices, epochOrder } from "../lib/data/loader.ts";
import { openDataset } from "../lib/data/open.ts";

function idxBytes(dims: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  out.set([0, 0, 8, dims.length]);
  const view = new DataView(out.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

function writeImages(dir: string, names: string[], seed: number): void {
  Deno.mkdirSync(dir, { recursive: true });
  using g = new t.Generator(seed);
  for (const name of names) {
    t.tidy(() => t.writeImage(join(dir, name), t.to(t.randint(g, 0, 256, [20, 30, 3]), "u8")));
  }
}

Deno.test("IDX files load gzipped or plain, with labels and clear errors", async () => {
  const dir = Deno.makeTempDirSync();
  const pixels = Uint8Array.from({ length: 3 * 4 * 4 }, (_, i) => i);
  Deno.writeFileSync(join(dir, "img.gz"), gzipSync(idxBytes([3, 4, 4], pixels)));
  Deno.writeFileSync(join(dir, "lbl"), idxBytes([3], new Uint8Array([2, 0, 1])));
  assert.deepEqual(readIdx(join(dir, "lbl")).dims, [3]);
  using ds = idxDataset(join(dir, "img.gz"), join(dir, "lbl"));
  assert.equal(ds.length, 3);
  assert.equal(ds.channels, 1);
  assert.equal(ds.size, 4);
  assert.deepEqual(ds.classes, ["0", "1", "2"]);
  const b = await ds.load([2, 0]);
  assert.deepEqual(b.images.shape, [2, 1, 4, 4]);
  assert.deepEqual(t.toArray(b.images).slice(0, 3), [32, 33, 34]);
  assert.deepEqual(t.toArray(b.labels!), [1, 2]);
  t.dispose([b.images, b.labels]);
  Deno.writeFileSync(join(dir, "bad"), new Uint8Array([1, 2, 3, 4]));
  assert.throws(() => readIdx(join(dir, "bad")), /not an IDX file/);
  Deno.writeFileSync(join(dir, "short"), idxBytes([3, 4, 4], pixels).subarray(0, 30));
  assert.throws(() => readIdx(join(dir, "short")), /IDX data has 14 bytes, the header says 48/);
  Deno.writeFileSync(join(dir, "badgz.gz"), new Uint8Array([0x1f, 0x8b, 1, 2, 3]));
  assert.throws(() => readIdx(join(dir, "badgz.gz")), /corrupt gzip data/);
  assert.throws(() => fashionMnist("train", join(dir, "nowhere")), /apt-get install dataset-fashion-mnist/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("--data takes one IDX file: labels beside it by the usual name, the t10k sibling as the test split", () => {
  const dir = Deno.makeTempDirSync();
  const idx = (n: number) => idxBytes([n, 4, 4], new Uint8Array(n * 16).fill(n));
  Deno.writeFileSync(join(dir, "train-images-idx3-ubyte.gz"), gzipSync(idx(3)));
  Deno.writeFileSync(join(dir, "train-labels-idx1-ubyte"), idxBytes([3], new Uint8Array([2, 0, 1])));
  const file = join(dir, "train-images-idx3-ubyte.gz");
  {
    using train = openDataset(file, "train");
    using test = openDataset(file, "test");
    assert.deepEqual([train.length, train.classes.length], [3, 3], "labelled from the plain file beside it");
    assert.equal(test.name, train.name, "no t10k file: both splits are the file itself");
  }
  Deno.writeFileSync(join(dir, "t10k-images-idx3-ubyte.gz"), gzipSync(idx(2)));
  {
    using test = openDataset(file, "test");
    assert.equal(test.length, 2);
    assert.equal(test.labels, undefined, "no t10k labels: unlabelled");
  }
  {
    using mnist = openDataset(dir, "train");
    assert.equal(mnist.length, 3, "the folder form finds the same files");
  }
  assert.throws(() => openDataset(join(dir, "train-labels-idx1-ubyte"), "train"), /is a label file; pass the images/);
  Deno.writeFileSync(join(dir, "notes.txt"), new TextEncoder().encode("hello"));
  assert.throws(() => openDataset(join(dir, "notes.txt"), "train"), /not an IDX file.*pass their folder/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("Fashion-MNIST from Debian's package: 60,000 + 10,000 labelled 28x28 images", async () => {
  using train = fashionMnist("train");
  using test = fashionMnist("test");
  assert.equal(train.length, 60000);
  assert.equal(test.length, 10000);
  assert.equal(train.classes[9], "Ankle boot");
  assert.equal(test.labels!.length, 10000);
  const b = await test.load([0]);
  assert.deepEqual(b.images.shape, [1, 1, 28, 28]);
  assert.equal(t.item(b.labels!), 9); // the first test image is an ankle boot
  t.dispose([b.images, b.labels]);
});

Deno.test("CIFAR-10 and CIFAR-100 binary files load with their labels", async () => {
  const dir = Deno.makeTempDirSync();
  const rec10 = (label: number, v: number) => Uint8Array.from([label, ...new Array(3072).fill(v)]);
  const batch = (n: number, base: number) => {
    const parts = Array.from({ length: n }, (_, i) => rec10((base + i) % 10, base + i));
    const out = new Uint8Array(parts.length * 3073);
    parts.forEach((p, i) => out.set(p, i * 3073));
    return out;
  };
  for (let i = 1; i <= 5; i++) Deno.writeFileSync(join(dir, `data_batch_${i}.bin`), batch(2, i * 10));
  Deno.writeFileSync(join(dir, "test_batch.bin"), batch(3, 0));
  using train = cifar10(dir, "train");
  assert.equal(train.length, 10);
  assert.equal(train.classes[0], "airplane");
  using test = cifar10(dir, "test");
  const b = await test.load([2]);
  assert.deepEqual(b.images.shape, [1, 3, 32, 32]);
  assert.equal(t.item(b.labels!), 2);
  t.dispose([b.images, b.labels]);
  Deno.writeFileSync(join(dir, "test_batch.bin"), new Uint8Array(100));
  assert.throws(() => cifar10(dir, "test"), /not a whole number of 3073-byte records/);

  const d100 = Deno.makeTempDirSync();
  Deno.writeFileSync(join(d100, "test.bin"), Uint8Array.from([3, 77, ...new Array(3072).fill(5)]));
  Deno.writeFileSync(join(d100, "train.bin"), Uint8Array.from([3, 77, ...new Array(3072).fill(5)]));
  using c100 = cifar100(d100, "test");
  assert.deepEqual([...c100.labels!], [77]);
  using opened = openDataset(d100, "test");
  assert.equal(opened.length, 1);
  // A label beyond the classes: not a CIFAR file of this kind (a CIFAR-100 file read as CIFAR-10, say).
  Deno.writeFileSync(join(dir, "test_batch.bin"), Uint8Array.from([10, ...new Array(3072).fill(0)]));
  assert.throws(() => cifar10(dir, "test"), /test_batch\.bin: record 0 has label 10, not one of the 10 classes/);
  Deno.writeFileSync(join(d100, "test.bin"), Uint8Array.from([3, 100, ...new Array(3072).fill(5)]));
  assert.throws(() => cifar100(d100, "test"), /record 0 has label 100, not one of the 100 classes/);
  Deno.removeSync(dir, { recursive: true });
  Deno.removeSync(d100, { recursive: true });
});

Deno.test("image folders: class subfolders or flat, torchvision's extensions, corrupt files skipped and named", async () => {
  const root = Deno.makeTempDirSync();
  writeImages(join(root, "cats"), ["a.png", "b.jpg", "c.bmp"], 1);
  writeImages(join(root, "dogs"), ["d.png"], 2);
  Deno.writeFileSync(join(root, "dogs", "broken.jpg"), new Uint8Array([0xff, 0xd8, 0xff, 0, 1, 2]));
  Deno.writeFileSync(join(root, "dogs", "notes.txt"), new TextEncoder().encode("not an image"));
  Deno.copyFileSync(new URL("./fixtures/images/gif-32colors.gif", import.meta.url), join(root, "dogs", "e.gif"));
  using ds = imageFolder(root, { side: 16 });
  assert.deepEqual(ds.classes, ["cats", "dogs"]);
  assert.equal(ds.length, 5); // neither the .txt nor the .gif is listed (torchvision's IMG_EXTENSIONS)
  assert.deepEqual([...ds.labels!], [0, 0, 0, 1, 1]);
  const b = await ds.load([0, 1, 2, 3, 4]);
  assert.deepEqual(b.images.shape, [4, 3, 16, 16]);
  assert.deepEqual(b.indices, [0, 1, 2, 4]); // files sort by name: broken.jpg is item 3
  assert.deepEqual(t.toArray(b.labels!), [0, 0, 0, 1]);
  assert.equal(b.failed.length, 1);
  assert.match(b.failed[0], /dogs\/broken\.jpg$/);
  assert.match(b.firstError, /broken\.jpg: /);
  t.dispose([b.images, b.labels]);

  // Class folders are walked recursively, and symbolic links are followed (as torchvision's ImageFolder).
  const linked = Deno.makeTempDirSync();
  writeImages(join(linked, "real", "birds", "deep"), ["e.png"], 4);
  Deno.symlinkSync(join(linked, "real", "birds"), join(root, "birds"));
  Deno.symlinkSync(join(root, "cats", "a.png"), join(root, "dogs", "z-link.png"));
  using withLinks = imageFolder(root, { side: 8 });
  assert.deepEqual(withLinks.classes, ["birds", "cats", "dogs"]);
  assert.deepEqual([...withLinks.labels!], [0, 1, 1, 1, 2, 2, 2]);
  const lb = await withLinks.load([0, 6]);
  assert.deepEqual(lb.indices, [0, 6]);
  t.dispose([lb.images, lb.labels]);
  Deno.removeSync(linked, { recursive: true });
  Deno.removeSync(join(root, "birds"));
  Deno.removeSync(join(root, "dogs", "z-link.png"));

  const gray = imageFolder(join(root, "cats"), { side: 8, channels: 1 });
  assert.deepEqual(gray.classes, [], "a flat folder is unlabeled");
  const gb = await gray.load([0]);
  assert.deepEqual(gb.images.shape, [1, 1, 8, 8]);
  assert.equal(gb.labels, undefined);
  gb.images.dispose();

  const empty = Deno.makeTempDirSync();
  assert.throws(() => imageFolder(empty, { side: 8 }), /holds no images/);
  assert.throws(() => imageFolder(join(empty, "missing"), { side: 8 }), /cannot be read/);
  assert.throws(() => openDataset(join(empty, "missing"), "train"), /no such dataset, file or folder/);
  Deno.removeSync(root, { recursive: true });
  Deno.removeSync(empty, { recursive: true });
});

Deno.test("a file or class folder whose name is not UTF-8 is named, with the fix, instead of failing to open", () => {
  const root = Deno.makeTempDirSync();
  writeImages(join(root, "good"), ["a.png"], 1);
  const sh = (script: string) => new Deno.Command("/bin/sh", { args: ["-c", script], cwd: root }).outputSync();
  assert.ok(sh(`cp good/a.png "good/$(printf 'b\\376.png')"`).success);
  assert.throws(
    () => imageFolder(root, { side: 8 }),
    /good\/b\uFFFD\.png \(\uFFFD marks bytes that are not UTF-8\): its name is not UTF-8, .* rename it in UTF-8/,
  );
  Deno.removeSync(join(root, "good"), { recursive: true });
  writeImages(join(root, "good"), ["a.png"], 1);
  assert.ok(sh(`mkdir "$(printf 'bad\\377')" && cp good/a.png "$(printf 'bad\\377')/c.png"`).success);
  assert.throws(() => imageFolder(root, { side: 8 }), /bad\uFFFD \(\uFFFD marks bytes that are not UTF-8\)/);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("a validation folder is labelled by the training folder's classes: a missing class shifts no label", () => {
  const root = Deno.makeTempDirSync();
  writeImages(join(root, "train", "cat"), ["1.png"], 1);
  writeImages(join(root, "train", "dog"), ["2.png"], 2);
  writeImages(join(root, "train", "fish"), ["3.png"], 3);
  writeImages(join(root, "val", "cat"), ["4.png"], 4);
  writeImages(join(root, "val", "fish"), ["5.png", "6.png"], 5);
  using train = openDataset(root, "train", { side: 8 });
  using val = openDataset(root, "test", { side: 8 });
  assert.deepEqual(val.classes, train.classes);
  assert.deepEqual([...val.labels!], [0, 2, 2]); // fish is class 2 in both, though val/ has no dog
  writeImages(join(root, "val", "zebra"), ["7.png"], 6);
  assert.throws(() => openDataset(root, "test", { side: 8 }), /class folder\(s\) zebra not among the 3 classes/);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("image folders: classes in Python's order, linked loops walked once, WebP and TIFF named as unread", async () => {
  const root = Deno.makeTempDirSync();
  // U+FF21 (fullwidth A) sorts before U+1F600 by code point, after it by UTF-16 unit (a surrogate, 0xD83D).
  writeImages(join(root, "\u{1F600}smile"), ["a.png"], 1);
  writeImages(join(root, "\uFF21full"), ["b.png"], 2);
  Deno.symlinkSync(root, join(root, "\uFF21full", "loop")); // leads back to an ancestor
  Deno.writeFileSync(join(root, "\uFF21full", "c.webp"), new TextEncoder().encode("RIFF\x10\0\0\0WEBPVP8 "));
  Deno.writeFileSync(join(root, "\uFF21full", "d.tif"), Uint8Array.from([0x49, 0x49, 0x2a, 0, 8, 0, 0, 0]));
  using ds = imageFolder(root, { side: 8 });
  assert.deepEqual(ds.classes, ["\uFF21full", "\u{1F600}smile"]);
  assert.deepEqual([...ds.labels!], [0, 0, 0, 1]); // b.png, c.webp, d.tif; a.png
  const b = await ds.load([0, 1, 2, 3]);
  assert.deepEqual(b.indices, [0, 3]);
  assert.match(
    b.firstError,
    /c\.webp: WebP, which this decoder \(stb_image\) does not read: convert it to PNG or JPEG/,
  );
  assert.match(b.failed[1], /d\.tif$/);
  t.dispose([b.images, b.labels]);
  Deno.removeSync(root, { recursive: true });
});

Deno.test("the loader shuffles per epoch from the seed, batches, drops the last, and reports skipped files once", async () => {
  assert.deepEqual(epochOrder(5, 0, { shuffle: false }), [0, 1, 2, 3, 4]);
  assert.deepEqual(epochOrder(50, 1, { seed: 3 }), epochOrder(50, 1, { seed: 3 }));
  assert.notDeepEqual(epochOrder(50, 1, { seed: 3 }), epochOrder(50, 2, { seed: 3 }));
  assert.deepEqual([...epochOrder(50, 1, { seed: 3 })].sort((a, b) => a - b), [...Array(50).keys()]);
  assert.deepEqual(batchIndices(10, 0, { batchSize: 4, shuffle: false }), [[0, 1, 2, 3], [4, 5, 6, 7]]);
  assert.deepEqual(batchIndices(10, 0, { batchSize: 4, shuffle: false, dropLast: false }).at(-1), [8, 9]);

  const before = t.liveTensors();
  using ds = t.tidy(() =>
    tensorDataset(t.expand(t.to(t.reshape(t.arange(0, 10), [10, 1, 1, 1]), "u8"), [10, 1, 2, 2]))
  );
  const seen: number[] = [];
  for await (const b of batches(ds, 0, { batchSize: 3, seed: 1, prefetch: 2 })) {
    assert.deepEqual(b.images.shape, [3, 1, 2, 2]);
    seen.push(...b.indices);
    b.images.dispose();
  }
  assert.equal(seen.length, 9);
  assert.equal(new Set(seen).size, 9);
  // An abandoned epoch frees the batches it prefetched.
  for await (const b of batches(ds, 1, { batchSize: 2, prefetch: 3 })) {
    b.images.dispose();
    break;
  }
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(t.liveTensors(), before + 1, "only the dataset's own tensor is alive");

  const root = Deno.makeTempDirSync();
  writeImages(root, ["a.png", "b.png"], 3);
  Deno.writeFileSync(join(root, "c.png"), new Uint8Array([1, 2, 3]));
  Deno.writeFileSync(join(root, "d.png"), new Uint8Array([4, 5, 6]));
  Deno.writeFileSync(join(root, "e.webp"), new TextEncoder().encode("RIFF\x10\0\0\0WEBPVP8 "));
  using folder = imageFolder(root, { side: 8 });
  const reports: [string[], string][] = [];
  const order = {
    batchSize: 2,
    shuffle: false,
    dropLast: false,
    onSkipped: (f: string[], why: string) => reports.push([f, why]),
  };
  for await (const b of batches(folder, 0, order)) b.images.dispose();
  assert.equal(reports.length, 1);
  assert.deepEqual(reports[0][0].map((p) => p.split("/").pop()), ["c.png", "d.png", "e.webp"]);
  // Each kind of reason once, with its first file: the WebP's fix is not hidden behind the garbage files' reason.
  assert.match(
    reports[0][1],
    /^\S+\/c\.png: not a readable image \(unknown image type\); \S+\/e\.webp: WebP, .* convert it/,
  );
  Deno.removeSync(root, { recursive: true });
});

Deno.test("a colour image decoded to gray takes PIL's convert('L') weights", async () => {
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "rgba.png");
  using g = new t.Generator(3);
  t.tidy(() => t.writeImage(path, t.to(t.randint(g, 0, 256, [12, 12, 4]), "u8")));
  const rgb = await t.decodeImage(path, { side: 12, channels: 3 });
  const gray = await t.decodeImage(path, { side: 12, channels: 1 });
  try {
    const c = t.toArray(rgb.image!), n = 12 * 12;
    const expected = Array.from(
      { length: n },
      (_, i) => (c[i] * 19595 + c[n + i] * 38470 + c[2 * n + i] * 7471 + 0x8000) >> 16,
    );
    assert.deepEqual(t.toArray(gray.image!), expected);
  } finally {
    t.dispose([rgb.image, gray.image]);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a class's images in torchvision's order: folders by whole path, each folder's files before its subfolders'", async () => {
  const root = Deno.makeTempDirSync();
  // sorted(os.walk(cls)): cls, cls/a, cls/a-b, cls/a/c ("-" sorts before "/"), each folder's files sorted.
  const files = ["z.png", "a/1.png", "a-b/3.png", "a/c/2.png", "top.png"];
  files.forEach((f, i) => {
    Deno.mkdirSync(join(root, "cls", f, ".."), { recursive: true });
    t.tidy(() => t.writeImage(join(root, "cls", f), t.full([4, 4, 1], 10 * (i + 1), { dtype: "u8" })));
  });
  using ds = imageFolder(root, { side: 4, channels: 1 });
  const b = await ds.load([0, 1, 2, 3, 4]);
  const shade = (f: string) => 10 * (files.indexOf(f) + 1);
  const order = ["top.png", "z.png", "a/1.png", "a-b/3.png", "a/c/2.png"];
  assert.deepEqual(t.toArray(t.tidy(() => t.select(t.select(t.select(b.images, 1, 0), 1, 0), 1, 0))), order.map(shade));
  t.dispose([b.images, b.labels]);

  // Only train/: both splits are it, not the folder with one class named "train".
  const only = Deno.makeTempDirSync();
  writeImages(join(only, "train", "cat"), ["1.png"], 1);
  writeImages(join(only, "train", "dog"), ["2.png"], 2);
  using test = openDataset(only, "test", { side: 8 });
  assert.deepEqual([test.classes, [...test.labels!]], [["cat", "dog"], [0, 1]]);
  // train/ beside another folder and no val/: a folder of classes, one named "train", for both splits (the test
  // split read the folder itself while the training split read train/ alone, dropping the other classes).
  writeImages(join(only, "misc"), ["3.png"], 3);
  for (const split of ["train", "test"] as const) {
    using beside = openDataset(only, split, { side: 8 });
    assert.deepEqual(beside.classes, ["misc", "train"], split);
  }
  // A folder of classes, one of them named "test": the classes, for both splits.
  const classes = Deno.makeTempDirSync();
  for (const [c, shade] of [["cat", 1], ["dog", 2], ["test", 3]] as const) {
    writeImages(join(classes, c), ["1.png"], shade);
  }
  for (const split of ["train", "test"] as const) {
    using ds = openDataset(classes, split, { side: 8 });
    assert.deepEqual(ds.classes, ["cat", "dog", "test"], split);
  }
  // train/ and val/ beside other folders (val_masks/): the splits.
  for (const [d, f] of [["train/cat", "1.png"], ["val/cat", "2.png"], ["val_masks", "3.png"]]) {
    writeImages(join(classes, d), [f], 4);
  }
  using val = openDataset(classes, "test", { side: 8 });
  assert.deepEqual([val.length, val.classes], [1, ["cat"]]);
  Deno.removeSync(classes, { recursive: true });
  Deno.removeSync(root, { recursive: true });
  Deno.removeSync(only, { recursive: true });
});
