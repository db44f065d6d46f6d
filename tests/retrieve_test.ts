// `deno task retrieve`, lib/eval/retrieval.ts and lib/eval/eigen.ts: parity with the official eval_image_retrieval.py
// and eval_copy_detection.py computations (tests/fixtures/retrieval.safetensors, written by
// scripts/gen_retrieval_fixtures.py), the eigendecomposition, the command end to end on the copies of
// scripts/gen_copies.py (tests/fixtures/copies) and on class folders, and its one-line errors with nothing written.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { assertClose, captured } from "./helpers.ts";
import { main as retrieve } from "../cli/retrieve.ts";
import {
  applyWhitening,
  clsFeatures,
  copyDetectionFeatures,
  cosineSimilarities,
  learnWhitening,
  multiScaleFeatures,
  rankingRows,
  retrievalScores,
} from "../lib/eval/retrieval.ts";
import { symmetricEigen } from "../lib/eval/eigen.ts";
import { readSafetensors } from "../lib/weights/safetensors.ts";
import { loadEvalBackbone } from "../lib/weights/pretrained.ts";
import type { ViTParams } from "../lib/model/vit.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const COPIES = join(FIXTURES, "copies");
const WEIGHTS = join(FIXTURES, "attention_weights.safetensors"); // a random ViT (3 heads, width 24, patch 8, RGB)

Deno.test("retrieval and copy-detection features, whitening, similarities and mAP equal the official code (1e-5)", () => {
  const before = t.liveTensors();
  const { tensors: fx, metadata } = readSafetensors(join(FIXTURES, "retrieval.safetensors"));
  const bare: Record<string, t.Tensor> = {};
  for (const [k, v] of Object.entries(fx)) if (k.startsWith("backbone.")) bare[k] = v;
  const path = Deno.makeTempFileSync({ suffix: ".safetensors" });
  t.writeSafetensors(path, bare);
  const model = loadEvalBackbone(path, { arch: "vit_tiny", patchSize: 8 });
  try {
    const vit = model.vit;
    if (!vit) throw new Error("the fixture's weights are a ViT's");
    const p = model.backbone as ViTParams;
    t.tidy(() => {
      const each = (prefix: string, n: number, f: (x: t.Tensor) => t.Tensor) =>
        t.cat(Array.from({ length: n }, (_, i) => f(fx[`${prefix}.${i}`])), 0);
      const cls = [each("db", 5, (x) => clsFeatures(p, vit, x)), each("q", 3, (x) => clsFeatures(p, vit, x))];
      const ms = [
        each("db", 5, (x) => multiScaleFeatures(p, vit, x)),
        each("q", 3, (x) => multiScaleFeatures(p, vit, x)),
      ];
      assertClose(t.toArray(cls[0]), t.toArray(fx.cls_db), 1e-5);
      assertClose(t.toArray(cls[1]), t.toArray(fx.cls_q), 1e-5);
      assertClose(t.toArray(ms[0]), t.toArray(fx.ms_db), 1e-5);
      assertClose(t.toArray(ms[1]), t.toArray(fx.ms_q), 1e-5);
      assertClose(t.toArray(cosineSimilarities(cls[0], cls[1])), t.toArray(fx.sim_cls), 1e-5);
      const sim = cosineSimilarities(ms[1], ms[0]); // [Q, N]
      assertClose(t.toArray(t.transpose(sim, 0, 1)), t.toArray(fx.sim_ms), 1e-5);
      // the official compute_map on the same ranking
      const dbLabels = metadata.db_labels.split(",").map(Number), qLabels = metadata.q_labels.split(",").map(Number);
      const ranking = rankingRows(t.sort(sim, 1, true).indices);
      const positives = qLabels.map((l) => new Set(dbLabels.flatMap((d, j) => (d === l ? [j] : []))));
      const s = retrievalScores(ranking, positives, metadata.ks.split(",").map(Number));
      assertClose([s.map], t.toArray(fx.map_ms), 1e-12);
      assertClose(s.precision, t.toArray(fx.pr_ms), 1e-12);
      assertClose(s.aps, t.toArray(fx.aps_ms), 1e-12);
      // copy detection: features, whitening learned on another set, similarities
      const q = copyDetectionFeatures(p, vit, fx.cd_q), db = copyDetectionFeatures(p, vit, fx.cd_db);
      assertClose(t.toArray(q), t.toArray(fx.cd_feat_q), 1e-5);
      assertClose(t.toArray(db), t.toArray(fx.cd_feat_db), 1e-5);
      const w = learnWhitening(copyDetectionFeatures(p, vit, fx.cd_wh));
      assertClose(t.toArray(w.mean), t.toArray(fx.cd_mean), 1e-5);
      const white = cosineSimilarities(applyWhitening(q, w), applyWhitening(db, w));
      assertClose(t.toArray(white), t.toArray(fx.cd_sim), 1e-5);
      assert.ok(w.energy > 0.99, `every direction kept: energy ${w.energy}`);
    });
  } finally {
    t.dispose([fx, model.backbone]);
    Deno.removeSync(path);
  }
  assert.equal(t.liveTensors(), before);
});

