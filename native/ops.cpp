// The op table: one line per op, each a libtorch call wrapped by an entry-point macro from shim.h. No design
// lives here, only dispatch; the helpers above the table are the ops that are more than one libtorch call.
#include "shim.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

// CUDA is reached through ATen's hooks, which need none of CUDA's own headers (c10/cuda/*.h include
// cuda_runtime_api.h): the shim builds against a pip CUDA PyTorch with no CUDA toolkit, and these calls exist
// from libtorch 1.13 to 2.14.
#include <ATen/detail/CUDAHooksInterface.h>

std::atomic<int64_t> live_tensors{0};

// ---- helpers for ops that are more than one libtorch call ------------------
// The byte count is checked against the shape before anything is allocated: a shape of a terabyte over a
// buffer of four bytes is an error, not an allocation.
static at::Tensor from_data(const void* data, int64_t nbytes, int64_t dtype, std::vector<int64_t> shape) {
  uint64_t need = c10::elementSize(scalar_type(dtype));
  for (const int64_t s : shape) {
    if (s < 0) throw std::runtime_error("from_data: negative size in the shape " + c10::str(shape));
    if (s != 0 && need > UINT64_MAX / static_cast<uint64_t>(s)) need = UINT64_MAX;  // saturate: cannot match
    else need *= static_cast<uint64_t>(s);
  }
  if (nbytes < 0 || need != static_cast<uint64_t>(nbytes)) {
    throw std::runtime_error("data has " + std::to_string(nbytes) + " bytes but shape " + c10::str(shape) +
                             " and dtype need " + (need == UINT64_MAX ? "more than 2^64" : std::to_string(need)));
  }
  auto t = at::empty(shape, opts(dtype, -1));
  if (nbytes > 0) std::memcpy(t.data_ptr(), data, nbytes);
  return t;
}
static double copy_to(const at::Tensor& a, void* out, int64_t nbytes) {
  auto t = a.detach().to(at::kCPU).contiguous();
  if (static_cast<int64_t>(t.nbytes()) != nbytes) throw std::runtime_error("output buffer has the wrong size");
  if (nbytes > 0) std::memcpy(out, t.data_ptr(), nbytes);
  return 0;
}
static at::Tensor leaf(const at::Tensor& a, bool flag) {
  auto r = a.detach();
  r.set_requires_grad(flag);
  return r;
}
static std::vector<at::Tensor> grad(const at::Tensor& y, std::vector<at::Tensor> xs, bool retain, bool create) {
  auto gs = torch::autograd::grad({y}, xs, {}, retain, create, /*allow_unused=*/true);
  for (size_t i = 0; i < gs.size(); i++) {
    if (!gs[i].defined()) gs[i] = at::zeros_like(xs[i]);
    // A broadcast gradient (of sum(), of an expanded input) has many elements at one address; made dense, it can be
    // updated in place like any other.
    if (!gs[i].is_non_overlapping_and_dense()) gs[i] = gs[i].contiguous();
    // Autograd may hand two inputs one buffer (the grad of a + b is the same tensor for both); each gets its own,
    // so a caller may update a gradient in place.
    for (size_t j = 0; j < i; j++) {
      if (gs[i].is_alias_of(gs[j])) {
        gs[i] = gs[i].clone();
        break;
      }
    }
  }
  return gs;
}
// OpenBLAS keeps its own thread pool beside libtorch's, sized to every core, and libtorch's thread count does not
// reach it. Which BLAS libtorch loaded is the system's choice, so its thread setters are looked up at run time.
void* loaded_symbol(std::initializer_list<const char*> libs, const char* name) {
  for (const char* lib : libs) {
    void* handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
    if (!handle) continue;
    void* symbol = dlsym(handle, name);
    dlclose(handle);
    if (symbol) return symbol;
  }
  return nullptr;
}
void* blas_symbol(const char* name) {
  void* symbol = loaded_symbol({"libopenblas.so.0", "libblas.so.3", "libopenblas.so"}, name);
  return symbol ? symbol : dlsym(RTLD_DEFAULT, name);
}
static int blas_threads() {
  auto get = reinterpret_cast<int (*)()>(blas_symbol("openblas_get_num_threads"));
  return get ? get() : -1;
}
static int set_threads(int n) {
  at::set_num_threads(n);
  if (auto set = reinterpret_cast<void (*)(int)>(blas_symbol("openblas_set_num_threads"))) set(n);
  return 0;
}
static at::Tensor sum(const at::Tensor& a, std::vector<int64_t> dims, bool keep) {
  return dims.empty() ? at::sum(a) : at::sum(a, dims, keep);
}
static at::Tensor mean(const at::Tensor& a, std::vector<int64_t> dims, bool keep) {
  return dims.empty() ? at::mean(a) : at::mean(a, dims, keep);
}
// The unbiased flag, not the correction, because the correction's type differs between libtorch 1.x and 2.x.
static at::Tensor variance(const at::Tensor& a, std::vector<int64_t> dims, int correction, bool keep) {
  if (correction != 0 && correction != 1) throw std::runtime_error("variance correction must be 0 or 1");
  if (dims.empty())
    for (int64_t d = 0; d < a.dim(); d++) dims.push_back(d);
  return at::var(a, at::IntArrayRef(dims), correction == 1, keep);
}
static at::Tensor norm(const at::Tensor& a, double p, std::vector<int64_t> dims, bool keep) {
  return dims.empty() ? at::norm(a, p) : at::norm(a, p, dims, keep);
}
static at::Tensor interpolate(const at::Tensor& x, std::vector<int64_t> size, int64_t mode, bool align_corners,
                              bool antialias, double scale_h, double scale_w) {
  const auto sh = maybe(scale_h), sw = maybe(scale_w);
  switch (mode) {
    case 0: return at::upsample_nearest2d(x, size, sh, sw);
    case 1: return antialias ? at::_upsample_bilinear2d_aa(x, size, align_corners, sh, sw)
                             : at::upsample_bilinear2d(x, size, align_corners, sh, sw);
    case 2: return antialias ? at::_upsample_bicubic2d_aa(x, size, align_corners, sh, sw)
                             : at::upsample_bicubic2d(x, size, align_corners, sh, sw);
  }
  throw std::runtime_error("interpolate mode must be 0 (nearest), 1 (bilinear) or 2 (bicubic)");
}
static at::Tensor pad(const at::Tensor& x, std::vector<int64_t> pads, int64_t mode, double value) {
  static const char* modes[] = {"constant", "reflect", "replicate", "circular"};
  if (mode < 0 || mode > 3) throw std::runtime_error("pad mode must be 0..3");
  return at::pad(x, pads, modes[mode], mode == 0 ? c10::optional<double>(value) : c10::nullopt);
}
// libtorch 1.13's CPU kernel reads one g per slice of v without checking g's size: a short g is read out of bounds
// (garbage, or a crash).
static at::Tensor weight_norm(const at::Tensor& v, const at::Tensor& g, int64_t dim) {
  const int64_t slices = dim == -1 ? 1 : v.size(dim);  // -1: the whole of v, as torch's dim=None
  if (g.numel() != slices) {
    throw std::runtime_error("g holds " + std::to_string(g.numel()) + " value(s), v " +
                             c10::str(v.sizes()) + " needs one per slice along dim " + std::to_string(dim) + " (" +
                             std::to_string(slices) + ")");
  }
  return at::_weight_norm(v, g, dim);
}
static std::vector<at::Tensor> batch_norm(const at::Tensor& x, T w, T b, T mean, T var, bool training,
                                          double momentum, double eps) {
  // Running statistics are cloned so that the caller's tensors are never mutated.
  auto m = mean ? mean->clone() : at::Tensor();
  auto v = var ? var->clone() : at::Tensor();
  auto out = at::batch_norm(x, maybe(w), maybe(b), m.defined() ? c10::optional<at::Tensor>(m) : c10::nullopt,
                            v.defined() ? c10::optional<at::Tensor>(v) : c10::nullopt, training, momentum, eps,
                            /*cudnn_enabled=*/true);
  std::vector<at::Tensor> r{out};
  if (m.defined()) r.push_back(m);
  if (v.defined()) r.push_back(v);
  return r;
}
static at::Tensor dropout(at::Generator* g, const at::Tensor& x, double p, bool train) {
  if (!train || p == 0) return x.clone();
  if (p == 1) return at::zeros_like(x);
  auto keep = at::empty(x.sizes(), x.options().device(at::kCPU)).bernoulli_(1 - p, *g).to(x.device());
  return x * keep / (1 - p);
}
// Row i: `count` uniforms on [0, 1) from a generator of its own seeded with seeds[i], the numbers a fresh
// Generator(seeds[i]) draws: many samples' own streams in one call.
static at::Tensor uniform_rows(const int64_t* seeds, int n, int64_t count, int dtype) {
  auto out = at::empty({n, count}, opts(dtype, -1));
  for (int i = 0; i < n; i++) {
    out[i].uniform_(0, 1, at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seeds[i])));
  }
  return out;
}
static double cuda_device_count() {
#ifdef DINO_CUDA
  return at::detail::getCUDAHooks().getNumGPUs();
#else
  return 0;
#endif
}
// torch.backends.cudnn.enabled: returns what it was.
static double cudnn_enabled(bool on) {
  const bool was = at::globalContext().userEnabledCuDNN();
  at::globalContext().setUserEnabledCuDNN(on);
  return was ? 1 : 0;
}
static double synchronize() {
#ifdef DINO_CUDA
  const auto& hooks = at::detail::getCUDAHooks();
  if (hooks.getNumGPUs() > 0) hooks.deviceSynchronize(static_cast<c10::DeviceIndex>(hooks.current_device()));
#endif
  return 0;
}
// libtorch's own op profiler, as torch.autograd.profiler.profile(use_kineto=False) runs it: every op (autograd's
// backward nodes and their kernels included) from start to stop, written as a Chrome trace when it stops. The
// profiler is one per process, so the recording is too.
static std::unique_ptr<torch::autograd::profiler::RecordProfile> recording;
static double profile_start(const char* path) {
  if (recording) throw std::runtime_error("profile_start: a profile is already being recorded");
  // RecordProfile writes when it stops, and swallows a failure to (printing libtorch's trace): try the path first.
  if (!std::ofstream(path)) {
    throw std::runtime_error(std::string("cannot write the profile to ") + path + ": " + std::strerror(errno));
  }
  recording = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(path));
  return 0;
}
static double profile_stop() {
  if (!recording) throw std::runtime_error("profile_stop: no profile is being recorded");
  recording.reset();  // stops the profiler and writes the trace
  return 0;
}

