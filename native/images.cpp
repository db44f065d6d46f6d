// Images in and out, through stb (libstb-dev): a threaded batch decoder and a PNG/JPEG writer. Without stb
// (DINO_STB undefined) both entry points exist and report how to get it.
#include "shim.h"

#include <algorithm>
#include <thread>

#ifdef DINO_STB
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>

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

LIST(decode_images, (const char* paths, int n, int side, int channels, int threads), decode_images(ctx_, paths, n, side, channels, threads))
SCALAR(write_image, (const char* path, T image, int format, int quality), write_image(path, *image, format, quality))
