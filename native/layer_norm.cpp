// LayerNorm over the last dim of an fp32 tensor with a weight and a bias, its output in fp32 or, for the matrix
// product after it under mixed precision, straight in bf16 (the composite: layer_norm, then a cast, and the cast back
// in the backward). Everything is computed in fp32 from the centred, scaled input n = (x - mean) rstd, which libtorch's
// kernel expands (x rstd - mean rstd, and a dx with rstd^3 in it) and so cancels where rstd is large:
//   y = n w + b,  rstd = 1 / sqrt(var + eps), var the biased variance;
//   dx = rstd (dy w - mean(dy w) - n mean(dy w n)),  dw = sum over rows of dy n,  db = sum over rows of dy.
// The same numbers as libtorch's to rounding. In AVX-512, each row read from memory once each way (its sweeps run in
// cache) and the output written once; elsewhere (no AVX-512,
// CUDA, other dtypes, no weight or bias, several normalized dims) it is libtorch's layer_norm and a cast.
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "avx512.h"
#include "shim.h"

namespace {

#ifdef DINO_AVX512
// One row x of d values normalized into y; its mean and rstd stored.
template <class Out>
AVX512 inline void normalize_row(const float* xr, const float* w, const float* b, Out* yr, float* mean, float* rstd,
                                 int64_t d, float eps) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < d; j += 16) sum = _mm512_add_ps(sum, load(xr + j, tail(d - j)));
  const float mu = _mm512_reduce_add_ps(sum) / static_cast<float>(d);
  const __m512 m = _mm512_set1_ps(mu);
  __m512 squares = _mm512_setzero_ps();
  for (int64_t j = 0; j < d; j += 16) {
    const __mmask16 k = tail(d - j);
    const __m512 c = _mm512_maskz_sub_ps(k, load(xr + j, k), m);
    squares = _mm512_fmadd_ps(c, c, squares);
  }
  const float var = _mm512_reduce_add_ps(squares) / static_cast<float>(d);
  const float r = 1.f / std::sqrt(std::max(var, 0.f) + eps);
  *mean = mu;
  *rstd = r;
  const __m512 scale = _mm512_set1_ps(r);
  for (int64_t j = 0; j < d; j += 16) {
    const __mmask16 k = tail(d - j);
    const __m512 normed = _mm512_mul_ps(_mm512_sub_ps(load(xr + j, k), m), scale);
    const __m512 v = _mm512_fmadd_ps(normed, load(w + j, k), load(b + j, k));
    store(yr + j, k, in_dtype(v, yr));
  }
}

template <class Out>
AVX512 void forward_rows(const float* x, const float* w, const float* b, Out* y, float* mean, float* rstd,
                         int64_t begin, int64_t end, int64_t d, float eps) {
  for (int64_t row = begin; row < end; row++) {
    normalize_row(x + row * d, w, b, y + row * d, mean + row, rstd + row, d, eps);
  }
}

// The residual's h = x + y (y in fp32 or bf16, exact in fp32 as libtorch's promotion makes it), then h normalized.
template <class Y, class Out>
AVX512 void add_forward_rows(const float* x, const Y* y, float* h, const float* w, const float* b, Out* n, float* mean,
                             float* rstd, int64_t begin, int64_t end, int64_t d, float eps) {
  for (int64_t row = begin; row < end; row++) {
    float* hr = h + row * d;
    for (int64_t j = 0; j < d; j += 16) {
      const __mmask16 k = tail(d - j);
      store(hr + j, k, _mm512_add_ps(load(x + row * d + j, k), load(y + row * d + j, k)));
    }
    normalize_row(hr, w, b, n + row * d, mean + row, rstd + row, d, eps);
  }
}