// The floor under any binding's small op (bench/compare_small_op.ts): libtorch's own add of a and b, n times from
// C++ with each result freed, in seconds per add.
static double add_seconds(const at::Tensor& a, const at::Tensor& b, double n) {
  const int64_t count = whole(n);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < count; i++) at::add(a, b);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / std::max<int64_t>(count, 1);
}

static double version(Ctx* c) {
  std::strncpy(c->message, TORCH_VERSION, sizeof(c->message) - 1);
#ifdef DINO_CUDA
  return 1;
#else
  return 0;
#endif
}

// ---- the op-table macros -----------------------------------------------------
#define UNARY(name) TENSOR(name, (T a), at::name(*a))
#define BINARY(name) TENSOR(name, (T a, T b), at::name(*a, *b))
#define BINARY_SCALAR(name, fn) TENSOR(name, (T a, double s), at::fn(*a, num(s)))

// ---- handles: no Ctx, cannot fail ------------------------------------------
extern "C" void dn_free(T t) {
  if (!t) return;
  delete t;
  live_tensors--;
}
extern "C" void dn_list_free(L l) { delete l; }
extern "C" void dn_generator_free(G g) { delete g; }
extern "C" double dn_live_tensors() { return static_cast<double>(live_tensors.load()); }

TENSOR(list_take, (L l, int i), l->at(i))
TENSOR(alias, (T a), *a)

