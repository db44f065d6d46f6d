// The DINO views of a batch in one call: for each view of each sample, the resized crop (antialiased bicubic or
// bilinear, as libtorch's _upsample_*_aa and PIL), the flip, colour jitter in the sample's own order, grayscale,
// gaussian blur, solarization and normalisation, fused so that a view stays in cache from the crop to its rows
// of the result, on a few threads over the views. Nothing is drawn here: every random choice arrives in the plan
// (lib/augment/plans.ts draws them, lib/augment/views.ts lays them out), so a view depends on its plan record
// alone, not on the thread count, the batch or the order the views are made in.
//
// The arithmetic is the op-by-op path's (lib/augment/image.ts), in f32 and in the same order of operations where
// it is cheap to keep, without contracting a * b + c into fused multiply-adds: the result is the same bits
// whichever SIMD width the compiler picks (the hot function is compiled for AVX-512, AVX2 and baseline x86-64
// and picked at load time), and within float rounding (1e-6) of the op-by-op path.
#include "shim.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <mutex>

#pragma GCC optimize("O3", "fp-contract=off")

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DN_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DN_SIMD_CLONES
#endif

namespace {

// One view's plan record: the layout lib/augment/views.ts writes (AUGMENT_RECORD doubles per view).
enum Field {
  kSource,            // the sample's row in the batch
  kTop,               // crop box: top, left, height, width
  kLeft,
  kHeight,
  kWidth,
  kFlip,              // 1: mirror horizontally
  kOps,               // how many colour-jitter ops (0..4), in the order of kOrder..
  kOrder,             // 4 op codes: 0 brightness, 1 contrast, 2 saturation, 3 hue
  kFactors = kOrder + 4,  // 4 factors, by op code
  kGray = kFactors + 4,   // 1: grayscale
  kSigma,             // blur sigma; 0: no blur
  kSolarize,          // 1: solarize
  kRecord,            // the record's length
};

// libtorch's antialiasing filters (UpSampleKernel.cpp, HelperInterpCubic / HelperInterpLinear), in f32 as there.
float cubic_filter(float x) {
  constexpr float a = -0.5f;  // Keys' a, as PIL
  x = std::abs(x);
  if (x < 1.0f) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2.0f) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0.0f;
}
float linear_filter(float x) {
  x = std::abs(x);
  return x < 1.0f ? 1.0f - x : 0.0f;
}

// The separable resampling of `in` samples to `out`: output o reads `size[o]` inputs from `start[o]`, weighed by
// w[o * K ...]. Computed as libtorch's _compute_indices_weights_aa (align_corners false, no scale factor given).
struct Resample {
  std::vector<int> start, size;
  std::vector<float> w;
  int K = 0;
  void plan(int in, int out, bool bicubic) {
    const int interp = bicubic ? 4 : 2;
    const float scale = static_cast<float>(in) / out;
    const float support = scale >= 1.0f ? (interp * 0.5f) * scale : interp * 0.5f;
    const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    K = static_cast<int>(std::ceil(support)) * 2 + 1;
    start.assign(out, 0);
    size.assign(out, 0);
    w.assign(static_cast<size_t>(out) * K, 0.0f);
    for (int o = 0; o < out; o++) {
      const float center = scale * (o + 0.5);
      const int64_t lo = std::max(static_cast<int64_t>(center - support + 0.5), int64_t{0});
      const int64_t n = std::min(static_cast<int64_t>(center + support + 0.5), static_cast<int64_t>(in)) - lo;
      float* wo = &w[static_cast<size_t>(o) * K];
      float total = 0.0f;
      for (int64_t j = 0; j < n && j < K; j++) {
        const float x = static_cast<float>((j + lo - center + 0.5) * invscale);
        wo[j] = bicubic ? cubic_filter(x) : linear_filter(x);
        total += wo[j];
      }
      for (int64_t j = 0; j < n && j < K; j++) {
        if (total != 0.0f) wo[j] /= total;
      }
      start[o] = static_cast<int>(lo);
      size[o] = static_cast<int>(std::min<int64_t>(n, K));
    }
  }
};

// Per-thread scratch, reused from view to view.
struct Scratch {
  std::vector<float> t, a, b, planes, row, acc;
  Resample horizontal, vertical;
};

inline float clamp01(float v) { return std::min(std::max(v, 0.0f), 1.0f); }
inline float luma(float r, float g, float b) { return r * 0.299f + g * 0.587f + b * 0.114f; }

