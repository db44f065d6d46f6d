// Data-parallel collectives over libtorch's own c10d: a TCPStore rendezvous and a ProcessGroupGloo (CPU, and CUDA
// tensors through the host) or ProcessGroupNCCL (CUDA, when the shim is built against a CUDA libtorch). The C++
// frontend has no DistributedDataParallel; what it needs is here: broadcast a list of tensors from a root, all-reduce
// a list (sum or mean), coalesced into flat buckets as DDP does (one collective per bucket, each sent as soon as it is
// filled; a mean scales each rank's share by 1 / size on its way in, as DDP does by default), and a barrier. Results
// are new tensors (views of the buckets): inputs are never changed.
//
// Failures become messages, never crashes or hangs: every collective runs under the group's timeout; a rendezvous
// that cannot listen names the port, one that cannot reach rank 0 says so, ranks that do not join in time are named;
// and when a collective fails (a peer died: Gloo sees its connection close; or it hung past the timeout), the
// survivors tell each other through the store that they are alive, and the ranks that stay silent are named as lost.
// A group that failed refuses further collectives. Without Gloo's headers (Debian's libgloo-dev) the shim builds
// without this engine: dist_backends reports none, and creating a group is an error that says how to get it.
// libtorch's headers come before shim.h: those of libtorch 2.x define and undefine a TENSOR macro of their own.
#if defined(DINO_GLOO) || defined(DINO_NCCL)
#include <ATen/ScalarOps.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#endif
#ifdef DINO_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DINO_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "shim.h"

#include <chrono>
#include <memory>
#include <sstream>
#include <thread>

#if defined(DINO_GLOO) || defined(DINO_NCCL)

namespace {

using Millis = std::chrono::milliseconds;

// The first line of an exception's message (Gloo's carry a source location and sometimes a backtrace).
std::string first_line(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string m = c10 ? c10->what_without_backtrace() : e.what();
  const auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

std::string seconds(Millis t) {
  std::ostringstream s;
  s << t.count() / 1000.0 << " s";
  return s.str();
}

std::string rank_list(const std::vector<int>& ranks) {
  std::ostringstream s;
  s << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size(); i++) s << (i ? ", " : "") << ranks[i];
  return s.str();
}

}  // namespace

// A process group and the store it met through. Collectives are called from one thread at a time (the caller's, or
// autograd's while the caller waits for its backward pass).
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
#ifdef DINO_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#ifdef DINO_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  int rank = 0, size = 1;
  Millis timeout{0};
  std::string where;   // addr:port of the rendezvous
  std::string failed;  // why the group failed; empty while it works

  template <class Vec, class Opts>
  c10::intrusive_ptr<c10d::Work> allreduce(Vec& ts, const Opts& o) {
#ifdef DINO_NCCL
    if (nccl) return nccl->allreduce(ts, o);
#endif
#ifdef DINO_GLOO
    if (gloo) return gloo->allreduce(ts, o);
#endif
    throw std::runtime_error("the process group has no backend");
  }
  template <class Vec, class Opts>
  c10::intrusive_ptr<c10d::Work> broadcast(Vec& ts, const Opts& o) {
#ifdef DINO_NCCL
    if (nccl) return nccl->broadcast(ts, o);
#endif
#ifdef DINO_GLOO
    if (gloo) return gloo->broadcast(ts, o);
#endif
    throw std::runtime_error("the process group has no backend");
  }
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& o) {
#ifdef DINO_NCCL
    if (nccl) return nccl->barrier(o);
#endif
#ifdef DINO_GLOO
    if (gloo) return gloo->barrier(o);
#endif
    throw std::runtime_error("the process group has no backend");
  }
};

