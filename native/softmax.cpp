// Attention's softmax, fused with the scaling before it and the cast after it: softmax(x * scale) along the last dim in
// fp32, and with `low`, the same probabilities rounded to x's dtype for the product with the values. Composed of
// libtorch ops these are four passes over the scores each way (mul, cast, softmax, cast), and libtorch's softmax is
// slow on rows as short as a ViT's (50 tokens). Here, in AVX-512, each row is read from memory once each way (its
// sweeps run in cache): forward, the composite took 2.55 ms on bf16 scores [128, 3, 50, 50] at one thread, this
// 1.14 ms, and the bf16 benchmark step went from 2.74 to 2.65 s (medians of 9, alternating).
//
// The numbers are the composite's to rounding: x * scale is rounded to x's dtype first (as `mul` would; the scale too), the
// probabilities are exp(s - max) / sum as libtorch's kernel computes them (a polynomial exp within an ulp or two of
// its Sleef one), and the gradient is (dp - sum(dp * p)) * p, rounded to x's dtype, then times the scale, rounded again.
// Without AVX-512 (and on CUDA, and for dtypes other than fp32 and bf16) it is that composite.
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "avx512.h"
#include "shim.h"

namespace {

#ifdef DINO_AVX512
// exp for x <= 0 (NaN passes through): Cephes' expf, 2^n e^r with |r| <= ln 2 / 2.
AVX512 inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.f), x);  // e^-104 is below fp32's subnormals; max(c, NaN) is NaN
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// Rows [begin, end) of n: p = softmax(x * scale) in fp32, and low = p in x's dtype when asked.
template <class In>
AVX512 void forward_rows(const In* x, float* p, In* low, int64_t begin, int64_t end, int64_t n, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t row = begin; row < end; row++) {
    const In* xr = x + row * n;
    float* pr = p + row * n;
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      const __m512 v = in_dtype(_mm512_mul_ps(load(xr + j, m), s), xr);
      store(pr + j, m, v);
      top = _mm512_mask_max_ps(top, m, top, v);
    }
    const __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      const __m512 e = exp_nonpositive(_mm512_sub_ps(load(pr + j, m), max));
      store(pr + j, m, e);
      sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      const __m512 q = _mm512_mul_ps(load(pr + j, m), inv);
      store(pr + j, m, q);
      if (low) store(low + j + row * n, m, in_dtype(q, low));
    }
  }
}

// a[i..] + b[i..], either absent (zeros).
template <class B>
AVX512 inline __m512 sum_of(const float* a, const B* b, int64_t i, __mmask16 m) {
  const __m512 x = a ? load(a + i, m) : _mm512_setzero_ps();
  return b ? _mm512_add_ps(x, load(b + i, m)) : x;
}

// dx = ((dp - sum(dp * p)) * p, in x's dtype) * scale, in x's dtype; dp = dp32 + dplow, either absent.
template <class Out>
AVX512 void backward_rows(const float* p, const float* dp32, const Out* dplow, Out* dx, int64_t begin, int64_t end,
                          int64_t n, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t row = begin; row < end; row++) {
    const int64_t at = row * n;
    __m512 dot = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      dot = _mm512_fmadd_ps(sum_of(dp32, dplow, at + j, m), load(p + at + j, m), dot);
    }
    const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail(n - j);
      const __m512 centred = _mm512_sub_ps(sum_of(dp32, dplow, at + j, m), total);
      const __m512 g = in_dtype(_mm512_mul_ps(centred, load(p + at + j, m)), dx);
      store(dx + at + j, m, in_dtype(_mm512_mul_ps(g, s), dx));
    }
  }
}
#endif

constexpr int64_t kGrain = 1 << 14;  // elements a task

// The scale, rounded to bf16 for bf16 scores as libtorch 1.13's `mul` of a bf16 tensor by a number rounds it (2.x
// keeps it in fp32): every path here, the composites included, uses this one, so that they agree on any libtorch.
float scale_in(double scale, at::ScalarType dtype) {
  const auto s = static_cast<float>(scale);
  return dtype == at::kBFloat16 ? static_cast<float>(c10::BFloat16(s)) : s;
}