#define DN_INLINE inline __attribute__((always_inline))

// The colour ops over whole planes, each its own loop over restrict-qualified planes so that it vectorizes.
DN_INLINE void saturate(float* __restrict r, float* __restrict g, float* __restrict b, int64_t n, float f) {
  const float keep = 1.0f - f;
  for (int64_t i = 0; i < n; i++) {
    const float rest = luma(r[i], g[i], b[i]) * keep;
    r[i] = clamp01(rest + r[i] * f);
    g[i] = clamp01(rest + g[i] * f);
    b[i] = clamp01(rest + b[i] * f);
  }
}

DN_INLINE float ramp(float h, float centre) {
  const float d = std::fabs(std::fabs(h - centre) - 3.0f);
  return d < 1.0f ? 1.0f : d > 2.0f ? 2.0f : d;
}

// Hue: rotate by f turns in HSV space, by the closed form of lib/augment/image.ts adjustHue: h6 (hue x 6, in
// [-1, 5]) from the distances to the largest channel, then each channel min + cr F(h6 + 6 f - centre).
template <bool wrap>
DN_INLINE void rotate_hue(float* __restrict r, float* __restrict g, float* __restrict b, int64_t n, float f) {
  const float shift = 6.0f * f;
  const float cR = wrap ? 3.0f : 3.0f - shift;
  const float cG = wrap ? 5.0f : (shift >= 0 ? 5.0f : -1.0f) - shift;
  const float cB = wrap ? 1.0f : 1.0f - shift;
  for (int64_t i = 0; i < n; i++) {
    const float vr = r[i], vg = g[i], vb = b[i];
    const float mx = std::max(std::max(vr, vg), vb);
    const float cr = mx - std::min(std::min(vr, vg), vb);
    const float dr = mx - vr, dg = mx - vg, db = mx - vb;
    const float notR = dr > 0 ? 1.0f : 0.0f, notG = dg > 0 ? 1.0f : 0.0f;
    const float whenG = (dr + cr * 2.0f) + db * -2.0f;
    const float toB = (cr + dg) - dr;
    const float num = (db - dg) + notR * (whenG + notG * toB * 2.0f);
    float hh = num / std::max(cr, 1e-12f);
    if (wrap) {
      hh = hh + shift;
      hh = hh + std::floor(hh * (1.0f / 6.0f)) * -6.0f;
    }
    const float top = mx + cr;
    r[i] = top - cr * ramp(hh, cR);
    g[i] = top - cr * ramp(hh, cG);
    b[i] = top - cr * ramp(hh, cB);
  }
}

// The sum of n values, in double, by 16 running sums: the same order whatever the SIMD width.
DN_INLINE double sum(const float* __restrict p, int64_t n) {
  double acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; l++) acc[l] += p[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += p[i];
  double total = 0;
  for (int l = 0; l < 16; l++) total += acc[l];
  return total;
}

DN_INLINE void to_gray(float* __restrict r, const float* __restrict g, const float* __restrict b, int64_t n) {
  for (int64_t i = 0; i < n; i++) r[i] = luma(r[i], g[i], b[i]);
}

struct Job {
  const uint8_t* u8 = nullptr;  // the batch, [B, C, H, W] contiguous: u8 (scaled by 1/255) or f32
  const float* f32 = nullptr;
  int64_t B = 0, C = 0, H = 0, W = 0;
  bool bicubic = true;
  const double* mean = nullptr;
  const double* stdev = nullptr;
};

