// lib/eval/knn.ts: parity with the official eval_knn.py's weighted k-NN (tests/fixtures/knn.safetensors, written by
// scripts/gen_knn_fixtures.py), ties between classes included.
import assert from "node:assert/strict";
import { join } from "node:path";
import * as t from "../mod.ts";
import { knnClassify } from "../lib/eval/knn.ts";
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
