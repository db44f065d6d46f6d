import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { assertClose, assertTensor, noLeak } from "./helpers.ts";

Deno.test("tensor() copies typed arrays and nested arrays with the right dtype and shape", () =>
  noLeak(() => {
    const src = new Float32Array([1, 2, 3, 4]);
    const a = t.tensor(src, { shape: [2, 2] });
    src[0] = 99; // the tensor holds a copy, not a view of JS memory
    assertTensor(a, [2, 2], [1, 2, 3, 4]);
    assert.equal(a.dtype, "f32");
    const b = t.tensor([[1, 2, 3], [4, 5, 6]], { dtype: "i64" });
    assert.equal(b.dtype, "i64");
    assert.deepEqual(b.shape, [2, 3]);
    assert.deepEqual(t.data(b), new BigInt64Array([1n, 2n, 3n, 4n, 5n, 6n]));
    assert.deepEqual(t.data(t.tensor(new Int32Array([7, -8]))), new Int32Array([7, -8]));
    assert.deepEqual(t.data(t.tensor([true, false, true], { dtype: "bool" })), new Uint8Array([1, 0, 1]));
    // Numbers to bool as torch.tensor(..., dtype=torch.bool): nonzero is true, not truncated nor wrapped to a byte.
    assert.deepEqual(
      t.data(t.tensor([0.5, 2, -1, 256, 0, NaN], { dtype: "bool" })),
      new Uint8Array([1, 1, 1, 1, 0, 1]),
    );
    assert.throws(() => t.tensor([[1, 2], [3]]), /ragged/);
    assert.throws(() => t.tensor(new Float32Array(3), { shape: [2, 2] }), /bytes/);
  }));

Deno.test("shape, dtype, device and size are plain fields", () =>
  noLeak(() => {
    const a = t.zeros([2, 3, 4], { dtype: "f64" });
    assert.deepEqual(a.shape, [2, 3, 4]);
    assert.equal(a.dtype, "f64");
    assert.equal(a.device, "cpu");
    assert.equal(a.size, 24);
    assert.equal(a.ndim, 3);
    assert.equal(String(a), "Tensor(f64[2, 3, 4])");
  }));

Deno.test("factories: zeros, ones, full, arange, linspace, eye and the *Like forms", () =>
  noLeak(() => {
    assertTensor(t.zeros([2]), [2], [0, 0]);
    assertTensor(t.ones([1, 2]), [1, 2], [1, 1]);
    assertTensor(t.full([3], 2.5), [3], [2.5, 2.5, 2.5]);
    const r = t.arange(0, 5);
    assert.equal(r.dtype, "i64");
    assertTensor(r, [5], [0, 1, 2, 3, 4]);
    assertTensor(t.arange(1, 2, 0.25, { dtype: "f32" }), [4], [1, 1.25, 1.5, 1.75]);
    assertTensor(t.linspace(0, 1, 5), [5], [0, 0.25, 0.5, 0.75, 1]);
    assertTensor(t.eye(2), [2, 2], [1, 0, 0, 1]);
    const x = t.tensor([1, 2]);
    assertTensor(t.zerosLike(x), [2], [0, 0]);
    assertTensor(t.onesLike(x), [2], [1, 1]);
    assertTensor(t.fullLike(x, 7), [2], [7, 7]);
  }));

Deno.test("dtype casts round-trip through every supported dtype", () =>
  noLeak(() => {
    const x = t.tensor([1.5, -2, 3]);
    for (const dtype of ["f32", "f16", "bf16", "f64"] as const) {
      const y = t.to(x, dtype);
      assert.equal(y.dtype, dtype);
      assertClose(t.toArray(y), [1.5, -2, 3]);
    }
    assertTensor(t.to(x, "i64"), [3], [1, -2, 3]);
    assertTensor(t.to(x, "i32"), [3], [1, -2, 3]);
    assertTensor(t.to(t.tensor([1, 255, 256]), "u8"), [3], [1, 255, 0]);
    assertTensor(t.to(t.tensor([0, 2, -1]), "bool"), [3], [0, 1, 1]);
    const h = t.tensor([1, 0.5], { dtype: "f16" });
    assert.deepEqual(t.data(h), new Uint16Array([0x3c00, 0x3800])); // IEEE half bits
  }));

Deno.test("item reads a one-element tensor", () =>
  noLeak(() => {
    assert.equal(t.item(t.tensor([42])), 42);
    assert.throws(() => t.item(t.ones([2])), /item: a Tensor with 2 elements/);
  }));

Deno.test("reshape, permute, transpose, flatten, squeeze and unsqueeze", () =>
  noLeak(() => {
    const x = t.arange(0, 6, 1, { dtype: "f32" });
    const m = t.reshape(x, [2, 3]);
    assertTensor(m, [2, 3], [0, 1, 2, 3, 4, 5]);
    assertTensor(t.reshape(x, [3, -1]), [3, 2], [0, 1, 2, 3, 4, 5]);
    assertTensor(t.transpose(m, 0, 1), [3, 2], [0, 3, 1, 4, 2, 5]);
    const c = t.reshape(t.arange(0, 24), [2, 3, 4]);
    const p = t.permute(c, [2, 0, 1]);
    assert.deepEqual(p.shape, [4, 2, 3]);
    assertClose(t.toArray(t.select(t.select(t.select(p, 0, 1), 0, 1), 0, 2)), [1 * 1 + 12 + 2 * 4]);
    assertTensor(t.flatten(c, 1), [2, 12], t.toArray(c));
    const u = t.unsqueeze(m, 0);
    assert.deepEqual(u.shape, [1, 2, 3]);
    assert.deepEqual(t.squeeze(u, 0).shape, [2, 3]);
    assert.deepEqual(t.squeeze(t.zeros([1, 2, 1])).shape, [2]);
    assertTensor(t.contiguous(t.transpose(m, 0, 1)), [3, 2], [0, 3, 1, 4, 2, 5]);
  }));

Deno.test("narrow, slice, select, index_select and gather pick the right elements", () =>
  noLeak(() => {
    const m = t.reshape(t.arange(0, 12, 1, { dtype: "f32" }), [3, 4]);
    assertTensor(t.narrow(m, 1, 1, 2), [3, 2], [1, 2, 5, 6, 9, 10]);
    assertTensor(t.slice(m, 1, 0, 4, 2), [3, 2], [0, 2, 4, 6, 8, 10]);
    assertTensor(t.slice(m, 0, 1), [2, 4], [4, 5, 6, 7, 8, 9, 10, 11]);
    assertTensor(t.select(m, 0, 2), [4], [8, 9, 10, 11]);
    assertTensor(t.indexSelect(m, 0, t.tensor([2, 0], { dtype: "i64" })), [2, 4], [8, 9, 10, 11, 0, 1, 2, 3]);
    assertTensor(t.gather(m, 1, t.tensor([[3], [0], [1]], { dtype: "i64" })), [3, 1], [3, 4, 9]);
  }));

Deno.test("cat, stack, chunk, split, expand, repeat and flip", () =>
  noLeak(() => {
    const a = t.tensor([[1, 2]]), b = t.tensor([[3, 4]]);
    assertTensor(t.cat([a, b], 0), [2, 2], [1, 2, 3, 4]);
    assertTensor(t.cat([a, b], 1), [1, 4], [1, 2, 3, 4]);
    assertTensor(t.stack([a, b], 0), [2, 1, 2], [1, 2, 3, 4]);
    const x = t.arange(0, 5, 1, { dtype: "f32" });
    const parts = t.chunk(x, 2);
    assert.equal(parts.length, 2);
    assertTensor(parts[0], [3], [0, 1, 2]);
    assertTensor(parts[1], [2], [3, 4]);
    const [p, q] = t.split(x, [1, 4]);
    assertTensor(p, [1], [0]);
    assertTensor(q, [4], [1, 2, 3, 4]);
    assert.deepEqual(t.split(x, 2).map((s) => s.shape[0]), [2, 2, 1]);
    assertTensor(t.expand(a, [3, 2]), [3, 2], [1, 2, 1, 2, 1, 2]);
    assertTensor(t.expand(t.tensor([[5]]), [2, -1]), [2, 1], [5, 5]);
    assertTensor(t.repeat(a, [2, 2]), [2, 4], [1, 2, 1, 2, 1, 2, 1, 2]);
    assertTensor(t.flip(t.tensor([[1, 2, 3]]), [1]), [1, 3], [3, 2, 1]);
  }));