namespace {

const std::string kJoined = "dino/joined/", kAlive = "dino/alive/";

// Polls until every key exists or `budget` passes; returns the ranks whose key is missing.
std::vector<int> missing(c10d::Store& store, const std::string& prefix, int size, Millis budget) {
  const auto until = std::chrono::steady_clock::now() + budget;
  std::vector<int> out;
  for (;;) {
    out.clear();
    for (int r = 0; r < size; r++) {
      if (!store.check({prefix + std::to_string(r)})) out.push_back(r);
    }
    if (out.empty() || std::chrono::steady_clock::now() >= until) return out;
    std::this_thread::sleep_for(Millis(20));
  }
}

// After a failed collective: which ranks are lost. Each survivor says it is alive through the store, then waits a
// grace period for the others; the silent ones are named. The store lives in rank 0 (or torchrun's agent), so a
// survivor that cannot reach it has lost rank 0; and rank 0 stays for the whole grace period, so that the others can
// still ask.
std::string lost_ranks(Group* g) {
  const Millis grace = std::min(g->timeout, Millis(3000));
  std::vector<int> lost;
  try {
    g->store->set(kAlive + std::to_string(g->rank), std::vector<uint8_t>{1});
    lost = missing(*g->store, kAlive, g->size, grace);
    if (g->rank == 0) {
      const auto left = grace + Millis(500);
      std::this_thread::sleep_for(left);
    }
  } catch (const std::exception&) {
    return "rank 0 (the rendezvous host, " + g->where + ") is lost: it stopped answering";
  }
  if (lost.empty()) return "every rank is still alive, so the ranks disagree about the collective";
  return rank_list(lost) + (lost.size() == 1 ? " is" : " are") + " lost: no word within " + seconds(grace) +
         " of the failure (it died or hangs; see its output)";
}

// Throws unless the group can run collectives.
void usable(Group* g) {
  if (!g) throw std::runtime_error("the process group was destroyed");
  if (!g->failed.empty()) throw std::runtime_error("the process group failed earlier (" + g->failed + ")");
}

// Runs a collective's communication; on failure, names the lost ranks and marks the group failed.
template <class F>
void guarded(Group* g, const char* what, F f) {
  try {
    f();
  } catch (const std::exception& e) {
    const std::string cause = first_line(e);
    const std::string message = "failed on rank " + std::to_string(g->rank) + ": " + lost_ranks(g) + " (" + cause + ")";
    g->failed = std::string(what) + " " + message;
    throw std::runtime_error(message);
  }
}

// Consecutive tensors of one dtype and device, planned into buckets of about `bucket_bytes` (a tensor larger than
// that is a bucket of its own): the buckets' flat storage and, per tensor, its bucket and offset.
struct Buckets {
  std::vector<at::Tensor> flat;
  std::vector<size_t> first;                   // per bucket: its first input
  std::vector<std::pair<size_t, int64_t>> at;  // per input: bucket index, element offset
};

Buckets plan_buckets(const std::vector<at::Tensor>& ts, double bucket_bytes) {
  Buckets b;
  std::vector<int64_t> numel;  // per bucket
  double bytes = 0;
  for (size_t i = 0; i < ts.size(); i++) {
    const auto& t = ts[i];
    if (!t.defined()) throw std::runtime_error("an undefined tensor cannot take part in a collective");
    if (t.layout() != at::kStrided) {  // refused here, before any rank sends anything
      std::ostringstream m;
      m << "a collective takes dense tensors, got a " << t.layout() << " one: make it dense first";
      throw std::invalid_argument(m.str());
    }
    const double nbytes = static_cast<double>(t.numel() * t.element_size());
    if (i == 0 || ts[i - 1].scalar_type() != t.scalar_type() || ts[i - 1].device() != t.device() ||
        bytes + nbytes > bucket_bytes) {
      numel.push_back(0);
      b.first.push_back(i);
      bytes = 0;
    }
    b.at.emplace_back(numel.size() - 1, numel.back());
    bytes += nbytes;
    numel.back() += t.numel();
  }
  for (size_t k = 0; k < numel.size(); k++) b.flat.push_back(at::empty({numel[k]}, ts[b.first[k]].options()));
  return b;
}

std::vector<at::Tensor> unbucketize(const Buckets& b, const std::vector<at::Tensor>& like) {
  std::vector<at::Tensor> out;
  out.reserve(like.size());
  for (size_t i = 0; i < like.size(); i++) {
    const auto [k, off] = b.at[i];
    out.push_back(b.flat[k].narrow(0, off, like[i].numel()).view(like[i].sizes()));
  }
  return out;
}

// Copies bucket k's tensors into it, times `scale` unless that is 1: a mean multiplies each rank's share by 1 / size
// while copying, as DDP's reducer does for gradients that are not views of their bucket, its default (its numbers, and
// one pass over the gradients fewer than dividing after).
void fill_bucket(const Buckets& b, size_t k, const std::vector<at::Tensor>& ts, double scale) {
  for (size_t i = b.first[k]; i < ts.size() && b.at[i].first == k; i++) {
    auto view = b.flat[k].narrow(0, b.at[i].second, ts[i].numel()).view(ts[i].sizes());
    if (scale == 1.0) {
      view.copy_(ts[i].detach());
    } else {
      at::mul_out(view, ts[i].detach(), at::native::wrapped_scalar_tensor(scale));
    }
  }
}

void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::exception_ptr first;
  for (auto& w : works) {  // wait for every one, so that none outlives its bucket
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

Group* group_new(const std::string& backend, const std::string& addr, int port, int rank, int size, double timeout_s) {
  if (size < 1) throw std::runtime_error("the world size must be at least 1, got " + std::to_string(size));
  if (rank < 0 || rank >= size) {
    throw std::runtime_error("rank " + std::to_string(rank) + " is outside a world of " + std::to_string(size));
  }
  if (port < 0 || port > 65535 || (port == 0 && size > 1)) {
    throw std::runtime_error("port " + std::to_string(port) + " is not in 1..65535 (0: any, for a world of one)");
  }
  if (!(timeout_s > 0)) throw std::runtime_error("the timeout must be a positive number of seconds");
#ifndef DINO_GLOO
  if (backend == "gloo") {
    throw std::runtime_error(
        "this shim was built without Gloo (its headers, Debian's libgloo-dev, were missing): run `deno task setup` "
        "(or apt-get install libgloo-dev) and start again");
  }
#endif
#ifndef DINO_NCCL
  if (backend == "nccl") {
    throw std::runtime_error(
        "this shim was built without NCCL (it needs a CUDA libtorch with NCCL's headers): use --dist-backend gloo");
  }
#endif
  if (backend != "gloo" && backend != "nccl") throw std::runtime_error("unknown backend \"" + backend + "\"");
  auto g = std::make_unique<Group>();
  g->rank = rank;
  g->size = size;
  g->timeout = Millis(static_cast<int64_t>(timeout_s * 1000));
  g->where = addr + ":" + std::to_string(port);

  // Under torchrun's static rendezvous its agent already hosts the store at MASTER_PORT: every rank is a client, and
  // keys live under the restart's prefix (as torch.distributed's env:// rendezvous does).
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const bool agentStore = agent && std::string(agent) == "True";
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = rank == 0 && !agentStore;
  o.numWorkers = size;
  o.waitWorkers = false;  // joining is checked below, naming the ranks that did not come
  o.timeout = g->timeout;
#ifndef TORCH_VERSION_MAJOR
#error "torch/version.h defines no TORCH_VERSION_MAJOR: the TCPStore server below could not be chosen"
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  // The classic server, not the libuv one (the default from libtorch 2.4): Deno's executable exports uv_* functions
  // of its own (for Node-API addons), which the dynamic linker finds before libtorch's libuv, and the NCCL group of
  // one on an H100 (PyTorch 2.11) crashed in them; the same calls in a C++ program ran.
  o.useLibUV = false;
#endif
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(addr, o);
    if (agentStore) {
      const char* attempt = std::getenv("TORCHELASTIC_RESTART_COUNT");
      g->store = c10::make_intrusive<c10d::PrefixStore>(std::string("/worker/attempt_") + (attempt ? attempt : "0"),
                                                        g->store);
    }
  } catch (const std::exception& e) {
    const std::string m = first_line(e);
    if (o.isServer && m.find("in use") != std::string::npos) {
      throw std::runtime_error("port " + std::to_string(port) + " is already in use (another run?): rank 0 cannot " +
                               "host the rendezvous there; choose another with --master-port or MASTER_PORT");
    }
    if (o.isServer) throw std::runtime_error("rank 0 cannot host the rendezvous at " + g->where + ": " + m);
    throw std::runtime_error("rank " + std::to_string(rank) + " could not reach " +
                             (agentStore ? "torchrun's rendezvous" : "rank 0's rendezvous") + " at " + g->where +
                             " within " + seconds(g->timeout) + " (is " + (agentStore ? "torchrun" : "rank 0") +
                             " running, and are MASTER_ADDR and MASTER_PORT right?): " + m);
  }
  // Everyone joins, and agrees on the world size.
  const std::string world = std::to_string(size);
  g->store->set(kJoined + std::to_string(rank), std::vector<uint8_t>(world.begin(), world.end()));
  const auto absent = missing(*g->store, kJoined, size, g->timeout);
  if (!absent.empty()) {
    throw std::runtime_error(rank_list(absent) + " of " + std::to_string(size) + " did not join the rendezvous at " +
                             g->where + " within " + seconds(g->timeout) + " (--dist-timeout)");
  }
  const auto theirs = g->store->get(kJoined + "0");
  if (std::string(theirs.begin(), theirs.end()) != world) {
    throw std::runtime_error("rank " + std::to_string(rank) + " was started with WORLD_SIZE " + world +
                             ", rank 0 with " + std::string(theirs.begin(), theirs.end()) +
                             ": start every rank with the same WORLD_SIZE");
  }
  try {
#ifdef DINO_NCCL
    if (backend == "nccl") {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      g->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, rank, size, opts);
    }
#endif
#ifdef DINO_GLOO
    if (backend == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      const char* iface = std::getenv("GLOO_SOCKET_IFNAME");
      const bool loopback = addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
      opts->devices.push_back(iface && *iface ? c10d::ProcessGroupGloo::createDeviceForInterface(iface)
                              : loopback      ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                              : c10d::ProcessGroupGloo::createDefaultDevice());
      opts->threads = 2;
      g->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, size, opts);
    }
#endif
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(rank) + " could not connect to its peers through " + g->where +
                             ": " + first_line(e));
  }
  return g.release();
}

