// A flat C ABI over libtorch for Deno FFI. No design lives here, only dispatch.
//
// Every entry point takes a `Ctx*` first: a caller-owned buffer through which
// the call reports its outcome (status, the result's dtype, device and shape,
// or the error message). Because the buffer belongs to the call, a nonblocking
// call on a worker thread reports its own error; nothing is thread-local.
//
// Ops are one line each in the tables below. The macros wrap every body in the
// same try/catch, so no C++ exception ever crosses into Deno.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/version.h>
#ifdef DINO_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#ifdef DINO_STB
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>
#endif

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

// Layout shared with ffi/lib.ts: 32 doubles, then the message.
struct Ctx {
  double status;  // 0 ok, 1 error
  double dtype;   // c10::ScalarType code
  double device;  // -1 cpu, k >= 0 cuda:k
  double requires_grad;
  double count;  // list results: how many tensors
  double ndim;
  double sizes[26];
  char message[768];
};
static_assert(sizeof(Ctx) == 1024, "Ctx layout is shared with TypeScript");

using T = at::Tensor*;
using G = at::Generator*;
using L = std::vector<at::Tensor>*;

static std::atomic<int64_t> live_tensors{0};

static void fail(Ctx* c, const char* message) {
  c->status = 1;
  std::strncpy(c->message, message, sizeof(c->message) - 1);
  c->message[sizeof(c->message) - 1] = 0;
}

static void describe(Ctx* c, const at::Tensor& t) {
  const int64_t ndim = t.dim();
  if (ndim > 26) throw std::runtime_error("tensors of more than 26 dimensions are not supported");
  c->dtype = static_cast<double>(t.scalar_type());
  c->device = t.is_cuda() ? t.device().index() : -1;
  c->requires_grad = t.requires_grad();
  c->ndim = static_cast<double>(ndim);
  const auto sizes = t.sizes();
  for (int64_t i = 0; i < ndim; i++) c->sizes[i] = static_cast<double>(sizes[i]);
}

static T wrap(Ctx* c, at::Tensor t) {
  if (!t.defined()) throw std::runtime_error("the op returned an undefined tensor");
  describe(c, t);
  live_tensors++;
  return new at::Tensor(std::move(t));
}

static L wrap_list(Ctx* c, std::vector<at::Tensor> ts) {
  c->count = static_cast<double>(ts.size());
  return new std::vector<at::Tensor>(std::move(ts));
}
template <typename... Ts>
static L wrap_list(Ctx* c, std::tuple<Ts...> ts) {
  return wrap_list(c, std::apply([](auto&&... t) { return std::vector<at::Tensor>{t...}; }, ts));
}

// ---- argument decoding -----------------------------------------------------
static std::vector<int64_t> ints(const double* p, int n) {
  return std::vector<int64_t>(p, p + n);
}
static std::vector<at::Tensor> tensors(const T* p, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; i++) out.push_back(*p[i]);
  return out;
}
static c10::optional<at::Tensor> maybe(T t) {
  return t ? c10::optional<at::Tensor>(*t) : c10::nullopt;
}
static c10::optional<double> maybe(double x) {
  return std::isnan(x) ? c10::nullopt : c10::optional<double>(x);
}
// JavaScript has one number type: an integral value becomes an integer Scalar, as Python's `1` (not `1.0`), so
// integer tensors stay integer and float tensors see the same value.
static at::Scalar num(double x) {
  return std::nearbyint(x) == x && std::fabs(x) < 9007199254740992.0 ? at::Scalar(static_cast<int64_t>(x))
                                                                     : at::Scalar(x);
}
static c10::optional<at::Scalar> maybe_scalar(double x) {
  return std::isnan(x) ? c10::nullopt : c10::optional<at::Scalar>(num(x));
}
static at::Device device(int64_t dev) {
  return dev < 0 ? at::Device(at::kCPU) : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dev));
}
static at::TensorOptions opts(int64_t dtype, int64_t dev) {
  return at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)).device(device(dev));
}