// dx for rows [begin, end), plus the residual's gradient dres where there is one (the gradient of h = x + y that
// reached it past the norm), and its copy rounded to bf16 in dlow where y was bf16; dw and db of those rows added
// into dw_part and db_part.
template <class In, class Low>
AVX512 void backward_rows(const In* dy, const float* x, const float* w, const float* mean, const float* rstd,
                          const float* dres, float* dx, Low* dlow, float* dw_part, float* db_part, int64_t begin,
                          int64_t end, int64_t d) {
  const float inv_d = 1.f / static_cast<float>(d);
  for (int64_t row = begin; row < end; row++) {
    const In* gr = dy + row * d;
    const float* xr = x + row * d;
    const float mu = mean[row], r = rstd[row];
    const __m512 m = _mm512_set1_ps(mu), rv = _mm512_set1_ps(r);
    __m512 sum_gw = _mm512_setzero_ps(), sum_gwn = _mm512_setzero_ps();
    for (int64_t j = 0; j < d; j += 16) {
      const __mmask16 k = tail(d - j);
      const __m512 g = load(gr + j, k), normed = _mm512_mul_ps(_mm512_maskz_sub_ps(k, load(xr + j, k), m), rv);
      const __m512 gw = _mm512_mul_ps(g, load(w + j, k));
      sum_gw = _mm512_add_ps(sum_gw, gw);
      sum_gwn = _mm512_fmadd_ps(gw, normed, sum_gwn);
      store(dw_part + j, k, _mm512_fmadd_ps(g, normed, load(dw_part + j, k)));
      store(db_part + j, k, _mm512_add_ps(g, load(db_part + j, k)));
    }
    const __m512 mean_gw = _mm512_set1_ps(_mm512_reduce_add_ps(sum_gw) * inv_d);
    const __m512 mean_gwn = _mm512_set1_ps(_mm512_reduce_add_ps(sum_gwn) * inv_d);
    for (int64_t j = 0; j < d; j += 16) {
      const __mmask16 k = tail(d - j);
      const __m512 normed = _mm512_mul_ps(_mm512_sub_ps(load(xr + j, k), m), rv);
      const __m512 gw = _mm512_mul_ps(load(gr + j, k), load(w + j, k));
      __m512 v = _mm512_mul_ps(rv, _mm512_fnmadd_ps(normed, mean_gwn, _mm512_sub_ps(gw, mean_gw)));
      if (dres) v = _mm512_add_ps(v, load(dres + row * d + j, k));  // autograd's sum of h's two gradients
      store(dx + row * d + j, k, v);
      if (dlow) store(dlow + row * d + j, k, in_dtype(v, dlow));
    }
  }
}
#endif

bool fused(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::ScalarType out) {
#ifdef DINO_AVX512
  const auto cpu_f32 = [](const at::Tensor& t) {
    return t.defined() && t.device().type() == at::kCPU && t.scalar_type() == at::kFloat && t.layout() == at::kStrided;
  };
  return avx512_runs() && cpu_f32(x) && cpu_f32(w) && cpu_f32(b) && x.dim() >= 1 && w.dim() == 1 && b.dim() == 1 &&
         w.size(0) == x.size(-1) && b.size(0) == x.size(-1) && x.size(-1) > 0 &&
         (out == at::kFloat || out == at::kBFloat16);
#else
  return false;
#endif
}

// x normalized into a new tensor of dtype `out` (with y: h = x + y, written into a new fp32 tensor, normalized);
// returns {normed, mean, rstd, h}.
std::array<at::Tensor, 4> normalize(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w,
                                    const at::Tensor& b, double eps, at::ScalarType out) {
  const int64_t d = x.size(-1), rows = x.numel() / d;
  auto n = at::empty(x.sizes(), x.options().dtype(out));
  auto h = y.defined() ? at::empty(x.sizes(), x.options()) : x;
  auto stat_shape = x.sizes().vec();
  stat_shape.back() = 1;  // as native_layer_norm's, which its backward (the double-backward path) reads
  auto mean = at::empty(stat_shape, x.options()), rstd = at::empty(stat_shape, x.options());
#ifdef DINO_AVX512
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 14) / d), [&](int64_t begin, int64_t end) {
    const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>(), *pb = b.data_ptr<float>();
    float *pm = mean.data_ptr<float>(), *pr = rstd.data_ptr<float>();
    const auto rows_into = [&](auto* pn) {
      if (!y.defined()) {
        forward_rows(px, pw, pb, pn, pm, pr, begin, end, d, static_cast<float>(eps));
      } else if (y.scalar_type() == at::kFloat) {
        add_forward_rows(px, y.data_ptr<float>(), h.data_ptr<float>(), pw, pb, pn, pm, pr, begin, end, d,
                         static_cast<float>(eps));
      } else {
        add_forward_rows(px, y.data_ptr<at::BFloat16>(), h.data_ptr<float>(), pw, pb, pn, pm, pr, begin, end, d,
                         static_cast<float>(eps));
      }
    };
    if (out == at::kFloat) {
      rows_into(n.data_ptr<float>());
    } else {
      rows_into(n.data_ptr<at::BFloat16>());
    }
  });