// ---- data in and out ---------------------------------------------------------
TENSOR(from_data, (const void* data, int64_t nbytes, int dtype, INTS(shape)), from_data(data, nbytes, dtype, IV(shape)))
SCALAR(copy_to, (T a, void* out, int64_t nbytes), copy_to(*a, out, nbytes))
SCALAR(item, (T a), a->item<double>())

// ---- creation ----------------------------------------------------------------
TENSOR(empty, (INTS(shape), int dtype, int dev), at::empty(IV(shape), opts(dtype, dev)))
TENSOR(zeros, (INTS(shape), int dtype, int dev), at::zeros(IV(shape), opts(dtype, dev)))
TENSOR(ones, (INTS(shape), int dtype, int dev), at::ones(IV(shape), opts(dtype, dev)))
TENSOR(full, (INTS(shape), double v, int dtype, int dev), at::full(IV(shape), v, opts(dtype, dev)))
TENSOR(arange, (double start, double end, double step, int dtype, int dev), at::arange(start, end, step, opts(dtype, dev)))
TENSOR(linspace, (double start, double end, double steps, int dtype, int dev), at::linspace(start, end, whole(steps), opts(dtype, dev)))
TENSOR(eye, (double n, int dtype, int dev), at::eye(whole(n), opts(dtype, dev)))
TENSOR(zeros_like, (T a), at::zeros_like(*a))
TENSOR(ones_like, (T a), at::ones_like(*a))
TENSOR(full_like, (T a, double v), at::full_like(*a, v))