std::vector<at::Tensor> allreduce(Group* g, const std::vector<at::Tensor>& ts, bool mean, double bucket_mb) {
  usable(g);
  // Refused before the collective, which every rank must then join: a mean of integers cannot be written back.
  for (size_t i = 0; mean && i < ts.size(); i++) {
    if (!at::isFloatingType(ts[i].scalar_type())) {
      throw std::invalid_argument("allReduce: the mean needs floating-point tensors, got " +
                                  std::string(c10::toString(ts[i].scalar_type())) + " (use the sum)");
    }
  }
  Buckets b = plan_buckets(ts, bucket_mb * 1024 * 1024);
  const double scale = mean ? 1.0 / g->size : 1.0;
  guarded(g, "allreduce", [&] {
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (size_t k = 0; k < b.flat.size(); k++) {  // each bucket on its way while the next one is filled
      fill_bucket(b, k, ts, scale);
      std::vector<at::Tensor> one{b.flat[k]};
      works.push_back(g->allreduce(one, o));
    }
    wait_all(works);
  });
  return unbucketize(b, ts);
}

std::vector<at::Tensor> broadcast(Group* g, const std::vector<at::Tensor>& ts, int root, double bucket_mb) {
  usable(g);
  if (root < 0 || root >= g->size) {
    throw std::runtime_error("root rank " + std::to_string(root) + " is outside a world of " + std::to_string(g->size));
  }
  Buckets b = plan_buckets(ts, bucket_mb * 1024 * 1024);
  guarded(g, "broadcast", [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (size_t k = 0; k < b.flat.size(); k++) {
      if (g->rank == root) fill_bucket(b, k, ts, 1.0);  // the others' buckets only receive
      std::vector<at::Tensor> one{b.flat[k]};
      works.push_back(g->broadcast(one, o));
    }
    wait_all(works);
  });
  return unbucketize(b, ts);
}