Deno.test("symmetricEigen: A = V diag(d) Vᵀ, VᵀV = I, ascending, on random and rank-deficient matrices", () => {
  let seed = 1;
  const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5;
  for (const [n, r] of [[1, 1], [3, 3], [30, 30], [60, 7]]) {
    const b = Array.from({ length: n * r }, rand);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        for (let k = 0; k < r; k++) a[i * n + j] += b[i * r + k] * b[j * r + k];
      }
    }
    const { values, vectors: v } = symmetricEigen(a, n);
    for (let i = 1; i < n; i++) assert.ok(values[i - 1] <= values[i]);
    let err = 0, orth = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0, o = 0;
        for (let k = 0; k < n; k++) {
          s += v[i * n + k] * values[k] * v[j * n + k];
          o += v[k * n + i] * v[k * n + j];
        }
        err = Math.max(err, Math.abs(s - a[i * n + j]));
        orth = Math.max(orth, Math.abs(o - (i === j ? 1 : 0)));
      }
    }
    assert.ok(err < 1e-10 && orth < 1e-10, `n ${n} rank ${r}: reconstruction ${err}, orthogonality ${orth}`);
    assert.ok(values.slice(0, n - r).every((x) => Math.abs(x) < 1e-10), `n ${n}: ${n - r} zero eigenvalues`);
  }
  assert.throws(() => symmetricEigen([1, 2, 3], 2), /n x n matrix/);
  assert.throws(() => symmetricEigen([1, NaN, NaN, 1], 2), /non-finite/);
});

/** The names under a folder, recursively, sorted ([] when it does not exist). */
function tree(dir: string): string[] {
  if (!t.exists(dir)) return [];
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory ? tree(join(dir, e.name)).map((n) => `${e.name}/${n}`) : [e.name]
  ).sort();
}

const BASE = ["--weights", WEIGHTS, "--arch", "vit_tiny"];

Deno.test("deno task retrieve --copy-detection: mild attacks find their original first; scores per attack; a self-contained page", async () => {
  const dir = join(Deno.makeTempDirSync(), "out");
  const before = t.liveTensors();
  const r = await captured(() =>
    retrieve([
      ...BASE,
      "--copy-detection",
      "--database",
      join(COPIES, "database"),
      "--queries",
      join(COPIES, "queries"),
      "--whitening",
      join(COPIES, "whitening"),
      "--image-size",
      "96",
      "--top",
      "5",
      "--output-dir",
      dir,
    ])
  );
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before, "the command frees every tensor");
  assert.deepEqual(tree(dir), ["neighbours.html", "neighbours.json", "scores.json"]);
  const scores = JSON.parse(Deno.readTextFileSync(join(dir, "scores.json")));
  const attacks = ["blur", "color", "crop", "jpeg50", "overlay", "scale", "strong"];
  assert.deepEqual(Object.keys(scores.groups).sort(), attacks);
  for (const a of ["scale", "jpeg50"]) {
    const mild = scores.per_query.filter((q: { image: string }) => q.image.startsWith(`${a}/`));
    assert.equal(mild.length, 12);
    for (const q of mild) assert.equal(q.first_match_rank, 1, `${q.image} finds its original first`);
    assert.equal(scores.groups[a].map, 1);
  }
  assert.ok(scores.map > 0.5 && scores.map < 1, `overall mAP ${scores.map}`);
  assert.deepEqual(Object.keys(scores.precision_at), ["1", "5", "10"]);
  const nb = JSON.parse(Deno.readTextFileSync(join(dir, "neighbours.json")));
  assert.equal(nb.queries.length, 84);
  assert.equal(nb.queries[0].neighbours.length, 5);
  assert.deepEqual(Object.keys(nb.queries[0].neighbours[0]).sort(), ["image", "match", "score"]);
  const html = Deno.readTextFileSync(join(dir, "neighbours.html"));
  assert.ok(!/(src|href)="https?:/.test(html) && !/url\(https?:/.test(html), "nothing fetched from the network");
  assert.equal(
    html.split("data:image/png;base64,").length - 1,
    12 + 12 + 84 - countUnused(nb),
    "each image inlined once",
  );
  assert.match(r.out, /attack scale: mAP 1\.000/);
  assert.match(r.out, /whitening learned on 36 image\(s\)/);
});

