// The matrix products of a CPU training step, sent where they run fastest; the numbers are libtorch's to rounding.
// - Batches of small matrices (attention's q k^T and attn v: thousands of 17 x 32 matrices a step). Without MKL,
//   libtorch's CPU bmm loops over the batch on one thread, selecting each matrix and dispatching addmm for it, a few
//   microseconds of overhead per matrix, more than the arithmetic. Here each matrix goes straight to the BLAS sgemm
//   that addmm would reach, with the same arguments (so the same numbers), the batch shared among libtorch's threads.
// - Linear layers, on AVX-512 CPUs: oneDNN's sgemm (libtorch links oneDNN for its mkldnn ops), faster than OpenBLAS
//   there at a DINO step's shapes, and like it independent of the thread count.
// - bf16 linear layers, on AVX-512 CPUs: libtorch's products. The bias's gradient of both is summed by a kernel here.
// Anything else (other dtypes and devices, broadcasting, large batched matrices, no BLAS or oneDNN found) is libtorch's.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <memory>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "avx512.h"
#include "shim.h"

namespace {

using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                       const int*, const float*, const int*, const float*, float*, const int*);

Sgemm sgemm() {
  static const Sgemm found = reinterpret_cast<Sgemm>(blas_symbol("sgemm_"));
  return found;
}

// Above this many multiply-adds per matrix OpenBLAS threads one product itself, and the overhead saved is noise.
constexpr int64_t kSmall = 262144;

bool fast(const at::Tensor& a, const at::Tensor& b) {
  if (a.dim() < 3 || a.dim() != b.dim() || a.device().type() != at::kCPU || b.device().type() != at::kCPU) {
    return false;
  }
  if (a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat || a.layout() != at::kStrided ||
      b.layout() != at::kStrided || !sgemm()) {
    return false;
  }
  const int64_t d = a.dim(), n = a.size(d - 2), k = a.size(d - 1), m = b.size(d - 1);
  if (b.size(d - 2) != k || a.numel() == 0 || b.numel() == 0 || n * k * m > kSmall) return false;
  for (int64_t i = 0; i < d - 2; i++) {
    if (a.size(i) != b.size(i)) return false;
  }
  return true;
}

// One matrix [r, c] (the last two dims) as BLAS reads it: 'n' with its row stride when rows are contiguous (BLAS, in
// column-major terms, sees the transpose), 't' with its column stride when columns are. Anything else is copied.
struct Operand {
  at::Tensor t;
  char trans;
  int ld;
};
Operand operand(const at::Tensor& x) {
  const int64_t d = x.dim(), r = x.size(d - 2), c = x.size(d - 1), sr = x.stride(d - 2), sc = x.stride(d - 1);
  if (sc == 1 && (r == 1 || sr >= std::max<int64_t>(1, c))) return {x, 'n', static_cast<int>(std::max(sr, c))};
  if (sr == 1 && (c == 1 || sc >= std::max<int64_t>(1, r))) return {x, 't', static_cast<int>(std::max(sc, r))};
  auto copy = x.contiguous();
  return {copy, 'n', static_cast<int>(std::max<int64_t>(1, c))};
}

// The element offset of each matrix of x's batch (its leading dims, in order).
std::vector<int64_t> offsets(const at::Tensor& x) {
  const int64_t d = x.dim() - 2;
  std::vector<int64_t> out(1, 0);
  for (int64_t i = 0; i < d; i++) {
    std::vector<int64_t> next;
    next.reserve(out.size() * x.size(i));
    for (int64_t o : out) {
      for (int64_t j = 0; j < x.size(i); j++) next.push_back(o + j * x.stride(i));
    }
    out = std::move(next);
  }
  return out;
}

