// Images in and out, through stb (libstb-dev): a threaded batch decoder and a PNG/JPEG writer. Without stb
// (DINO_STB undefined) both entry points exist and report how to get it.
//
// Files are hostile input: decoding never throws out of a worker thread, never allocates for an image whose
// header declares more pixels than the caller's budget, and never sizes anything from unchecked arithmetic.
#include "shim.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <memory>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef DINO_STB
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>

// The largest side decode_images resizes to: each image of the batch [n, C, side, side] is then up to 805 MB.
static constexpr int kMaxSide = 1 << 14;
// Room for one file's reason; written with snprintf, so recording a failure never allocates.
static constexpr size_t kReason = 256;

// What one axis of a resize-then-centre-crop reads: the source rows (or columns) [first, first + count) and
// stb_image_resize's scale and offset that map the crop's `side` output pixels onto them. The resized length
// is computed in double and never materialised: only the crop is resampled, so no intermediate is larger than
// the source plus a filter margin, however extreme the aspect ratio.
struct Axis {
  int first, count;
  float scale, shift;
};
static bool plan_axis(int n, double resized, int side, Axis* a) {
  const double k = resized / n;                     // output pixels per source pixel
  const double offset = std::floor((resized - side) / 2);  // the crop's first pixel in the resized image
  const double lo = offset / k, hi = (offset + side) / k;  // the crop in source coordinates
  // stb's filters (Catmull-Rom up, Mitchell down) reach 2 pixels of the coarser grid; keep a little more.
  const double margin = std::ceil(2 * std::max(1.0, 1 / k)) + 2;
  const double first = std::max(0.0, std::floor(lo) - margin), last = std::min<double>(n, std::ceil(hi) + margin);
  if (!(first >= 0 && last > first && last <= n)) return false;
  a->first = static_cast<int>(first);
  a->count = static_cast<int>(last - first);
  a->scale = static_cast<float>(k);
  a->shift = static_cast<float>(offset - first * k);
  return true;
}

using File = std::unique_ptr<FILE, int (*)(FILE*)>;
using Pixels = std::unique_ptr<stbi_uc, void (*)(void*)>;

// Decodes one file into `tile` (side x side x channels, HWC), or writes why it cannot into `why`.
static void decode_one(const char* path, int side, int channels, double max_pixels, std::vector<uint8_t>& tile,
                       char* why) {
  // Opened without blocking and checked to be a regular file: a FIFO or a device named x.png must not hang or
  // stream forever.
  const int fd = ::open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    std::snprintf(why, kReason, "cannot open: %s", std::strerror(errno));
    return;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    std::snprintf(why, kReason, "not a regular file");
    return;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  File f(::fdopen(fd, "rb"), &std::fclose);
  if (!f) {
    ::close(fd);
    std::snprintf(why, kReason, "cannot open: %s", std::strerror(errno));
    return;
  }
  int w = 0, h = 0, comp = 0;
  // The header alone: nothing is allocated for the pixels before their count is known to be within budget.
  if (!stbi_info_from_file(f.get(), &w, &h, &comp)) {
    const char* r = stbi_failure_reason();
    std::snprintf(why, kReason, "not a readable image (%s)", r ? r : "unknown format");
    return;
  }
  const double pixels = static_cast<double>(w) * h;
  if (w <= 0 || h <= 0) {
    std::snprintf(why, kReason, "declares %d x %d pixels", w, h);
    return;
  }
  if (pixels > max_pixels) {
    std::snprintf(why, kReason,
                  "%d x %d = %.0f pixels exceeds the decoding budget of %.0f (raise DINO_MAX_IMAGE_PIXELS or "
                  "maxImagePixels to read it)",
                  w, h, pixels, max_pixels);
    return;
  }
  // Short side to `side`: the resized long side, in double, must stay within stb's int coordinates.
  const double s = static_cast<double>(side) / std::min(w, h);
  const double rw = std::max<double>(side, std::round(w * s)), rh = std::max<double>(side, std::round(h * s));
  if (!(rw <= INT_MAX && rh <= INT_MAX)) {
    std::snprintf(why, kReason, "%d x %d is too elongated to resize to a short side of %d", w, h, side);
    return;
  }
  Axis ax, ay;
  if (!plan_axis(w, rw, side, &ax) || !plan_axis(h, rh, side, &ay)) {
    std::snprintf(why, kReason, "%d x %d cannot be resized to a short side of %d", w, h, side);
    return;
  }
  int dw = 0, dh = 0;
  Pixels img(stbi_load_from_file(f.get(), &dw, &dh, &comp, channels), &stbi_image_free);
  if (!img) {
    const char* r = stbi_failure_reason();
    std::snprintf(why, kReason, "cannot decode (%s)", r ? r : "unknown error");
    return;
  }
  if (dw != w || dh != h) {
    std::snprintf(why, kReason, "decoded %d x %d but the header said %d x %d", dw, dh, w, h);
    return;
  }
  const size_t stride = static_cast<size_t>(w) * channels;
  const stbi_uc* crop = img.get() + static_cast<size_t>(ay.first) * stride + static_cast<size_t>(ax.first) * channels;
  const int ok = stbir_resize_subpixel(crop, ax.count, ay.count, static_cast<int>(stride), tile.data(), side, side, 0,
                                       STBIR_TYPE_UINT8, channels, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                       STBIR_EDGE_CLAMP, STBIR_FILTER_DEFAULT, STBIR_FILTER_DEFAULT,
                                       STBIR_COLORSPACE_LINEAR, nullptr, ax.scale, ay.scale, ax.shift, ay.shift);
  if (!ok) std::snprintf(why, kReason, "resize failed (out of memory?)");
}

