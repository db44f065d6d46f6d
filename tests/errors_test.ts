import assert from "node:assert/strict";
import * as t from "../mod.ts";

Deno.test("a libtorch error becomes a TorchError with libtorch's message, and the next call works", () => {
  using a = t.ones([2, 3]);
  using b = t.ones([4, 5]);
  let caught: unknown;
  try {
    t.matmul(a, b);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof t.TorchError);
  assert.equal(caught.op, "matmul");
  assert.match(caught.message, /^matmul: mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)/);
  using ok = t.matmul(a, t.ones([3, 2]));
  assert.deepEqual(t.toArray(ok), [3, 3, 3, 3]);
});

Deno.test("errors from every result kind are reported: tensor, list and scalar ops", () => {
  using a = t.ones([2, 3]);
  assert.throws(() => t.add(a, t.ones([4])), /add: The size of tensor a \(3\) must match/);
  assert.throws(() => t.chunk(a, 0), /chunk: /);
  assert.throws(() => t.split(a, [1, 5], 0), /split: /);
  assert.throws(() => t.item(a), /item: /);
  assert.throws(() => t.reshape(a, [7]), /reshape: shape '\[7\]' is invalid/);
  assert.throws(() => t.indexSelect(a, 0, t.tensor([5], { dtype: "i64" })), /indexSelect: /);
  assert.throws(() => t.conv2d(t.ones([1, 3, 4, 4]), t.ones([2, 2, 1, 1])), /conv2d: /);
  using after = t.sum(a);
  assert.equal(t.item(after), 6);
});

Deno.test("many errors in a row leave the process and the tensor count intact", () => {
  const before = t.liveTensors();
  t.tidy(() => {
    const a = t.ones([2, 2]), b = t.ones([3, 3]);
    for (let i = 0; i < 100; i++) assert.throws(() => t.matmul(a, b), t.TorchError);
  });
  assert.equal(t.liveTensors(), before);
});

Deno.test("positions and counts past 2^31 reach libtorch, and a fraction is an error naming the op", () =>
  t.tidy(() => {
    const x = t.arange(0, 10);
    assert.deepEqual(t.toArray(t.slice(x, 0, 2, 2 ** 40)), [2, 3, 4, 5, 6, 7, 8, 9]); // as x[2:2**40]
    assert.deepEqual(t.toArray(t.slice(x, 0, -(2 ** 40), 2)), [0, 1]);
    assert.throws(() => t.narrow(x, 0, 1, 2 ** 31), /narrow: start \(1\) \+ length \(2147483648\) exceeds/);
    assert.throws(() => t.select(x, 0, 2 ** 33), /select: select\(\): index 8589934592 out of range/);
    assert.throws(() => t.topk(x, 2 ** 31), /topk: /);
    assert.throws(() => t.slice(x, 0, 2.5), /slice: expected an integer \(an index or a count\), got 2\.5/);
    assert.throws(() => t.select(x, 0, NaN), /select: expected an integer/);
    assert.throws(() => t.eye(1.5), /eye: expected an integer/);
  }));

Deno.test("bad arguments are rejected in TypeScript with a message that names the fix", () => {
  assert.throws(() => t.zeros([2.5]), /expected integers/);
  assert.throws(() => t.tensor(new Uint16Array(2)), /pass the dtype/);
  assert.throws(() => t.sub(1, 2 as unknown as t.Tensor), /at least one tensor/);
  assert.throws(() => t.interpolate(t.ones([1, 1, 2, 2]), {}), /size or scaleFactor/);
});