// C = A B for each matrix of the batch, C fresh: contiguous, or with layout_of (a tensor of C's sizes), dense in that
// tensor's order of dims as empty_like lays it out (a gradient laid out as its input, so that what autograd does next
// with it, such as stacking q, k and v's gradients into the projection's, copies contiguous rows). Row-major C is
// column-major C^T = B^T A^T, which is how addmm hands a row-major product to BLAS; a column-major C is BLAS's own
// C = A B.
at::Tensor products(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& layout_of = at::Tensor()) {
  const Operand a = operand(a_), b = operand(b_);
  const int64_t d = a_.dim();
  const int n = a_.size(d - 2), k = a_.size(d - 1), m = b_.size(d - 1);
  auto sizes = a_.sizes().vec();
  sizes[d - 1] = m;
  auto c = layout_of.defined() ? at::empty_like(layout_of) : at::Tensor();
  // An input whose batch dim is innermost leaves neither the rows nor the columns of its layout contiguous.
  if (!c.defined() || (c.stride(d - 1) != 1 && c.stride(d - 2) != 1 && m > 1 && n > 1)) {
    c = at::empty(sizes, a_.options());
  }
  const bool rows = c.stride(d - 1) == 1 || m == 1;
  const int ldc = static_cast<int>(rows ? std::max<int64_t>(c.stride(d - 2), m) : std::max<int64_t>(c.stride(d - 1), n));
  const char ta = a.trans == 'n' ? 't' : 'n', tb = b.trans == 'n' ? 't' : 'n'; // as BLAS must read them for C = A B
  const std::vector<int64_t> oa = offsets(a.t), ob = offsets(b.t), oc = offsets(c);
  const float *pa = a.t.data_ptr<float>(), *pb = b.t.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  const Sgemm gemm = sgemm();
  const float one = 1, zero = 0;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, int64_t{n} * k * m));
  at::parallel_for(0, static_cast<int64_t>(oa.size()), grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      if (rows) {
        gemm(&b.trans, &a.trans, &m, &n, &k, &one, pb + ob[i], &b.ld, pa + oa[i], &a.ld, &zero, pc + oc[i], &ldc);
      } else {
        gemm(&ta, &tb, &n, &m, &k, &one, pa + oa[i], &a.ld, pb + ob[i], &b.ld, &zero, pc + oc[i], &ldc);
      }
    }
  });
  return c;
}

struct SmallProducts : torch::autograd::Function<SmallProducts> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b) {
    RECORD_FUNCTION("dino::small_matmul", std::vector<c10::IValue>());
    ctx->save_for_backward({a, b});
    return products(a, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::small_matmul_backward", std::vector<c10::IValue>());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &a = saved[0], &b = saved[1], &g = grads[0];
    const int64_t d = a.dim();
    const at::Tensor bt = b.transpose(d - 2, d - 1), at_ = a.transpose(d - 2, d - 1);
    // A backward that builds a graph (second derivatives) goes through small_matmul, which records it.
    if (c10::GradMode::is_enabled()) {
      return {ctx->needs_input_grad(0) ? small_matmul(g, bt) : at::Tensor(),
              ctx->needs_input_grad(1) ? small_matmul(at_, g) : at::Tensor()};
    }
    return {ctx->needs_input_grad(0) ? products(g, bt, a) : at::Tensor(),
            ctx->needs_input_grad(1) ? products(at_, g, b) : at::Tensor()};
  }
};

// A linear layer's bias gradient: the column sums of g [rows, cols], accumulated in fp32 and returned in g's dtype, as
// libtorch's sum(0) does (the same numbers to fp32 rounding). libtorch's reduction reads a bf16 [10240, 768] gradient at
// ~9 GB/s; this reads it once at memory speed.
#ifdef DINO_AVX512
// Rows [begin, end) added into sums, 128 columns at a time so that the running sums stay in registers.
template <class In>
AVX512 void add_column_sums(const In* g, float* sums, int64_t begin, int64_t end, int64_t cols) {
  for (int64_t c0 = 0; c0 < cols; c0 += 128) {
    __m512 acc[8];
    __mmask16 mask[8];
    for (int v = 0; v < 8; v++) {
      acc[v] = _mm512_setzero_ps();
      mask[v] = cols - c0 - 16 * v > 0 ? tail(cols - c0 - 16 * v) : __mmask16(0);
    }
    for (int64_t r = begin; r < end; r++) {
      const In* row = g + r * cols + c0;
      for (int v = 0; v < 8; v++) acc[v] = _mm512_add_ps(acc[v], load(row + 16 * v, mask[v]));
    }
    for (int v = 0; v < 8; v++) {
      store(sums + c0 + 16 * v, mask[v], _mm512_add_ps(load(sums + c0 + 16 * v, mask[v]), acc[v]));
    }
  }
}
#endif

at::Tensor column_sums(const at::Tensor& g_) {
#ifdef DINO_AVX512
  if (!avx512_runs()) return g_.sum(0);
  const auto g = g_.contiguous();
  const int64_t rows = g.size(0), cols = g.size(1);
  // Each of up to `parts` runs of rows sums into its own row of `partial`, summed after.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / 64));
  auto partial = at::zeros({parts, cols}, g.options().dtype(at::kFloat));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; part++) {
      float* sums = partial.data_ptr<float>() + part * cols;
      const int64_t first = rows * part / parts, last = rows * (part + 1) / parts;
      if (g.scalar_type() == at::kFloat) {
        add_column_sums(g.data_ptr<float>(), sums, first, last, cols);
      } else {
        add_column_sums(g.data_ptr<at::BFloat16>(), sums, first, last, cols);
      }
    }
  });
  return (parts == 1 ? partial[0] : partial.sum(0)).to(g.scalar_type());
#else
  return g_.sum(0);