// Output rows [C, S, S] of one view, from its record.
DN_SIMD_CLONES void make_view(const Job& job, const double* rec, int S, float* dst, Scratch& s) {
  const int64_t C = job.C, H = job.H, W = job.W;
  const int64_t src = static_cast<int64_t>(rec[kSource]);
  const int top = static_cast<int>(rec[kTop]), left = static_cast<int>(rec[kLeft]);
  const int h = static_cast<int>(rec[kHeight]), w = static_cast<int>(rec[kWidth]);
  const bool flip = rec[kFlip] != 0;
  const int64_t plane = static_cast<int64_t>(S) * S;

  // ---- resized crop: across (over the crop's columns), then down, as libtorch; each pass runs along rows ----
  s.horizontal.plan(w, S, job.bicubic);
  s.vertical.plan(h, S, job.bicubic);
  s.t.resize(static_cast<size_t>(w) * h);
  s.a.resize(static_cast<size_t>(S) * h);
  s.b.resize(static_cast<size_t>(h) * S);
  s.planes.resize(static_cast<size_t>(C) * plane);
  for (int64_t c = 0; c < C; c++) {
    // t = the crop, transposed ([w, h]), in [0, 1]
    const int64_t base = ((src * C + c) * H + top) * W + left;
    if (job.u8) {
      for (int y = 0; y < h; y++) {
        const uint8_t* row = job.u8 + base + static_cast<int64_t>(y) * W;
        for (int x = 0; x < w; x++) s.t[static_cast<size_t>(x) * h + y] = static_cast<float>(row[x]) / 255.0f;
      }
    } else {
      for (int y = 0; y < h; y++) {
        const float* row = job.f32 + base + static_cast<int64_t>(y) * W;
        for (int x = 0; x < w; x++) s.t[static_cast<size_t>(x) * h + y] = row[x];
      }
    }
    // a[ox] = sum_k wx[ox][k] t[start + k]: output columns as rows of h values (mirrored when flipped)
    const Resample& rx = s.horizontal;
    for (int ox = 0; ox < S; ox++) {
      float* out = &s.a[static_cast<size_t>(flip ? S - 1 - ox : ox) * h];
      const float* wk = &rx.w[static_cast<size_t>(ox) * rx.K];
      const float* in = &s.t[static_cast<size_t>(rx.start[ox]) * h];
      for (int y = 0; y < h; y++) out[y] = in[y] * wk[0];
      for (int k = 1; k < rx.size[ox]; k++) {
        const float wv = wk[k];
        const float* ink = in + static_cast<size_t>(k) * h;
        for (int y = 0; y < h; y++) out[y] += ink[y] * wv;
      }
    }
    // b = a transposed ([h, S])
    for (int ox = 0; ox < S; ox++) {
      const float* in = &s.a[static_cast<size_t>(ox) * h];
      for (int y = 0; y < h; y++) s.b[static_cast<size_t>(y) * S + ox] = in[y];
    }
    // plane[oy] = clamp(sum_k wy[oy][k] b[start + k], 0, 1): bicubic overshoots, PIL clamps to the pixel range
    const Resample& ry = s.vertical;
    float* p = &s.planes[c * plane];
    for (int oy = 0; oy < S; oy++) {
      float* out = p + static_cast<size_t>(oy) * S;
      const float* wk = &ry.w[static_cast<size_t>(oy) * ry.K];
      const float* in = &s.b[static_cast<size_t>(ry.start[oy]) * S];
      for (int x = 0; x < S; x++) out[x] = in[x] * wk[0];
      for (int k = 1; k < ry.size[oy]; k++) {
        const float wv = wk[k];
        const float* ink = in + static_cast<size_t>(k) * S;
        for (int x = 0; x < S; x++) out[x] += ink[x] * wv;
      }
      for (int x = 0; x < S; x++) out[x] = clamp01(out[x]);
    }
  }

  // ---- colour jitter, the sample's ops in its order; each clamps to [0, 1] as torchvision does ----
  float* r = s.planes.data();
  float* g = C == 3 ? r + plane : r;
  float* bl = C == 3 ? r + 2 * plane : r;
  const int ops = static_cast<int>(rec[kOps]);
  for (int o = 0; o < ops; o++) {
    const int op = static_cast<int>(rec[kOrder + o]);
    const float f = static_cast<float>(rec[kFactors + op]);
    if (op == 0) {  // brightness: x f
      for (int64_t i = 0; i < C * plane; i++) r[i] = clamp01(r[i] * f);
    } else if (op == 1) {  // contrast: blend with the luma of the mean colour
      float m[3];
      for (int64_t c = 0; c < C; c++) m[c] = static_cast<float>(sum(r + c * plane, plane) / static_cast<double>(plane));
      const float rest = (C == 3 ? luma(m[0], m[1], m[2]) : m[0]) * (1.0f - f);
      for (int64_t i = 0; i < C * plane; i++) r[i] = clamp01(rest + r[i] * f);
    } else if (op == 2 && C == 3) {  // saturation: blend with each pixel's luma
      saturate(r, g, bl, plane, f);
    } else if (op == 3 && C == 3) {
      if (std::abs(6.0f * f) > 2.0f) rotate_hue<true>(r, g, bl, plane, f);
      else rotate_hue<false>(r, g, bl, plane, f);
    }
  }

  // ---- grayscale: one plane from here to the normalisation ----
  int64_t planes = C;
  if (C == 3 && rec[kGray] != 0) {
    to_gray(r, g, bl, plane);
    planes = 1;
  }

  // ---- gaussian blur: separable, reflect padding, each sample's kernel to its own ceil(3 sigma) ----
  const double sigma = rec[kSigma];
  const int radius = sigma > 0 ? std::min(static_cast<int>(std::ceil(3 * sigma)), (S - 1) / 2) : 0;
  if (radius >= 1) {
    const int K = 2 * radius + 1;
    double taps[64];
    double total = 0;
    for (int t = 0; t < K; t++) total += taps[t] = std::exp(-static_cast<double>((t - radius) * (t - radius)) /
                                                            (2 * sigma * sigma));
    float wt[64];
    for (int t = 0; t < K; t++) wt[t] = static_cast<float>(taps[t] / total);
    const auto reflect = [S](int i) { return i < 0 ? -i : i >= S ? 2 * (S - 1) - i : i; };
    s.row.resize(static_cast<size_t>(S) + 2 * radius);
    s.acc.resize(plane);
    for (int64_t c = 0; c < planes; c++) {
      float* p = r + c * plane;
      // down: acc[y] = sum_t w[t] p[reflect(y + t - radius)]
      for (int y = 0; y < S; y++) {
        float* out = &s.acc[static_cast<size_t>(y) * S];
        const float* in0 = p + static_cast<size_t>(reflect(y - radius)) * S;
        for (int x = 0; x < S; x++) out[x] = in0[x] * wt[0];
        for (int t = 1; t < K; t++) {
          const float* in = p + static_cast<size_t>(reflect(y + t - radius)) * S;
          const float wv = wt[t];
          for (int x = 0; x < S; x++) out[x] += in[x] * wv;
        }
      }
      // across: p[y][x] = sum_t w[t] row[x + t], row = acc[y] reflect-padded
      float* row = s.row.data();
      for (int y = 0; y < S; y++) {
        const float* in = &s.acc[static_cast<size_t>(y) * S];
        for (int x = 0; x < radius; x++) row[x] = in[radius - x], row[radius + S + x] = in[S - 2 - x];
        std::memcpy(row + radius, in, sizeof(float) * S);
        float* out = p + static_cast<size_t>(y) * S;
        for (int x = 0; x < S; x++) out[x] = row[x] * wt[0];
        for (int t = 1; t < K; t++) {
          const float wv = wt[t];
          for (int x = 0; x < S; x++) out[x] += row[x + t] * wv;
        }
      }
    }
  }

  // ---- solarization at 128/255 ----
  if (rec[kSolarize] != 0) {
    const float threshold = static_cast<float>(128.0 / 255.0);
    for (int64_t i = 0; i < planes * plane; i++) r[i] = r[i] >= threshold ? 1.0f - r[i] : r[i];
  }

  // ---- normalisation, into the result (a gray plane is every channel) ----
  for (int64_t c = 0; c < C; c++) {
    const float m = static_cast<float>(job.mean[c]), sd = static_cast<float>(job.stdev[c]);
    const float* p = r + (planes == 1 ? 0 : c * plane);
    float* out = dst + c * plane;
    for (int64_t i = 0; i < plane; i++) out[i] = (p[i] - m) / sd;
  }
}