Deno.test("copy detection scores each query's 20 nearest, as the official topk(20): a match ranked lower adds nothing", async () => {
  const root = Deno.makeTempDirSync();
  const database = join(root, "database"), queries = join(root, "queries");
  Deno.mkdirSync(database);
  Deno.mkdirSync(queries);
  const picture = join(COPIES, "database", "dis00.jpg");
  // 24 exact copies of the query's pixels under other names rank first; its true match (its name) is another picture.
  for (let i = 0; i < 24; i++) Deno.copyFileSync(picture, join(database, `copy${String(i).padStart(2, "0")}.jpg`));
  Deno.copyFileSync(join(COPIES, "database", "dis01.jpg"), join(database, "q.jpg"));
  Deno.copyFileSync(picture, join(queries, "q.jpg"));
  const out = join(root, "out");
  try {
    const r = await captured(() =>
      retrieve([...BASE, "--copy-detection", "--database", database, "--queries", queries, "--output-dir", out])
    );
    assert.equal(r.value, 0, r.err);
    const scores = JSON.parse(Deno.readTextFileSync(join(out, "scores.json")));
    assert.equal(scores.per_query[0].first_match_rank, 25);
    assert.equal(scores.map, 0); // past the 20 nearest; over the full ranking it would be 1/25
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

/** How many database images no query lists among its neighbours (they get no thumbnail). */
function countUnused(nb: { queries: { neighbours: { image: string }[] }[] }): number {
  const shown = new Set(nb.queries.flatMap((q) => q.neighbours.map((n) => n.image)));
  return 24 - shown.size;
}

/** Class folders made from the copies: each original is a class; database: the original and its colour copy. */
function classFolders(root: string, classes: number): { database: string; queries: string } {
  const database = join(root, "db"), queries = join(root, "q");
  for (let i = 0; i < classes; i++) {
    const c = `img${String(i).padStart(2, "0")}`;
    for (const d of [join(database, c), join(queries, c)]) Deno.mkdirSync(d, { recursive: true });
    Deno.copyFileSync(join(COPIES, "database", `${c}.png`), join(database, c, "original.png"));
    Deno.copyFileSync(join(COPIES, "queries", "color", `${c}.jpg`), join(database, c, "color.jpg"));
    Deno.copyFileSync(join(COPIES, "queries", "scale", `${c}.jpg`), join(queries, c, "scale.jpg"));
  }
  return { database, queries };
}

Deno.test("deno task retrieve: class subfolders give mAP and precision at k; --multiscale", async () => {
  const tmp = Deno.makeTempDirSync();
  const { database, queries } = classFolders(tmp, 6);
  const before = t.liveTensors();
  const dir = join(tmp, "out");
  const r = await captured(() =>
    retrieve([...BASE, "--database", database, "--queries", queries, "--multiscale", "--map", "--output-dir", dir])
  );
  assert.equal(r.value, 0, r.err);
  assert.equal(t.liveTensors(), before);
  const scores = JSON.parse(Deno.readTextFileSync(join(dir, "scores.json")));
  assert.equal(scores.features, "CLS, scales 1, 1/sqrt 2, 1/2");
  assert.deepEqual(Object.keys(scores.groups).sort(), ["img00", "img01", "img02", "img03", "img04", "img05"]);
  assert.ok(scores.map > 0.8, `mAP ${scores.map}`); // each query's class holds its original
  assert.equal(scores.precision_at["1"], 1);
  assert.match(r.out, /all queries: mAP \d\.\d{3}, mP@1 1\.000/);
});

Deno.test("deno task retrieve decodes a truncated JPEG as the official retrieval loader (PIL's LOAD_TRUNCATED_IMAGES), naming it in a warning; copy detection refuses it", async () => {
  const tmp = Deno.makeTempDirSync();
  const { database, queries } = classFolders(tmp, 2);
  const bytes = Deno.readFileSync(join(COPIES, "queries", "blur", "img00.jpg"));
  Deno.writeFileSync(join(queries, "img00", "cut.jpg"), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  const before = t.liveTensors();
  const out = join(tmp, "out");
  const r = await captured(() =>
    retrieve([...BASE, "--database", database, "--queries", queries, "--output-dir", out])
  );
  assert.equal(r.value, 0, r.err);
  assert.match(r.err, /warning: --queries: 1 truncated JPEG decoded as the official retrieval loader .*cut\.jpg/);
  const ranked = JSON.parse(Deno.readTextFileSync(join(out, "neighbours.json")));
  assert.ok(JSON.stringify(ranked).includes("cut.jpg"), "the truncated query is ranked");
  const copies = join(tmp, "copies");
  const c = await captured(() =>
    retrieve([...BASE, "--copy-detection", "--database", database, "--queries", queries, "--output-dir", copies])
  );
  assert.equal(c.value, 1, c.err);
  assert.match(c.err, /^error: --queries .*cut\.jpg: cannot decode \(a truncated JPEG/);
  assert.equal(t.liveTensors(), before);
});

Deno.test("deno task retrieve: bad input is one line, exit 2 (usage) or 1 (undecodable image), nothing written", async () => {
  const tmp = Deno.makeTempDirSync();
  const { database, queries } = classFolders(tmp, 2);
  const empty = join(tmp, "empty");
  Deno.mkdirSync(empty);
  Deno.writeTextFileSync(join(empty, "readme.txt"), "no images");
  const flat = join(tmp, "flat");
  Deno.mkdirSync(flat);
  Deno.copyFileSync(join(COPIES, "queries", "scale", "img00.jpg"), join(flat, "other-name.jpg"));
  const cases: [string[], RegExp][] = [
    [["--database", empty, "--queries", queries], /--database .*empty holds no images/],
    [
      ["--database", database, "--queries", flat, "--map"],
      /--map needs labels: 1 image\(s\) of --queries .*flat lie outside class subfolders/,
    ],
    [
      ["--database", database, "--queries", flat, "--map", "--copy-detection"],
      /--map: no query of --queries .* has an original of its file name/,
    ],
    [["--database", database, "--queries", queries, "--whitening", database], /--whitening needs --copy-detection/],
    [
      ["--database", database, "--queries", queries, "--copy-detection", "--multiscale"],
      /--multiscale is for retrieval/,
    ],
    [["--database", join(tmp, "nowhere"), "--queries", queries], /--database .*nowhere: no such folder/],
    [["--database", database, "--queries", queries, "--top", "0"], /--top must be between 1 and 1000/],
    [["--database", database], /--queries is required/],
  ];
  const before = t.liveTensors();
  for (const [args, message] of cases) {
    const out = join(tmp, "out", "nested");
    const r = await captured(() => retrieve([...BASE, ...args, "--output-dir", out]));
    assert.equal(r.value, 2, `${args.join(" ")}: ${r.err}`);
    assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
    assert.match(r.err, message);
    assert.ok(!t.exists(join(tmp, "out")), `nothing written for ${args.join(" ")}`);
  }
  // An image cut short inside its header (retrieval decodes one cut in its data): exit 1 naming it; an existing output
  // folder is left as it was.
  const broken = join(tmp, "broken");
  Deno.mkdirSync(join(broken, "img00"), { recursive: true });
  Deno.writeFileSync(
    join(broken, "img00", "cut.jpg"),
    Deno.readFileSync(join(COPIES, "queries", "blur", "img00.jpg")).subarray(0, 300),
  );
  const existing = join(tmp, "existing");
  Deno.mkdirSync(existing);
  Deno.writeTextFileSync(join(existing, "keep.txt"), "mine");
  const r = await captured(() =>
    retrieve([...BASE, "--database", database, "--queries", broken, "--image-size", "64", "--output-dir", existing])
  );
  assert.equal(r.value, 1, r.err);
  assert.match(r.err, /^error: --queries .*cut\.jpg: /);
  assert.deepEqual(tree(existing), ["keep.txt"]);
  // An image so elongated that its short side is under a patch at this size: named too.
  const thin = join(tmp, "thin");
  Deno.mkdirSync(join(thin, "img00"), { recursive: true });
  t.tidy(() => t.writeImage(join(thin, "img00", "strip.png"), t.full([600, 10, 3], 128, { dtype: "u8" })));
  const s = await captured(() =>
    retrieve([...BASE, "--database", database, "--queries", thin, "--image-size", "64", "--output-dir", existing])
  );
  assert.equal(s.value, 1, s.err);
  assert.match(s.err, /^error: --queries .*strip\.png: an image of \d+ x 64 pixels is smaller than one patch/);
  assert.equal(t.liveTensors(), before);
});