// Decodes `n` files (NUL-separated paths) on `threads` threads; each image is resized so that its short side is
// `side` (stb's filtered resize, antialiased when shrinking) and centre-cropped to side x side. A file whose
// header declares more than `max_pixels` pixels, or that fails in any way, is skipped. Returns [images u8
// [ok, C, side, side], ok indices i64, failed indices i64, reasons u8 (the failed files' reasons, each ending
// in a NUL)].
static std::vector<at::Tensor> decode_images(const char* paths, int n, int side, int channels, int threads,
                                             double max_pixels) {
  if (n < 0) throw std::runtime_error("decode count must be >= 0");
  if (side <= 0 || side > kMaxSide) throw std::runtime_error("decode side must be in 1.." + std::to_string(kMaxSide));
  if (channels != 1 && channels != 3) throw std::runtime_error("decode channels must be 1 or 3");
  if (!(max_pixels >= 1)) throw std::runtime_error("the image pixel budget must be a number >= 1");
  std::vector<const char*> files;
  for (const char* p = paths; static_cast<int>(files.size()) < n; p += std::strlen(p) + 1) files.push_back(p);
  auto out = at::empty({n, channels, side, side}, at::kByte);
  uint8_t* base = out.data_ptr<uint8_t>();
  std::vector<char> why(static_cast<size_t>(n) * kReason, 0);
  std::atomic<int> next{0};
  // Runs on every thread, the caller's included: nothing may escape it (an exception leaving a std::thread
  // terminates the process), so each file's failure, bad_alloc included, is that file's reason.
  auto work = [&]() noexcept {
    std::vector<uint8_t> tile;
    for (int i; (i = next++) < n;) {
      char* reason = why.data() + static_cast<size_t>(i) * kReason;
      try {
        tile.resize(static_cast<size_t>(side) * side * channels);
        decode_one(files[i], side, channels, max_pixels, tile, reason);
        if (reason[0]) continue;
        uint8_t* dst = base + static_cast<size_t>(i) * channels * side * side;
        for (int ch = 0; ch < channels; ch++)
          for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
              dst[(static_cast<size_t>(ch) * side + y) * side + x] =
                  tile[(static_cast<size_t>(y) * side + x) * channels + ch];
      } catch (const std::bad_alloc&) {
        std::snprintf(reason, kReason, "out of memory while decoding");
      } catch (const std::exception& e) {
        std::snprintf(reason, kReason, "%s", e.what()[0] ? e.what() : "C++ exception while decoding");
      } catch (...) {
        std::snprintf(reason, kReason, "unknown C++ exception while decoding");
      }
    }
  };
  std::vector<std::thread> pool;
  const int count = std::max(1, std::min({threads, n, 256}));
  try {
    pool.reserve(count);
    for (int t = 1; t < count; t++) pool.emplace_back(work);
  } catch (...) {
    // No more threads: the ones started, and this one, do the work.
  }
  work();
  for (auto& t : pool) t.join();
  std::vector<int64_t> good, bad;
  std::string reasons;
  for (int i = 0; i < n; i++) {
    const char* r = why.data() + static_cast<size_t>(i) * kReason;
    if (!r[0]) {
      good.push_back(i);
      continue;
    }
    bad.push_back(i);
    reasons.append(r, strnlen(r, kReason - 1)).push_back('\0');
  }
  auto good_t = at::tensor(good, at::kLong), bad_t = at::tensor(bad, at::kLong);
  auto reasons_t = at::empty({static_cast<int64_t>(reasons.size())}, at::kByte);
  if (!reasons.empty()) std::memcpy(reasons_t.data_ptr(), reasons.data(), reasons.size());
  return {bad.empty() ? out : out.index_select(0, good_t), good_t, bad_t, reasons_t};
}
// Writes an HWC u8 image as PNG (format 0) or JPEG (format 1). The shape is checked before stb sees it: stb
// trusts its arguments and computes buffer sizes in int.
static double write_image(const char* path, const at::Tensor& image, int format, int quality) {
  const std::string shape = c10::str(image.sizes());
  if (image.scalar_type() != at::kByte || image.dim() != 3) {
    throw std::runtime_error("write_image takes a u8 [H, W, C] tensor, got " +
                             std::string(at::toString(image.scalar_type())) + " " + shape);
  }
  const int64_t h = image.size(0), w = image.size(1), ch = image.size(2);
  if (ch < 1 || ch > 4) {
    throw std::runtime_error("write_image: C must be 1, 3 or 4 (or 2: gray and alpha), got " + shape);
  }
  if (h < 1 || w < 1) throw std::runtime_error("write_image: an image needs H >= 1 and W >= 1, got " + shape);
  if (format != 0 && format != 1) throw std::runtime_error("write_image: format must be 0 (PNG) or 1 (JPEG)");
  if (format == 1 && (h > 65535 || w > 65535)) {
    throw std::runtime_error("write_image: " + shape + " is too large for JPEG (sides of at most 65535)");
  }
  if (format == 0 && static_cast<double>(w * ch + 1) * h > INT_MAX) {
    throw std::runtime_error("write_image: " + shape + " is too large for stb's PNG writer (rows under 2 GiB)");
  }
  auto t = image.to(at::kCPU).contiguous();
  const int hi = static_cast<int>(h), wi = static_cast<int>(w), ci = static_cast<int>(ch);
  const int ok = format == 0 ? stbi_write_png(path, wi, hi, ci, t.data_ptr(), wi * ci)
                             : stbi_write_jpg(path, wi, hi, ci, t.data_ptr(), std::clamp(quality, 1, 100));
  if (!ok) throw std::runtime_error(std::string("cannot write image ") + path);
  return 0;
}
#else
static std::vector<at::Tensor> decode_images(const char*, int, int, int, int, double) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
static double write_image(const char*, const at::Tensor&, int, int) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
#endif

LIST(decode_images, (const char* paths, int n, int side, int channels, int threads, double max_pixels),
     decode_images(paths, n, side, channels, threads, max_pixels))
SCALAR(write_image, (const char* path, T image, int format, int quality), write_image(path, *image, format, quality))
