// What every part of the shim shares: the call context, the handle types, argument decoding and the entry-point
// macros. The shim is a flat C ABI over libtorch for Deno FFI; its parts are split by concern:
//   ops.cpp        the op table, one line per op, and the few helpers of ops that are more than one call;
//   allocator.cpp  the caching CPU allocator and its entry points;
//   images.cpp     image decoding and writing through stb;
//   augment.cpp    the DINO views of a batch in one call;
//   distributed.cpp  collectives over c10d (Gloo, NCCL);
//   matmul.cpp     matrix products of a training step: small batched ones and linear layers (fp32, bf16);
//   layer_norm.cpp, softmax.cpp  fused AVX-512 kernels (avx512.h), gelu.cpp  bf16 GELU by table.
//
// Every entry point takes a `Ctx*` first: a caller-owned buffer through which
// the call reports its outcome (status, the result's dtype, device and shape,
// or the error message). Because the buffer belongs to the call, a nonblocking
// call on a worker thread reports its own error; nothing is thread-local.
//
// The macros wrap every body in the same try/catch, so no C++ exception ever
// crosses into Deno.
#pragma once
#include <ATen/ATen.h>
#include <sys/resource.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

// Layout shared with ffi/library.ts: 32 doubles, then the message.
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

// A symbol of the first of `libs` already loaded (ops.cpp), or null; of the BLAS that libtorch loaded, or null.
void* loaded_symbol(std::initializer_list<const char*> libs, const char* name);
void* blas_symbol(const char* name);
// matmul, bmm and linear, with CPU products sent where they run fastest (matmul.cpp).
at::Tensor small_matmul(const at::Tensor& a, const at::Tensor& b);
at::Tensor small_bmm(const at::Tensor& a, const at::Tensor& b);
at::Tensor fast_linear(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b);
// gelu, with bf16 CPU tensors by table lookup, bit for bit libtorch's (gelu.cpp).
at::Tensor fast_gelu(const at::Tensor& x, bool tanh);
// softmax(x * scale) along the last dim in fp32, and with `low` a copy in x's dtype, fused (softmax.cpp).
std::vector<at::Tensor> scaled_softmax(const at::Tensor& x, double scale, bool low);
// layer_norm with its output in `out` (default x's dtype), fused over the last dim for fp32 CPU inputs (layer_norm.cpp).
at::Tensor fast_layer_norm(const at::Tensor& x, at::IntArrayRef shape, const c10::optional<at::Tensor>& w,
                           const c10::optional<at::Tensor>& b, double eps, c10::optional<at::ScalarType> out);
// {x + y, layer_norm(x + y) in `out`}: a residual sum and the norm after it, fused likewise (layer_norm.cpp).
std::vector<at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& y, at::IntArrayRef shape,
                                       const c10::optional<at::Tensor>& w, const c10::optional<at::Tensor>& b,
                                       double eps, c10::optional<at::ScalarType> out);

// How many tensor handles are alive: wrap() counts them in, dn_free (ops.cpp, which defines it) out.
extern std::atomic<int64_t> live_tensors;

static inline void fail(Ctx* c, const char* message) {
  c->status = 1;
  std::strncpy(c->message, message, sizeof(c->message) - 1);
  c->message[sizeof(c->message) - 1] = 0;
}

static inline void describe(Ctx* c, const at::Tensor& t) {
  const int64_t ndim = t.dim();
  if (ndim > 26) throw std::runtime_error("tensors of more than 26 dimensions are not supported");
  c->dtype = static_cast<double>(t.scalar_type());
  c->device = t.is_cuda() ? t.device().index() : -1;
  c->requires_grad = t.requires_grad();
  c->ndim = static_cast<double>(ndim);
  const auto sizes = t.sizes();
  for (int64_t i = 0; i < ndim; i++) c->sizes[i] = static_cast<double>(sizes[i]);
}

static inline T wrap(Ctx* c, at::Tensor t) {
  if (!t.defined()) throw std::runtime_error("the op returned an undefined tensor");
  describe(c, t);
  live_tensors++;
  return new at::Tensor(std::move(t));
}

static inline L wrap_list(Ctx* c, std::vector<at::Tensor> ts) {
  c->count = static_cast<double>(ts.size());
  return new std::vector<at::Tensor>(std::move(ts));
}
template <typename... Ts>
static inline L wrap_list(Ctx* c, std::tuple<Ts...> ts) {
  return wrap_list(c, std::apply([](auto&&... t) { return std::vector<at::Tensor>{t...}; }, ts));
}