Deno.test("elementwise arithmetic broadcasts and accepts numbers", () =>
  noLeak(() => {
    const a = t.tensor([[1, 2], [3, 4]]), b = t.tensor([10, 20]);
    assertTensor(t.add(a, b), [2, 2], [11, 22, 13, 24]);
    assertTensor(t.add(a, b, 2), [2, 2], [21, 42, 23, 44]);
    assertTensor(t.add(a, 1), [2, 2], [2, 3, 4, 5]);
    assertTensor(t.sub(a, b), [2, 2], [-9, -18, -7, -16]);
    assertTensor(t.sub(a, 1), [2, 2], [0, 1, 2, 3]);
    assertTensor(t.sub(10, a), [2, 2], [9, 8, 7, 6]);
    assertTensor(t.mul(a, b), [2, 2], [10, 40, 30, 80]);
    assertTensor(t.mul(a, 0.5), [2, 2], [0.5, 1, 1.5, 2]);
    assertTensor(t.div(a, 4), [2, 2], [0.25, 0.5, 0.75, 1]);
    assertTensor(t.div(b, a), [2, 2], [10, 10, 10 / 3, 5], 1e-6);
    assertTensor(t.pow(a, 2), [2, 2], [1, 4, 9, 16]);
    assertTensor(t.pow(a, t.tensor([0, 1])), [2, 2], [1, 2, 1, 4]);
    assertTensor(t.remainder(t.tensor([-1.5, 2.5]), 1), [2], [0.5, 0.5]);
    assertTensor(t.maximum(a, t.tensor([2, 2])), [2, 2], [2, 2, 3, 4]);
    assertTensor(t.minimum(a, t.tensor([2, 2])), [2, 2], [1, 2, 2, 2]);
    assertTensor(t.atan2(t.tensor([1]), t.tensor([1])), [1], [Math.PI / 4]);
  }));

Deno.test("unary math matches Math.*", () =>
  noLeak(() => {
    const xs = [-1.5, -0.5, 0.25, 2];
    const x = t.tensor(xs);
    const pos = t.tensor([0.25, 1, 4]);
    const cases: [t.Unary, (v: number) => number, t.Tensor, number[]][] = [
      [t.neg, (v) => -v, x, xs],
      [t.abs, Math.abs, x, xs],
      [t.exp, Math.exp, x, xs],
      [t.sin, Math.sin, x, xs],
      [t.cos, Math.cos, x, xs],
      [t.tanh, Math.tanh, x, xs],
      [t.sigmoid, (v) => 1 / (1 + Math.exp(-v)), x, xs],
      [t.floor, Math.floor, x, xs],
      [t.ceil, Math.ceil, x, xs],
      [t.sign, Math.sign, x, xs],
      [t.relu, (v) => Math.max(v, 0), x, xs],
      [t.reciprocal, (v) => 1 / v, x, xs],
      [t.log, Math.log, pos, [0.25, 1, 4]],
      [t.sqrt, Math.sqrt, pos, [0.25, 1, 4]],
      [t.rsqrt, (v) => 1 / Math.sqrt(v), pos, [0.25, 1, 4]],
    ];
    for (const [op, ref, input, values] of cases) assertClose(t.toArray(op(input)), values.map(ref), 1e-6);
    // erf(1) and round-half-to-even
    assertClose(t.toArray(t.erf(t.tensor([0, 1]))), [0, 0.8427007929497149], 1e-6);
    assertTensor(t.round(t.tensor([0.5, 1.5, 2.5, -0.5])), [4], [0, 2, 2, -0]);
  }));

Deno.test("comparisons, logic, where, clamp, isfinite and isnan", () =>
  noLeak(() => {
    const a = t.tensor([1, 2, 3]);
    assertTensor(t.eq(a, 2), [3], [0, 1, 0]);
    assertTensor(t.ne(a, 2), [3], [1, 0, 1]);
    assertTensor(t.lt(a, 2), [3], [1, 0, 0]);
    assertTensor(t.le(a, 2), [3], [1, 1, 0]);
    assertTensor(t.gt(a, t.tensor([0, 5, 1])), [3], [1, 0, 1]);
    assertTensor(t.ge(a, 2), [3], [0, 1, 1]);
    assert.equal(t.eq(a, 2).dtype, "bool");
    assertTensor(t.logicalAnd(t.gt(a, 1), t.lt(a, 3)), [3], [0, 1, 0]);
    assertTensor(t.logicalOr(t.lt(a, 2), t.gt(a, 2)), [3], [1, 0, 1]);
    assertTensor(t.logicalNot(t.gt(a, 1)), [3], [1, 0, 0]);
    assertTensor(t.where(t.gt(a, 1), a, t.neg(a)), [3], [-1, 2, 3]);
    assertTensor(t.clamp(a, 1.5, 2.5), [3], [1.5, 2, 2.5]);
    assertTensor(t.clamp(a, undefined, 2), [3], [1, 2, 2]);
    assertTensor(t.clamp(a, 2), [3], [2, 2, 3]);
    const z = t.div(t.tensor([1, 0, -1]), t.tensor([0, 0, 1]));
    assertTensor(t.isfinite(z), [3], [0, 0, 1]);
    assertTensor(t.isnan(z), [3], [0, 1, 0]);
    assert.equal(t.item(t.all(t.gt(a, 0))), 1);
    assert.equal(t.item(t.any(t.gt(a, 2))), 1);
  }));

Deno.test("reductions: sum, mean, variance, amax, amin, max, min, norm, logsumexp, argmax, cumsum", () =>
  noLeak(() => {
    const m = t.tensor([[1, 5, 3], [4, 2, 6]]);
    assertTensor(t.sum(m), [], [21]);
    assertTensor(t.sum(m, 0), [3], [5, 7, 9]);
    assertTensor(t.sum(m, 1, { keepdim: true }), [2, 1], [9, 12]);
    assertTensor(t.sum(m, [0, 1]), [], [21]);
    assertTensor(t.mean(m), [], [3.5]);
    assertTensor(t.mean(m, -1), [2], [3, 4]);
    assertTensor(t.variance(m, 1), [2], [4, 4]);
    assertTensor(t.variance(m, 1, { correction: 0 }), [2], [8 / 3, 8 / 3], 1e-6);
    assertTensor(t.amax(m, 1), [2], [5, 6]);
    assertTensor(t.amin(m, 0), [3], [1, 2, 3]);
    assertTensor(t.amax(m), [], [6]);
    const mx = t.max(m, 1);
    assertTensor(mx.values, [2], [5, 6]);
    assertTensor(mx.indices, [2], [1, 2]);
    const mn = t.min(m, 0, { keepdim: true });
    assertTensor(mn.values, [1, 3], [1, 2, 3]);
    assertTensor(mn.indices, [1, 3], [0, 1, 0]);
    assertTensor(t.norm(t.tensor([3, 4])), [], [5]);
    assertTensor(t.norm(m, 1, 1), [2], [9, 12]);
    assertTensor(t.logsumexp(t.tensor([[0, Math.log(3)]]), 1), [1], [Math.log(4)], 1e-6);
    assertTensor(t.argmax(m, 1), [2], [1, 2]);
    assertTensor(t.argmin(m, 1), [2], [0, 1]);
    assertTensor(t.cumsum(t.tensor([1, 2, 3]), 0), [3], [1, 3, 6]);
  }));

Deno.test("topk and sort return values and indices", () =>
  noLeak(() => {
    const x = t.tensor([[3, 1, 4, 1, 5]]);
    const top = t.topk(x, 2, 1);
    assertTensor(top.values, [1, 2], [5, 4]);
    assertTensor(top.indices, [1, 2], [4, 2]);
    const low = t.topk(x, 2, 1, { largest: false });
    assertTensor(low.values, [1, 2], [1, 1]);
    const s = t.sort(x, 1);
    assertTensor(s.values, [1, 5], [1, 1, 3, 4, 5]);
    assertTensor(t.sort(x, 1, true).values, [1, 5], [5, 4, 3, 1, 1]);
    assertTensor(t.gather(x, 1, s.indices), [1, 5], [1, 1, 3, 4, 5]);
  }));

Deno.test("matmul, bmm and linear against hand-computed products", () =>
  noLeak(() => {
    const a = t.tensor([[1, 2], [3, 4]]), b = t.tensor([[5, 6], [7, 8]]);
    assertTensor(t.matmul(a, b), [2, 2], [19, 22, 43, 50]);
    assertTensor(t.bmm(t.unsqueeze(a, 0), t.unsqueeze(b, 0)), [1, 2, 2], [19, 22, 43, 50]);
    // linear: x W^T + b
    assertTensor(t.linear(a, b, t.tensor([1, -1])), [2, 2], [18, 22, 40, 52]);
    assertTensor(t.linear(a, b), [2, 2], [17, 23, 39, 53]);
  }));