double barrier(Group* g) {
  usable(g);
  guarded(g, "barrier", [&] {
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    g->barrier(o)->wait();
  });
  return 0;
}

// The sum over ranks as a differentiable op: each rank's result is the sum of every rank's x, so the gradient of
// a loss summed over ranks with respect to one rank's x is the sum over ranks of the result's gradients, which the
// backward pass all-reduces in turn. SyncBatchNorm's shared statistics are built from it (lib/model/batch_norm.ts).
// Every rank must run its forward and backward passes in the same order, as the official SyncBatchNorm requires.
struct SumOverRanks : torch::autograd::Function<SumOverRanks> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return allreduce(reinterpret_cast<Group*>(group), {x}, false, 0)[0];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    return {allreduce(g, {grads[0]}, false, 0)[0], at::Tensor()};
  }
};

at::Tensor sum_over_ranks(Group* g, const at::Tensor& x) {
  usable(g);
  return SumOverRanks::apply(x, reinterpret_cast<int64_t>(g));
}

}  // namespace

#else  // no distributed engine in this build

struct Group {};
namespace {
Group* group_new(const std::string&, const std::string&, int, int, int, double) {
  throw std::runtime_error(
      "this shim was built without distributed training: Gloo's headers (Debian's libgloo-dev) were missing when it "
      "was compiled; run `deno task setup` (or apt-get install libgloo-dev) and start again");
}
[[noreturn]] void absent() { throw std::runtime_error("this shim was built without distributed training"); }
std::vector<at::Tensor> allreduce(Group*, const std::vector<at::Tensor>&, bool, double) { absent(); }
std::vector<at::Tensor> broadcast(Group*, const std::vector<at::Tensor>&, int, double) { absent(); }
double barrier(Group*) { absent(); }
at::Tensor sum_over_ranks(Group*, const at::Tensor&) { absent(); }
}  // namespace