#endif
}

// oneDNN's sgemm, row-major.
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
// Only where oneDNN runs AVX-512 (its dnnl_cpu_isa_t has bit 0x20 for it in versions 2 and 3), where it was measured
// faster; elsewhere OpenBLAS, whose numbers are the ones PyTorch's parity fixtures were made with. And only in a shim
// compiled with OpenMP (ffi/build.ts: GCC), whose parallel_for reaches oneDNN's workers to block their signals (below).
DnnlSgemm dnnl_sgemm() {
#ifdef _OPENMP
  static const DnnlSgemm found = [] {
    const auto dnnl = [](const char* name) { return loaded_symbol({"libdnnl.so.2", "libdnnl.so.3"}, name); };
    auto f = reinterpret_cast<DnnlSgemm>(dnnl("dnnl_sgemm"));
    auto isa = reinterpret_cast<int (*)()>(dnnl("dnnl_get_effective_cpu_isa"));
    return f && isa && (isa() & 0x27) == 0x27 ? f : DnnlSgemm(nullptr);
  }();
  return found;
#else
  return nullptr;
#endif
}

// oneDNN's f32 gemm kernels (before 3.11.2) point the stack pointer into a heap buffer while they run, so a signal
// handled on that thread writes its frame into the heap (uxlfoundation/oneDNN#4845): with Deno's signal listeners
// installed, a Ctrl-C during a step aborted the run with glibc's "corrupted size vs. prev_size". The asynchronous
// signals are blocked on the threads that run those kernels: the caller for the call, its OpenMP workers for good (they
// never take a signal meant for the process); such signals go to another thread, or wait until the call returns.
const sigset_t& asynchronous_signals() {
  static const sigset_t set = [] {
    sigset_t all;
    sigfillset(&all);
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&all, fault);
    return all;
  }();
  return set;
}
// OpenMP ends the workers a smaller team leaves idle (oneDNN's parallel regions can be smaller than libtorch's) and
// starts new ones later, with the mask of whoever starts them: each worker that blocks the signals counts itself in its
// caller's tally until it ends, and a tally short of the team calls for another pass.
struct Blocking {
  std::shared_ptr<std::atomic<int>> tally;
  ~Blocking() {
    if (tally) --*tally;
  }
};
void block_signals_in_workers() {
  thread_local const auto tally = std::make_shared<std::atomic<int>>(0);
  const int n = at::get_num_threads();
  if (n < 2 || *tally >= n - 1) return;
  const pthread_t caller = pthread_self();
  // The caller's tally, by value: named in the lambda, the thread_local would be each worker's own, never made.
  const std::shared_ptr<std::atomic<int>> callers = tally;
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    thread_local Blocking blocking;
    if (pthread_equal(pthread_self(), caller) || blocking.tally) return;
    pthread_sigmask(SIG_BLOCK, &asynchronous_signals(), nullptr);
    blocking.tally = callers;
    ++*callers;
  });
}
struct SignalsBlocked {
  sigset_t before;
  SignalsBlocked() {
    block_signals_in_workers();
    pthread_sigmask(SIG_BLOCK, &asynchronous_signals(), &before);
  }
  ~SignalsBlocked() { pthread_sigmask(SIG_SETMASK, &before, nullptr); }
};

void gemm_rm(char ta, char tb, int64_t m, int64_t n, int64_t k, const at::Tensor& a, int64_t lda, const at::Tensor& b,
             int64_t ldb, float beta, at::Tensor& c) {
  const SignalsBlocked during_the_call;
  const int status = dnnl_sgemm()(ta, tb, m, n, k, 1.f, a.data_ptr<float>(), lda, b.data_ptr<float>(), ldb, beta,
                                  c.data_ptr<float>(), n);
  if (status != 0) throw std::runtime_error("oneDNN's sgemm failed with status " + std::to_string(status));
}

bool dnnl_fits(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  auto cpu_f32 = [](const at::Tensor& t) {
    return t.device().type() == at::kCPU && t.scalar_type() == at::kFloat && t.layout() == at::kStrided;
  };
  return dnnl_sgemm() && x.dim() >= 2 && w.dim() == 2 && cpu_f32(x) && cpu_f32(w) && x.size(-1) == w.size(1) &&
         x.numel() > 0 && w.numel() > 0 && (!b || !b->defined() || (b->dim() == 1 && cpu_f32(*b)));
}