Deno.test("batched products of small fp32 matrices (strided as attention's) match f64 ones, gradients and second derivatives too", () =>
  noLeak(() => {
    // fp32 batches of small matrices take the shim's BLAS path; f64 ones are libtorch's own matmul.
    using g = new t.Generator(0);
    const qkv64 = t.randn(g, [3, 5, 3, 2, 4], { dtype: "f64" }); // [B, N, 3, heads, d]
    const w64 = t.randn(g, [3, 2, 5, 5], { dtype: "f64" });
    const attention = (qkv: t.Tensor, w: t.Tensor) => {
      const p = t.permute(qkv, [2, 0, 3, 1, 4]); // [3, B, heads, N, d]: q, k and v are strided views
      const q = t.select(p, 0, 0), k = t.select(p, 0, 1), v = t.select(p, 0, 2);
      const scores = t.softmax(t.matmul(q, t.transpose(k, -2, -1)), -1); // [B, heads, N, N]
      const mixed = t.matmul(scores, v); // [B, heads, N, d]
      const flat = t.reshape(mixed, [6, 5, 4]);
      return t.sum(t.mul(t.bmm(flat, t.transpose(flat, 1, 2)), t.reshape(w, [6, 5, 5])));
    };
    // A broadcast input (stride 0 along the batch), whose gradient cannot take its layout.
    const shared = (x: t.Tensor) =>
      t.sum(t.tanh(t.matmul(t.expand(t.slice(x, 0, 0, 1), [3, 5, 4]), t.transpose(x, 1, 2))));
    const x64 = t.randn(g, [3, 5, 4], { dtype: "f64" });
    const run = (dtype: "f32" | "f64") => {
      const qkv = t.requiresGrad(t.to(qkv64, dtype)), w = t.to(w64, dtype), x = t.requiresGrad(t.to(x64, dtype));
      const loss = attention(qkv, w);
      // Without a graph the gradients are written in their inputs' layouts (q's, k^T's, v's, the broadcast one's).
      const [plain] = t.grad(attention(qkv, w), [qkv]);
      const [d] = t.grad(loss, [qkv], { createGraph: true });
      const [dd] = t.grad(t.sum(t.mul(d, d)), [qkv]);
      const [dx] = t.grad(shared(x), [x]);
      return [loss, plain, d, dd, dx].map((y) => t.toArray(t.to(y, "f64")));
    };
    const [fast, reference] = [run("f32"), run("f64")];
    const names = ["loss", "gradient", "gradient with a graph", "second derivative", "broadcast gradient"];
    for (const [i, name] of names.entries()) {
      const scale = Math.max(...reference[i].map(Math.abs));
      assertClose(fast[i].map((x) => x / scale), reference[i].map((x) => x / scale), 1e-5);
      assert.ok(reference[i].some((x) => x !== 0), `${name} is not zero`);
    }
  }));

Deno.test("fp32 linear layers (oneDNN on the CPU) match f64 ones, with and without a bias, gradients and second derivatives too", () =>
  noLeak(() => {
    using g = new t.Generator(1);
    const x64 = t.randn(g, [2, 7, 6], { dtype: "f64" }), w64 = t.randn(g, [5, 6], { dtype: "f64" });
    const b64 = t.randn(g, [5], { dtype: "f64" }), u64 = t.randn(g, [3, 5], { dtype: "f64" });
    const run = (dtype: "f32" | "f64") => {
      const x = t.requiresGrad(t.to(x64, dtype)), w = t.requiresGrad(t.to(w64, dtype));
      const b = t.requiresGrad(t.to(b64, dtype)), u = t.to(u64, dtype);
      const hidden = t.tanh(t.linear(x, w, b)); // [2, 7, 5]: 3-D input, with a bias
      const loss = t.sum(t.pow(t.linear(hidden, u), 2)); // [2, 7, 3]: no bias
      const grads = t.grad(loss, [x, w, b], { createGraph: true });
      const [ddx] = t.grad(t.sum(t.mul(grads[1], grads[1])), [x]);
      return [loss, ...grads, ddx].map((y) => t.toArray(t.to(y, "f64")));
    };
    const [fast, reference] = [run("f32"), run("f64")];
    for (const [i, name] of ["loss", "dx", "dw", "db", "second derivative"].entries()) {
      const scale = Math.max(...reference[i].map(Math.abs));
      assertClose(fast[i].map((y) => y / scale), reference[i].map((y) => y / scale), 1e-5);
      assert.ok(scale > 0, `${name} is not zero`);
    }
  }));

Deno.test("bf16 linear layers give libtorch's products, and the bias gradient summed in fp32 to within a bf16 step", () =>
  noLeak(() => {
    // native/matmul.cpp on AVX-512 CPUs: addmm forward and mm backward as autograd runs them, the bias gradient's
    // column sums by its own kernel (libtorch's sum(0) of bf16 ran at a third of memory speed).
    using g = new t.Generator(3);
    const f64 = (x: t.Tensor) => t.toArray(t.to(x, "f64"));
    const cases: [number[], number][] = [[[2, 50, 192], 576], [[7, 5], 3], [[130, 20], 150], [[1, 4], 2]];
    for (const [shape, out] of cases) {
      const inDim = shape[shape.length - 1], rows = shape.reduce((a, b) => a * b) / inDim;
      const x = t.requiresGrad(t.to(t.randn(g, [...shape]), "bf16"));
      const w = t.requiresGrad(t.to(t.randn(g, [out, inDim]), "bf16"));
      const b = t.requiresGrad(t.to(t.randn(g, [out]), "bf16")), bBefore = f64(b);
      const dy = t.to(t.randn(g, [...shape.slice(0, -1), out]), "bf16");
      const y = t.linear(x, w, b);
      assert.equal(y.dtype, "bf16");
      assert.deepEqual(y.shape, [...shape.slice(0, -1), out]);
      const exact = t.add(t.matmul(t.to(x, "f64"), t.transpose(t.to(w, "f64"), 0, 1)), t.to(b, "f64"));
      assertClose(f64(y), f64(exact), 2 ** -7 * Math.max(1, maxAbs(exact)));
      const loss = (y: t.Tensor) => t.sum(t.mul(t.to(y, "f32"), t.to(dy, "f32")));
      const [dx, dw, db] = t.grad(loss(y), [x, w, b]);
      const g2 = t.reshape(dy, [rows, out]), x2 = t.reshape(x, [rows, inDim]);
      assert.deepEqual(f64(dx), f64(t.matmul(g2, w)), `dx, ${shape} -> ${out}`);
      assert.deepEqual(f64(dw), f64(t.matmul(t.transpose(g2, 0, 1), x2)), `dw, ${shape} -> ${out}`);
      // fp32 sums in another order may round to the neighbouring bf16 value, no further
      const dbRef = f64(t.sum(t.to(g2, "f64"), [0]));
      f64(db).forEach((v, i) => assert.ok(Math.abs(v - dbRef[i]) <= 2 ** -7 * Math.abs(dbRef[i]), `db[${i}] ${v}`));
      // A backward that builds a graph takes differentiable ops: the same gradients, and second derivatives
      const graphed = t.grad(loss(t.linear(x, w, b)), [x, w, b], { createGraph: true });
      assert.deepEqual(f64(graphed[0]), f64(dx));
      assert.deepEqual(f64(graphed[1]), f64(dw));
      const [ddx] = t.grad(t.sum(t.mul(t.to(graphed[1], "f32"), t.to(graphed[1], "f32"))), [x]);
      assert.deepEqual(ddx.shape, x.shape);
      assert.deepEqual(f64(b), bBefore, "the bias is left as it was");
    }
    if (avx512()) {
      const x = t.requiresGrad(t.ones([3, 8], { dtype: "bf16" }));
      const ran = opsRun(() =>
        t.grad(t.sum(t.linear(x, t.ones([4, 8], { dtype: "bf16" }), t.zeros([4], { dtype: "bf16" }))), [x])
      );
      assert.ok(ran.has("dino::linear") && ran.has("dino::linear_backward"), "the bf16 path ran");
    }
  }));

Deno.test("a linear layer over a single row leaves its bias as it was", () =>
  noLeak(() => {
    // One row made the bias, expanded to [1, out], its own contiguous output: the product was written into it. (The
    // oneDNN path of native/matmul.cpp, taken on AVX-512 CPUs; elsewhere libtorch's linear, which never did.)
    const w = t.tensor([[1, 2], [3, 4], [5, 6]]), b = t.tensor([0.5, -1, 2]);
    for (const x of [t.tensor([[1, 1]]), t.tensor([[[1, 1]]])]) {
      assertTensor(t.linear(x, w, b), [...x.shape.slice(0, -1), 3], [3.5, 6, 13]);
      assertTensor(b, [3], [0.5, -1, 2]);
    }
  }));

