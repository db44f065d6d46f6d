import assert from "node:assert/strict";
import * as t from "../mod.ts";
import { assertClose, noLeak } from "./helpers.ts";

// A composite of most differentiable op families: linear, layer norm, gelu,
// softmax, log_softmax, reductions and broadcasting arithmetic.
function composite(w: t.Tensor, b: t.Tensor, x: t.Tensor): t.Tensor {
  const h = t.gelu(t.linear(x, w, b)); // [4, 3]
  const n = t.layerNorm(h, [3], undefined, undefined, 1e-6);
  const p = t.softmax(t.mul(n, 2), -1);
  const q = t.logSoftmax(t.add(h, 0.1), -1);
  return t.add(t.neg(t.mean(t.sum(t.mul(p, q), -1))), t.mul(t.sum(t.pow(w, 2)), 0.01));
}

Deno.test("gradients of a composite function match central finite differences (f64)", () =>
  noLeak(() => {
    using g = new t.Generator(0);
    const w0 = t.randn(g, [3, 5], { dtype: "f64" });
    const b0 = t.randn(g, [3], { dtype: "f64" });
    const x = t.randn(g, [4, 5], { dtype: "f64" });
    const w = t.requiresGrad(w0), b = t.requiresGrad(b0);
    assert.ok(w.requiresGrad && !w0.requiresGrad);
    const [dw, db] = t.grad(composite(w, b, x), [w, b]);
    assert.deepEqual(dw.shape, [3, 5]);

    const eps = 1e-6;
    const fd = (param: "w" | "b", i: number): number =>
      t.tidy(() => {
        const base = param === "w" ? w0 : b0;
        const flat = t.toArray(base);
        const at = (delta: number) => {
          const v = flat.slice();
          v[i] += delta;
          const p = t.tensor(new Float64Array(v), { shape: base.shape });
          return t.item(param === "w" ? composite(p, b0, x) : composite(w0, p, x));
        };
        return (at(eps) - at(-eps)) / (2 * eps);
      });
    assertClose(t.toArray(dw), Array.from({ length: 15 }, (_, i) => fd("w", i)), 1e-6);
    assertClose(t.toArray(db), Array.from({ length: 3 }, (_, i) => fd("b", i)), 1e-6);
  }));

Deno.test("grad returns zeros for inputs the output does not depend on", () =>
  noLeak(() => {
    const x = t.requiresGrad(t.tensor([1, 2]));
    const unused = t.requiresGrad(t.tensor([5]));
    const [dx, du] = t.grad(t.sum(t.mul(x, 3)), [x, unused]);
    assertClose(t.toArray(dx), [3, 3]);
    assertClose(t.toArray(du), [0]);
  }));

Deno.test("grad gives inputs that share a gradient buffers of their own", () =>
  noLeak(() => {
    const a = t.requiresGrad(t.tensor([1, 2])), b = t.requiresGrad(t.tensor([3, 4]));
    const [da, db] = t.grad(t.sum(t.mul(t.add(a, b), 2)), [a, b]); // d(a + b) is one tensor for both
    t.copyInto(da, t.tensor([7, 7])); // updating one in place leaves the other
    assertClose(t.toArray(db), [2, 2]);
  }));

Deno.test("grad gives broadcast gradients (of a sum, of an expanded input) as dense tensors that update in place", () =>
  noLeak(() => {
    const x = t.requiresGrad(t.tensor([[1, 2], [3, 4]])), c = t.requiresGrad(t.tensor([5]));
    const [dx, dc] = t.grad(t.sum(t.mul(x, t.expand(c, [2, 2]))), [x, c]);
    const [ds] = t.grad(t.sum(x), [x]); // autograd's own answer is ones expanded: one element at every position
    for (const g of [dx, ds]) t.mulInto(g, t.tensor([[1, 2], [3, 4]]));
    assertClose(t.toArray(dx), [5, 10, 15, 20]);
    assertClose(t.toArray(ds), [1, 2, 3, 4]);
    assertClose(t.toArray(dc), [10]);
  }));

Deno.test("grad needs a scalar, and createGraph gives second derivatives", () =>
  noLeak(() => {
    const x = t.requiresGrad(t.tensor([2]));
    assert.throws(() => t.grad(t.mul(x, t.ones([3])), [x]), /scalar/);
    const [dx] = t.grad(t.sum(t.pow(x, 3)), [x], { createGraph: true });
    assertClose(t.toArray(dx), [12]); // 3x^2
    const [ddx] = t.grad(t.sum(dx), [x]);
    assertClose(t.toArray(ddx), [12]); // 6x
  }));

Deno.test("detach and noGrad cut the graph; requiresGrad leaves its input untouched", () =>
  noLeak(() => {
    const w = t.requiresGrad(t.ones([2]));
    const y = t.noGrad(() => t.mul(w, 2));
    assert.equal(y.requiresGrad, false);
    assert.equal(t.mul(w, 2).requiresGrad, true, "grad mode is restored after noGrad");
    assert.equal(t.detach(t.mul(w, 2)).requiresGrad, false);
    const z = t.add(t.mul(w, 2), t.detach(t.mul(w, 5)));
    const [dw] = t.grad(t.sum(z), [w]);
    assertClose(t.toArray(dw), [2, 2], 0);
    assert.throws(() => t.noGrad(() => Promise.resolve(1)), /synchronous/);
  }));

Deno.test("unbind's slices are select's, and their gradient is the same bit for bit", () =>
  noLeak(() => {
    using g = new t.Generator(0);
    using x0 = t.randn(g, [2, 5, 3, 4]);
    using w = t.randn(g, [3, 2, 4, 5]);
    const x = t.requiresGrad(x0);
    const gradVia = (slices: (v: t.Tensor) => t.Tensor[]) =>
      t.tidy(() => {
        const parts = slices(t.permute(x, [2, 0, 3, 1])); // [3, 2, 4, 5] view, as attention's qkv
        const loss = t.sum(t.add(t.add(t.mul(parts[0], w), t.mul(parts[1], 2)), t.mul(parts[2], parts[2])));
        return { parts: parts.map(t.toArray), grad: t.toArray(t.grad(loss, [x])[0]) };
      });
    const viaUnbind = gradVia((v) => t.unbind(v, 0));
    const viaSelect = gradVia((v) => [0, 1, 2].map((i) => t.select(v, 0, i)));
    assert.deepEqual(viaUnbind, viaSelect);
    x.dispose();
  }));