// ---- helpers for ops that are more than one libtorch call ------------------
static at::Tensor from_data(const void* data, int64_t nbytes, int64_t dtype, std::vector<int64_t> shape) {
  auto t = at::empty(shape, opts(dtype, -1));
  if (static_cast<int64_t>(t.nbytes()) != nbytes) {
    throw std::runtime_error("data has " + std::to_string(nbytes) + " bytes but shape and dtype need " +
                             std::to_string(t.nbytes()));
  }
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
  }
  return gs;
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
static double cuda_device_count() {
#ifdef DINO_CUDA
  return c10::cuda::device_count();
#else
  return 0;
#endif
}
static double synchronize() {
#ifdef DINO_CUDA
  c10::cuda::device_synchronize();
#endif
  return 0;
}
static double version(Ctx* c) {
  std::strncpy(c->message, TORCH_VERSION, sizeof(c->message) - 1);
#ifdef DINO_CUDA
  return 1;
#else
  return 0;
#endif
}

// ---- a caching CPU allocator --------------------------------------------------------
// Large buffers freed by one op are handed to the next op of the same (rounded) size instead of going back to
// the OS: where page faults are slow, a fresh 40 MB tensor costs far more than the arithmetic that fills it.
// PyTorch's CUDA allocator caches the same way; on the CPU it relies on malloc, which returns large blocks.
class CachingCPUAllocator final : public at::Allocator {
 public:
  // Smaller blocks come from malloc's bins; above this, glibc maps and unmaps fresh pages, whose faults cost
  // more than the work on them (a 200 KB plane: 15x).
  static constexpr size_t kMinBytes = size_t(1) << 15;
  // libtorch 1.x declares allocate() const, 2.x non-const and adds copy_data(): define all three (without
  // `override`, which would fail on one of them) so the shim builds against either.
  at::DataPtr allocate(size_t n) { return do_allocate(n); }
  at::DataPtr allocate(size_t n) const { return do_allocate(n); }
  void copy_data(void* dest, const void* src, size_t count) const { std::memcpy(dest, src, count); }
  // Blocks from 1 MiB come in quarter-octave size classes (less than a quarter unused), so that batches of varying
  // size share blocks instead of each faulting in fresh pages. From 8 MiB the classes are whole 2 MiB pages, which
  // are allocated aligned and as transparent huge pages where the kernel allows: one fault per 2 MiB, not 512.
  static constexpr size_t kClassBytes = size_t(1) << 20, kHugeBytes = size_t(8) << 20, kHugePage = size_t(2) << 20;
  static size_t rounded(size_t n) {
    if (n < kClassBytes) return (n + 4095) & ~size_t(4095);
    size_t step = kClassBytes >> 2;  // the class boundaries between 2^k and 2^(k+1) are 2^k (1 + i / 4)
    while (step * 8 < n) step <<= 1;
    return (n + step - 1) / step * step;
  }
  static void* fresh(size_t size) {
    if (size < kHugeBytes) return c10::alloc_cpu(size);
    void* p = nullptr;
    if (posix_memalign(&p, kHugePage, size) != 0 || !p) throw std::bad_alloc();
    madvise(p, size, MADV_HUGEPAGE);  // advisory: without THP it changes nothing
    return p;
  }
  at::DataPtr do_allocate(size_t n) const {
    void* p = nullptr;
    const size_t size = rounded(n);
    if (n >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mu_);
      // Best fit, wasting at most a quarter: batches of varying size still find a block.
      auto it = limit_ > 0 ? free_.lower_bound(size) : free_.end();
      if (it != free_.end() && it->first <= size + size / 4) {
        p = it->second;
        sizes_[p] = it->first;
        cached_ -= it->first;
        free_.erase(it);
        hits_++;
      } else {
        misses_++;
      }
    }
    if (!p) {
      p = n >= kMinBytes ? fresh(size) : c10::alloc_cpu(n);
      if (n >= kMinBytes) {
        std::lock_guard<std::mutex> lock(mu_);
        sizes_[p] = size;
      }
    }
    // ctx == data and a raw deleter: mkldnn frees through raw_deallocate.
    return {p, p, &release, at::Device(at::kCPU)};
  }
  at::DeleterFnPtr raw_deleter() const override { return &release; }
  static void release(void* p);
  void give_back(void* p) {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) {  // a small block
      lock.unlock();
      c10::free_cpu(p);
      return;
    }
    const size_t size = it->second;
    sizes_.erase(it);
    if (cached_ + size > limit_) {
      lock.unlock();
      c10::free_cpu(p);
      return;
    }
    // First among equal sizes, so the next request of this size gets the block freed last: still in cache.
    free_.emplace_hint(free_.lower_bound(size), size, p);
    cached_ += size;
  }
  void set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    while (cached_ > limit_ && !free_.empty()) {
      auto last = std::prev(free_.end());  // the largest blocks go first
      c10::free_cpu(last->second);
      cached_ -= last->first;
      free_.erase(last);
    }
  }
  double stat(int which) const {
    std::lock_guard<std::mutex> lock(mu_);
    return which == 0 ? double(cached_) : which == 1 ? double(hits_) : double(misses_);
  }

 private:
  mutable std::mutex mu_;
  mutable std::multimap<size_t, void*> free_;
  mutable std::unordered_map<void*, size_t> sizes_;
  mutable size_t cached_ = 0, hits_ = 0, misses_ = 0;
  size_t limit_ = 0;
};
static CachingCPUAllocator caching_allocator;
void CachingCPUAllocator::release(void* p) { caching_allocator.give_back(p); }
static double set_cpu_cache(double megabytes) {
  static std::once_flag installed;
  std::call_once(installed, [] { c10::SetCPUAllocator(&caching_allocator, /*priority=*/1); });
  caching_allocator.set_limit(static_cast<size_t>(megabytes * 1024 * 1024));
  return 0;
}