Deno.test("conv2d with stride equal to the kernel acts as patch embedding", () =>
  noLeak(() => {
    const img = t.reshape(t.arange(0, 16, 1, { dtype: "f32" }), [1, 1, 4, 4]);
    const w = t.ones([1, 1, 2, 2]);
    const y = t.conv2d(img, w, t.tensor([0.5]), { stride: 2 });
    // each 2x2 patch sum, plus the bias
    assertTensor(y, [1, 1, 2, 2], [10.5, 18.5, 42.5, 50.5]);
    const padded = t.conv2d(t.ones([1, 1, 2, 2]), w, undefined, { padding: 1 });
    assertTensor(padded, [1, 1, 3, 3], [1, 2, 1, 2, 4, 2, 1, 2, 1]);
  }));

Deno.test("layer_norm and batch_norm normalise as PyTorch does", () =>
  noLeak(() => {
    const x = t.tensor([[1, 2, 3], [2, 4, 6]]);
    const sd = (v: number[]) => Math.sqrt(v.reduce((s, a) => s + a * a, 0) / v.length);
    const e1 = [-1, 0, 1].map((v) => v / Math.sqrt(sd([-1, 0, 1]) ** 2 + 1e-6));
    const e2 = [-2, 0, 2].map((v) => v / Math.sqrt(sd([-2, 0, 2]) ** 2 + 1e-6));
    assertTensor(t.layerNorm(x, [3], undefined, undefined, 1e-6), [2, 3], [...e1, ...e2], 1e-5);
    const ln = t.layerNorm(x, [3], t.tensor([2, 2, 2]), t.tensor([1, 1, 1]), 1e-6);
    assertClose(t.toArray(ln), [...e1, ...e2].map((v) => 2 * v + 1), 1e-5);
    const mean = t.zeros([3]), vr = t.ones([3]);
    const bn = t.batchNorm(x, { runningMean: mean, runningVar: vr, training: true, momentum: 0.5 });
    // batch statistics per column: means (1.5, 3, 4.5), biased variances (0.25, 1, 2.25)
    assertClose(t.toArray(bn.output), [-1, -1, -1, 1, 1, 1].map((v) => v / Math.sqrt(1 + 1e-5 / 1)), 1e-2);
    assertTensor(bn.runningMean!, [3], [0.75, 1.5, 2.25]);
    // running variance uses the unbiased estimate: 0.5 * 1 + 0.5 * (0.5, 2, 4.5)
    assertTensor(bn.runningVar!, [3], [0.75, 1.5, 2.75]);
    assertTensor(mean, [3], [0, 0, 0]); // the inputs are untouched
    const evalOut = t.batchNorm(x, { runningMean: mean, runningVar: vr, training: false }).output;
    assertClose(t.toArray(evalOut), [1, 2, 3, 2, 4, 6].map((v) => v / Math.sqrt(1 + 1e-5)), 1e-6);
  }));

Deno.test("batch_norm refuses to train on one value per channel, as PyTorch does (libtorch gives NaN statistics)", () =>
  noLeak(() => {
    for (const shape of [[1, 3], [1, 3, 1, 1]]) {
      const x = t.ones(shape), mean = t.zeros([3]), vr = t.ones([3]);
      assert.throws(
        () => t.batchNorm(x, { runningMean: mean, runningVar: vr, training: true }),
        /more than 1 value per channel when training, got input of shape \[1,3(,1,1)?\]: train on a batch of two/,
      );
      const evalOut = t.batchNorm(x, { runningMean: mean, runningVar: vr, training: false }).output;
      assert.ok(t.toArray(evalOut).every(Number.isFinite));
    }
    assert.doesNotThrow(() => t.batchNorm(t.ones([1, 3, 2, 1]), { training: true })); // two values per channel
  }));

Deno.test("gelu is exact (erf) by default, softmax and log_softmax normalise", () =>
  noLeak(() => {
    const xs = [-2, -0.5, 0, 1, 3];
    const erf = t.toArray(t.erf(t.tensor(xs.map((v) => v / Math.SQRT2))));
    assertClose(t.toArray(t.gelu(t.tensor(xs))), xs.map((v, i) => 0.5 * v * (1 + erf[i])), 1e-6);
    const tanhApprox = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    assertClose(t.toArray(t.gelu(t.tensor(xs), "tanh")), xs.map(tanhApprox), 1e-6);
    const z = [1, 2, 3];
    const denom = z.reduce((s, v) => s + Math.exp(v), 0);
    assertClose(t.toArray(t.softmax(t.tensor([z]), 1)), z.map((v) => Math.exp(v) / denom), 1e-6);
    assertClose(t.toArray(t.logSoftmax(t.tensor([z]), -1)), z.map((v) => v - Math.log(denom)), 1e-6);
  }));

Deno.test("bf16 gelu and its gradient are fp32's rounded to bf16, for every bf16 value", () =>
  noLeak(() => {
    // bf16 CPU tensors take native/gelu.cpp's tables; fp32 takes libtorch's kernel, whose result rounded once is what
    // libtorch's own bf16 kernels give. Every bit pattern (NaNs, infinities, subnormals, both zeros) is checked.
    const patterns = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const x = t.requiresGrad(t.tensor(patterns, { dtype: "bf16", shape: [256, 256] }));
    const xf = t.requiresGrad(t.detach(t.to(x, "f32")));
    using g = new t.Generator(0);
    const dy = t.to(t.mul(t.randn(g, [256, 256]), 10), "bf16");
    const y = t.gelu(x), yf = t.gelu(xf);
    const [dx] = t.grad(t.sum(t.mul(t.to(y, "f32"), t.to(dy, "f32"))), [x]);
    const [dxf] = t.grad(t.sum(t.mul(yf, t.to(dy, "f32"))), [xf]);
    assert.deepEqual([y.dtype, dx.dtype], ["bf16", "bf16"]);
    // libtorch's bf16 kernel (and so the table) flushes an fp32 gelu below 2^-126 to zero before rounding it.
    const tiny = t.toArray(yf).map((v) => Math.abs(v) < 2 ** -126);
    const same = (a: t.Tensor, b: t.Tensor, what: string, flushes = false) => {
      const [u, v] = [t.toArray(a), t.toArray(b)];
      const differs = u.findIndex((e, i) => !Object.is(e, v[i]) && !(flushes && tiny[i] && e === 0));
      assert.equal(differs, -1, `${what} at bf16 bits ${differs}: ${u[differs]} != ${v[differs]}`);
    };
    same(y, t.to(yf, "bf16"), "gelu", true);
    same(dx, t.to(dxf, "bf16"), "gelu's gradient");
    // A strided input, and a backward that builds a graph (second derivatives), give the same numbers.
    const xs = t.transpose(x, 0, 1);
    same(t.gelu(xs), t.transpose(y, 0, 1), "gelu of a transposed input");
    const [dx2] = t.grad(t.sum(t.mul(t.to(t.gelu(x), "f32"), t.to(dy, "f32"))), [x], { createGraph: true });
    same(dx2, dx, "gelu's gradient under createGraph");
    const [ddx] = t.grad(t.sum(t.to(dx2, "f32")), [x]);
    assert.ok(t.toArray(ddx).some((v) => v !== 0), "the second derivative is not zero");
    const ran = opsRun(() => t.grad(t.sum(t.to(t.gelu(x), "f32")), [x]));
    assert.ok(ran.has("dino::gelu") && ran.has("dino::gelu_backward"), "the tables were used");
  }));

/** Whether this CPU runs the shim's AVX-512 kernels (native/avx512.h: avx512f, bw, dq and vl). */
function avx512(): boolean {
  try {
    const flags = Deno.readTextFileSync("/proc/cpuinfo").match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
    return ["avx512f", "avx512bw", "avx512dq", "avx512vl"].every((f) => flags.includes(f)) &&
      Deno.build.arch === "x86_64";
  } catch {
    return false;
  }
}

/** The largest magnitude in `a`. */
const maxAbs = (a: t.Tensor) => t.toArray(t.abs(a)).reduce((m, v) => Math.max(m, v), 0);

/** The names of the ops `fn` ran, from libtorch's profiler. */
function opsRun(fn: () => void): Set<string> {
  const path = Deno.makeTempFileSync({ suffix: ".json" });
  try {
    t.recordProfile(path, () => t.tidy(fn));
    const trace = JSON.parse(Deno.readTextFileSync(path));
    const events: { name: string }[] = Array.isArray(trace) ? trace : trace.traceEvents;
    return new Set(events.map((e) => e.name));
  } finally {
    Deno.removeSync(path);
  }
}