// ---- argument decoding -----------------------------------------------------
// Whether x is an integer that an f64 holds exactly (below 2^53).
static inline bool integral(double x) { return std::nearbyint(x) == x && std::fabs(x) < 9007199254740992.0; }
// A position or count from the FFI's f64, which may pass 2^31 (int lists are checked in TypeScript, ffi/ops/args.ts).
static inline int64_t whole(double x) {
  if (!integral(x)) {
    throw std::invalid_argument(c10::str("expected an integer (an index or a count), got ", x));
  }
  return static_cast<int64_t>(x);
}
static inline std::vector<int64_t> ints(const double* p, int n) {
  return std::vector<int64_t>(p, p + n);
}
static inline std::vector<at::Tensor> tensors(const T* p, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; i++) out.push_back(*p[i]);
  return out;
}
static inline c10::optional<at::Tensor> maybe(T t) {
  return t ? c10::optional<at::Tensor>(*t) : c10::nullopt;
}
static inline c10::optional<double> maybe(double x) {
  return std::isnan(x) ? c10::nullopt : c10::optional<double>(x);
}
// JavaScript has one number type: an integral value becomes an integer Scalar, as Python's `1` (not `1.0`), so
// integer tensors stay integer and float tensors see the same value.
static inline at::Scalar num(double x) { return integral(x) ? at::Scalar(static_cast<int64_t>(x)) : at::Scalar(x); }
static inline c10::optional<at::Scalar> maybe_scalar(double x) {
  return std::isnan(x) ? c10::nullopt : c10::optional<at::Scalar>(num(x));
}
static inline at::Device device(int64_t dev) {
  return dev < 0 ? at::Device(at::kCPU) : at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(dev));
}
// A code from the FFI checked against its range, so that a bad one is an error and not undefined behaviour.
static inline int64_t code(int64_t value, int64_t max, const char* what) {
  if (value < 0 || value > max) throw std::invalid_argument("unknown " + std::string(what) + " code " + std::to_string(value));
  return value;
}
static inline at::ScalarType scalar_type(int64_t dtype) {
  const auto t = static_cast<at::ScalarType>(code(dtype, static_cast<int64_t>(at::ScalarType::NumOptions) - 1, "dtype"));
  if (t == at::ScalarType::Undefined) throw std::invalid_argument("undefined dtype");
  return t;
}
static inline at::TensorOptions opts(int64_t dtype, int64_t dev) {
  return at::TensorOptions().dtype(scalar_type(dtype)).device(device(dev));
}

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
// An int list parameter (a Float64Array and its length) and its value; a tensor list (handles and length).
#define INTS(n) const double *n##_p, int n##_n
#define IV(n) ints(n##_p, n##_n)
#define TENSORS(n) const T *n##_p, int n##_n
#define TV(n) tensors(n##_p, n##_n)

// Runs `fn` on a thread of its own at the lowest priority (nice 19, which the threads it starts inherit) and returns
// what it returns or throws what it threw; where no thread can be started, here. For work that overlaps a training
// step (the next batch's decoding and views): a third thread on a core that the step's two OpenMP threads share
// takes a whole time slice from one of them, and every parallel region waits at its barrier for that one; at the
// lowest priority it runs in the gaps the step leaves instead (the default run's loop step 116 -> 112 ms on average
// over 6 alternating runs on 2 cores, and steadier). With no step running it takes the idle cores as before.
template <class F>
auto in_background(F fn) -> decltype(fn()) {
  decltype(fn()) result;
  std::exception_ptr error;
  std::thread worker;
  try {
    worker = std::thread([&] {
      // Work that makes libtorch set this new thread up (its first parallel op: a clone, threads 0) rebuilds, on 1.13,
      // the thread pool of XNNPACK's ops, whose threads then keep nice 19 until the next rebuild. Setting up before
      // lowering the priority avoids that, but rebuilt that pool on every call at normal priority, whose new threads
      // spin: the default run's loop step went from 102-113 to 133-145 ms (5 alternating pairs). The training loop's
      // views (u8 images, one thread) never set it up.
#ifdef __linux__
      setpriority(PRIO_PROCESS, 0, 19);  // this thread only (elsewhere it would be the whole process)
#endif
      try {
        result = fn();
      } catch (...) {
        error = std::current_exception();
      }
    });
  } catch (const std::system_error&) {
    return fn();
  }
  worker.join();
  if (error) std::rethrow_exception(error);
  return result;
}

// Runs `work` on up to `threads` threads (this one included, at most one per item and 256 in all); each call takes
// items from a shared counter until none are left. Where no more threads can be started, the ones that were do it all.
inline void on_threads(int threads, int items, const std::function<void()>& work) {
  std::vector<std::thread> pool;
  const int count = std::max(1, std::min({threads, items, 256}));
  try {
    pool.reserve(count);
    for (int t = 1; t < count; t++) pool.emplace_back(work);
  } catch (...) {
  }
  work();
  for (auto& t : pool) t.join();
}