// ---- images, through stb (libstb-dev) -----------------------------------------
#ifdef DINO_STB
// Decodes `n` files (NUL-separated paths) on `threads` threads; each image is resized so that its short side is
// `side` (stb's filtered resize, antialiased when shrinking) and centre-cropped to side x side. Unreadable files
// are skipped. Returns [images u8 [ok, C, side, side], ok indices i64, failed indices i64]; the first failure's
// reason is left in the message.
static std::vector<at::Tensor> decode_images(Ctx* c, const char* paths, int n, int side, int channels, int threads) {
  if (side <= 0) throw std::runtime_error("decode side must be positive");
  if (channels != 1 && channels != 3) throw std::runtime_error("decode channels must be 1 or 3");
  std::vector<const char*> files;
  for (const char* p = paths; static_cast<int>(files.size()) < n; p += std::strlen(p) + 1) files.push_back(p);
  auto out = at::empty({n, channels, side, side}, at::kByte);
  uint8_t* base = out.data_ptr<uint8_t>();
  std::vector<std::string> why(n);
  std::atomic<int> next{0};
  auto work = [&]() {
    std::vector<uint8_t> resized;
    for (int i; (i = next++) < n;) {
      int w = 0, h = 0, comp = 0;
      unsigned char* img = stbi_load(files[i], &w, &h, &comp, channels);
      if (!img) {
        const char* r = stbi_failure_reason();
        why[i] = r ? r : "unreadable";
        continue;
      }
      const double s = static_cast<double>(side) / std::min(w, h);
      const int rw = std::max(side, static_cast<int>(std::lround(w * s)));
      const int rh = std::max(side, static_cast<int>(std::lround(h * s)));
      resized.resize(static_cast<size_t>(rw) * rh * channels);
      const int ok = stbir_resize_uint8(img, w, h, 0, resized.data(), rw, rh, 0, channels);
      stbi_image_free(img);
      if (!ok) {
        why[i] = "resize failed";
        continue;
      }
      const int x0 = (rw - side) / 2, y0 = (rh - side) / 2;
      uint8_t* dst = base + static_cast<size_t>(i) * channels * side * side;
      for (int ch = 0; ch < channels; ch++)
        for (int y = 0; y < side; y++)
          for (int x = 0; x < side; x++)
            dst[(ch * side + y) * side + x] = resized[(static_cast<size_t>(y0 + y) * rw + (x0 + x)) * channels + ch];
    }
  };
  std::vector<std::thread> pool;
  const int count = std::max(1, std::min(threads, n));
  for (int t = 1; t < count; t++) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  std::vector<int64_t> good, bad;
  for (int i = 0; i < n; i++) (why[i].empty() ? good : bad).push_back(i);
  if (!bad.empty()) {
    const std::string first = std::string(files[bad[0]]) + ": " + why[bad[0]];
    std::strncpy(c->message, first.c_str(), sizeof(c->message) - 1);
  }
  auto good_t = at::tensor(good, at::kLong), bad_t = at::tensor(bad, at::kLong);
  return {bad.empty() ? out : out.index_select(0, good_t), good_t, bad_t};
}
// Writes an HWC u8 image as PNG (format 0) or JPEG (format 1).
static double write_image(const char* path, const at::Tensor& image, int format, int quality) {
  if (image.scalar_type() != at::kByte || image.dim() != 3) throw std::runtime_error("write_image takes a u8 [H, W, C] tensor");
  auto t = image.to(at::kCPU).contiguous();
  const int h = t.size(0), w = t.size(1), ch = t.size(2);
  const int ok = format == 0 ? stbi_write_png(path, w, h, ch, t.data_ptr(), w * ch)
                             : stbi_write_jpg(path, w, h, ch, t.data_ptr(), quality);
  if (!ok) throw std::runtime_error(std::string("cannot write image ") + path);
  return 0;
}
#else
static std::vector<at::Tensor> decode_images(Ctx*, const char*, int, int, int, int) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
static double write_image(const char*, const at::Tensor&, int, int) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
#endif

