// Images in and out, through stb (libstb-dev's headers) and libjpeg: a threaded batch decoder (square centre crops,
// resampled as PIL resamples), a one-file decoder that keeps the whole image and its aspect, and a PNG/JPEG writer.
// JPEGs are decoded with libjpeg where the shim is built with it (DINO_JPEG, libjpeg-dev's headers), as PIL decodes
// them; the other formats, and JPEGs without it, with stb. Without stb (DINO_STB undefined) the entry points exist and
// report how to get it.
//
// Files are hostile input: decoding never throws out of a worker thread, never allocates for an image whose
// header declares more pixels than the caller's budget, and never sizes anything from unchecked arithmetic. No
// file may end the process either: stb's asserts throw (and the file is skipped with the failed condition as its
// reason), stb allocates from a per-file arena that a failure frees whole and that caps what one file may take,
// and the crashes and the endless loop that stb 2.27 has on some corrupt files are steered around (see
// decode_one). tests/fuzz_images_test.ts checks all of this on mutated files of every format. Where stb 2.27 gives
// wrong pixels or reasons without crashing, the decoder corrects it (tests/stb_quirks_test.ts): palettized BMPs
// whose palette stb reads short (uninitialised colours), PNM samples not scaled by their maximum value, failure
// reasons left over from earlier files, and a resize at scale 1 that blurred an image already at its size.
#include "shim.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef DINO_JPEG
#include <csetjmp>
// jpeglib.h needs FILE and size_t declared before it (cstdio, cstddef above).
#include <jerror.h>
#include <jpeglib.h>
#endif

// ---- PIL's resampling ---------------------------------------------------------------------------------------------

// One axis of torchvision's Resize(side) + CenterCrop(crop) on a PIL image, as Pillow's antialiased resampling
// (libImaging/Resample.c) computes it: the filter's weights in double for each output pixel, normalised, then to
// fixed point with 22 fractional bits; each pass sums in integers from a half and clips to 8 bits. Only the crop's
// output pixels are planned, so no intermediate is larger than the source plus a filter margin, however extreme
// the aspect ratio; the pixels are PIL's, whose two passes are exact integer arithmetic.
struct Taps {
  int first = 0, count = 0;  // the source pixels read: [first, first + count)
  int ksize = 0;             // weights per output pixel
  bool copy = false;         // the axis keeps its size: PIL skips its pass
  std::vector<int> lo, n;    // per output pixel: its first source pixel (from `first`) and how many it sums
  std::vector<int32_t> k;    // per output pixel, ksize weights
};
static constexpr int kPilPrecision = 32 - 8 - 2;  // Resample.c's PRECISION_BITS