// ---- random, always drawn on the CPU from an explicit generator --------------
extern "C" G dn_generator_new ARGS(int64_t seed) {
  try {
    return new at::Generator(at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed)));
  }
  CATCH(nullptr)
}
extern "C" G dn_generator_from_state ARGS(T state) {
  try {
    auto g = at::make_generator<at::CPUGeneratorImpl>();
    g.set_state(*state);
    return new at::Generator(std::move(g));
  }
  CATCH(nullptr)
}
TENSOR(generator_state, (G g), g->get_state())
TENSOR(uniform, (G g, INTS(shape), double lo, double hi, int dtype, int dev), at::empty(IV(shape), opts(dtype, -1)).uniform_(lo, hi, *g).to(device(dev)))
TENSOR(normal, (G g, INTS(shape), double mean, double std, int dtype, int dev), at::empty(IV(shape), opts(dtype, -1)).normal_(mean, std, *g).to(device(dev)))
TENSOR(bernoulli, (G g, T p), at::bernoulli(p->to(at::kCPU), *g).to(p->device()))
TENSOR(bernoulli_scalar, (G g, INTS(shape), double p, int dtype, int dev), at::empty(IV(shape), opts(dtype, -1)).bernoulli_(p, *g).to(device(dev)))
TENSOR(randint, (G g, double lo, double hi, INTS(shape), int dtype, int dev), at::randint(static_cast<int64_t>(lo), static_cast<int64_t>(hi), IV(shape), *g, opts(dtype, -1)).to(device(dev)))
TENSOR(uniform_rows, (const void* seeds, int n, double count, int dtype), uniform_rows(static_cast<const int64_t*>(seeds), n, whole(count), dtype))
TENSOR(randperm, (G g, double n, int dtype, int dev), at::randperm(whole(n), *g, opts(dtype, -1)).to(device(dev)))
TENSOR(dropout, (G g, T x, double p, bool train), dropout(g, *x, p, train))

// ---- dtype and device ----------------------------------------------------------
TENSOR(to_dtype, (T a, int dtype), a->to(scalar_type(dtype)))
TENSOR(to_device, (T a, int dev), a->to(device(dev)))