// ---- the entry-point macros ------------------------------------------------
#define ARGS(...) (Ctx * ctx_, ##__VA_ARGS__)
#define CATCH(ret)                                                   \
  catch (const c10::Error& e) {                                      \
    fail(ctx_, e.what_without_backtrace());                             \
  }                                                                  \
  catch (const std::exception& e) {                                  \
    fail(ctx_, e.what());                                               \
  }                                                                  \
  catch (...) {                                                      \
    fail(ctx_, "unknown C++ exception");                                \
  }                                                                  \
  return ret;
// An op returning one tensor: the handle, or null with the message in c.
#define TENSOR(name, params, expr)                                   \
  extern "C" T dn_##name ARGS params {                               \
    try {                                                            \
      return wrap(ctx_, expr);                                          \
    }                                                                \
    CATCH(nullptr)                                                   \
  }
// An op returning several tensors: a list handle, its length in c->count.
#define LIST(name, params, expr)                                     \
  extern "C" L dn_##name ARGS params {                               \
    try {                                                            \
      return wrap_list(ctx_, expr);                                     \
    }                                                                \
    CATCH(nullptr)                                                   \
  }
// An op returning a number (or nothing, as 0): status 1 on error.
#define SCALAR(name, params, expr)                                   \
  extern "C" double dn_##name ARGS params {                          \
    try {                                                            \
      ctx_->status = 0;                                                 \
      return static_cast<double>(expr);                              \
    }                                                                \
    CATCH(NAN)                                                       \
  }
#define UNARY(name) TENSOR(name, (T a), at::name(*a))
#define BINARY(name) TENSOR(name, (T a, T b), at::name(*a, *b))
#define BINARY_SCALAR(name, fn) TENSOR(name, (T a, double s), at::fn(*a, num(s)))
#define INTS(n) const double *n##_p, int n##_n
#define IV(n) ints(n##_p, n##_n)
#define TENSORS(n) const T *n##_p, int n##_n
#define TV(n) tensors(n##_p, n##_n)

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
TENSOR(linspace, (double start, double end, int steps, int dtype, int dev), at::linspace(start, end, steps, opts(dtype, dev)))
TENSOR(eye, (int n, int dtype, int dev), at::eye(n, opts(dtype, dev)))
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
TENSOR(randperm, (G g, int n, int dtype, int dev), at::randperm(n, *g, opts(dtype, -1)).to(device(dev)))
TENSOR(dropout, (G g, T x, double p, bool train), dropout(g, *x, p, train))

// ---- dtype and device ----------------------------------------------------------
TENSOR(to_dtype, (T a, int dtype), a->to(static_cast<at::ScalarType>(dtype)))
TENSOR(to_device, (T a, int dev), a->to(device(dev)))

