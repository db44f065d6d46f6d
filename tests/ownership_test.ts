import assert from "node:assert/strict";
import * as t from "../mod.ts";

Deno.test("tidy frees what it made and keeps what it returns", () => {
  const before = t.liveTensors();
  const r = t.tidy(() => {
    const a = t.ones([2]);
    const b = t.add(a, a);
    return { out: [b], n: 1 };
  });
  assert.equal(t.liveTensors(), before + 1);
  assert.equal(r.out[0].disposed, false);
  assert.deepEqual(t.toArray(r.out[0]), [2, 2]);
  r.out[0].dispose();
  assert.equal(t.liveTensors(), before);
});

Deno.test("nested tidy passes returned tensors to the enclosing scope", () => {
  const before = t.liveTensors();
  let inner: t.Tensor | undefined;
  t.tidy(() => {
    inner = t.tidy(() => t.mul(t.ones([2]), 3));
    assert.equal(t.liveTensors(), before + 1);
    assert.equal(inner.disposed, false);
  });
  assert.equal(inner!.disposed, true, "the outer scope owned it");
  assert.equal(t.liveTensors(), before);
});

Deno.test("keep takes a tensor out of every scope", () => {
  const before = t.liveTensors();
  let kept: t.Tensor | undefined;
  t.tidy(() => {
    t.tidy(() => {
      kept = t.keep(t.ones([1]));
    });
  });
  assert.equal(kept!.disposed, false);
  assert.equal(t.liveTensors(), before + 1);
  kept!.dispose();
  assert.equal(t.liveTensors(), before);
});

Deno.test("a throwing scope frees its tensors and rethrows", () => {
  const before = t.liveTensors();
  assert.throws(() =>
    t.tidy(() => {
      t.ones([3]);
      throw new Error("boom");
    }), /boom/);
  assert.equal(t.liveTensors(), before);
});

Deno.test("tidy refuses async functions without leaking", () => {
  const before = t.liveTensors();
  assert.throws(() => t.tidy(() => Promise.resolve(t.ones([1]))), /synchronous/);
  assert.equal(t.liveTensors(), before);
});

Deno.test("using disposes at the end of the block; dispose is idempotent", () => {
  const before = t.liveTensors();
  {
    using a = t.ones([4]);
    assert.equal(t.liveTensors(), before + 1);
    a.dispose();
  }
  assert.equal(t.liveTensors(), before);
  const b = t.zeros([1]);
  b.dispose();
  b.dispose();
  assert.throws(() => t.add(b, 1), /disposed tensor/);
});

Deno.test("dispose frees every tensor in a tree of records and arrays", () => {
  const before = t.liveTensors();
  const params = { w: t.ones([2, 2]), layers: [{ b: t.zeros([2]) }, { b: t.zeros([2]) }] };
  assert.equal(t.tensorsIn(params).length, 3);
  t.dispose(params);
  assert.equal(t.liveTensors(), before);
});

Deno.test("ops never mutate or take ownership of their inputs", () => {
  using a = t.tensor([1, 2, 3]);
  t.tidy(() => {
    t.add(a, 1);
    t.reshape(a, [3, 1]);
    t.clamp(a, 0, 1);
  });
  assert.equal(a.disposed, false);
  assert.deepEqual(t.toArray(a), [1, 2, 3]);
});

Deno.test("the live-tensor count is back at its baseline after 1,000 mixed calls in tidy scopes", () => {
  const before = t.liveTensors();
  using g = new t.Generator(1);
  for (let i = 0; i < 1000; i++) {
    t.tidy(() => {
      const x = t.randn(g, [4, 8]);
      const w = t.requiresGrad(t.randn(g, [3, 8]));
      const h = t.softmax(t.linear(x, w), -1);
      const parts = t.chunk(h, 2, 0);
      const s = t.sum(t.cat(parts, 0));
      const { values } = t.topk(h, 2, 1);
      t.grad(t.add(s, t.sum(values)), [w]);
      if (i % 10 === 0) {
        try {
          t.matmul(x, x); // a shape error midway must not leak either
        } catch { /* expected */ }
      }
      return t.item(s);
    });
  }
  assert.equal(t.liveTensors(), before);
});