Deno.test("scaledSoftmax equals softmax(x * scale) composed of ops, forward and backward, fp32 and bf16", () =>
  noLeak(() => {
    // Rows shorter than, equal to and longer than one AVX-512 vector, more rows than one thread's share (the kernel
    // splits them among threads), and a scale that is not a power of two.
    using g = new t.Generator(0);
    const bits = (a: t.Tensor) => t.toArray(t.to(a, "f32"));
    for (const n of [1, 5, 16, 50, 197]) {
      for (const dtype of ["f32", "bf16"] as const) {
        const shape = [4, 6, 50, n];
        const x = t.requiresGrad(t.to(t.mul(t.randn(g, shape), 6), dtype));
        const [w, wLow] = [t.randn(g, shape), t.randn(g, shape)]; // weights of a loss on each output
        const scale = 0.3;
        const low = dtype !== "f32";
        const outs = t.scaledSoftmax(x, scale, { low });
        const composite = () => {
          const p = t.softmax(t.to(t.mul(x, t.to(t.tensor([scale]), dtype)), "f32"), -1); // the scale in x's dtype
          return low ? [p, t.to(p, dtype)] : [p];
        };
        const reference = composite();
        assert.deepEqual(outs.map((o) => o.dtype), reference.map((o) => o.dtype));
        assertClose(t.toArray(outs[0]), t.toArray(reference[0]), 2e-7);
        if (low) assert.deepEqual(bits(outs[1]), bits(t.to(outs[0], dtype)), "the copy is p rounded once");
        // A loss on both outputs, and on the low copy alone (as attention uses them: the fp32 output gets no gradient).
        const losses = [
          (ys: t.Tensor[]) =>
            t.add(t.sum(t.mul(ys[0], w)), ys.length > 1 ? t.sum(t.mul(t.to(ys[1], "f32"), wLow)) : t.tensor(0)),
          (ys: t.Tensor[]) => t.sum(t.mul(t.to(ys[ys.length - 1], "f32"), wLow)),
        ];
        for (const loss of losses) {
          const [dx] = t.grad(loss(t.scaledSoftmax(x, scale, { low })), [x]);
          const [dxRef] = t.grad(loss(composite()), [x]);
          assert.equal(dx.dtype, dtype);
          const tol = dtype === "f32" ? 1e-6 : 2 ** -7 * maxAbs(dxRef);
          assertClose(t.toArray(dx), t.toArray(dxRef), tol);
          // A backward that builds a graph gives the same gradient, and the composite's second derivative.
          const second = (ys: t.Tensor[]) => {
            const [d1] = t.grad(loss(ys), [x], { createGraph: true });
            return [d1, ...t.grad(t.sum(t.mul(t.to(d1, "f32"), t.to(d1, "f32"))), [x])];
          };
          const [dx2, ddx] = second(t.scaledSoftmax(x, scale, { low }));
          const [, ddxRef] = second(composite());
          assertClose(t.toArray(dx2), t.toArray(dx), tol);
          const ddTol = (dtype === "f32" ? 1e-5 : 2 ** -6) * Math.max(1e-30, maxAbs(ddxRef));
          assertClose(t.toArray(ddx), t.toArray(ddxRef), ddTol);
        }
      }
    }
    if (avx512()) {
      const x = t.requiresGrad(t.ones([2, 8], { dtype: "bf16" }));
      const ran = opsRun(() => t.grad(t.sum(t.to(t.scaledSoftmax(x, 1, { low: true })[1], "f32")), [x]));
      assert.ok(ran.has("dino::scaled_softmax") && ran.has("dino::scaled_softmax_backward"), "the fused kernel ran");
    }
    // -inf scores get no weight; a NaN spoils its row alone, as libtorch's softmax.
    const [p] = t.scaledSoftmax(t.tensor([[0, -Infinity, 0], [NaN, 0, 0]]), 1);
    assert.deepEqual(t.toArray(p).slice(0, 3), [0.5, 0, 0.5]);
    assert.ok(t.toArray(p).slice(3).every(Number.isNaN));
    assert.throws(() => t.scaledSoftmax(t.ones([2, 3]), 1, { low: true }), /for bf16 or fp16 scores, not Float/);
  }));

Deno.test("layerNorm's fused fp32 and bf16 outputs and gradients agree with libtorch's in f64", () =>
  noLeak(() => {
    // fp32 input with a weight and a bias takes native/layer_norm.cpp on AVX-512 CPUs; f64 is libtorch's kernel.
    // 400 rows: more than one thread's share.
    using g = new t.Generator(0);
    for (const d of [1, 5, 16, 192, 197]) {
      for (const dtype of ["f32", "bf16"] as const) {
        const leaves = [[8, 50, d], [d], [d]].map((shape, i) =>
          t.requiresGrad(t.add(t.mul(t.randn(g, shape), i === 0 ? 3 : 0.5), i === 1 ? 1 : 0))
        );
        // The gradient reaching y is dy in y's dtype: dy's values in bf16 are exact there, and the same in f64.
        const dy = t.to(t.randn(g, [8, 50, d]), dtype);
        const run = (xs: t.Tensor[], out?: "bf16") => {
          const y = t.layerNorm(xs[0], [d], xs[1], xs[2], 1e-6, { dtype: out });
          return [y, ...t.grad(t.sum(t.mul(t.to(y, "f64"), t.to(dy, "f64"))), xs)];
        };
        const fused = run(leaves, dtype === "bf16" ? "bf16" : undefined);
        const reference = run(leaves.map((l) => t.requiresGrad(t.detach(t.to(l, "f64")))));
        assert.equal(fused[0].dtype, dtype);
        for (const [i, name] of ["y", "dx", "dw", "db"].entries()) {
          const scale = Math.max(1, maxAbs(reference[i]));
          const tol = (dtype === "bf16" && i === 0 ? 2 ** -8 : 2e-6) * scale; // y in bf16 is rounded once
          assert.equal(fused[i].dtype, i === 0 ? dtype : "f32", name);
          assertClose(t.toArray(fused[i]), t.toArray(reference[i]), tol);
        }
        if (dtype === "bf16") {
          const y32 = t.layerNorm(leaves[0], [d], leaves[1], leaves[2], 1e-6);
          assert.deepEqual(t.toArray(fused[0]), t.toArray(t.to(y32, "bf16")), "the bf16 output is fp32's rounded once");
        }
        // Frozen weight and bias: the input's gradient alone, the same.
        const [dxFrozen] = t.grad(
          t.sum(
            t.mul(
              t.to(t.layerNorm(leaves[0], [d], t.detach(leaves[1]), t.detach(leaves[2]), 1e-6), "f64"),
              t.to(dy, "f64"),
            ),
          ),
          [leaves[0]],
        );
        if (dtype === "f32") assert.deepEqual(t.toArray(dxFrozen), t.toArray(fused[1]));
        // A backward that builds a graph (libtorch's, differentiable) gives the same gradients and a second derivative.
        // (Not for a row of one: libtorch's dx there is rstd^3 times a cancellation, 1e-4 where it should be 0.)
        if (d === 1) continue;
        const y = t.layerNorm(leaves[0], [d], leaves[1], leaves[2], 1e-6);
        const grads = t.grad(t.sum(t.mul(y, t.to(dy, "f32"))), leaves, { createGraph: true });
        grads.forEach((gr, i) => assertClose(t.toArray(gr), t.toArray(run(leaves)[i + 1]), 1e-5 * 10));
        const [ddw] = t.grad(t.sum(t.mul(grads[0], grads[0])), [leaves[1]]);
        assert.ok(t.toArray(ddw).some((v) => v !== 0), "a second derivative");
      }
    }
    if (avx512()) {
      const x = t.requiresGrad(t.ones([2, 8]));
      const ran = opsRun(() => t.grad(t.sum(t.layerNorm(x, [8], t.ones([8]), t.zeros([8]))), [x]));
      assert.ok(ran.has("dino::layer_norm") && ran.has("dino::layer_norm_backward"), "the fused kernel ran");
    }
    // A NaN spoils its own row alone; a wrong normalized shape is libtorch's error.
    const y = t.layerNorm(t.tensor([[NaN, 1], [1, 3]]), [2], t.ones([2]), t.zeros([2]), 1e-6);
    assert.ok(t.toArray(y).slice(0, 2).every(Number.isNaN));
    assertClose(t.toArray(y).slice(2), [-1, 1], 1e-5);
    assert.throws(() => t.layerNorm(t.ones([2, 3]), [2], t.ones([2]), t.zeros([2])), /normalized_shape|shape/);
  }));