// ---- shape -------------------------------------------------------------------------
TENSOR(reshape, (T a, INTS(shape)), at::reshape(*a, IV(shape)))
TENSOR(permute, (T a, INTS(dims)), a->permute(IV(dims)))
TENSOR(transpose, (T a, int d0, int d1), at::transpose(*a, d0, d1))
TENSOR(narrow, (T a, int dim, double start, double length), at::narrow(*a, dim, whole(start), whole(length)))
TENSOR(slice, (T a, int dim, double start, double end, double step), at::slice(*a, dim, whole(start), whole(end), whole(step)))
TENSOR(select, (T a, int dim, double index), at::select(*a, dim, whole(index)))
TENSOR(index_select, (T a, int dim, T index), at::index_select(*a, dim, *index))
TENSOR(gather, (T a, int dim, T index), at::gather(*a, dim, *index))
TENSOR(cat, (TENSORS(ts), int dim), at::cat(TV(ts), dim))
TENSOR(stack, (TENSORS(ts), int dim), at::stack(TV(ts), dim))
LIST(chunk, (T a, double chunks, int dim), at::chunk(*a, whole(chunks), dim))
LIST(unbind, (T a, int dim), at::unbind(*a, dim))
LIST(split, (T a, INTS(sizes), int dim), at::split_with_sizes(*a, IV(sizes), dim))
TENSOR(expand, (T a, INTS(shape)), a->expand(IV(shape)))
TENSOR(repeat, (T a, INTS(times)), a->repeat(IV(times)))
TENSOR(flip, (T a, INTS(dims)), at::flip(*a, IV(dims)))
TENSOR(flatten, (T a, int start, int end), at::flatten(*a, start, end))
TENSOR(squeeze, (T a, int dim), at::squeeze(*a, dim))
TENSOR(squeeze_all, (T a), at::squeeze(*a))
TENSOR(unsqueeze, (T a, int dim), at::unsqueeze(*a, dim))
TENSOR(contiguous, (T a), a->contiguous())
TENSOR(clone, (T a), a->clone())

// ---- elementwise -------------------------------------------------------------------
TENSOR(add, (T a, T b, double alpha), at::add(*a, *b, num(alpha)))
TENSOR(sub, (T a, T b, double alpha), at::sub(*a, *b, num(alpha)))
BINARY(mul)
BINARY(div)
BINARY(pow)
BINARY(maximum)
BINARY(minimum)
BINARY(remainder)
BINARY(atan2)
BINARY(eq)
BINARY(ne)
BINARY(lt)
BINARY(le)
BINARY(gt)
BINARY(ge)
BINARY(logical_and)
BINARY(logical_or)
BINARY_SCALAR(add_scalar, add)
BINARY_SCALAR(mul_scalar, mul)
BINARY_SCALAR(div_scalar, div)
BINARY_SCALAR(pow_scalar, pow)
BINARY_SCALAR(remainder_scalar, remainder)
BINARY_SCALAR(eq_scalar, eq)
BINARY_SCALAR(ne_scalar, ne)
BINARY_SCALAR(lt_scalar, lt)
BINARY_SCALAR(le_scalar, le)
BINARY_SCALAR(gt_scalar, gt)
BINARY_SCALAR(ge_scalar, ge)
TENSOR(addcmul, (T a, T b, T c, double value), at::addcmul(*a, *b, *c, value))
TENSOR(addcdiv, (T a, T b, T c, double value), at::addcdiv(*a, *b, *c, value))
TENSOR(rsub_scalar, (T a, double s, double alpha), at::rsub(*a, num(s), num(alpha)))
UNARY(neg)
UNARY(abs)
UNARY(exp)
UNARY(log)
UNARY(sqrt)
UNARY(rsqrt)
UNARY(sin)
UNARY(cos)
UNARY(tanh)
UNARY(sigmoid)
UNARY(erf)
UNARY(floor)
UNARY(ceil)
UNARY(round)
UNARY(sign)
UNARY(reciprocal)
UNARY(relu)
UNARY(logical_not)
UNARY(isfinite)
UNARY(isnan)
TENSOR(where, (T cond, T a, T b), at::where(*cond, *a, *b))
TENSOR(clamp, (T a, double lo, double hi), at::clamp(*a, maybe_scalar(lo), maybe_scalar(hi)))