#endif
  return {n, mean, rstd, h};
}

// The backward of normalize() given the norm's output gradient dy, and with `dres` (h's gradient from elsewhere, may
// be undefined) and `low` (y's dtype) for h = x + y: {dx (h's whole gradient), dx in `low`, dw, db}.
std::array<at::Tensor, 4> normalize_backward(const at::Tensor& dy_, const at::Tensor& x_, const at::Tensor& w,
                                             const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& dres_,
                                             at::ScalarType low) {
  const auto x = x_.contiguous(), wc = w.contiguous(), dy = dy_.contiguous();
  const auto dres = dres_.defined() ? dres_.contiguous() : dres_;
  const int64_t d = x.size(-1), rows = x.numel() / d;
  auto dx = at::empty(x.sizes(), x.options());
  auto dlow = low == at::kBFloat16 ? at::empty(x.sizes(), x.options().dtype(low)) : dx;
  // Each of up to `parts` runs of rows sums its rows' dw and db into its own row of these, summed after.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  auto partial = at::zeros({2, parts, d}, x.options());
#ifdef DINO_AVX512
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; part++) {
      const int64_t first = rows * part / parts, last = rows * (part + 1) / parts;
      float* dw_part = partial.data_ptr<float>() + part * d;
      float* db_part = dw_part + parts * d;
      const float *px = x.data_ptr<float>(), *pw = wc.data_ptr<float>(), *pm = mean.data_ptr<float>(),
                  *pr = rstd.data_ptr<float>(), *pres = dres.defined() ? dres.data_ptr<float>() : nullptr;
      const auto rows_from = [&](const auto* g) {
        if (low == at::kBFloat16) {
          backward_rows(g, px, pw, pm, pr, pres, dx.data_ptr<float>(), dlow.data_ptr<at::BFloat16>(), dw_part,
                        db_part, first, last, d);
        } else {
          backward_rows(g, px, pw, pm, pr, pres, dx.data_ptr<float>(), static_cast<float*>(nullptr), dw_part,
                        db_part, first, last, d);
        }
      };
      if (dy.scalar_type() == at::kFloat) {
        rows_from(dy.data_ptr<float>());
      } else {
        rows_from(dy.data_ptr<at::BFloat16>());
      }
    }
  });
#endif
  // Summed apart, so that dw and db do not share a storage.
  return {dx, dlow, partial[0].sum(0), partial[1].sum(0)};
}