Deno.test("addLayerNorm gives add then layerNorm's numbers bit for bit, and their gradients", () =>
  noLeak(() => {
    // The fused kernel (native/layer_norm.cpp, AVX-512) against the ops it replaces, which autograd runs as three
    // passes each way (add, the norm, a cast of y's gradient) and sums h's two gradients in fp32 itself.
    using g = new t.Generator(1);
    const bits = (x: t.Tensor) => t.toArray(t.to(x, "f64"));
    for (const d of [1, 5, 16, 192, 197]) {
      for (const [yDtype, out] of [["f32", "f32"], ["bf16", "bf16"], ["bf16", "f32"], ["f32", "bf16"]] as const) {
        const x = t.requiresGrad(t.mul(t.randn(g, [8, 50, d]), 3));
        const y = t.requiresGrad(t.to(t.randn(g, [8, 50, d]), yDtype));
        const w = t.requiresGrad(t.add(t.mul(t.randn(g, [d]), 0.5), 1));
        const b = t.requiresGrad(t.mul(t.randn(g, [d]), 0.5));
        const dh = t.randn(g, [8, 50, d]), dn = t.to(t.randn(g, [8, 50, d]), out);
        const fused = () => t.addLayerNorm(x, y, [d], w, b, 1e-6, { dtype: out });
        const composite = () => {
          const h = t.add(x, y);
          return [h, t.layerNorm(h, [d], w, b, 1e-6, { dtype: out })];
        };
        const [h, n] = fused(), [hRef, nRef] = composite();
        assert.deepEqual([h.dtype, n.dtype], ["f32", out]);
        assert.deepEqual(bits(h), bits(hRef), `h, d ${d}`);
        assert.deepEqual(bits(n), bits(nRef), `normed, d ${d} ${yDtype} -> ${out}`);
        // Losses on both outputs, on the norm alone and on the sum alone (then h's gradient or the norm's is none).
        const losses = [
          ([h, n]: t.Tensor[]) => t.add(t.sum(t.mul(h, dh)), t.sum(t.mul(t.to(n, "f32"), t.to(dn, "f32")))),
          ([, n]: t.Tensor[]) => t.sum(t.mul(t.to(n, "f32"), t.to(dn, "f32"))),
          ([h]: t.Tensor[]) => t.sum(t.mul(h, dh)),
        ];
        for (const [i, loss] of losses.entries()) {
          const leaves = i === 2 ? [x, y] : [x, y, w, b];
          const grads = t.grad(loss(fused()), leaves), reference = t.grad(loss(composite()), leaves);
          grads.forEach((gr, j) => {
            assert.equal(gr.dtype, reference[j].dtype);
            assert.deepEqual(bits(gr), bits(reference[j]), `gradient ${j} of loss ${i}, d ${d} ${yDtype} -> ${out}`);
          });
        }
        // A frozen input and frozen weights: the gradients asked for alone, the same.
        const [dyFrozen] = t.grad(losses[0](t.addLayerNorm(t.detach(x), y, [d], t.detach(w), t.detach(b), 1e-6)), [y]);
        const [dyRef] = t.grad(losses[0](composite()), [y]);
        if (out === "f32") assert.deepEqual(bits(dyFrozen), bits(dyRef));
        // A backward that builds a graph: the same gradients to rounding, and the composite's second derivative.
        if (d === 1) continue; // libtorch's double-backward dx cancels badly for a row of one (see layerNorm's test)
        const second = (ys: t.Tensor[]) => {
          const [dx, dw] = t.grad(losses[0](ys), [x, w], { createGraph: true });
          return [dx, ...t.grad(t.add(t.sum(t.mul(dx, dx)), t.sum(t.mul(dw, dw))), [x, w])];
        };
        const ours = second(fused()), theirs = second(composite());
        ours.forEach((v, j) => assertClose(t.toArray(v), t.toArray(theirs[j]), 1e-5 * Math.max(1, maxAbs(theirs[j]))));
      }
    }
    if (avx512()) {
      const x = t.requiresGrad(t.ones([2, 8])), y = t.requiresGrad(t.ones([2, 8], { dtype: "bf16" }));
      const ran = opsRun(() => t.grad(t.sum(t.addLayerNorm(x, y, [8], t.ones([8]), t.zeros([8]))[1]), [x, y]));
      assert.ok(ran.has("dino::add_layer_norm") && ran.has("dino::add_layer_norm_backward"), "the fused kernel ran");
    }
    // A y that broadcasts takes the composite, with add's promotion.
    const [h, n] = t.addLayerNorm(t.tensor([[1, 2], [3, 4]]), t.tensor([1, -1]), [2], t.ones([2]), t.zeros([2]), 1e-6);
    assert.deepEqual(t.toArray(h), [2, 1, 4, 3]);
    assertClose(t.toArray(n), [1, -1, 1, -1], 1e-5);
    assert.throws(() => t.addLayerNorm(t.ones([2, 3]), t.ones([2, 4]), [3], t.ones([3]), t.zeros([3])), /size/);
  }));