// ---- shape -------------------------------------------------------------------------
TENSOR(reshape, (T a, INTS(shape)), at::reshape(*a, IV(shape)))
TENSOR(permute, (T a, INTS(dims)), a->permute(IV(dims)))
TENSOR(transpose, (T a, int d0, int d1), at::transpose(*a, d0, d1))
TENSOR(narrow, (T a, int dim, int start, int length), at::narrow(*a, dim, start, length))
TENSOR(slice, (T a, int dim, int start, int end, int step), at::slice(*a, dim, start, end, step))
TENSOR(select, (T a, int dim, int index), at::select(*a, dim, index))
TENSOR(index_select, (T a, int dim, T index), at::index_select(*a, dim, *index))
TENSOR(gather, (T a, int dim, T index), at::gather(*a, dim, *index))
TENSOR(cat, (TENSORS(ts), int dim), at::cat(TV(ts), dim))
TENSOR(stack, (TENSORS(ts), int dim), at::stack(TV(ts), dim))
LIST(chunk, (T a, int chunks, int dim), at::chunk(*a, chunks, dim))
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
LIST(topk, (T a, int k, int dim, bool largest, bool sorted), at::topk(*a, k, dim, largest, sorted))
LIST(sort, (T a, int dim, bool descending), at::sort(*a, dim, descending))
TENSOR(cumsum, (T a, int dim), at::cumsum(*a, dim))
TENSOR(all, (T a), at::all(*a))
TENSOR(any, (T a), at::any(*a))

// ---- linear algebra and neural-network ops --------------------------------------------
BINARY(matmul)
BINARY(bmm)
TENSOR(linear, (T x, T w, T b), at::linear(*x, *w, maybe(b)))
TENSOR(conv2d, (T x, T w, T b, INTS(stride), INTS(padding), INTS(dilation), int groups), at::conv2d(*x, *w, maybe(b), IV(stride), IV(padding), IV(dilation), groups))
TENSOR(layer_norm, (T x, INTS(shape), T w, T b, double eps), at::layer_norm(*x, IV(shape), maybe(w), maybe(b), eps))
LIST(batch_norm, (T x, T w, T b, T mean, T var, bool training, double momentum, double eps), batch_norm(*x, w, b, mean, var, training, momentum, eps))
TENSOR(gelu, (T x, bool tanh), at::gelu(*x, tanh ? "tanh" : "none"))
TENSOR(softmax, (T x, int dim), at::softmax(*x, dim))
TENSOR(log_softmax, (T x, int dim), at::log_softmax(*x, dim))
TENSOR(interpolate, (T x, INTS(size), int mode, bool align_corners, bool antialias, double scale_h, double scale_w), interpolate(*x, IV(size), mode, align_corners, antialias, scale_h, scale_w))
TENSOR(affine_grid, (T theta, INTS(size), bool align_corners), at::affine_grid_generator(*theta, IV(size), align_corners))
TENSOR(grid_sample, (T x, T grid, int mode, int padding, bool align_corners), at::grid_sampler(*x, *grid, mode, padding, align_corners))
TENSOR(pad, (T x, INTS(pads), int mode, double value), pad(*x, IV(pads), mode, value))
TENSOR(one_hot, (T x, int classes), at::one_hot(*x, classes))
TENSOR(weight_norm, (T v, T g, int dim), at::_weight_norm(*v, *g, dim))
TENSOR(index_copy, (T a, int dim, T index, T source), at::index_copy(*a, dim, *index, *source))
SCALAR(copy_into, (T dst, T src), (dst->copy_(*src), 0))
SCALAR(index_copy_into, (T dst, int dim, T index, T src), (dst->index_copy_(dim, *index, *src), 0))

// ---- images ---------------------------------------------------------------------------
LIST(decode_images, (const char* paths, int n, int side, int channels, int threads), decode_images(ctx_, paths, n, side, channels, threads))
SCALAR(write_image, (const char* path, T image, int format, int quality), write_image(path, *image, format, quality))

// ---- autograd -------------------------------------------------------------------------
TENSOR(requires_grad, (T a, bool flag), leaf(*a, flag))
TENSOR(detach, (T a), a->detach())
LIST(grad, (T y, TENSORS(xs), bool retain, bool create), grad(*y, TV(xs), retain, create))
SCALAR(set_grad_enabled, (bool on), (c10::GradMode::is_enabled() ? (c10::GradMode::set_enabled(on), 1) : (c10::GradMode::set_enabled(on), 0)))

// ---- runtime -----------------------------------------------------------------------------
SCALAR(get_num_threads, (), at::get_num_threads())
SCALAR(set_num_threads, (int n), (at::set_num_threads(n), 0))
SCALAR(cuda_device_count, (), cuda_device_count())
SCALAR(cuda_synchronize, (), synchronize())
SCALAR(version, (), version(ctx_))
SCALAR(set_cpu_cache, (double megabytes), set_cpu_cache(megabytes))
SCALAR(cpu_cache_stat, (int which), caching_allocator.stat(which))