// ---- reductions (an empty dim list reduces everything) ---------------------------------
TENSOR(sum, (T a, INTS(dims), bool keep), sum(*a, IV(dims), keep))
TENSOR(mean, (T a, INTS(dims), bool keep), mean(*a, IV(dims), keep))
TENSOR(var, (T a, INTS(dims), int correction, bool keep), variance(*a, IV(dims), correction, keep))
TENSOR(amax, (T a, INTS(dims), bool keep), at::amax(*a, IV(dims), keep))
TENSOR(amin, (T a, INTS(dims), bool keep), at::amin(*a, IV(dims), keep))
LIST(max_dim, (T a, int dim, bool keep), at::max(*a, dim, keep))
LIST(min_dim, (T a, int dim, bool keep), at::min(*a, dim, keep))
TENSOR(norm, (T a, double p, INTS(dims), bool keep), norm(*a, p, IV(dims), keep))
TENSOR(logsumexp, (T a, INTS(dims), bool keep), at::logsumexp(*a, IV(dims), keep))
TENSOR(argmax, (T a, int dim, bool keep), at::argmax(*a, dim, keep))
TENSOR(argmin, (T a, int dim, bool keep), at::argmin(*a, dim, keep))
LIST(topk, (T a, double k, int dim, bool largest, bool sorted), at::topk(*a, whole(k), dim, largest, sorted))
LIST(sort, (T a, int dim, bool descending), at::sort(*a, dim, descending))
TENSOR(cumsum, (T a, int dim), at::cumsum(*a, dim))
TENSOR(all, (T a), at::all(*a))
TENSOR(any, (T a), at::any(*a))

// ---- linear algebra and neural-network ops --------------------------------------------
TENSOR(matmul, (T a, T b), small_matmul(*a, *b))
TENSOR(bmm, (T a, T b), small_bmm(*a, *b))
TENSOR(linear, (T x, T w, T b), fast_linear(*x, *w, maybe(b)))
TENSOR(conv2d, (T x, T w, T b, INTS(stride), INTS(padding), INTS(dilation), int groups), at::conv2d(*x, *w, maybe(b), IV(stride), IV(padding), IV(dilation), groups))
TENSOR(max_pool2d, (T x, INTS(kernel), INTS(stride), INTS(padding), INTS(dilation), bool ceil), at::max_pool2d(*x, IV(kernel), IV(stride), IV(padding), IV(dilation), ceil))
TENSOR(adaptive_avg_pool2d, (T x, INTS(size)), at::adaptive_avg_pool2d(*x, IV(size)))
TENSOR(layer_norm, (T x, INTS(shape), T w, T b, double eps, int dtype), fast_layer_norm(*x, IV(shape), maybe(w), maybe(b), eps, dtype < 0 ? c10::nullopt : c10::optional<at::ScalarType>(scalar_type(dtype))))
LIST(add_layer_norm, (T x, T y, INTS(shape), T w, T b, double eps, int dtype), add_layer_norm(*x, *y, IV(shape), maybe(w), maybe(b), eps, dtype < 0 ? c10::nullopt : c10::optional<at::ScalarType>(scalar_type(dtype))))
LIST(batch_norm, (T x, T w, T b, T mean, T var, bool training, double momentum, double eps), batch_norm(*x, w, b, mean, var, training, momentum, eps))
TENSOR(gelu, (T x, bool tanh), fast_gelu(*x, tanh))
TENSOR(softmax, (T x, int dim), at::softmax(*x, dim))
TENSOR(log_softmax, (T x, int dim), at::log_softmax(*x, dim))
LIST(scaled_softmax, (T x, double scale, bool low), scaled_softmax(*x, scale, low))
TENSOR(interpolate, (T x, INTS(size), int mode, bool align_corners, bool antialias, double scale_h, double scale_w), interpolate(*x, IV(size), mode, align_corners, antialias, scale_h, scale_w))
TENSOR(affine_grid, (T theta, INTS(size), bool align_corners), at::affine_grid_generator(*theta, IV(size), align_corners))
TENSOR(grid_sample, (T x, T grid, int mode, int padding, bool align_corners), at::grid_sampler(*x, *grid, code(mode, 2, "grid_sample mode"), code(padding, 2, "grid_sample padding"), align_corners))
TENSOR(pad, (T x, INTS(pads), int mode, double value), pad(*x, IV(pads), mode, value))
TENSOR(one_hot, (T x, int classes), at::one_hot(*x, classes))
TENSOR(weight_norm, (T v, T g, int dim), weight_norm(*v, *g, dim))
TENSOR(index_copy, (T a, int dim, T index, T source), at::index_copy(*a, dim, *index, *source))
SCALAR(copy_into, (T dst, T src), (dst->copy_(*src), 0))
SCALAR(index_copy_into, (T dst, int dim, T index, T src), (dst->index_copy_(dim, *index, *src), 0))