// PIL's filters: BILINEAR (support 1), BICUBIC (a = -0.5, support 2) and LANCZOS (support 3).
enum class PilFilter { kBilinear, kBicubic, kLanczos };
static double pil_support(PilFilter f) { return f == PilFilter::kBilinear ? 1.0 : f == PilFilter::kBicubic ? 2.0 : 3.0; }
static double pil_sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}
static double pil_filter(PilFilter f, double x) {
  if (f == PilFilter::kLanczos) return -3.0 <= x && x < 3.0 ? pil_sinc(x) * pil_sinc(x / 3) : 0.0;
  if (x < 0.0) x = -x;
  if (f == PilFilter::kBilinear) return x < 1.0 ? 1.0 - x : 0.0;
  constexpr double a = -0.5;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// The taps of output pixels [offset, offset + crop) of an axis of `n` source pixels, of which the box [in0, in1)
// (PIL's float box; [0, n) for the whole axis) is resized to `resized` with `filter`, where offset is torchvision's
// CenterCrop: int(round((resized - crop) / 2)), Python's round taking a half to the even neighbour, as nearbyint
// does in the default rounding mode.
static bool plan_taps(int n, float in0, float in1, int64_t resized, int crop, PilFilter filter, Taps* t) {
  if (n <= 0 || resized < crop || crop <= 0 || resized > INT_MAX || !(in0 >= 0 && in1 > in0 && in1 <= n)) return false;
  const int offset = static_cast<int>(std::nearbyint((static_cast<double>(resized) - crop) / 2));
  t->lo.assign(crop, 0);
  t->n.assign(crop, 0);
  if (resized == n && in0 == 0 && in1 == resized) {  // Pillow resamples only the axes whose size or box changes
    t->copy = true;
    t->first = offset;
    t->count = crop;
    t->ksize = 1;
    for (int i = 0; i < crop; i++) t->lo[i] = i, t->n[i] = 1;
    return true;
  }
  const double scale = static_cast<double>(in1 - in0) / static_cast<double>(resized);
  const double filterscale = std::max(1.0, scale), ss = 1.0 / filterscale;
  const double support = pil_support(filter) * filterscale;
  const double ksize = std::ceil(support) * 2 + 1;
  if (!(ksize <= (1 << 20))) return false;
  t->ksize = static_cast<int>(ksize);
  t->k.assign(static_cast<size_t>(crop) * t->ksize, 0);
  std::vector<int> xmin(crop);
  std::vector<double> w(t->ksize);
  int first = INT_MAX, last = 0;
  for (int i = 0; i < crop; i++) {
    const double center = in0 + (offset + i + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(center - support + 0.5));
    const int hi = std::min(n, static_cast<int>(center + support + 0.5));
    if (hi <= lo || hi - lo > t->ksize) return false;
    double sum = 0.0;
    for (int x = 0; x < hi - lo; x++) sum += w[x] = pil_filter(filter, (x + lo - center + 0.5) * ss);
    for (int x = 0; x < hi - lo; x++) {
      const double v = (sum != 0.0 ? w[x] / sum : w[x]) * (1 << kPilPrecision);
      t->k[static_cast<size_t>(i) * t->ksize + x] = static_cast<int32_t>(v < 0 ? -0.5 + v : 0.5 + v);
    }
    xmin[i] = lo;
    t->n[i] = hi - lo;
    first = std::min(first, lo);
    last = std::max(last, hi);
  }
  t->first = first;
  t->count = last - first;
  for (int i = 0; i < crop; i++) t->lo[i] = xmin[i] - first;
  return true;
}

static inline uint8_t pil_clip8(int32_t v) {
  return v <= 0 ? 0 : v >= (255 << kPilPrecision) ? 255 : static_cast<uint8_t>(v >> kPilPrecision);
}

// PIL's two passes, horizontal then vertical, over the source pixels the taps read (`src` at their first, rows of
// `stride` bytes, `channels` interleaved) into `dst` (tx.lo.size() x ty.lo.size() x channels).
static void pil_resample(const uint8_t* src, size_t stride, int channels, const Taps& tx, const Taps& ty,
                         uint8_t* dst) {
  const int ow = static_cast<int>(tx.lo.size()), oh = static_cast<int>(ty.lo.size());
  const size_t row = static_cast<size_t>(ow) * channels;
  std::vector<uint8_t> mid(row * ty.count);
  for (int y = 0; y < ty.count; y++) {
    const uint8_t* in = src + y * stride;
    uint8_t* out = mid.data() + y * row;
    for (int x = 0; x < ow; x++) {
      const uint8_t* p = in + static_cast<size_t>(tx.lo[x]) * channels;
      if (tx.copy) {
        std::copy(p, p + channels, out + static_cast<size_t>(x) * channels);
        continue;
      }
      const int32_t* k = tx.k.data() + static_cast<size_t>(x) * tx.ksize;
      for (int c = 0; c < channels; c++) {
        int32_t acc = 1 << (kPilPrecision - 1);
        for (int j = 0; j < tx.n[x]; j++) acc += p[j * channels + c] * k[j];
        out[static_cast<size_t>(x) * channels + c] = pil_clip8(acc);
      }
    }
  }
  for (int y = 0; y < oh; y++) {
    const uint8_t* in = mid.data() + ty.lo[y] * row;
    uint8_t* out = dst + y * row;
    if (ty.copy) {
      std::copy(in, in + row, out);
      continue;
    }
    const int32_t* k = ty.k.data() + static_cast<size_t>(y) * ty.ksize;
    for (size_t i = 0; i < row; i++) {
      int32_t acc = 1 << (kPilPrecision - 1);
      for (int j = 0; j < ty.n[y]; j++) acc += in[j * row + i] * k[j];
      out[i] = pil_clip8(acc);
    }
  }
}

#ifdef DINO_STB
// ---- stb, compiled into the shim -------------------------------------------------------------------------------
//
// Debian's libstb is built with its asserts on, and an assert that malformed input reaches would abort the
// process. So stb's implementations are compiled here from the headers instead, static (nothing clashes with
// another stb in the process), with the asserts throwing and the allocations going through StbArena.

namespace {

/** A failed stb assert, thrown from inside stb and caught by the decoder's per-file catch-all. */
struct StbAssert : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void stb_assert_failed(const char* header, int line, const char* condition) {
  char what[200];
  std::snprintf(what, sizeof what, "%s:%d: stb's assertion `%.120s' failed", header, line, condition);
  throw StbAssert(what);
}

// Every block stb allocates carries this header, which links it into the arena that was current when it was
// allocated. 32 bytes, so the memory after it keeps malloc's 16-byte alignment.
struct StbArena;
struct alignas(16) Block {
  StbArena* owner;
  Block* prev;
  Block* next;
  size_t size;
};
static_assert(sizeof(Block) % alignof(std::max_align_t) == 0, "stb's memory must stay aligned for any type");

thread_local StbArena* stb_arena = nullptr;

// What stb allocates while one file decodes (or one image is written), on this thread. When the scope ends,
// whatever is still allocated is freed: what stb had not freed when an assert threw, and what its error paths
// forget. An allocation that would take the live total past `cap` fails (stb then reports "outofmem"), so a
// file whose compressed data inflates far past what its declared size needs (a zlib bomb in a 1 x 1 PNG: stb
// inflates all of it) stops at the cap instead of taking gigabytes.
struct StbArena {
  size_t cap, live = 0;
  bool refused = false;  // an allocation failed for the cap
  Block list{nullptr, &list, &list, 0};
  StbArena* outer;

  explicit StbArena(size_t cap) : cap(cap), outer(stb_arena) { stb_arena = this; }
  StbArena(const StbArena&) = delete;
  StbArena& operator=(const StbArena&) = delete;
  ~StbArena() {
    while (list.next != &list) release(list.next);
    stb_arena = outer;
  }
  bool allows(size_t old_size, size_t size) {
    if (size <= old_size || size - old_size <= cap - std::min(cap, live)) return true;
    refused = true;
    return false;
  }
  void link(Block* b, size_t size) {
    b->owner = this;
    b->size = size;
    b->prev = &list;
    b->next = list.next;
    list.next->prev = b;
    list.next = b;
    live += size;
  }
  void unlink(Block* b) {
    b->prev->next = b->next;
    b->next->prev = b->prev;
    live -= b->size;
  }
  void release(Block* b) {
    unlink(b);
    std::free(b);
  }
};

void* stb_malloc(size_t size) {
  StbArena* a = stb_arena;
  if (size > SIZE_MAX - sizeof(Block) || (a && !a->allows(0, size))) return nullptr;
  // Zeroed: stb 2.27 does not check what it reads for an uncompressed TGA's rows or a PNM's samples, and where the
  // file is cut short they would keep whatever the memory held (an earlier file's pixels). As elsewhere in stb,
  // past the end reads as 0.
  auto* b = static_cast<Block*>(std::calloc(1, sizeof(Block) + size));
  if (!b) return nullptr;
  if (a) {
    a->link(b, size);
  } else {  // no arena (not reached: every stb call runs in one): a block of its own
    *b = Block{nullptr, b, b, size};
  }
  return b + 1;
}

void stb_free(void* p) {
  if (!p) return;
  Block* b = static_cast<Block*>(p) - 1;
  if (b->owner) b->owner->unlink(b);
  std::free(b);
}

void* stb_realloc(void* p, size_t size) {
  if (!p) return stb_malloc(size);
  Block* b = static_cast<Block*>(p) - 1;
  StbArena* a = b->owner;
  if (size > SIZE_MAX - sizeof(Block) || (a && !a->allows(b->size, size))) return nullptr;
  if (a) a->unlink(b);
  auto* moved = static_cast<Block*>(std::realloc(b, sizeof(Block) + size));
  if (!moved) {  // the old block stays valid, and in its arena
    if (a) a->link(b, b->size);
    return nullptr;
  }
  if (a) {
    a->link(moved, size);
  } else {
    *moved = Block{nullptr, moved, moved, size};
  }
  return moved + 1;
}

}  // namespace

#define STBI_ASSERT(x) ((x) ? (void)0 : stb_assert_failed("stb_image.h", __LINE__, #x))
#define STBIW_ASSERT(x) ((x) ? (void)0 : stb_assert_failed("stb_image_write.h", __LINE__, #x))
#define STBI_MALLOC(size) stb_malloc(size)
#define STBI_REALLOC(p, size) stb_realloc(p, size)
#define STBI_FREE(p) stb_free(p)
#define STBIW_MALLOC(size) stb_malloc(size)
#define STBIW_REALLOC(p, size) stb_realloc(p, size)
#define STBIW_FREE(p) stb_free(p)
// stb's own bound (its default, said out loud): a side of more than 2^24 pixels is refused as corrupt. The pixel
// budget bounds the area; this bounds a side, and still reads a 16,000,000 x 1 strip.
#define STBI_MAX_DIMENSIONS (1 << 24)
#define STB_IMAGE_STATIC
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

// The largest side decode_images resizes to: each image of the batch [n, C, side, side] is then up to 805 MB.
static constexpr int kMaxSide = 1 << 14;
// Room for one file's reason; written with snprintf, so recording a failure never allocates.
static constexpr size_t kReason = 256;

using File = std::unique_ptr<FILE, int (*)(FILE*)>;
using Pixels = std::unique_ptr<stbi_uc, void (*)(void*)>;

// What stb may allocate for one file: this much while it reads the header, and this much more per pixel that the
// header declares for the rest. A valid file takes at most about 32 bytes a pixel: 28 measured for an interlaced
// 16-bit RGBA PNG of noise (inflated rows in a buffer grown by doubling, the image, an interlace pass), 15 for
// HDR, 12 for a progressive JPEG or a GIF, under 10 for the rest.
static constexpr double kHeaderBytes = 64.0 * (1 << 20);
static constexpr double kBytesPerPixel = 48;

// What stb 2.27's HDR reader would make of a file's pixel data. It loops forever on a file that ends inside a
// run-length encoded scanline (CVE-2021-42715): past the end every run count reads as 0 and the scanline never
// fills. And it reads flat (not run-length encoded) pixels 4 bytes at a time into a stack array without looking at
// what it got: past the end the array keeps what it held, and the pixels come from uninitialised memory.
enum class HdrData { kReadable, kEndless, kTruncated };

// Walks the scanlines as stb will read them, from the start of `f` (of `size` bytes).
static HdrData hdr_data(FILE* f, off_t size, int w, int h) {
  bool end = false;
  auto get = [&]() {  // as stb reads: 0 past the end
    const int c = std::getc(f);
    end = end || c == EOF;
    return c == EOF ? 0 : c;
  };
  // Flat pixels from `from` to the end of the image: w x h of them whatever came before (stb starts over).
  auto flat = [&](off_t from) {
    return from >= 0 && size - from >= static_cast<int64_t>(w) * h * 4 ? HdrData::kReadable : HdrData::kTruncated;
  };
  // The header: lines up to an empty one (the first is "#?RADIANCE"), then the resolution line.
  for (int len = 1; len > 0 && !end;) {
    for (len = 0; get() != '\n' && !end;) len++;
  }
  while (!end && get() != '\n') {
  }
  if (end) return HdrData::kReadable;                   // no header end: stb refuses it
  if (w < 8 || w >= 32768) return flat(std::ftell(f));  // flat pixels only
  for (int y = 0; y < h; y++) {
    const int c1 = get(), c2 = get(), hi = get();
    if (c1 != 2 || c2 != 2 || (hi & 0x80)) return flat(std::ftell(f) - 3);  // stb reads flat pixels from here on
    if (((hi << 8) | get()) != w) return HdrData::kReadable;                 // stb refuses the scanline
    for (int k = 0; k < 4; k++) {
      for (int x = 0; x < w;) {
        int count = get();
        if (end) return HdrData::kEndless;  // a count read past the end: 0, for ever
        if (count > 128) {
          count -= 128;
          get();
        } else {
          for (int i = 0; i < count; i++) get();
        }
        if (count > w - x) return HdrData::kReadable;  // stb refuses the scanline
        x += count;
      }
    }
  }
  return HdrData::kReadable;
}

// Reads a file by offset through a window, with pread: the FILE that stb reads is left where it is. Past the end
// it reads 0, as stb does.
struct Reader {
  int fd;
  off_t size;
  std::vector<unsigned char> window = std::vector<unsigned char>(1 << 16);
  off_t start = 0, end = 0;  // the window holds [start, end)
  int at(off_t p) {
    if (p < start || p >= end) {
      if (p < 0 || p >= size) return 0;
      const ssize_t n = ::pread(fd, window.data(), window.size(), p);
      if (n <= 0) return 0;
      start = p;
      end = p + n;
    }
    return window[p - start];
  }
  // The offset of the first 0xff at or after p, or the size.
  off_t next_ff(off_t p) {
    for (; p < size; p = end) {
      at(p);  // loads the window holding p
      if (p < start || p >= end) return size;
      const void* hit = std::memchr(window.data() + (p - start), 0xff, static_cast<size_t>(end - p));
      if (hit) return start + (static_cast<const unsigned char*>(hit) - window.data());
    }
    return size;
  }
};

// stb 2.27 builds a JPEG Huffman table from the 16 code counts of its DHT segment without checking that they add up
// to at most 256; more overflow the table, into the decoder's other tables and past its state, and the decoding
// then reads far outside them (it crashes evaluating the assert in stbi__jpeg_huff_decode). No valid JPEG has such
// a table (libjpeg refuses one). Says why a JPEG defines one where stb would read it, or returns null.
//
// The file is walked as stb walks it, marker by marker, to where stb stops. Before the frame header, stb skips
// stray bytes up to the next 0xff. After it, every segment is read by its length (a DQT by its tables), and a
// scan's entropy-coded data ends at its first marker other than a restart (a 0xff, fill bytes, then a byte other
// than 0 or RST0-7): stb may stop reading the data sooner (all blocks decoded, or corrupt data), but it then takes
// the next marker from no further than that end, or stops. So the DHT segments met here are the only ones stb can
// build, and bytes that are not segments (a DHT-like run inside a comment, an APP segment or the entropy-coded
// data, or data after the end of the image, as in motion photos) are never taken for one.
static const char* jpeg_huffman_problem(int fd, off_t size) {
  Reader r{fd, size};
  off_t p = 0;
  auto get = [&]() { return r.at(p++); };
  auto get16 = [&]() {
    const int hi = get();
    return (hi << 8) | get();
  };
  constexpr int kNone = 0xff;
  auto marker = [&]() {  // stb's stbi__get_marker: 0xff fill bytes, then the marker; kNone if no 0xff
    int x = get();
    if (x != 0xff) return kNone;
    while (x == 0xff && p <= size) x = get();
    return x;
  };
  static const char* const kTooMany = "cannot decode (a JPEG Huffman table of more than 256 codes)";
  // One DHT segment, its length at p: kOver if a table has more than 256 codes; kStop where stb refuses the
  // segment (it stops decoding there).
  enum Dht { kFits, kOver, kStop };
  auto dht = [&]() {
    int left = get16() - 2;
    while (left > 0 && p < size) {  // past the end stb reads zeros: empty tables
      const int q = get();
      if ((q >> 4) > 1 || (q & 15) > 3) return kStop;
      int codes = 0;
      for (int i = 0; i < 16; i++) codes += get();
      if (codes > 256) return kOver;
      p += codes;
      left -= 17 + codes;
    }
    return left == 0 || p >= size ? kFits : kStop;
  };
  if (marker() != 0xd8) return nullptr;  // no SOI (after any 0xff fill bytes, as stb reads it): not a JPEG to stb
  for (int m = marker();;) {
    if (m == 0xc0 || m == 0xc1 || m == 0xc2) {  // the frame header
      const int length = get16();
      if (length < 11) return nullptr;
      p += length - 2;
      break;
    }
    if (m == 0xc4) {
      if (dht() == kOver) return kTooMany;
    } else if (m == 0xdd) {
      if (get16() != 4) return nullptr;
      p += 2;
    } else if (m == 0xdb || (m >= 0xe0 && m <= 0xef) || m == 0xfe) {
      const int length = get16();
      if (length < 2) return nullptr;
      p += length - 2;
    } else {
      return nullptr;  // stb stops at any other marker, and at none
    }
    m = marker();
    while (m == kNone) {  // stb skips bytes up to the next 0xff
      if (p >= size) return nullptr;
      m = marker();
    }
  }
  // After the frame header (stbi__decode_jpeg_image): a marker must follow each segment directly.
  for (int m = marker(); p <= size;) {
    if (m == 0xc4) {
      const Dht d = dht();
      if (d == kOver) return kTooMany;
      if (d == kStop) return nullptr;
    } else if (m == 0xdb) {  // DQT: stb reads its tables, and stops unless they fill the length exactly
      int left = get16() - 2;
      while (left > 0 && p < size) {
        const int q = get();
        if ((q >> 4) > 1 || (q & 15) > 3) return nullptr;
        p += (q >> 4) ? 128 : 64;
        left -= (q >> 4) ? 129 : 65;
      }
      if (left != 0 && p < size) return nullptr;
    } else if (m == 0xdd || m == 0xdc) {  // DRI, DNL: 4 bytes, or stb stops
      if (get16() != 4) return nullptr;
      p += 2;
    } else if ((m >= 0xe0 && m <= 0xef) || m == 0xfe) {
      const int length = get16();
      if (length < 2) return nullptr;
      p += length - 2;
    } else if (m == 0xda) {  // a scan: its header, then its entropy-coded data up to the next marker
      const off_t start = p;
      const int length = get16(), n = get();
      if (n < 1 || n > 4 || length != 6 + 2 * n) return nullptr;
      p = start + length;
      for (m = kNone; m == kNone && p < size;) {
        p = r.next_ff(p);
        while (p < size && r.at(p) == 0xff) p++;
        const int x = get();  // 0 past the end: data, and the walk ends
        if (x != 0 && (x < 0xd0 || x > 0xd7)) m = x;
      }
      if (m == kNone) return nullptr;  // the file ends inside the scan
      continue;
    } else {
      return nullptr;  // the end of the image, no marker, or one stb does not take here: stb stops
    }
    m = marker();
  }
  return nullptr;
}

// stb 2.27 reads a palettized BMP's colours into an uninitialised array of 256 entries, as many as its own count of
// the entries between the headers and the pixel data; a pixel whose index is past them takes whatever the stack
// held, and differs from run to run. The count is short wherever the file's palette is (fewer entries than the bit
// depth indexes), and always for an OS/2 (12-byte) header, where stb subtracts 24 bytes of header, not 12: it
// misses the last 4 of 256 colours, and for a 1-bit file it counts -2 and reads the pixels 6 bytes late. Such a
// file is shown to stb rewritten, through callbacks: a Windows (40-byte) header with the file's size, planes and
// bit depth, a palette of every entry the depth indexes, then the file's bytes from its pixel data offset. The
// entries are the file's, as many as lie between its header and its pixel data (3 bytes each after an OS/2 header,
// 4 after a Windows one); the others, as PIL gives them, the gray ramp (i, i, i). A valid file decodes as PIL
// decodes it.
struct RewrittenBmp {
  std::vector<unsigned char> head;  // headers and palette
  int fd = -1;
  off_t from = 0, size = 0;  // then the file's bytes [from, size)
  int64_t pos = 0;
  int64_t length() const { return static_cast<int64_t>(head.size()) + std::max<off_t>(0, size - from); }
};

static int rewritten_read(void* user, char* data, int n) {
  auto* r = static_cast<RewrittenBmp*>(user);
  int done = 0;
  while (done < n && r->pos < r->length()) {
    const auto in_head = static_cast<int64_t>(r->head.size());
    if (r->pos < in_head) {
      const int k = static_cast<int>(std::min<int64_t>(n - done, in_head - r->pos));
      std::memcpy(data + done, r->head.data() + r->pos, k);
      done += k;
      r->pos += k;
    } else {
      const ssize_t k = ::pread(r->fd, data + done, n - done, r->from + (r->pos - in_head));
      if (k <= 0) break;
      done += static_cast<int>(k);
      r->pos += k;
    }
  }
  return done;
}
static void rewritten_skip(void* user, int n) {
  auto* r = static_cast<RewrittenBmp*>(user);
  r->pos = std::max<int64_t>(0, r->pos + n);
}
static int rewritten_eof(void* user) {
  auto* r = static_cast<RewrittenBmp*>(user);
  return r->pos >= r->length();
}
static const stbi_io_callbacks kRewrittenIo = {rewritten_read, rewritten_skip, rewritten_eof};

// How stb is to read a BMP: as it is, rewritten (see RewrittenBmp), or not at all: a palettized file that holds no
// palette entry (PIL takes colours from its pixel data; stb refuses a Windows one, reads an OS/2 one wrong).
enum class BmpPalette { kAsIs, kRewritten, kNone };

// Whether stb would read an uninitialised palette entry of the BMP whose first 92 bytes are `h`; if so, fills `out`
// with the rewritten file.
static BmpPalette rewrite_bmp_palette(int fd, off_t size, const unsigned char* h, RewrittenBmp* out) {
  auto le16 = [&](int at) { return h[at] | (h[at + 1] << 8); };
  auto le32 = [&](int at) { return static_cast<uint32_t>(le16(at)) | (static_cast<uint32_t>(le16(at + 2)) << 16); };
  const uint32_t offset = le32(10), hsz = le32(14);
  if (offset > INT_MAX || (hsz != 12 && hsz != 40 && hsz != 56 && hsz != 108 && hsz != 124)) return BmpPalette::kAsIs;
  const bool os2 = hsz == 12;
  const int bpp = le16(os2 ? 24 : 28);
  if (bpp != 1 && bpp != 4 && bpp != 8) return BmpPalette::kAsIs;  // no palette for the others (or stb refuses them)
  if (!os2 && le32(30) != 0) return BmpPalette::kAsIs;              // compressed: stb refuses it
  const int entries = 1 << bpp, entry = os2 ? 3 : 4;
  const int gap = static_cast<int>(offset) - 14;  // bytes between the file header and the pixel data
  const int stb_count = os2 ? (gap - 24) / 3 : (gap - static_cast<int>(hsz)) >> 2;  // stb's count
  if (!os2 && stb_count >= entries) return BmpPalette::kAsIs;  // every entry a pixel can index is the file's
  if (stb_count > 256) return BmpPalette::kAsIs;               // stb refuses the file
  const int64_t start = 14 + hsz;  // the file's palette
  const int64_t have = std::clamp<int64_t>((std::min<int64_t>(offset, size) - start) / entry, 0, entries);
  if (have == 0) return BmpPalette::kNone;
  std::vector<unsigned char> pal(static_cast<size_t>(have) * entry);
  if (::pread(fd, pal.data(), pal.size(), start) != static_cast<ssize_t>(pal.size())) return BmpPalette::kNone;
  const uint32_t out_offset = 14 + 40 + 4 * entries;
  auto put16 = [&](int v) {
    out->head.push_back(v & 0xff);
    out->head.push_back((v >> 8) & 0xff);
  };
  auto put32 = [&](uint32_t v) {
    put16(v & 0xffff);
    put16(v >> 16);
  };
  out->head.clear();
  out->head.push_back('B');
  out->head.push_back('M');
  put32(0);  // the file's size: stb ignores it
  put32(0);  // reserved
  put32(out_offset);
  put32(40);
  if (os2) {  // unsigned 16-bit sides: bottom-up
    put32(le16(18));
    put32(le16(20));
  } else {  // as they are (a negative height is a top-down file)
    put32(le32(18));
    put32(le32(22));
  }
  put16(le16(os2 ? 22 : 26));  // planes (stb refuses any but 1)
  put16(bpp);
  for (int i = 0; i < 6; i++) put32(0);  // no compression, image size, resolution, colours used and important
  for (int i = 0; i < entries; i++) {
    const unsigned char* e = pal.data() + static_cast<size_t>(i) * entry;
    const unsigned char b = i < have ? e[0] : i, g = i < have ? e[1] : i, r = i < have ? e[2] : i;
    out->head.insert(out->head.end(), {b, g, r, 0});
  }
  out->fd = fd;
  out->from = offset;
  out->size = size;
  out->pos = 0;
  return BmpPalette::kRewritten;
}

// stb 2.27 gives a PNM's samples as they are stored, not scaled from 0..maxval to 0..255: a maximum value of 100
// came out at 100 / 255 of its brightness; and a 16-bit sample (maxval over 255) was read in the machine's byte
// order, not the file's (most significant first), and cut to its high byte, which was the sample's low byte.
// Reads the maximum value as stb reads the header (whitespace and # comments between the fields), for the decoder
// to scale by; -1 if there is none.
static int pnm_max_value(int fd, off_t size) {
  Reader r{fd, size};
  off_t p = 2;  // after "P5" or "P6"
  int c = r.at(p++);
  auto space = [](int x) { return x == ' ' || x == '\t' || x == '\n' || x == '\v' || x == '\f' || x == '\r'; };
  auto skip = [&]() {
    for (;;) {
      while (p <= size && space(c)) c = r.at(p++);
      if (p > size || c != '#') return;
      while (p <= size && c != '\n' && c != '\r') c = r.at(p++);
    }
  };
  auto integer = [&]() {
    int64_t v = 0;
    for (; p <= size && c >= '0' && c <= '9' && v <= 65535; c = r.at(p++)) v = v * 10 + (c - '0');
    return v;
  };
  skip();
  integer();  // width
  skip();
  integer();  // height
  skip();
  const int64_t max = integer();
  return max >= 1 && max <= 65535 ? static_cast<int>(max) : -1;
}

// Converts `n`-channel pixels to `channels` (1 or 3): gray is repeated, alpha dropped, and RGB made gray as PIL's
// convert("L") makes it.
static void convert_channels(const stbi_uc* src, int n, int channels, size_t count, uint8_t* dst) {
  for (size_t i = 0; i < count; i++, src += n, dst += channels) {
    if (n <= 2) {
      std::fill(dst, dst + channels, src[0]);
    } else if (channels == 3) {
      std::copy(src, src + 3, dst);
    } else {
      // ITU-R 601-2 luma in 16-bit fixed point, rounded (stb's own weights are 8-bit, and put pixels 1 off PIL's).
      dst[0] = static_cast<uint8_t>((src[0] * 19595 + src[1] * 38470 + src[2] * 7471 + 0x8000) >> 16);
    }
  }
}

// stb's failure reason is thread-local (STBI_THREAD_LOCAL, C++11's thread_local): decoding threads never see each
// other's. It is also never cleared, and some of stb's failures set none (a deflate block of the reserved type 3
// in a PNG, a JPEG scan naming a component its frame lacks, a GIF with no image): an earlier reason would be
// reported, one left by stb's probing of the file for other formats (a corrupt PNG said "no SOI", JPEG's missing
// marker; a JPEG "bad png sig") or by an earlier file on the same thread. So it is cleared before every call into
// stb (it is a static of this translation unit, where stb is compiled), the probes' reasons are not taken for the
// loader's (stb_load_reason), and a failure without a reason names the format.
#if !defined(STBI_THREAD_LOCAL) || defined(STBI_NO_THREAD_LOCALS) || defined(STBI_NO_FAILURE_STRINGS)
#error "stb_image must keep its failure reason per thread: the decoder runs on many threads"
#endif
static void clear_stb_reason() { stbi__g_failure_reason = nullptr; }

// Why stb failed, on this thread, since the last clear_stb_reason.
static const char* stb_reason(const char* fallback) {
  const char* r = stbi_failure_reason();
  return r && r[0] ? r : fallback;
}

// stb names an unknown critical PNG chunk in one static buffer that every thread shares ("XXXX PNG chunk not known",
// the chunk's four type bytes first, NULs included): another thread can rewrite the type before this one reads it
// (seen: a file reported with its neighbour's type). Whether a PNG's reason is that one: for a PNG, the only reason
// that can be shorter than four characters (a GIF's can be empty, where stb clears it).
static bool is_unknown_png_chunk(const char* r) {
  return r && (std::strlen(r) < 4 || std::strcmp(r + 4, " PNG chunk not known") == 0);
}

// The type of the chunk that stb calls unknown, found as stb walks a PNG: from the signature, chunk by chunk (length,
// type, data, CRC), the first whose type stb does not handle and whose ancillary bit (0x20 of its first byte) is
// clear. False where the walk ends first, or runs past the end of the file (where stb reads zeros): a cut file.
static bool png_unknown_chunk(int fd, off_t size, unsigned char type[4]) {
  static const char* handled[] = {"CgBI", "IHDR", "PLTE", "tRNS", "IDAT", "IEND"};
  for (uint64_t at = 8; at + 8 <= static_cast<uint64_t>(size);) {
    unsigned char header[8];
    if (::pread(fd, header, 8, static_cast<off_t>(at)) != 8) return false;
    std::memcpy(type, header + 4, 4);
    const bool known = std::any_of(std::begin(handled), std::end(handled),
                                   [&](const char* t) { return std::memcmp(type, t, 4) == 0; });
    if (!known && !(type[0] & 0x20)) return true;
    if (std::memcmp(type, "IEND", 4) == 0) return false;
    const uint64_t length = (uint64_t{header[0]} << 24) | (header[1] << 16) | (header[2] << 8) | header[3];
    at += 12 + length;
  }
  return false;
}

// Why stb failed to load a file that its header was read from. Before the loader of the file's format, stb tries
// the others on it, and two of those tries set a reason: "bad png sig" (the PNG test, first), "no SOI" (JPEG's);
// the file passed its own format's test, so either one is left over from another format's.
static const char* stb_load_reason(const char* fallback) {
  const char* r = stb_reason(fallback);
  return std::strcmp(r, "bad png sig") == 0 || std::strcmp(r, "no SOI") == 0 ? fallback : r;
}

// Why a file of w x h pixels is not decoded.
static void over_budget(char* why, double w, double h, double max_pixels) {
  std::snprintf(why, kReason,
                "%.0f x %.0f = %.0f pixels exceeds the decoding budget of %.0f (raise it to read it: "
                "--max-image-pixels, maxImagePixels in the API, or DINO_MAX_IMAGE_PIXELS)",
                w, h, w * h, max_pixels);
}

// What decode_jpeg made of a file: its pixels (HWC, `comp` of 1 or 3 channels).
struct JpegImage {
  int w = 0, h = 0, comp = 0;
  bool truncated = false;  // cut short or broken, and decoded as PIL decodes it under LOAD_TRUNCATED_IMAGES
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> line;  // a row as libjpeg gives it
};

#ifdef DINO_JPEG
// ---- JPEG through libjpeg(-turbo), as PIL reads it -------------------------------------------------------------
//
// torchvision's ImageFolder opens files with PIL, whose JPEG decoder is libjpeg(-turbo) at its defaults (the slow
// exact integer DCT, fancy upsampling): decoding with the same library gives the same pixels, where stb's decoder
// (its own IDCT and upsampling) is 1-3 levels off. As PIL: three components are RGB (YCbCr converted by libjpeg),
// one is gray, four are CMYK, inverted ("assume adobe conventions", whatever the file's Adobe marker says) and
// converted to RGB with Pillow's cmyk2rgb. Where the data ends, and what an error leaves, is PIL's too, because
// libjpeg is driven as Pillow's decoder drives it (ImageFile.load and JpegDecode.c): a suspending source fed the file
// in reads of 64 KiB after what it has not consumed, the header read, decompression started, the rows read one at a
// time and the decompression finished, each step resumed where it suspended for more data. A file whose data runs
// out before that is done is refused ("image file is truncated"); whether one that lacks only its end-of-image
// marker is done depends on where libjpeg's reading ahead ends, as in PIL. libjpeg reports errors by calling
// error_exit, which longjmps back to decode_jpeg: no C++ object with a destructor lives in the frames it crosses,
// and what is changed after the setjmp and read after the jump is volatile or reached through a pointer.
//
// Under PIL's ImageFile.LOAD_TRUNCATED_IMAGES (`load_truncated`), as JpegImagePlugin.load_read does, an end-of-image
// marker is fed once where the data ends, and then the decoding stops where it is; an error stops it too. The rows
// decoded are kept and the others are as Pillow's fresh image leaves them: zeros, black, or for a CMYK file white
// (cmyk2rgb of zeros).
namespace {
struct JpegErrors {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  volatile bool scans = false;  // past kMaxJpegScans
  char message[JMSG_LENGTH_MAX] = {0};
};
// A progressive JPEG of many tiny scans costs a pass over the image each: libjpeg-turbo's advice for untrusted files
// is to cap them (valid files have about 10).
constexpr int kMaxJpegScans = 1000;
// ImageFile.MAXBLOCK: PIL's reads, whose size decides where libjpeg's reading ahead meets the end of the data.
constexpr size_t kPilBlock = 65536;
constexpr size_t kMaxJpegHeld = kPilBlock + (1 << 20);

void jpeg_failed(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErrors*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}
void jpeg_quiet(j_common_ptr c, int level) {
  if (level < 0) c->err->num_warnings++;
}
void jpeg_progress(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErrors*>(c->err);
  if (reinterpret_cast<j_decompress_ptr>(c)->input_scan_number > kMaxJpegScans) {
    e->scans = true;
    std::snprintf(e->message, JMSG_LENGTH_MAX, "more than %d scans", kMaxJpegScans);
    std::longjmp(e->jump, 1);
  }
}

// Pillow's jpeg_buffer_src: libjpeg reads the buffer it is given and suspends at its end; a skip past it is kept
// for the next buffer.
struct PilSource {
  jpeg_source_mgr pub;
  long skip = 0;
};
void pil_source_nothing(j_decompress_ptr) {}
boolean pil_source_suspend(j_decompress_ptr) { return FALSE; }
void pil_source_skip(j_decompress_ptr c, long n) {
  auto* s = reinterpret_cast<PilSource*>(c->src);
  if (n > static_cast<long>(s->pub.bytes_in_buffer)) {
    s->skip = n - static_cast<long>(s->pub.bytes_in_buffer);
    s->pub.next_input_byte += s->pub.bytes_in_buffer;
    s->pub.bytes_in_buffer = 0;
  } else {
    s->pub.bytes_in_buffer -= n;
    s->pub.next_input_byte += n;
    s->skip = 0;
  }
}

// What PIL's JpegImagePlugin reads of the header: whether it opens the file (it reads each segment whole, up to and
// including the first start-of-scan segment, and raises "Truncated File Read" where the file ends first), and the
// size and components its frame header declares (the image PIL makes, zeros, before libjpeg reads anything).
struct PilHeader {
  bool complete = false;
  int w = 0, h = 0, components = 0;
};
// What the decoding loop keeps between the calls that feed it: reached through a pointer across the longjmp.
struct PilFeed {
  std::vector<uint8_t> held;  // the bytes libjpeg has not consumed, then the next read
  volatile int stage = 1;     // JpegDecode.c's state: 1 header, 2 start, 3 rows, 4 finish, 5 done
  volatile int rows = 0;      // rows decoded
  bool ended = false;         // load_truncated: the end-of-image marker was fed where the data ended
  PilHeader header;           // what PIL's parser read
};

// `f` is at the SOI; it is left there.
PilHeader pil_header(FILE* f) {
  const long start = std::ftell(f);
  PilHeader header;
  bool& complete = header.complete;
  if (std::fgetc(f) == 0xff && std::fgetc(f) == 0xd8) {
    for (;;) {
      int c = std::fgetc(f);
      if (c == EOF) break;
      if (c != 0xff) continue;  // junk between segments, skipped as PIL skips it
      do c = std::fgetc(f); while (c == 0xff);
      if (c == EOF) break;
      if (c == 0 || c == 0x01 || (c >= 0xd0 && c <= 0xd9)) continue;  // no length: TEM, RSTn, SOI, EOI
      const int hi = std::fgetc(f), lo = std::fgetc(f);
      if (lo == EOF) break;
      const long length = (hi << 8 | lo) - 2;
      const bool frame = c >= 0xc0 && c <= 0xcf && c != 0xc4 && c != 0xc8 && c != 0xcc;
      if (frame && length >= 6 && header.components == 0) {  // P, Y, X, Nf: PIL's size and mode
        const int p = std::fgetc(f), y1 = std::fgetc(f), y0 = std::fgetc(f), x1 = std::fgetc(f), x0 = std::fgetc(f);
        const int nf = std::fgetc(f);
        if (p == EOF || nf == EOF) break;
        header = {false, x1 << 8 | x0, y1 << 8 | y0, nf};
        if (length > 6 && (std::fseek(f, length - 7, SEEK_CUR) != 0 || std::fgetc(f) == EOF)) break;
        continue;
      }
      // A length under 2 skips nothing, as PIL's _safe_read and libjpeg's skip_variable take it.
      if (length > 0 && (std::fseek(f, length - 1, SEEK_CUR) != 0 || std::fgetc(f) == EOF)) break;  // ends inside
      if (c == 0xda) {
        complete = true;
        break;
      }
    }
  }
  std::fseek(f, start, SEEK_SET);
  return header;
}
}  // namespace

// Decodes the JPEG `f` (read from its position) into `out`, or writes why not into `why`: over the pixel budget
// (checked on the header, before any pixel is allocated), corrupt, truncated (unless `load_truncated`: then
// `out->truncated` says it was cut short or broken, and what was decoded is kept), or needing more of libjpeg's
// working memory than stb may take for a file of its size.
static void decode_jpeg(FILE* f, double max_pixels, JpegImage* out, char* why, bool load_truncated) {
  jpeg_decompress_struct cinfo{};  // zeroed: an error inside jpeg_create_decompress leaves nothing to destroy
  JpegErrors errors;
  jpeg_progress_mgr progress;
  PilSource source;
  // On the heap, so that what the loop changes after the setjmp is in memory when the longjmp comes back.
  const auto state = std::make_unique<PilFeed>();
  // Destroys the decompressor on every way out, an exception included (a second destroy does nothing).
  const std::unique_ptr<jpeg_decompress_struct, void (*)(jpeg_decompress_struct*)> destroy(&cinfo,
                                                                                            jpeg_destroy_decompress);
  const PilHeader& header = state->header;
  cinfo.err = jpeg_std_error(&errors.pub);
  errors.pub.error_exit = jpeg_failed;
  errors.pub.emit_message = jpeg_quiet;
  progress.progress_monitor = jpeg_progress;
  if (setjmp(errors.jump)) {
    const int code = errors.pub.msg_code;
    const bool memory = code == JERR_NO_BACKING_STORE || code == JERR_OUT_OF_MEMORY;
    const bool pil_mode = header.components == 1 || header.components == 3 || header.components == 4;
    if (load_truncated && state->stage >= 2 && !errors.scans && !memory) {
      // Past the header, PIL keeps what the rows hold (LOAD_TRUNCATED_IMAGES silences the error).
      out->truncated = true;
    } else if (load_truncated && state->stage == 1 && !memory && pil_mode && header.w > 0 && header.h > 0) {
      // Where libjpeg refuses the header that PIL's parser took, PIL keeps the image it made: zeros of the frame's
      // size (within the budget checked on that size before), white once a CMYK one is converted.
      jpeg_destroy_decompress(&cinfo);
      out->w = header.w;
      out->h = header.h;
      out->comp = header.components == 4 ? 3 : header.components;
      out->pixels.assign(static_cast<size_t>(out->w) * out->h * out->comp, header.components == 4 ? 255 : 0);
      out->truncated = true;
      return;
    } else if (errors.scans) {
      std::snprintf(why, kReason, "cannot decode (a JPEG of %s, a decompression bomb?)", errors.message);
    } else if (code == JERR_BAD_LIB_VERSION || code == JERR_BAD_STRUCT_SIZE) {
      std::snprintf(why, kReason,
                    "cannot decode: the shim was built with other libjpeg headers than the library it loaded (%s): "
                    "reinstall libjpeg-dev, or remove the one in /usr/local",
                    errors.message);
    } else if (memory && cinfo.mem && cinfo.image_width) {
      std::snprintf(why, kReason,
                    "cannot decode: it needs more than %.0f MiB, more than a %u x %u image can (a decompression bomb?)",
                    static_cast<double>(cinfo.mem->max_memory_to_use) / (1 << 20), cinfo.image_width,
                    cinfo.image_height);
    } else {
      std::snprintf(why, kReason, "cannot decode (corrupt JPEG data: %s)", errors.message);
    }
    return;
  }
  state->header = pil_header(f);
  if (!header.complete) {
    std::snprintf(why, kReason, "cannot decode (a truncated JPEG: the file ends inside its header)");
    return;
  }
  jpeg_create_decompress(&cinfo);
  cinfo.progress = &progress;
  cinfo.mem->max_memory_to_use = static_cast<long>(kHeaderBytes);
  source.pub.init_source = pil_source_nothing;
  source.pub.fill_input_buffer = pil_source_suspend;
  source.pub.skip_input_data = pil_source_skip;
  source.pub.resync_to_restart = jpeg_resync_to_restart;
  source.pub.term_source = pil_source_nothing;
  source.pub.bytes_in_buffer = 0;
  cinfo.src = &source.pub;
  int n = 0;
  size_t row = 0;
  while (state->stage < 5) {
    // ImageFile.load's loop: a read of 64 KiB after what is held; at the end of the file, under
    // LOAD_TRUNCATED_IMAGES, an end-of-image marker once (load_read), then the end.
    const size_t held = state->held.size();
    state->held.resize(held + kPilBlock);
    const size_t got = std::fread(state->held.data() + held, 1, kPilBlock, f);
    state->held.resize(held + got);
    if (got == 0 && std::ferror(f)) {
      std::snprintf(why, kReason, "cannot read: %s", std::strerror(errno));
      return;
    }
    // A valid file leaves less than a segment (64 KiB) and a group of blocks unread; a run of fill bytes that libjpeg
    // never consumes would hold the file in memory and be scanned again at each read.
    if (state->held.size() > kMaxJpegHeld) {
      std::snprintf(why, kReason, "cannot decode (corrupt JPEG data: over 1 MiB that libjpeg does not consume)");
      return;
    }
    if (got == 0 && load_truncated && !state->ended) {
      state->ended = true;
      out->truncated = true;
      state->held.push_back(0xff);
      state->held.push_back(0xd9);
    } else if (got == 0 && load_truncated) {
      out->truncated = true;
      break;
    } else if (got == 0) {
      std::snprintf(why, kReason, "cannot decode (a truncated JPEG: the file ends before its image does)");
      return;
    }
    source.pub.next_input_byte = state->held.data();
    source.pub.bytes_in_buffer = state->held.size();
    if (source.skip > 0) {
      pil_source_skip(&cinfo, source.skip);
      if (source.skip > 0) {
        state->held.clear();
        continue;
      }
    }
    if (state->stage == 1) {
      int header = JPEG_HEADER_TABLES_ONLY;
      while (header == JPEG_HEADER_TABLES_ONLY) header = jpeg_read_header(&cinfo, FALSE);
      if (header == JPEG_HEADER_OK) {
        const double pixels = static_cast<double>(cinfo.image_width) * cinfo.image_height;
        n = cinfo.num_components;
        if (pixels > max_pixels) {
          over_budget(why, cinfo.image_width, cinfo.image_height, max_pixels);
        } else if (n != 1 && n != 3 && n != 4) {
          std::snprintf(why, kReason, "cannot decode (a JPEG of %d components; PIL reads 1, 3 or 4)", n);
        }
        if (why[0]) {
          return;
        }
        cinfo.mem->max_memory_to_use = static_cast<long>(std::min(kHeaderBytes + kBytesPerPixel * pixels, 1e18));
        cinfo.out_color_space = n == 1 ? JCS_GRAYSCALE : n == 3 ? JCS_RGB : JCS_CMYK;
        jpeg_calc_output_dimensions(&cinfo);
        if (cinfo.output_components != n) {
          std::snprintf(why, kReason, "cannot decode (libjpeg gives %d components for %d)", cinfo.output_components,
                        n);
          return;
        }
        row = static_cast<size_t>(cinfo.output_width) * n;
        out->w = static_cast<int>(cinfo.output_width);
        out->h = static_cast<int>(cinfo.output_height);
        out->comp = n == 4 ? 3 : n;
        // As Pillow's fresh image: zeros, which a CMYK image's conversion makes white.
        out->pixels.assign(static_cast<size_t>(out->w) * out->h * out->comp, n == 4 ? 255 : 0);
        out->line.resize(row);
        state->stage = 2;
      }
    }
    if (state->stage == 2 && jpeg_start_decompress(&cinfo)) state->stage = 3;
    while (state->stage == 3 && state->rows < out->h) {
      // A row goes to the image once it is whole, as Pillow's shuffle copies it.
      uint8_t* dst = out->pixels.data() + static_cast<size_t>(state->rows) * out->w * out->comp;
      JSAMPROW rows[1] = {out->line.data()};
      if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) break;
      state->rows = state->rows + 1;
      if (n != 4) {
        std::memcpy(dst, out->line.data(), row);
        continue;
      }
      const uint8_t* cmyk = out->line.data();
      for (size_t x = 0; x < row / 4; x++) {  // Pillow's "CMYK;I" unpacking, then its cmyk2rgb
        const int k = cmyk[4 * x + 3];       // inverted twice: 255 - (255 - k)
        for (int c = 0; c < 3; c++) {
          const int v = (255 - cmyk[4 * x + c]) * k + 128;  // MULDIV255(255 - in, 255 - in_k) with nk = k
          dst[3 * x + c] = static_cast<uint8_t>(std::clamp(k - (((v >> 8) + v) >> 8), 0, 255));
        }
      }
    }
    if (state->stage == 3 && state->rows == out->h) state->stage = 4;
    if (state->stage == 4) {
      jpeg_finish_decompress(&cinfo);  // suspended or not: every row is in (JpegDecode.c's state 4)
      state->stage = 5;
      break;
    }
    state->held.erase(state->held.begin(), state->held.begin() + (source.pub.next_input_byte - state->held.data()));
  }
}
#endif

