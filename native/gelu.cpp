// The exact GELU of bf16 CPU tensors by table lookup, bit for bit libtorch's vectorised kernel (its scalar remainder, a
// few elements a call, may differ from it by an ulp before rounding). A bf16 input has 65536 possible values, so
// the forward is a table of libtorch's own outputs; libtorch's backward computes in fp32 and rounds once, dy * slope(x),
// so it is dy times a table of libtorch's fp32 slopes, rounded. Both tables are made by libtorch's kernels at first use.
// A lookup costs a fraction of the erf and exp that libtorch evaluates per element: in the bf16 benchmark step at one
// thread, the MLP's GELU and its backward took 248 ms of the ~840 outside the matrix products, the tables 83 ms.
// Anything else (fp32, the tanh approximation, CUDA) is libtorch's gelu.
#include <cstring>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "shim.h"

namespace {

struct Tables {
  std::vector<uint32_t> gelu;  // bf16 bits of gelu(x), widened: a 32-bit gather is the fast one
  std::vector<float> slope;    // d gelu / dx in fp32
};

const Tables& tables() {
  static const Tables made = [] {
    const c10::InferenceMode no_graph;
    std::vector<uint16_t> patterns(65536);  // every bf16 bit pattern
    for (uint32_t i = 0; i < 65536; i++) patterns[i] = static_cast<uint16_t>(i);
    const auto x = at::from_blob(patterns.data(), {65536}, at::kBFloat16);
    const auto y = at::gelu(x).contiguous();
    const auto s = at::gelu_backward(at::ones({65536}), x.to(at::kFloat)).contiguous();
    Tables t{std::vector<uint32_t>(65536), std::vector<float>(65536)};
    const auto* gelu = reinterpret_cast<const uint16_t*>(y.data_ptr<at::BFloat16>());
    for (size_t i = 0; i < 65536; i++) t.gelu[i] = gelu[i];
    std::memcpy(t.slope.data(), s.data_ptr<float>(), 65536 * sizeof(float));
    return t;
  }();
  return made;
}

// Vectorised gathers where the CPU has them (GCC makes a clone for each and picks one at load time); -O3 for this loop
// alone. (Clang before 18 takes no x86-64-v4 clone; there the loops are plain.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("O3")))
#else
#define KERNEL
#endif

KERNEL void forward_range(const uint16_t* __restrict x, uint16_t* __restrict y, int64_t n,
                          const uint32_t* __restrict table) {
  for (int64_t i = 0; i < n; i++) y[i] = static_cast<uint16_t>(table[x[i]]);
}

// Rounded as c10::BFloat16 rounds (to nearest even, any NaN to the quiet NaN).
KERNEL void backward_range(const uint16_t* __restrict dy, const uint16_t* __restrict x, uint16_t* __restrict dx,
                           int64_t n, const float* __restrict slope) {
  for (int64_t i = 0; i < n; i++) {
    const float g = c10::detail::f32_from_bits(dy[i]);
    dx[i] = c10::detail::round_to_nearest_even(g * slope[x[i]]);
  }
}

constexpr int64_t kGrain = 1 << 15;

const uint16_t* bits(const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>()); }
uint16_t* bits(at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

at::Tensor table_gelu(const at::Tensor& x_) {
  const auto x = x_.contiguous();
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const uint16_t* px = bits(x);
  uint16_t* py = bits(y);
  const uint32_t* table = tables().gelu.data();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    forward_range(px + begin, py + begin, end - begin, table);
  });
  return y;
}

at::Tensor table_gelu_backward(const at::Tensor& dy_, const at::Tensor& x_) {
  const auto dy = dy_.contiguous(), x = x_.contiguous();
  auto dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  const uint16_t *pdy = bits(dy), *px = bits(x);
  uint16_t* pdx = bits(dx);
  const float* slope = tables().slope.data();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    backward_range(pdy + begin, px + begin, pdx + begin, end - begin, slope);
  });
  return dx;
}

bool tabled(const at::Tensor& t) {
  return t.device().type() == at::kCPU && t.scalar_type() == at::kBFloat16 && t.layout() == at::kStrided;
}

struct TableGelu : torch::autograd::Function<TableGelu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    RECORD_FUNCTION("dino::gelu", std::vector<c10::IValue>());
    ctx->save_for_backward({x});
    return table_gelu(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::gelu_backward", std::vector<c10::IValue>());
    const auto x = ctx->get_saved_variables()[0];
    const at::Tensor& dy = grads[0];
    // A backward that builds a graph (second derivatives), or an unexpected gradient: libtorch's differentiable op.
    if (c10::GradMode::is_enabled() || !tabled(dy) || dy.sizes() != x.sizes()) return {at::gelu_backward(dy, x)};
    return {table_gelu_backward(dy, x)};
  }
};

}  // namespace

at::Tensor fast_gelu(const at::Tensor& x, bool tanh) {
  if (tanh || !tabled(x) || x.numel() == 0) return at::gelu(x, tanh ? "tanh" : "none");
  return TableGelu::apply(x);
}