// y = x W^T + b over the rows of x, as addmm does it: the bias copied into y, then y += x W^T.
struct DnnlLinear : torch::autograd::Function<DnnlLinear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b) {
    RECORD_FUNCTION("dino::linear", std::vector<c10::IValue>());
    const int64_t in = w.size(1), out = w.size(0);
    const auto rows = x.reshape({-1, in}).contiguous();
    const auto weight = w.contiguous();
    // A fresh output: with one row, b.expand(...).contiguous() is b itself, and the product would land in the bias.
    auto y = at::empty({rows.size(0), out}, b.options());
    y.copy_(b);
    gemm_rm('N', 'T', rows.size(0), out, in, rows, in, weight, in, 1.f, y);
    ctx->save_for_backward({x, w});  // the inputs, not the copies: a second derivative needs their history
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    return y.view(sizes);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::linear_backward", std::vector<c10::IValue>());
    const auto saved = ctx->get_saved_variables();
    const int64_t in = saved[1].size(1), out = saved[1].size(0);
    const auto rows = saved[0].reshape({-1, in}).contiguous(), w = saved[1].contiguous();
    const int64_t n = rows.size(0);
    const auto g = grads[0].reshape({-1, out}).contiguous();
    at::Tensor gx, gw, gb;
    if (c10::GradMode::is_enabled()) {  // a backward that builds a graph (second derivatives): differentiable ops
      if (ctx->needs_input_grad(0)) gx = at::mm(g, w);
      if (ctx->needs_input_grad(1)) gw = at::mm(g.t(), rows);
    } else {
      if (ctx->needs_input_grad(0)) {
        gx = at::empty({n, in}, g.options());
        gemm_rm('N', 'N', n, in, out, g, out, w, in, 0.f, gx);
      }
      if (ctx->needs_input_grad(1)) {
        gw = at::empty({out, in}, g.options());
        gemm_rm('T', 'N', out, in, n, g, out, rows, in, 0.f, gw);
      }
    }
    if (ctx->needs_input_grad(2)) gb = c10::GradMode::is_enabled() ? g.sum(0) : column_sums(g);
    if (gx.defined()) {
      auto sizes = grads[0].sizes().vec();
      sizes.back() = in;
      gx = gx.view(sizes);
    }
    return {gx, gw, gb};
  }
};

bool bf16_fits(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
#ifdef DINO_AVX512
  auto cpu_bf16 = [](const at::Tensor& t) {
    return t.device().type() == at::kCPU && t.scalar_type() == at::kBFloat16 && t.layout() == at::kStrided;
  };
  // The inputs that at::linear sends to one addmm: 2-D, or contiguous 3-D, with a bias.
  return avx512_runs() && (x.dim() == 2 || (x.dim() == 3 && x.is_contiguous())) && w.dim() == 2 && b &&
         b->defined() && b->dim() == 1 && cpu_bf16(x) && cpu_bf16(w) && cpu_bf16(*b) && x.size(-1) == w.size(1) &&
         x.numel() > 0 && w.numel() > 0;
#else
  return false;
#endif
}

// bf16 y = x W^T + b as at::linear computes it (one addmm over the rows of x), and its backward as autograd's
// (AddmmBackward's two products), but for the bias's gradient, summed by column_sums.
struct Bf16Linear : torch::autograd::Function<Bf16Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b) {
    RECORD_FUNCTION("dino::linear", std::vector<c10::IValue>());
    const auto y = at::addmm(b, x.reshape({-1, w.size(1)}), w.t());
    ctx->save_for_backward({x, w});
    auto sizes = x.sizes().vec();
    sizes.back() = w.size(0);
    return y.view(sizes);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    RECORD_FUNCTION("dino::linear_backward", std::vector<c10::IValue>());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const auto rows = x.reshape({-1, w.size(1)});
    const auto g = grads[0].reshape({-1, w.size(0)});
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = at::mm(g, w).view(x.sizes());
    if (ctx->needs_input_grad(1)) gw = at::mm(g.t(), rows);
    // A backward that builds a graph (second derivatives) needs differentiable ops.
    if (ctx->needs_input_grad(2)) gb = c10::GradMode::is_enabled() ? g.sum(0) : column_sums(g);
    return {gx, gw, gb};
  }
};

}  // namespace

at::Tensor fast_linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) {
  if (bf16_fits(x, w, b)) return Bf16Linear::apply(x, w, *b);
  if (!dnnl_fits(x, w, b)) return at::linear(x, w, b);
  // Without a bias, a zero one (autograd functions take no undefined inputs): adding zeros changes no number.
  return DnnlLinear::apply(x, w, b && b->defined() ? *b : at::zeros({w.size(0)}, w.options()));
}

at::Tensor small_matmul(const at::Tensor& a, const at::Tensor& b) {
  return fast(a, b) ? SmallProducts::apply(a, b) : at::matmul(a, b);
}

at::Tensor small_bmm(const at::Tensor& a, const at::Tensor& b) {
  return a.dim() == 3 && fast(a, b) ? SmallProducts::apply(a, b) : at::bmm(a, b);
}
