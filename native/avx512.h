// AVX-512 helpers shared by the fused kernels (softmax.cpp, layer_norm.cpp): masked loads and stores of fp32 and bf16
// rows, and bf16 rounding as c10 does it. Where the compiler cannot target AVX-512 (not x86-64, not GCC or Clang),
// DINO_AVX512 is undefined and the kernels' callers use their libtorch composites; where it can but the CPU lacks it,
// avx512_runs() is false and they do the same.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define DINO_AVX512 1
// GCC would fuse a product and a sum written apart (-ffp-contract=fast, its default) into one FMA, which skips a
// rounding the kernels count on (in LayerNorm's backward, dy w - mean(dy w) is exactly 0 for a row of one): they get
// FMAs only where they ask for them. (Clang contracts within one source expression only.)
#if defined(__clang__)
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#else
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"), optimize("fp-contract=off")))
#endif

inline bool avx512_runs() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return yes;
}

AVX512 inline __mmask16 tail(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}
AVX512 inline __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
AVX512 inline __m512 load(const c10::BFloat16* p, __mmask16 m) {
  const __m256i bits = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
// c10::BFloat16's rounding (to nearest even, any NaN to the quiet NaN 0x7fc0), the result kept in fp32.
AVX512 inline __m512 round_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i up = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  const __m512 rounded = _mm512_castsi512_ps(_mm512_and_si512(up, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(nan, rounded, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
}
AVX512 inline void store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
AVX512 inline void store(c10::BFloat16* p, __mmask16 m, __m512 v) {  // v already rounded
  const __m256i bits = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16));
  _mm256_mask_storeu_epi16(p, m, bits);
}
AVX512 inline __m512 in_dtype(__m512 v, const float*) { return v; }
AVX512 inline __m512 in_dtype(__m512 v, const c10::BFloat16*) { return round_bf16(v); }
#endif