struct FusedLayerNorm : torch::autograd::Function<FusedLayerNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_, const at::Tensor& w_,
                            const at::Tensor& b_, double eps, int64_t out_dtype) {
    RECORD_FUNCTION("dino::layer_norm", std::vector<c10::IValue>());
    const auto x = x_.contiguous();
    auto [n, mean, rstd, h] =
        normalize(x, at::Tensor(), w_.contiguous(), b_.contiguous(), eps, static_cast<at::ScalarType>(out_dtype));
    ctx->save_for_backward({x_, w_, b_, mean, rstd});
    return n;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::layer_norm_backward", std::vector<c10::IValue>());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &mean = saved[3], &rstd = saved[4];
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    if (c10::GradMode::is_enabled()) {  // a backward that builds a graph (second derivatives): libtorch's, differentiable
      auto [dx, dw, db] =
          at::native_layer_norm_backward(grads[0].to(at::kFloat), x, {x.size(-1)}, mean, rstd, w, b, mask);
      return {dx, dw, db, at::Tensor(), at::Tensor()};
    }
    auto [dx, dlow, dw, db] = normalize_backward(grads[0], x, w, mean, rstd, at::Tensor(), at::kFloat);
    return {mask[0] ? dx : at::Tensor(), mask[1] ? dw : at::Tensor(), mask[2] ? db : at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// h = x + y and layer_norm(h) in one: a pre-norm block's residual sum and the next norm over it.
struct FusedAddLayerNorm : torch::autograd::Function<FusedAddLayerNorm> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& y, const at::Tensor& w, const at::Tensor& b,
                                                double eps, int64_t out_dtype) {
    RECORD_FUNCTION("dino::add_layer_norm", std::vector<c10::IValue>());
    auto [n, mean, rstd, h] = normalize(x.contiguous(), y.contiguous(), w.contiguous(), b.contiguous(), eps,
                                        static_cast<at::ScalarType>(out_dtype));
    ctx->save_for_backward({h, w, b, mean, rstd});
    ctx->saved_data["low"] = static_cast<int64_t>(y.scalar_type());
    ctx->set_materialize_grads(false);
    return {h, n};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::add_layer_norm_backward", std::vector<c10::IValue>());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &w = saved[1], &b = saved[2], &mean = saved[3], &rstd = saved[4];
    const auto low = static_cast<at::ScalarType>(ctx->saved_data["low"].toInt());
    const at::Tensor &dh = grads[0], &dn = grads[1];
    const auto none = at::Tensor();
    const auto dy_of = [&](const at::Tensor& dx) { return dx.scalar_type() == low ? dx : dx.to(low); };
    if (!dn.defined()) {
      return dh.defined() ? torch::autograd::variable_list{dh, dy_of(dh), none, none, none, none}
                          : torch::autograd::variable_list(6);
    }
    const std::array<bool, 3> mask{true, ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
    if (c10::GradMode::is_enabled()) {  // second derivatives: libtorch's ops, differentiable
      auto [dnorm, dw, db] = at::native_layer_norm_backward(dn.to(at::kFloat), h, {h.size(-1)}, mean, rstd, w, b, mask);
      const auto dx = dh.defined() ? dnorm + dh : dnorm;
      return {dx, dy_of(dx), dw, db, none, none};
    }
    auto [dx, dlow, dw, db] = normalize_backward(dn, h, w, mean, rstd, dh, low);
    return {ctx->needs_input_grad(0) ? dx : none, ctx->needs_input_grad(1) ? dlow : none, mask[1] ? dw : none,
            mask[2] ? db : none, none, none};
  }
};

}  // namespace

at::Tensor fast_layer_norm(const at::Tensor& x, at::IntArrayRef shape, const c10::optional<at::Tensor>& w,
                           const c10::optional<at::Tensor>& b, double eps, c10::optional<at::ScalarType> out) {
  const at::Tensor weight = w ? *w : at::Tensor(), bias = b ? *b : at::Tensor();
  const auto dtype = out.value_or(x.scalar_type());
  if (shape.size() != 1 || x.dim() < 1 || shape[0] != x.size(-1) || x.numel() == 0 || !fused(x, weight, bias, dtype)) {
    auto y = at::layer_norm(x, shape, w, b, eps);
    return y.scalar_type() == dtype ? y : y.to(dtype);
  }
  return FusedLayerNorm::apply(x, weight, bias, eps, static_cast<int64_t>(dtype));
}

std::vector<at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& y, at::IntArrayRef shape,
                                       const c10::optional<at::Tensor>& w, const c10::optional<at::Tensor>& b,
                                       double eps, c10::optional<at::ScalarType> out) {
  const at::Tensor weight = w ? *w : at::Tensor(), bias = b ? *b : at::Tensor();
  const auto dtype = out.value_or(at::result_type(x, y));
  const bool y_fits = y.sizes() == x.sizes() && y.device() == x.device() && y.layout() == at::kStrided &&
                      (y.scalar_type() == at::kFloat || y.scalar_type() == at::kBFloat16);
  if (shape.size() != 1 || x.dim() < 1 || shape[0] != x.size(-1) || x.numel() == 0 || !y_fits ||
      !fused(x, weight, bias, dtype)) {
    auto h = at::add(x, y);
    return {h, fast_layer_norm(h, shape, w, b, eps, dtype)};
  }
  return FusedAddLayerNorm::apply(x, y, weight, bias, eps, static_cast<int64_t>(dtype));
}