// Decodes one file into `tile` (HWC), or writes why it cannot into `why`. With `multiple` 0 the tile is the
// centre crop (out_side x out_side; 0: side x side) of the image resized to a short side of `side`; with `multiple` >= 1 it is the whole
// image, resized so that its short side is `side` (aspect kept), then each side to its nearest multiple of
// `multiple` (at least one). Its width and height are written to `out_w` and `out_h`; `tile` is sized here. With
// `truncated`, a JPEG whose data ends early decodes as PIL decodes it under ImageFile.LOAD_TRUNCATED_IMAGES (libjpeg
// given an end-of-image marker where the data ends: the missing blocks mid-gray, a progressive file from the scans it
// has), and `*truncated` says whether it did; without it, such a file is refused, as PIL refuses it by default.
static void decode_one(const char* path, int side, int channels, double max_pixels, std::vector<uint8_t>& tile,
                       char* why, int multiple = 0, int* out_w = nullptr, int* out_h = nullptr, int out_side = 0,
                       bool* truncated = nullptr) {
  if (out_side == 0) out_side = side;
  // Declared first, so that it ends last: whatever stb still holds when this function leaves, by a return or an
  // exception, is freed.
  StbArena arena(static_cast<size_t>(kHeaderBytes));
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
  // The first bytes, for the formats that stb needs steering around.
  unsigned char head[92] = {0};
  const bool bmp = ::pread(fd, head, sizeof head, 0) >= 2 && head[0] == 'B' && head[1] == 'M';
  const bool pic = head[0] == 0x53 && head[1] == 0x80 && head[2] == 0xf6 && head[3] == 0x34 &&
                   std::memcmp(head + 88, "PICT", 4) == 0;
  const bool pnm = head[0] == 'P' && (head[1] == '5' || head[1] == '6');
  const bool png = head[0] == 0x89 && std::memcmp(head + 1, "PNG", 3) == 0;
  // stb reads a BMP's compression as a signed int, so one with the top bit set passes its checks and decodes
  // from memory it never wrote: only uncompressed and bit-field BMPs (0 and 3) are given to it.
  const uint32_t bmp_compression = bmp && (head[14] | head[15] << 8) != 12
                                       ? uint32_t{head[30]} | head[31] << 8 | head[32] << 16 | uint32_t{head[33]} << 24
                                       : 0;
  if (bmp_compression != 0 && bmp_compression != 3) {
    ::close(fd);
    std::snprintf(why, kReason,
                  "a BMP with %s, which this decoder (stb_image) does not read: convert it to PNG",
                  bmp_compression == 1 || bmp_compression == 2 ? "RLE compression"
                  : bmp_compression == 4                       ? "a JPEG inside"
                  : bmp_compression == 5                       ? "a PNG inside"
                                                               : "an unknown compression");
    return;
  }
  RewrittenBmp rewritten;
  const BmpPalette palette = bmp ? rewrite_bmp_palette(fd, st.st_size, head, &rewritten) : BmpPalette::kAsIs;
  if (palette == BmpPalette::kNone) {
    ::close(fd);
    std::snprintf(why, kReason, "cannot decode (a palettized BMP that holds no palette)");
    return;
  }
  const bool callbacks = palette == BmpPalette::kRewritten;
  // Before stb reads anything: it builds the Huffman tables while reading the header. (stb takes a file that
  // starts with 0xff fill bytes before the 0xd8 for a JPEG too.)
  if (head[0] == 0xff) {
    if (const char* problem = jpeg_huffman_problem(fd, st.st_size)) {
      ::close(fd);
      std::snprintf(why, kReason, "%s", problem);
      return;
    }
  }
  File f(::fdopen(fd, "rb"), &std::fclose);
  if (!f) {
    ::close(fd);
    std::snprintf(why, kReason, "cannot open: %s", std::strerror(errno));
    return;
  }
  int w = 0, h = 0, comp = 0;
  // The header alone: nothing is allocated for the pixels before their count is known to be within budget.
  // What the file is, for a failure that stb gives no reason for.
  const char* format = png                                                       ? "corrupt PNG data"
                       : head[0] == 0xff                                         ? "corrupt JPEG data"
                       : std::memcmp(head, "GIF8", 4) == 0                       ? "corrupt GIF data"
                       : bmp                                                     ? "corrupt BMP data"
                       : std::memcmp(head, "8BPS", 4) == 0                       ? "corrupt PSD data"
                       : pic                                                     ? "corrupt PIC data"
                       : pnm                                                     ? "corrupt PNM data"
                       : std::memcmp(head, "#?", 2) == 0                         ? "corrupt HDR data"
                                                                                 : "corrupt data";
  // A JPEG (its SOI after any 0xff fill bytes, as stb takes it; PIL takes none) is decoded by libjpeg, as PIL's is,
  // from its SOI. Its size is first read as stb reads it, so that a header alone declaring too many pixels is
  // refused for that, as other formats are.
  int fill = 0;
  while (fill < 80 && head[fill] == 0xff) fill++;
#ifdef DINO_JPEG
  const bool jpeg = fill > 0 && head[fill] == 0xd8;
#else
  const bool jpeg = false;
#endif
  JpegImage jpeg_image;
  clear_stb_reason();
  rewritten.pos = 0;
  if (jpeg && stbi_info_from_file(f.get(), &w, &h, &comp) && static_cast<double>(w) * h > max_pixels) {
    over_budget(why, w, h, max_pixels);
    return;
  }
  if (jpeg) {
#ifdef DINO_JPEG
    if (std::fseek(f.get(), fill - 1, SEEK_SET) != 0) {
      std::snprintf(why, kReason, "cannot read: %s", std::strerror(errno));
      return;
    }
    decode_jpeg(f.get(), max_pixels, &jpeg_image, why, truncated != nullptr);
#endif
    if (why[0]) return;
    if (truncated) *truncated = jpeg_image.truncated;
    w = jpeg_image.w;
    h = jpeg_image.h;
    comp = jpeg_image.comp;
  } else if (!(callbacks ? stbi_info_from_callbacks(&kRewrittenIo, &rewritten, &w, &h, &comp)
                         : stbi_info_from_file(f.get(), &w, &h, &comp))) {
    // Formats that torchvision's ImageFolder lists and stb does not read.
    const char* unread = std::memcmp(head, "RIFF", 4) == 0 && std::memcmp(head + 8, "WEBP", 4) == 0 ? "WebP"
                         : std::memcmp(head, "II*\0", 4) == 0 || std::memcmp(head, "MM\0*", 4) == 0 ? "TIFF"
                         : head[0] == 'P' && head[1] >= '1' && head[1] <= '4' && std::isspace(head[2])
                             ? "PNM in its text or 1-bit form (P1-P4)"
                                                                              : nullptr;
    // stb refuses a PNG of more than 2^24 pixels a side or 2^31 bytes as "too large", a reason that its probes
    // for the other formats then overwrite: the IHDR's size, checked against the budget as for any file.
    const auto be32 = [&](int at) {
      return static_cast<double>((uint32_t{head[at]} << 24) | (head[at + 1] << 16) | (head[at + 2] << 8) | head[at + 3]);
    };
    if (unread) {
      std::snprintf(why, kReason, "%s, which this decoder (stb_image) does not read: convert it to PNG or JPEG",
                    unread);
    } else if (png && std::memcmp(head + 12, "IHDR", 4) == 0 && be32(16) * be32(20) > max_pixels) {
      over_budget(why, be32(16), be32(20), max_pixels);
    } else if (png && std::memcmp(head + 12, "IHDR", 4) == 0 && std::max(be32(16), be32(20)) > (1 << 24)) {
      std::snprintf(why, kReason,
                    "%.0f x %.0f pixels: a side over 16777216 pixels, which this decoder (stb_image) does not read",
                    be32(16), be32(20));
    } else {
      std::snprintf(why, kReason, "not a readable image (%s)", stb_reason("unknown format"));
    }
    return;
  }
  // stb gives a top-down BMP's height as it is stored, negative; its pixels come out the right way up.
  if (bmp && h < 0 && h != INT_MIN) h = -h;
  const double pixels = static_cast<double>(w) * h;
  if (w <= 0 || h <= 0) {
    std::snprintf(why, kReason, "declares %d x %d pixels", w, h);
    return;
  }
  if (pixels > max_pixels) {
    over_budget(why, w, h, max_pixels);
    return;
  }
  const bool as_is = side == 0;  // decode_image's "its own size": no resampling
  if (as_is) side = std::min(w, h);
  // Short side to `side`: the resized long side, in double, must stay within stb's int coordinates.
  const double s = static_cast<double>(side) / std::min(w, h);
  Taps tx, ty;  // PIL's resampling of each axis, and the source pixels it reads
  int ow = out_side, oh = out_side;
  if (multiple > 0) {
    // The whole image, each side snapped to a multiple: the output is bounded by kMaxSide on both sides.
    auto snap = [&](double x) { return std::max<double>(multiple, std::round(x / multiple) * multiple); };
    const double fw = snap(w * s), fh = snap(h * s);
    // Bounded by the resize's largest side; an image kept as it is, by the pixel budget alone (a panorama).
    if (!as_is && !(fw <= kMaxSide && fh <= kMaxSide)) {
      std::snprintf(why, kReason, "%d x %d resized to a short side of %d would be %.0f x %.0f, past the largest side %d",
                    w, h, side, fw, fh, kMaxSide);
      return;
    }
    ow = static_cast<int>(fw);
    oh = static_cast<int>(fh);
    // As PIL's Image.resize((ow, oh), BICUBIC): the crop's resampling, over the whole image.
    if (!plan_taps(w, 0, static_cast<float>(w), ow, ow, PilFilter::kBicubic, &tx) ||
        !plan_taps(h, 0, static_cast<float>(h), oh, oh, PilFilter::kBicubic, &ty)) {
      std::snprintf(why, kReason, "%d x %d cannot be resized to %d x %d", w, h, ow, oh);
      return;
    }
  } else {
    // torchvision's Resize(side): the short side to `side`, the long one to int(side * long / short), truncated.
    const double along = std::floor(static_cast<double>(side) * std::max(w, h) / std::min(w, h));
    const double rw = w > h ? along : side, rh = w > h ? side : along;
    if (!(rw <= INT_MAX && rh <= INT_MAX)) {
      std::snprintf(why, kReason, "%d x %d is too elongated to resize to a short side of %d", w, h, side);
      return;
    }
    if (!plan_taps(w, 0, static_cast<float>(w), static_cast<int64_t>(rw), out_side, PilFilter::kBicubic, &tx) ||
        !plan_taps(h, 0, static_cast<float>(h), static_cast<int64_t>(rh), out_side, PilFilter::kBicubic, &ty)) {
      std::snprintf(why, kReason, "%d x %d cannot be resized to a short side of %d", w, h, side);
      return;
    }
  }
  // The pixels (HWC, `req` channels), then converted to `channels` below.
  int req = 0;
  Pixels img(nullptr, &stbi_image_free);
  std::vector<uint8_t> scaled;
  const stbi_uc* decoded = nullptr;
  if (jpeg) {
    req = jpeg_image.comp;
    decoded = jpeg_image.pixels.data();
  } else {
    if (stbi_is_hdr_from_file(f.get())) {
      const HdrData data = hdr_data(f.get(), st.st_size, w, h);
      if (std::fseek(f.get(), 0, SEEK_SET) != 0 || data == HdrData::kEndless) {
        std::snprintf(why, kReason, "cannot decode (the file ends inside a run-length encoded scanline)");
        return;
      }
      if (data == HdrData::kTruncated) {
        std::snprintf(why, kReason, "cannot decode (the file ends inside its pixels)");
        return;
      }
    }
    // The channels asked of stb. It converts them itself, except colour to gray (its luma weights are not PIL's) and
    // where stb 2.27 gets that wrong: a PIC that fails to decode is converted anyway, from a null buffer, and a 16-bit
    // PNM is converted as if it had 8-bit samples (CVE-2021-42716, reading past its buffer); those are decoded in their
    // own channels and converted below.
    // A 16-bit PNM is read in 16 bits, to be scaled by its maximum value below.
    const bool pnm16 = pnm && comp >= 1 && comp <= 4 && stbi_is_16_bit_from_file(f.get());
    const int pnm_max = pnm ? pnm_max_value(fd, st.st_size) : 0;
    req = pic ? 4 : pnm16 || (channels == 1 && comp >= 3) ? comp : channels;
    arena.cap = static_cast<size_t>(std::min(kHeaderBytes + kBytesPerPixel * pixels, static_cast<double>(SIZE_MAX)));
    int dw = 0, dh = 0;
    clear_stb_reason();
    rewritten.pos = 0;
    std::unique_ptr<stbi_us, void (*)(void*)> wide(nullptr, &stbi_image_free);
    if (pnm16) {
      wide.reset(stbi_load_from_file_16(f.get(), &dw, &dh, &comp, req));
    } else {
      img.reset(callbacks ? stbi_load_from_callbacks(&kRewrittenIo, &rewritten, &dw, &dh, &comp, req)
                          : stbi_load_from_file(f.get(), &dw, &dh, &comp, req));
    }
    if (!img && !wide) {
      if (arena.refused) {
        std::snprintf(why, kReason,
                      "cannot decode: it needs more than %.0f MiB, more than a %d x %d image can (a decompression bomb?)",
                      static_cast<double>(arena.cap) / (1 << 20), w, h);
      } else {
        unsigned char type[4];
        if (!png || !is_unknown_png_chunk(stbi_failure_reason())) {
          std::snprintf(why, kReason, "cannot decode (%s)", stb_load_reason(format));
        } else if (png_unknown_chunk(fd, st.st_size, type)) {
          const auto shown = [](unsigned char c) { return c < 0x20 || c >= 0x7f ? '?' : static_cast<char>(c); };
          std::snprintf(why, kReason, "cannot decode (%c%c%c%c PNG chunk not known)", shown(type[0]), shown(type[1]),
                        shown(type[2]), shown(type[3]));
        } else {
          std::snprintf(why, kReason, "cannot decode (%s)", format);
        }
      }
      return;
    }
    if (dw != w || dh != h) {
      std::snprintf(why, kReason, "decoded %d x %d but the header said %d x %d", dw, dh, w, h);
      return;
    }
    // A PNM's samples, from 0..maxval to 0..255 (rounded, as PIL scales them; a sample past maxval is 255).
    decoded = img.get();
    if (pnm && (wide || pnm_max != 255)) {
      const int max = pnm_max > 0 ? pnm_max : wide ? 65535 : 255;
      std::vector<uint8_t> lut(static_cast<size_t>(max) + 1);
      for (int v = 0; v <= max; v++) lut[v] = static_cast<uint8_t>((2 * 255 * v + max) / (2 * max));
      const size_t n = static_cast<size_t>(w) * h * req;
      if (wide) {
        scaled.resize(n);
        // stb 2.27 copies the samples as they are stored, most significant byte first, into its 16-bit integers.
        const auto* bytes = reinterpret_cast<const uint8_t*>(wide.get());
        for (size_t i = 0; i < n; i++) scaled[i] = lut[std::min<int>((bytes[2 * i] << 8) | bytes[2 * i + 1], max)];
        wide.reset();
        decoded = scaled.data();
      } else {
        for (size_t i = 0; i < n; i++) img.get()[i] = lut[std::min<int>(img.get()[i], max)];
      }
    }
  }
  size_t stride = static_cast<size_t>(w) * req;
  const stbi_uc* crop = decoded + static_cast<size_t>(ty.first) * stride + static_cast<size_t>(tx.first) * req;
  std::vector<uint8_t> converted;
  if (req != channels) {  // only the pixels read are converted
    converted.resize(static_cast<size_t>(tx.count) * ty.count * channels);
    for (int y = 0; y < ty.count; y++) {
      convert_channels(crop + y * stride, req, channels, tx.count,
                       converted.data() + static_cast<size_t>(y) * tx.count * channels);
    }
    crop = converted.data();
    stride = static_cast<size_t>(tx.count) * channels;
  }
  tile.resize(static_cast<size_t>(ow) * oh * channels);
  if (tx.copy && ty.copy) {  // kept as it is (a side that keeps its size is not resampled, as in PIL)
    const size_t row = static_cast<size_t>(ow) * channels;
    for (int y = 0; y < oh; y++) std::memcpy(tile.data() + y * row, crop + y * stride, row);
  } else {
    pil_resample(crop, stride, channels, tx, ty, tile.data());
  }
  if (out_w) *out_w = ow;
  if (out_h) *out_h = oh;
}