// ---- updates written into donated buffers ---------------------------------------------
// torch.optim.AdamW (single-tensor), the official EMA and gradient clipping, kernel for kernel: the same numbers as
// the fresh-result ops, without the copy into the donated buffer each of those needed.
static int adamw_into(at::Tensor& p, const at::Tensor& g, at::Tensor& m, at::Tensor& v, double decay, double beta1,
                      double beta2, double eps, double bc2_sqrt, double step_size) {
  at::NoGradGuard no_grad;
  if (decay != 1) p.mul_(decay);
  m.mul_(beta1).add_(g, 1 - beta1);
  v.mul_(beta2).addcmul_(g, g, 1 - beta2);
  p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), step_size);
  return 0;
}
static int ema_into(at::Tensor& teacher, const at::Tensor& student, double momentum) {
  at::NoGradGuard no_grad;
  teacher.mul_(momentum).add_(student * (1 - momentum));
  return 0;
}
static int mul_into(at::Tensor& dst, const at::Tensor& factor) {
  at::NoGradGuard no_grad;
  dst.mul_(factor);
  return 0;
}
SCALAR(adamw_into, (T p, T g, T m, T v, double decay, double b1, double b2, double eps, double bc2_sqrt, double step_size), adamw_into(*p, *g, *m, *v, decay, b1, b2, eps, bc2_sqrt, step_size))
SCALAR(ema_into, (T teacher, T student, double momentum), ema_into(*teacher, *student, momentum))
SCALAR(mul_into, (T dst, T factor), mul_into(*dst, *factor))

// ---- autograd -------------------------------------------------------------------------
TENSOR(requires_grad, (T a, bool flag), leaf(*a, flag))
TENSOR(detach, (T a), a->detach())
LIST(grad, (T y, TENSORS(xs), bool retain, bool create), grad(*y, TV(xs), retain, create))
SCALAR(set_grad_enabled, (bool on), (c10::GradMode::is_enabled() ? (c10::GradMode::set_enabled(on), 1) : (c10::GradMode::set_enabled(on), 0)))

// ---- runtime -----------------------------------------------------------------------------
SCALAR(get_num_threads, (), at::get_num_threads())
SCALAR(set_num_threads, (int n), set_threads(n))
SCALAR(get_blas_threads, (), blas_threads())
SCALAR(cuda_device_count, (), cuda_device_count())
SCALAR(cuda_synchronize, (), synchronize())
SCALAR(set_cudnn_enabled, (bool on), cudnn_enabled(on))
SCALAR(get_cudnn_enabled, (), at::globalContext().userEnabledCuDNN() ? 1 : 0)
SCALAR(version, (), version(ctx_))
SCALAR(profile_start, (const char* path), profile_start(path))
SCALAR(profile_stop, (), profile_stop())
SCALAR(add_seconds, (T a, T b, double n), add_seconds(*a, *b, n))