bool fused(const at::Tensor& x) {
#ifdef DINO_AVX512
  return avx512_runs() && x.device().type() == at::kCPU && x.layout() == at::kStrided && x.dim() >= 1 &&
         x.size(-1) > 0 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
#else
  return false;
#endif
}

// The composite, for what the kernel does not take and for backwards that build a graph.
std::vector<at::Tensor> composite(const at::Tensor& x, double scale, bool low) {
  auto p = at::softmax(at::mul(x, scale_in(scale, x.scalar_type())).to(at::kFloat), -1);
  if (!low) return {p};
  auto q = p.to(x.scalar_type());
  return {p, q};
}

struct ScaledSoftmax : torch::autograd::Function<ScaledSoftmax> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_,
                                                double scale, bool low) {
    RECORD_FUNCTION("dino::scaled_softmax", std::vector<c10::IValue>());
    const auto x = x_.contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / n;
    auto p = at::empty(x.sizes(), x.options().dtype(at::kFloat));
    at::Tensor q = low ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::Tensor();
#ifdef DINO_AVX512
    const float s = scale_in(scale, x.scalar_type());
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / n), [&](int64_t begin, int64_t end) {
      if (x.scalar_type() == at::kFloat) {
        forward_rows(x.data_ptr<float>(), p.data_ptr<float>(), low ? q.data_ptr<float>() : nullptr, begin, end, n, s);
      } else {
        forward_rows(x.data_ptr<at::BFloat16>(), p.data_ptr<float>(), low ? q.data_ptr<at::BFloat16>() : nullptr,
                     begin, end, n, s);
      }
    });
#endif
    ctx->save_for_backward({p});
    // An output the loss does not use (the fp32 probabilities, under mixed precision) gets no gradient, rather than
    // autograd's zeros: an fp32 tensor of the scores' size to fill and read for nothing.
    ctx->set_materialize_grads(false);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    if (!low) return {p};
    return {p, q};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::scaled_softmax_backward", std::vector<c10::IValue>());
    const auto p = ctx->get_saved_variables()[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    at::Tensor dp32 = grads[0].defined() ? grads[0].contiguous() : at::Tensor();
    at::Tensor dplow = grads.size() > 1 && grads[1].defined() ? grads[1].contiguous() : at::Tensor();
    if (!dp32.defined() && !dplow.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    if (c10::GradMode::is_enabled() || (dplow.defined() && dplow.scalar_type() != dtype) ||
        (dp32.defined() && dp32.scalar_type() != at::kFloat)) {  // a backward that builds a graph: differentiable ops
      const at::Tensor dp = dp32.defined() && dplow.defined() ? dp32 + dplow.to(at::kFloat)
                            : dp32.defined()                  ? dp32
                                                              : dplow.to(at::kFloat);
      return {at::mul(at::_softmax_backward_data(dp, p, -1, at::kFloat).to(dtype), scale_in(scale, dtype)),
              at::Tensor(), at::Tensor()};
    }
    const int64_t n = p.size(-1), rows = p.numel() / n;
    auto dx = at::empty(p.sizes(), p.options().dtype(dtype));
#ifdef DINO_AVX512
    const float s = scale_in(scale, dtype);
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / n), [&](int64_t begin, int64_t end) {
      const float* d32 = dp32.defined() ? dp32.data_ptr<float>() : nullptr;
      if (dtype == at::kFloat) {
        backward_rows(p.data_ptr<float>(), d32, dplow.defined() ? dplow.data_ptr<float>() : nullptr,
                      dx.data_ptr<float>(), begin, end, n, s);
      } else {
        backward_rows(p.data_ptr<float>(), d32, dplow.defined() ? dplow.data_ptr<at::BFloat16>() : nullptr,
                      dx.data_ptr<at::BFloat16>(), begin, end, n, s);
      }
    });
#endif
    return {dx, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::vector<at::Tensor> scaled_softmax(const at::Tensor& x, double scale, bool low) {
  if (low && x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kHalf) {
    throw std::invalid_argument(std::string("scaled_softmax: a low-precision copy is for bf16 or fp16 scores, not ") +
                                c10::toString(x.scalar_type()) + "; ask for none");
  }
  if (!fused(x) || x.numel() == 0) return composite(x, scale, low);
  return ScaledSoftmax::apply(x, scale, low);
}