// decode_one with every failure, an exception included, as the file's reason (printable): safe on any thread.
static void decode_caught(const char* path, int side, int channels, double max_pixels, std::vector<uint8_t>& tile,
                          char* reason, int multiple = 0, int* out_w = nullptr, int* out_h = nullptr,
                          int crop = 0, bool* truncated = nullptr) noexcept {
  try {
    decode_one(path, side, channels, max_pixels, tile, reason, multiple, out_w, out_h, crop, truncated);
  } catch (const StbAssert& e) {
    std::snprintf(reason, kReason, "cannot decode (%s)", e.what());
  } catch (const std::bad_alloc&) {
    std::snprintf(reason, kReason, "out of memory while decoding");
  } catch (const std::exception& e) {
    std::snprintf(reason, kReason, "%s", e.what()[0] ? e.what() : "C++ exception while decoding");
  } catch (...) {
    std::snprintf(reason, kReason, "unknown C++ exception while decoding");
  }
  // No reason may hold raw bytes of a file (none does now: an unknown PNG chunk's type is shown printable).
  for (char* c = reason; *c; c++) {
    if (static_cast<unsigned char>(*c) < 0x20 || static_cast<unsigned char>(*c) >= 0x7f) *c = '?';
  }
}

// Decodes `n` files (NUL-separated paths) on `threads` threads; each image is resized so that its short side is
// `side` and centre-cropped to crop x crop, as torchvision's Resize(side) + CenterCrop(crop) with bicubic
// interpolation. A file whose header declares more than `max_pixels` pixels, or that fails in any way, is skipped.
// Returns [images u8 [ok, C, crop, crop], ok indices i64, failed indices i64, reasons u8 (the failed files'
// reasons, each ending in a NUL)].
static std::vector<at::Tensor> decode_images(const char* paths, int n, int side, int crop, int channels, int threads,
                                             double max_pixels) {
  if (n < 0) throw std::runtime_error("decode count must be >= 0");
  if (side <= 0 || side > kMaxSide) throw std::runtime_error("decode side must be in 1.." + std::to_string(kMaxSide));
  if (crop <= 0 || crop > side) throw std::runtime_error("decode crop must be in 1..side (" + std::to_string(side) + ")");
  if (channels != 1 && channels != 3) throw std::runtime_error("decode channels must be 1 or 3");
  if (!(max_pixels >= 1)) throw std::runtime_error("the image pixel budget must be a number >= 1");
  std::vector<const char*> files;
  for (const char* p = paths; static_cast<int>(files.size()) < n; p += std::strlen(p) + 1) files.push_back(p);
  auto out = at::empty({n, channels, crop, crop}, at::kByte);
  uint8_t* base = out.data_ptr<uint8_t>();
  std::vector<char> why(static_cast<size_t>(n) * kReason, 0);
  std::atomic<int> next{0};
  // Runs on every thread, the caller's included: nothing may escape it (an exception leaving a std::thread
  // terminates the process), so each file's failure, bad_alloc included, is that file's reason.
  auto work = [&]() noexcept {
    std::vector<uint8_t> tile;
    for (int i; (i = next++) < n;) {
      char* reason = why.data() + static_cast<size_t>(i) * kReason;
      decode_caught(files[i], side, channels, max_pixels, tile, reason, 0, nullptr, nullptr, crop);
      uint8_t* dst = base + static_cast<size_t>(i) * channels * crop * crop;
      for (int ch = 0; !reason[0] && ch < channels; ch++)
        for (int y = 0; y < crop; y++)
          for (int x = 0; x < crop; x++)
            dst[(static_cast<size_t>(ch) * crop + y) * crop + x] =
                tile[(static_cast<size_t>(y) * crop + x) * channels + ch];
    }
  };
  on_threads(threads, n, work);
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
// Decodes one whole file, its aspect kept (decode_one with `multiple` >= 1; `side` 0: its own size): [image u8
// [C, H, W], reason u8, truncated u8 [1]]; when the file cannot be decoded the image is empty and the reason (no NUL)
// says why. With `load_truncated` 1, truncated JPEGs decode as in PIL under LOAD_TRUNCATED_IMAGES, and `truncated`
// says whether this one was.
static std::vector<at::Tensor> decode_image(const char* path, int side, int multiple, int channels, double max_pixels,
                                            int load_truncated) {
  if (side < 0 || side > kMaxSide) throw std::runtime_error("decode side must be in 0.." + std::to_string(kMaxSide));
  if (multiple <= 0 || multiple > kMaxSide) {
    throw std::runtime_error("decode multiple must be in 1.." + std::to_string(kMaxSide));
  }
  if (channels != 1 && channels != 3) throw std::runtime_error("decode channels must be 1 or 3");
  if (!(max_pixels >= 1)) throw std::runtime_error("the image pixel budget must be a number >= 1");
  if (load_truncated != 0 && load_truncated != 1) throw std::runtime_error("decode load_truncated must be 0 or 1");
  std::vector<uint8_t> tile;
  char reason[kReason] = {0};
  int w = 0, h = 0;
  bool truncated = false;
  decode_caught(path, side, channels, max_pixels, tile, reason, multiple, &w, &h, 0,
                load_truncated ? &truncated : nullptr);
  const size_t n = strnlen(reason, kReason - 1);
  auto why = at::empty({static_cast<int64_t>(n)}, at::kByte);
  auto cut = at::full({1}, truncated ? 1 : 0, at::kByte);
  if (n) {
    std::memcpy(why.data_ptr(), reason, n);
    return {at::empty({0}, at::kByte), why, cut};
  }
  auto hwc = at::from_blob(tile.data(), {h, w, channels}, at::kByte);
  return {hwc.permute({2, 0, 1}).clone(at::MemoryFormat::Contiguous), why, cut};  // a copy: tile is freed on return
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
  StbArena arena(SIZE_MAX);  // frees what stb holds if an assert throws
  const int hi = static_cast<int>(h), wi = static_cast<int>(w), ci = static_cast<int>(ch);
  const int ok = format == 0 ? stbi_write_png(path, wi, hi, ci, t.data_ptr(), wi * ci)
                             : stbi_write_jpg(path, wi, hi, ci, t.data_ptr(), std::clamp(quality, 1, 100));
  if (!ok) throw std::runtime_error(std::string("cannot write image ") + path);
  return 0;
}
#else
static std::vector<at::Tensor> decode_images(const char*, int, int, int, int, int, double) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
static std::vector<at::Tensor> decode_image(const char*, int, int, int, double, int) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
static double write_image(const char*, const at::Tensor&, int, int) {
  throw std::runtime_error("the shim was built without stb: install libstb-dev (apt-get install libstb-dev) and rebuild");
}
#endif

// Both are called nonblocking, to overlap a step: in the background (see in_background).
LIST(decode_images, (const char* paths, int n, int side, int crop, int channels, int threads, double max_pixels),
     in_background([&] { return decode_images(paths, n, side, crop, channels, threads, max_pixels); }))
LIST(decode_image, (const char* path, int side, int multiple, int channels, double max_pixels, int load_truncated),
     in_background([&] { return decode_image(path, side, multiple, channels, max_pixels, load_truncated); }))
SCALAR(write_image, (const char* path, T image, int format, int quality), write_image(path, *image, format, quality))

// Pillow's Image.reduce((fx, fy)) of one u8 plane (Reduce.c): each fx x fy block (smaller at the right and bottom
// edges) averaged in its fixed point, ((sum + n / 2) * floor(2^32 / (256 n) in float)) >> 24 for a block of n pixels.
static std::vector<uint8_t> pil_reduce(const uint8_t* src, int W, int H, int fx, int fy) {
  const int rw = (W + fx - 1) / fx, rh = (H + fy - 1) / fy;
  std::vector<uint8_t> out(static_cast<size_t>(rw) * rh);
  for (int y = 0; y < rh; y++) {
    const int y0 = y * fy, y1 = std::min(H, y0 + fy);
    for (int x = 0; x < rw; x++) {
      const int x0 = x * fx, x1 = std::min(W, x0 + fx);
      const uint32_t n = static_cast<uint32_t>((y1 - y0) * (x1 - x0));
      const auto multiplier = static_cast<uint32_t>(4294967296.0f / static_cast<float>(256u * n));
      uint32_t sum = n / 2;
      for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) sum += src[static_cast<size_t>(yy) * W + xx];
      out[static_cast<size_t>(y) * rw + x] = static_cast<uint8_t>((sum * multiplier) >> 24);
    }
  }
  return out;
}