Deno.test("interpolate: nearest, bilinear, bicubic and antialiased shrinking", () =>
  noLeak(() => {
    const x = t.tensor([[[[1, 2], [3, 4]]]]);
    assertTensor(t.interpolate(x, { size: [4, 4] }), [1, 1, 4, 4], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    // bilinear, align_corners=false, 2 -> 4: source coords -0.25, 0.25, 0.75, 1.25 (clamped at the edges)
    const row = [1, 1.25, 1.75, 2];
    const bl = t.toArray(t.interpolate(x, { size: [4, 4], mode: "bilinear" }));
    assertClose(bl.slice(0, 4), row, 1e-6);
    assertClose(t.toArray(t.interpolate(x, { size: [3, 3], mode: "bilinear", alignCorners: true })), [
      1,
      1.5,
      2,
      2,
      2.5,
      3,
      3,
      3.5,
      4,
    ], 1e-6);
    // bicubic keeps a constant image constant, and 1x1 -> 1x1 is the identity
    assertClose(
      t.toArray(t.interpolate(t.full([1, 1, 3, 3], 2), { size: [5, 5], mode: "bicubic" })),
      Array(25).fill(2),
      1e-5,
    );
    // a scale factor gives size floor(in * scale)
    assert.deepEqual(t.interpolate(x, { scaleFactor: 1.6, mode: "bicubic" }).shape, [1, 1, 3, 3]);
    // antialiased halving of a 4x4 checkerboard averages toward the mean
    const board = t.tensor([[[[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]]]);
    const plain = t.toArray(t.interpolate(board, { size: [2, 2], mode: "bilinear" }));
    const aa = t.toArray(t.interpolate(board, { size: [2, 2], mode: "bilinear", antialias: true }));
    assertClose(plain, [0.5, 0.5, 0.5, 0.5], 1e-6);
    for (const v of aa) assert.ok(Math.abs(v - 0.5) < 0.2, `antialiased value ${v}`);
    assert.throws(() => t.interpolate(t.ones([2, 2]), { size: [1, 1] }), /\[B, C, H, W\]/);
  }));

Deno.test("affine_grid with the identity map and grid_sample reproduce the image", () =>
  noLeak(() => {
    const img = t.reshape(t.arange(0, 9, 1, { dtype: "f32" }), [1, 1, 3, 3]);
    const identity = t.tensor([[[1, 0, 0], [0, 1, 0]]]);
    const grid = t.affineGrid(identity, [1, 1, 3, 3]);
    assert.deepEqual(grid.shape, [1, 3, 3, 2]);
    // align_corners=false: the pixel centres of a 3-wide image are at -2/3, 0, 2/3
    assertClose(t.toArray(grid).slice(0, 6), [-2 / 3, -2 / 3, 0, -2 / 3, 2 / 3, -2 / 3], 1e-6);
    assertTensor(t.gridSample(img, grid), [1, 1, 3, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8], 1e-5);
    // a horizontal mirror: x -> -x
    const mirror = t.affineGrid(t.tensor([[[-1, 0, 0], [0, 1, 0]]]), [1, 1, 3, 3]);
    assertTensor(t.gridSample(img, mirror, { mode: "nearest" }), [1, 1, 3, 3], [2, 1, 0, 5, 4, 3, 8, 7, 6]);
    const bicubic = t.gridSample(img, grid, { mode: "bicubic", padding: "border" });
    assertTensor(bicubic, [1, 1, 3, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8], 1e-4);
  }));

Deno.test("weightNorm scales each row of v to norm g, and refuses a g of another size", () =>
  noLeak(() => {
    const v = t.tensor([[3, 4], [0, 2]]), g = t.tensor([[2], [0.5]]);
    assertTensor(t.weightNorm(v, g, 0), [2, 2], [1.2, 1.6, 0, 0.5], 1e-6);
    assertTensor(t.weightNorm(v, t.tensor([Math.sqrt(29)]), -1), [2, 2], [3, 4, 0, 2], 1e-6); // the whole of v
    // libtorch's kernel reads g by v's slices unchecked: a short g was read out of bounds (a crash, or garbage).
    assert.throws(() => t.weightNorm(t.ones([1000, 4]), t.ones([1]), 0), /g holds 1 value\(s\), v \[1000, 4\] needs/);
    assert.throws(
      () => t.weightNorm(v, t.ones([3]), 1),
      /g holds 3 value\(s\), v \[2, 2\] needs one per slice along dim 1 \(2\)/,
    );
  }));

Deno.test("pad in constant, reflect and replicate modes; one_hot", () =>
  noLeak(() => {
    const x = t.tensor([[[1, 2, 3]]]);
    assertTensor(t.pad(x, [1, 2]), [1, 1, 6], [0, 1, 2, 3, 0, 0]);
    assertTensor(t.pad(x, [1, 1], "constant", 9), [1, 1, 5], [9, 1, 2, 3, 9]);
    assertTensor(t.pad(x, [2, 1], "reflect"), [1, 1, 6], [3, 2, 1, 2, 3, 2]);
    assertTensor(t.pad(x, [1, 1], "replicate"), [1, 1, 5], [1, 1, 2, 3, 3]);
    assertTensor(t.oneHot(t.tensor([2, 0], { dtype: "i64" }), 3), [2, 3], [0, 0, 1, 1, 0, 0]);
  }));

Deno.test("random ops are reproducible from a seed and match PyTorch's generator", () =>
  noLeak(() => {
    const g1 = new t.Generator(0), g2 = new t.Generator(0);
    try {
      const a = t.toArray(t.rand(g1, [5])), b = t.toArray(t.rand(g2, [5]));
      assert.deepEqual(a, b);
      assert.notDeepEqual(t.toArray(t.rand(g1, [5])), a, "the generator advances");
      // torch.Generator().manual_seed(0); torch.rand(3, generator=g)
      using g = new t.Generator(0);
      assertClose(t.toArray(t.rand(g, [3])), [0.49625658988952637, 0.7682217955589294, 0.08847743272781372], 1e-7);
      // A seed the FFI's 64 bits cannot carry, or not an integer, is refused rather than cut.
      for (const bad of [2 ** 70, 1.5, NaN, 2n ** 70n]) {
        assert.throws(() => new t.Generator(bad), /Generator: the seed must be an integer/);
      }
    } finally {
      g1.dispose();
      g2.dispose();
    }
  }));

Deno.test("randRows draws each row from its own seed's stream, as a fresh Generator does, and as torch.rand does", () =>
  noLeak(() => {
    const seeds = [0, 2 ** 53 - 1, 5n, 0];
    using rows = t.randRows(seeds, 3, { dtype: "f64" });
    assert.deepEqual(rows.shape, [4, 3]);
    const got = t.toArray(rows);
    seeds.forEach((seed, i) => {
      using g = new t.Generator(seed);
      assert.deepEqual(got.slice(3 * i, 3 * i + 3), t.tidy(() => t.toArray(t.rand(g, [3], { dtype: "f64" }))));
    });
    // torch.rand(3, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s = 0 and 2^53 - 1
    assert.deepEqual(got.slice(0, 3), [0.9700530018065531, 0.707819864399788, 0.45938294312745087]);
    assert.deepEqual(got.slice(3, 6), [0.9503951604874923, 0.5600645841090078, 0.9442999488455328]);
    assert.throws(() => t.randRows([1.5], 3), /randRows: a seed is a 64-bit integer, as a Generator's, got 1.5/);
    assert.throws(() => t.randRows([2n ** 63n], 3), /got 9223372036854775808/);
    // past 2^53, as a Generator takes them
    using big = t.randRows([2n ** 60n + 1n, -5], 2, { dtype: "f64" });
    using gBig = new t.Generator(2n ** 60n + 1n), gNeg = new t.Generator(-5);
    assert.deepEqual(
      t.toArray(big),
      t.tidy(
        () => [...t.toArray(t.rand(gBig, [2], { dtype: "f64" })), ...t.toArray(t.rand(gNeg, [2], { dtype: "f64" }))],
      ),
    );
    assert.deepEqual(t.tidy(() => t.randRows([], 3).shape), [0, 3]);
  }));

Deno.test("random distributions have the right ranges and moments", () =>
  noLeak(() => {
    using g = new t.Generator(7);
    for (const [lo, hi] of [[-Infinity, 10], [NaN, 10], [0.9, 2.9], [0, 2 ** 64]]) {
      assert.throws(() => t.randint(g, lo, hi, [3]), /randint takes integer bounds/);
    }
    const n = 20000;
    const u = t.uniform(g, [n], 2, 3);
    assert.ok(t.item(t.amin(u)) >= 2 && t.item(t.amax(u)) < 3);
    assertClose([t.item(t.mean(u))], [2.5], 0.01);
    const z = t.normal(g, [n], 1, 2);
    assertClose([t.item(t.mean(z)), Math.sqrt(t.item(t.variance(z)))], [1, 2], 0.06);
    const bits = t.bernoulli(g, 0.3, [n]);
    assertClose([t.item(t.mean(bits))], [0.3], 0.015);
    const probs = t.tensor([0, 1, 0, 1]);
    assertTensor(t.bernoulli(g, probs), [4], [0, 1, 0, 1]);
    const ri = t.randint(g, 3, 6, [n]);
    assert.equal(ri.dtype, "i64");
    assert.ok(t.item(t.amin(ri)) === 3 && t.item(t.amax(ri)) === 5);
    const perm = t.toArray(t.randperm(g, 10));
    assert.deepEqual([...perm].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const d = t.dropout(g, t.ones([n]), 0.25, true);
    const kept = t.toArray(d).filter((v) => v !== 0);
    assertClose([kept.length / n], [0.75], 0.015);
    assertClose([kept[0]], [1 / 0.75], 1e-6);
    assertTensor(t.dropout(g, t.ones([3]), 0.5, false), [3], [1, 1, 1]);
    assert.throws(() => t.dropout(g, t.ones([3]), 1.5), /\[0, 1\]/);
  }));

Deno.test("a generator's state can be saved and restored", () =>
  noLeak(() => {
    using g = new t.Generator(123);
    t.rand(g, [4]);
    const state = t.keep(t.clone(g.state()));
    try {
      const expected = t.toArray(t.randn(g, [6]));
      using g2 = t.Generator.fromState(state);
      assert.deepEqual(t.toArray(t.randn(g2, [6])), expected);
    } finally {
      state.dispose();
    }
  }));

Deno.test("runtime: version, threads and CUDA queries", () => {
  assert.match(t.libtorchVersion(), /^\d+\.\d+/);
  const n = t.getNumThreads();
  t.setNumThreads(1);
  assert.equal(t.getNumThreads(), 1);
  t.setNumThreads(n);
  assert.throws(() => t.setNumThreads(0), /positive integer/);
  assert.equal(typeof t.cudaAvailable(), "boolean");
  t.cudaSynchronize();
});

Deno.test("conv2d and batch norm give the same numbers with cuDNN on and off, on the CPU and on CUDA where present", () =>
  noLeak(() => {
    using g = new t.Generator(3);
    const x = t.randn(g, [2, 3, 8, 8]), w = t.randn(g, [4, 3, 3, 3]);
    const run = (device: t.Device, cudnn: boolean) => {
      const was = t.setCudnnEnabled(cudnn);
      try {
        const y = t.conv2d(t.toDevice(x, device), t.toDevice(w, device), undefined, { padding: 1 });
        return t.toArray(t.batchNorm(y, { training: true }).output);
      } finally {
        t.setCudnnEnabled(was);
      }
    };
    const initially = t.cudnnEnabled();
    const reference = run("cpu", false);
    for (const device of (t.cudaAvailable() ? ["cpu", "cuda"] : ["cpu"]) as t.Device[]) {
      // cuDNN may round the convolution's inputs to TF32 (10 mantissa bits): 2e-3 covers it, not a wrong kernel. On a
      // GPU it runs only where the default allows it (libstdc++ preloaded, or DINO_CUDNN=1): elsewhere it crashes.
      for (const cudnn of device === "cpu" || initially ? [true, false] : [false]) {
        assertClose(run(device, cudnn), reference, 2e-3);
      }
    }
    assert.equal(t.cudnnEnabled(), initially, "left as it was");
  }));

Deno.test("cuDNN is on by default except on a GPU whose process did not preload libstdc++; DINO_CUDNN overrides", async () => {
  const preloaded = /libstdc\+\+/.test(Deno.env.get("LD_PRELOAD") ?? "");
  const setting = Deno.env.get("DINO_CUDNN");
  const expected = setting === "0" ? false : setting === "1" || preloaded || !t.cudaAvailable();
  assert.equal(t.cudnnEnabled(), expected);
  const mod = new URL("../mod.ts", import.meta.url).href;
  for (const [value, on] of [["0", false], ["1", true]] as const) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", `import { cudnnEnabled } from "${mod}"; console.log(cudnnEnabled());`],
      env: { DINO_CUDNN: value },
    }).output();
    assert.equal(new TextDecoder().decode(out.stdout).trim(), String(on), `DINO_CUDNN=${value}`);
  }
});

Deno.test("device moves: to CUDA and back when present, a clear error when not", () =>
  noLeak(() => {
    const x = t.tensor([1, 2, 3]);
    if (t.cudaAvailable()) {
      const y = t.toDevice(x, "cuda");
      assert.equal(y.device, "cuda:0");
      assertTensor(t.mul(y, 2), [3], [2, 4, 6]);
      assertTensor(t.toDevice(y, "cpu"), [3], [1, 2, 3]);
      const ones = t.ones([2], { device: "cuda" });
      assert.equal(ones.device, "cuda:0");
      using g = new t.Generator(0);
      const cpu = t.toArray(t.rand(g, [3]));
      using g2 = new t.Generator(0);
      assert.deepEqual(t.toArray(t.rand(g2, [3], { device: "cuda" })), cpu, "same seed, same numbers on any device");
    } else {
      assert.throws(() => t.toDevice(x, "cuda"), (e: Error) => e instanceof t.TorchError && /CUDA/i.test(e.message));
    }
    assert.throws(() => t.toDevice(x, "tpu" as t.Device), /unknown device/);
  }));

Deno.test("addcmul and addcdiv fuse a product or quotient into an add", () =>
  noLeak(() => {
    const a = t.tensor([1, 1]), b = t.tensor([2, 3]), c = t.tensor([4, 6]);
    assertTensor(t.addcmul(a, b, c, 0.5), [2], [5, 10]);
    assertTensor(t.addcdiv(a, b, c, -2), [2], [0, 0]);
  }));

Deno.test("fromBytes reads raw little-endian bytes of any dtype", () =>
  noLeak(() => {
    const bytes = new Uint8Array(new Float64Array([1.5, -2]).buffer);
    assertTensor(t.fromBytes(bytes, "f64", [2, 1]), [2, 1], [1.5, -2]);
    assert.throws(() => t.fromBytes(bytes, "f32", [3]), /bytes but shape and dtype need/);
  }));

Deno.test("integral numbers keep integer tensors integer; fractional ones promote", () =>
  noLeak(() => {
    const i = t.arange(0, 3);
    assert.equal(t.add(i, 1).dtype, "i64");
    assert.equal(t.add(i, i).dtype, "i64");
    assert.equal(t.mul(i, 2).dtype, "i64");
    assert.equal(t.add(i, 0.5).dtype, "f32");
    assertTensor(t.sub(5, i), [3], [5, 4, 3]);
    assert.equal(t.clamp(i, 1, 1).dtype, "i64");
  }));

Deno.test("copyInto writes a source into a view of a fresh tensor, and rejects a shape that does not fit", () =>
  noLeak(() => {
    const y = t.zeros([2, 3]);
    t.copyInto(t.narrow(y, 1, 1, 2), t.tensor([[1, 2], [3, 4]]));
    assertTensor(y, [2, 3], [0, 1, 2, 0, 3, 4]);
    t.copyInto(t.select(y, 0, 0), t.tensor([7])); // broadcast
    assertTensor(y, [2, 3], [7, 7, 7, 0, 3, 4]);
    assert.throws(() => t.copyInto(t.narrow(y, 1, 0, 2), t.ones([3, 3])), t.TorchError);
  }));

Deno.test("indexCopyInto scatters slices into a fresh tensor, and rejects an index out of range", () =>
  noLeak(() => {
    const y = t.empty([3, 2]);
    t.indexCopyInto(y, 0, t.tensor(new BigInt64Array([2n, 0n, 1n])), t.tensor([[1, 2], [3, 4], [5, 6]]));
    assertTensor(y, [3, 2], [3, 4, 5, 6, 1, 2]);
    const at3 = t.tensor(new BigInt64Array([3n]));
    assert.throws(() => t.indexCopyInto(y, 0, at3, t.ones([1, 2])), t.TorchError);
  }));

Deno.test("the CPU block cache hands freed blocks to tensors of nearby sizes", () =>
  noLeak(() => {
    // Once a 1.2 MB block is cached, tensors of 1.0 to 1.2 MB reuse it (a block serves requests up to a quarter
    // smaller) instead of allocating fresh memory.
    const sizes = [262144, 280000, 300000, 262200, 290000, 270000];
    t.zeros([Math.max(...sizes)]).dispose();
    const before = t.cpuCacheStats();
    for (const n of sizes) t.zeros([n]).dispose();
    const after = t.cpuCacheStats();
    assert.equal(after.misses - before.misses, 0, "no fresh allocation");
    assert.ok(after.hits - before.hits >= sizes.length);
  }));

Deno.test("recordProfile traces the ops of forward and backward, stops when its function throws, refuses nesting and unwritable paths", () =>
  noLeak(() => {
    const path = Deno.makeTempFileSync({ suffix: ".json" });
    const x = t.requiresGrad(t.ones([4, 4]));
    const [g] = t.recordProfile(path, () => t.grad(t.sum(t.softmax(t.matmul(x, x), -1)), [x]));
    const names = new Set((JSON.parse(Deno.readTextFileSync(path)) as { name: string }[]).map((e) => e.name));
    for (const op of ["aten::mm", "aten::_softmax", "aten::_softmax_backward_data"]) assert.ok(names.has(op), op);
    assert.throws(() => t.recordProfile(path, () => t.recordProfile(path, () => 0)), /already being recorded/);
    assert.throws(() =>
      t.recordProfile(path, () => {
        throw new Error("inside");
      }), /inside/);
    assert.equal(t.recordProfile(path, () => 7), 7); // the throwing one stopped its profile
    // A path it cannot write is said at the start (libtorch's writer, at the end, only printed its failure).
    assert.throws(() => t.recordProfile(`${path}.missing/p.json`, () => 0), /cannot write the profile to \S+: No such/);
    t.dispose([x, g]);
    Deno.removeSync(path);
  }));

Deno.test("adamwInto, emaInto and mulInto write the numbers of the same ops with fresh results, bit for bit", () =>
  noLeak(() => {
    using g = new t.Generator(5);
    const [p, grad, m, v] = [t.randn(g, [37, 19]), t.randn(g, [37, 19]), t.randn(g, [37, 19]), t.rand(g, [37, 19])];
    const [lr, wd, b1, b2, eps, step] = [0.003, 0.04, 0.9, 0.999, 1e-8, 3];
    const bc2Sqrt = Math.sqrt(1 - b2 ** step), stepSize = -lr / (1 - b1 ** step);
    // torch.optim.AdamW's sequence with fresh results
    const m1 = t.add(t.mul(m, b1), grad, 1 - b1), v1 = t.addcmul(t.mul(v, b2), grad, grad, 1 - b2);
    const p1 = t.addcdiv(t.mul(p, 1 - lr * wd), m1, t.add(t.div(t.sqrt(v1), bc2Sqrt), eps), stepSize);
    const [p2, m2, v2] = [t.clone(p), t.clone(m), t.clone(v)];
    t.adamwInto(p2, grad, m2, v2, { decay: 1 - lr * wd, beta1: b1, beta2: b2, eps, bc2Sqrt, stepSize });
    for (const [a, b] of [[p1, p2], [m1, m2], [v1, v2]]) assert.deepEqual(t.toArray(b), t.toArray(a));
    assert.notDeepEqual(t.toArray(p2), t.toArray(p));

    const teacher = t.clone(p);
    t.emaInto(teacher, grad, 0.996);
    assert.deepEqual(t.toArray(teacher), t.toArray(t.add(t.mul(p, 0.996), t.mul(grad, 1 - 0.996))));
    const scaled = t.clone(grad), factor = t.tensor(0.25);
    t.mulInto(scaled, factor);
    assert.deepEqual(t.toArray(scaled), t.toArray(t.mul(grad, factor)));
  }));

Deno.test("one OpenMP runtime in the process: the shim's parallel kernels and libtorch's share a libgomp", () =>
  noLeak(() => {
    // The shim is compiled with -fopenmp but links no OpenMP runtime (ffi/build.ts), so its kernels' parallel regions
    // bind to the one libtorch loaded: Debian's libgomp, or the renamed copy in a pip wheel's torch/lib. Had it linked
    // its own, a second runtime would be mapped beside that one, with a thread pool of its own on the same cores.
    const threads = t.getNumThreads();
    t.setNumThreads(2);
    try {
      using g = new t.Generator(0);
      const x = t.randn(g, [64, 1 << 12]);
      t.gelu(x); // the shim's kernel (native/gelu.cpp), threaded on AVX-512 CPUs
      t.softmax(x, -1); // libtorch's
    } finally {
      t.setNumThreads(threads);
    }
    const mapped = Deno.readTextFileSync("/proc/self/maps").split("\n").map((line) => line.split(/\s+/)[5] ?? "");
    const runtimes = new Set(mapped.filter((path) => /\/lib(gomp|iomp5|omp)[-.\w]*\.so/.test(path)));
    assert.equal(runtimes.size, 1, `OpenMP runtimes mapped: ${[...runtimes].join(", ") || "none"}`);
  }));