#endif

// Which backends this shim has: 1 Gloo, 2 NCCL (a bit mask; 0 none).
static constexpr int kBackends = 0
#ifdef DINO_GLOO
                                 + 1
#endif
#ifdef DINO_NCCL
                                 + 2
#endif
    ;
SCALAR(dist_backends, (), kBackends)

// Joins (rank 0: hosts) the rendezvous at addr:port and makes the process group. A group handle, or null with the
// message.
extern "C" Group* dn_dist_new ARGS(const char* backend, const char* addr, int port, int rank, int size,
                                   double timeout_s) {
  try {
    ctx_->status = 0;
    return group_new(backend, addr, port, rank, size, timeout_s);
  }
  CATCH(nullptr)
}

// Destroys a group (its connections and, on rank 0, the rendezvous).
extern "C" void dn_dist_free(Group* g) {
  try {
    delete g;
  } catch (...) {
  }
}

// The sum (op 0) or mean (op 1) over ranks of each tensor, as new tensors, in buckets of bucket_mb megabytes.
LIST(dist_allreduce, (Group* g, TENSORS(ts), int op, double bucket_mb), allreduce(g, TV(ts), op == 1, bucket_mb))
// The root's tensors on every rank, as new tensors.
LIST(dist_broadcast, (Group* g, TENSORS(ts), int root, double bucket_mb), broadcast(g, TV(ts), root, bucket_mb))
// Waits until every rank is here.
SCALAR(dist_barrier, (Group* g), barrier(g))
// The sum over ranks of x, with a gradient: the backward pass all-reduces the gradient too.
TENSOR(dist_sum_grad, (Group* g, T x), sum_over_ranks(g, *x))