// PIL's Image.resize((w, h), BILINEAR, BICUBIC or LANCZOS, reducing_gap=gap) of u8 images [..., H, W], each plane
// alone as PIL resamples each band: with a gap (> 0; thumbnail()'s is 2), an axis shrunk by at least twice the gap
// is first reduced by int(H / h / gap) (Image.reduce), the rest resampled from the reduced image's box, as
// Image.resize does. The same pixels as PIL.
static at::Tensor pil_resize(const at::Tensor& image, int64_t h, int64_t w, int64_t mode, double gap) {
  if (image.scalar_type() != at::kByte || image.dim() < 2) {
    throw std::runtime_error("pil_resize takes u8 [..., H, W] images, got " +
                             std::string(at::toString(image.scalar_type())) + " " + c10::str(image.sizes()));
  }
  if (mode < 0 || mode > 2) throw std::runtime_error("pil_resize mode must be 0 (bilinear), 1 (bicubic) or 2 (lanczos)");
  if (!(gap == 0 || gap >= 1)) throw std::runtime_error("pil_resize reducing gap must be 0 (none) or >= 1");
  const int64_t H = image.size(-2), W = image.size(-1);
  if (H < 1 || W < 1 || H > INT_MAX / 2 || W > INT_MAX / 2) {
    throw std::runtime_error("pil_resize takes sides of 1 to " + std::to_string(INT_MAX / 2) + " pixels, got " +
                             c10::str(image.sizes()));
  }
  if (h < 1 || w < 1 || h > (1 << 20) || w > (1 << 20)) {
    throw std::runtime_error("pil_resize size must be in 1..1048576, got " + std::to_string(h) + " x " + std::to_string(w));
  }
  const PilFilter filter = mode == 0 ? PilFilter::kBilinear : mode == 1 ? PilFilter::kBicubic : PilFilter::kLanczos;
  // Image.resize: factor = int(W / w / gap) or 1, in Python's floats; the box shrinks with the image.
  const int fx = gap > 0 ? std::max(1, static_cast<int>(static_cast<double>(W) / w / gap)) : 1;
  const int fy = gap > 0 ? std::max(1, static_cast<int>(static_cast<double>(H) / h / gap)) : 1;
  // Reduce.c's fixed point holds blocks of up to 2^23 pixels (Pillow's own arithmetic overflows past them).
  if (static_cast<int64_t>(fx) * fy > (1 << 23)) {
    throw std::runtime_error("pil_resize cannot shrink " + c10::str(image.sizes()) + " to " + std::to_string(h) + " x " +
                             std::to_string(w) + " with a reducing gap of " + std::to_string(gap) +
                             " (blocks of over 2^23 pixels): give a larger size or a larger gap");
  }
  const bool reduce = fx > 1 || fy > 1;
  // The reduced image and the box of it that is resampled (the whole image when nothing is reduced).
  const int rw = static_cast<int>((W + fx - 1) / fx), rh = static_cast<int>((H + fy - 1) / fy);
  const auto bw = static_cast<float>(static_cast<double>(W) / fx), bh = static_cast<float>(static_cast<double>(H) / fy);
  Taps tx, ty;
  if (!plan_taps(rw, 0, bw, w, static_cast<int>(w), filter, &tx) ||
      !plan_taps(rh, 0, bh, h, static_cast<int>(h), filter, &ty)) {
    throw std::runtime_error("pil_resize cannot resize " + c10::str(image.sizes()) + " to " + std::to_string(h) + " x " +
                             std::to_string(w));
  }
  auto x = image.to(at::kCPU).contiguous();
  auto sizes = image.sizes().vec();
  sizes[sizes.size() - 2] = h;
  sizes[sizes.size() - 1] = w;
  auto out = at::empty(sizes, x.options());
  const int64_t planes = x.numel() / (H * W);
  const uint8_t* src = x.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int64_t p = 0; p < planes; p++) {
    const uint8_t* plane = src + p * H * W;
    std::vector<uint8_t> reduced;
    if (reduce) {
      reduced = pil_reduce(plane, static_cast<int>(W), static_cast<int>(H), fx, fy);
      plane = reduced.data();
    }
    pil_resample(plane + static_cast<int64_t>(ty.first) * rw + tx.first, static_cast<size_t>(rw), 1, tx, ty,
                 dst + p * h * w);
  }
  return out.to(image.device());
}
TENSOR(pil_resize, (T image, int h, int w, int mode, double gap), pil_resize(*image, h, w, mode, gap))
