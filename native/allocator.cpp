// A caching CPU allocator, installed by the first set_cpu_cache call.
#include "shim.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <malloc.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <unordered_map>

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
  // size share blocks instead of each faulting in fresh pages. The unused tail of a block is never touched, so it
  // costs no memory; as transparent huge pages it did (2 MiB at a time: 2.5% more peak memory in the DINO step).
  static constexpr size_t kClassBytes = size_t(1) << 20;
  static size_t rounded(size_t n) {
    if (n < kClassBytes) return (n + 4095) & ~size_t(4095);
    size_t step = kClassBytes >> 2;  // the class boundaries between 2^k and 2^(k+1) are 2^k (1 + i / 4)
    while (step * 8 < n) step <<= 1;
    return (n + step - 1) / step * step;
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
      p = c10::alloc_cpu(n >= kMinBytes ? size : n);
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
  // Returns how many bytes it let go.
  size_t set_limit(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    size_t freed = 0;
    while (cached_ > limit_ && !free_.empty()) {
      auto last = std::prev(free_.end());  // the largest blocks go first
      c10::free_cpu(last->second);
      cached_ -= last->first;
      freed += last->first;
      free_.erase(last);
    }
    return freed;
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
// Never destroyed: libtorch's own statics may free blocks into it while the process exits.
static CachingCPUAllocator& caching_allocator = *new CachingCPUAllocator;
void CachingCPUAllocator::release(void* p) { caching_allocator.give_back(p); }
static double set_cpu_cache(double megabytes) {
  static std::once_flag installed;
  std::call_once(installed, [] { c10::SetCPUAllocator(&caching_allocator, /*priority=*/1); });
  [[maybe_unused]] const size_t freed = caching_allocator.set_limit(static_cast<size_t>(megabytes * 1024 * 1024));
#ifdef __GLIBC__
  // The blocks let go went to malloc, whose heap keeps them once its mmap threshold has grown: hand them back.
  if (freed > 0) malloc_trim(0);
#endif
  return 0;
}

SCALAR(set_cpu_cache, (double megabytes), set_cpu_cache(megabytes))
SCALAR(cpu_cache_stat, (int which), caching_allocator.stat(which))
// The machine's memory for the cache's default size: asked here, as Deno.systemMemoryInfo() needs --allow-sys.
SCALAR(physical_memory_mb, (), static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE) / (1 << 20))