// The views of a batch: `runs` pairs (side, views), their records in `plan` one run after another; one f32
// tensor [views, C, side, side] per run.
std::vector<at::Tensor> augment_views(const at::Tensor& images, const double* plan, int records,
                                      std::vector<int64_t> runs, const double* norm, int interpolation,
                                      int threads) {
  if (images.dim() != 4) throw std::runtime_error("augment_views takes images [B, C, H, W], got " + c10::str(images.sizes()));
  if (!images.device().is_cpu()) throw std::runtime_error("augment_views runs on CPU tensors");
  const int64_t C = images.size(1);
  if (C != 1 && C != 3) throw std::runtime_error("augment_views takes 1- or 3-channel images");
  if (interpolation != 1 && interpolation != 2) {
    throw std::runtime_error("augment_views: interpolation must be 1 (bilinear) or 2 (bicubic)");
  }
  if (runs.size() % 2 != 0) throw std::runtime_error("augment_views: runs are (side, views) pairs");
  const bool u8 = images.scalar_type() == at::kByte;
  const at::Tensor x = u8 ? images.contiguous() : images.to(at::kFloat).contiguous();
  Job job;
  job.B = x.size(0), job.C = C, job.H = x.size(2), job.W = x.size(3);
  job.bicubic = interpolation == 2;
  job.mean = norm;
  job.stdev = norm + C;
  if (u8) job.u8 = x.data_ptr<uint8_t>();
  else job.f32 = x.data_ptr<float>();
  for (int64_t c = 0; c < C; c++) {
    if (!(job.stdev[c] != 0)) throw std::runtime_error("augment_views: a normalisation std is 0");
  }

  // Check every record before any work: a bad box must be an error, not a read out of bounds.
  std::vector<at::Tensor> out;
  std::vector<std::pair<int, float*>> targets;  // per record: side, destination
  int64_t at_record = 0;
  for (size_t r = 0; r < runs.size(); r += 2) {
    const int64_t side = runs[r], n = runs[r + 1];
    if (side < 1 || side > 4096 || n < 0) throw std::runtime_error("augment_views: a run's side or count is out of range");
    auto t = at::empty({n, C, side, side}, at::kFloat);
    float* base = t.data_ptr<float>();
    for (int64_t k = 0; k < n; k++) targets.emplace_back(static_cast<int>(side), base + k * C * side * side);
    out.push_back(t);
    at_record += n;
  }
  if (at_record != records) throw std::runtime_error("augment_views: the runs' view counts do not add up to the plan's records");
  for (int k = 0; k < records; k++) {
    const double* rec = plan + static_cast<size_t>(k) * kRecord;
    const double src = rec[kSource], i = rec[kTop], j = rec[kLeft], h = rec[kHeight], w = rec[kWidth];
    const bool box_ok = src >= 0 && src < job.B && i >= 0 && j >= 0 && h >= 1 && w >= 1 && i + h <= job.H &&
                        j + w <= job.W && src == std::floor(src) && i == std::floor(i) && j == std::floor(j) &&
                        h == std::floor(h) && w == std::floor(w);
    if (!box_ok) throw std::runtime_error("augment_views: record " + std::to_string(k) + " has a crop box outside its image");
    if (!(rec[kOps] >= 0 && rec[kOps] <= 4)) throw std::runtime_error("augment_views: at most 4 jitter ops");
    for (int o = 0; o < rec[kOps]; o++) {
      if (!(rec[kOrder + o] >= 0 && rec[kOrder + o] <= 3)) throw std::runtime_error("augment_views: jitter op codes are 0..3");
    }
    if (!(rec[kSigma] >= 0 && rec[kSigma] <= 10)) throw std::runtime_error("augment_views: blur sigma must be in 0..10");
  }

  if (threads <= 0) threads = at::get_num_threads();
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex error_lock;
  // Runs on every thread, the caller's included: nothing may escape it (an exception leaving a std::thread ends
  // the process), so a failure is kept and thrown after the join.
  auto work = [&]() noexcept {
    try {
      Scratch s;
      for (int k; !failed && (k = next++) < records;) {
        make_view(job, plan + static_cast<size_t>(k) * kRecord, targets[k].first, targets[k].second, s);
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> hold(error_lock);
      if (!failed.exchange(true)) error = e.what();
    } catch (...) {
      std::lock_guard<std::mutex> hold(error_lock);
      if (!failed.exchange(true)) error = "unknown C++ exception";
    }
  };
  on_threads(threads, records, work);
  if (failed) throw std::runtime_error("augment_views: " + error);
  return out;
}

}  // namespace

LIST(augment_views, (T images, const void* plan, int records, INTS(runs), const void* norm, int interpolation,
                     int threads),
     augment_views(*images, static_cast<const double*>(plan), records, IV(runs), static_cast<const double*>(norm),
                   interpolation, threads))
// The nonblocking twin, which overlaps a step: in the background (see in_background).
LIST(augment_views_background,
     (T images, const void* plan, int records, INTS(runs), const void* norm, int interpolation, int threads),
     in_background([&] {
       return augment_views(*images, static_cast<const double*>(plan), records, IV(runs),
                            static_cast<const double*>(norm), interpolation, threads);
     }))
