// CPU register-blocked micro-kernels for the biaffine pair pass (host only).
//
// Every GEMM of the pair pass (see biaffine_tile.h) is driven through one micro-kernel contract:
//   tile[m*ldt + n] = Σ_k Apk[k*MR + m] · B[k*ldb + n]     (m < MR, n < NR)
// Apk is an MR-wide packed panel of the left operand (packing also absorbs arbitrary strides, the
// (i,c) row flattening and zero padding of the last rows); B rows hold NR contiguous elements; the
// tile is a scratch buffer (ldt = NR) or, for whole tiles of a row-major output, the output itself.
// The SIMD variants are one template over the vector width, instantiated inside functions compiled
// with __attribute__((target(...))) and chosen at run time (cpu_isa.h), so the build never needs
// -march flags.
#pragma once

#include <cstdint>
#include <cstring>

#include "mclner/biaffine_tile.h"
#include "mclner/cpu_isa.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types never cross a non-inlined call
#endif

namespace mclner {
namespace biaffine {

template <class T>
using MicroFn = void (*)(int64_t K, const T* Apk, const T* B, int64_t ldb, T* tile, int64_t ldt);

template <class T>
struct MicroKernel {
  int mr;        // rows per tile (width of the packed panel)
  int nr;        // columns per tile
  MicroFn<T> fn;
  const char* isa;
};

// SIMD micro-kernel: W-byte GCC vectors, MR x NV vectors of accumulators kept in registers.
template <class T, int W, int MR, int NV>
__attribute__((always_inline)) inline void micro_simd(int64_t K, const T* __restrict Apk, const T* __restrict B,
                                                      int64_t ldb, T* __restrict tile, int64_t ldt) {
  typedef T V __attribute__((vector_size(W)));
  constexpr int L = W / int(sizeof(T));
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = V{} ;
  for (int64_t k = 0; k < K; ++k) {
    const T* brow = B + k * ldb;
    const T* arow = Apk + k * MR;
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], brow + v * L, W);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const T a = arow[m];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] += a * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(tile + m * ldt + v * L, &acc[m][v], W);
}

// Portable micro-kernel: the same register tile as the CUDA threads (outer_fma from
// biaffine_tile.h); the compiler vectorises it for the baseline ISA.
constexpr int kPortableMR = 4;
constexpr int kPortableNR = 16;
template <class T>
void micro_portable(int64_t K, const T* __restrict Apk, const T* __restrict B, int64_t ldb, T* __restrict tile,
                    int64_t ldt) {
  T acc[kPortableMR][kPortableNR] = {};
  for (int64_t k = 0; k < K; ++k) {
    T a[kPortableMR];
    T bb[kPortableNR];
    for (int m = 0; m < kPortableMR; ++m) a[m] = Apk[k * kPortableMR + m];
    for (int n = 0; n < kPortableNR; ++n) bb[n] = B[k * ldb + n];
    outer_fma<kPortableMR, kPortableNR, T>(acc, a, bb);
  }
  for (int m = 0; m < kPortableMR; ++m)
    for (int n = 0; n < kPortableNR; ++n) tile[m * ldt + n] = acc[m][n];
}

#if defined(__x86_64__) || defined(__i386__)
#define MCLNER_BIAFFINE_X86 1
// AVX-512: 32 zmm registers -> 12 x 2 accumulators + 2 operand vectors.
__attribute__((target("avx512f"))) inline void micro_avx512_f32(int64_t K, const float* A, const float* B,
                                                                int64_t ldb, float* t, int64_t ldt) {
  micro_simd<float, 64, 12, 2>(K, A, B, ldb, t, ldt);
}
__attribute__((target("avx512f"))) inline void micro_avx512_f64(int64_t K, const double* A, const double* B,
                                                                int64_t ldb, double* t, int64_t ldt) {
  micro_simd<double, 64, 12, 2>(K, A, B, ldb, t, ldt);
}
// AVX2 + FMA: 16 ymm registers -> 6 x 2 accumulators + 2 operand vectors.
__attribute__((target("avx2,fma"))) inline void micro_avx2_f32(int64_t K, const float* A, const float* B,
                                                              int64_t ldb, float* t, int64_t ldt) {
  micro_simd<float, 32, 6, 2>(K, A, B, ldb, t, ldt);
}
__attribute__((target("avx2,fma"))) inline void micro_avx2_f64(int64_t K, const double* A, const double* B,
                                                              int64_t ldb, double* t, int64_t ldt) {
  micro_simd<double, 32, 6, 2>(K, A, B, ldb, t, ldt);
}
#endif

// Micro-kernel for a resolved cpu_isa level (cpu_isa.h): 2 AVX-512, 1 AVX2+FMA, 0 the portable one.
template <class T>
MicroKernel<T> select_micro(int level);

template <>
inline MicroKernel<float> select_micro<float>(int level) {
#ifdef MCLNER_BIAFFINE_X86
  if (level == cpu_isa::kAvx512) return {12, 32, &micro_avx512_f32, cpu_isa::name(level)};
  if (level == cpu_isa::kAvx2) return {6, 16, &micro_avx2_f32, cpu_isa::name(level)};
#endif
  return {kPortableMR, kPortableNR, &micro_portable<float>, cpu_isa::name(cpu_isa::kGeneric)};
}

template <>
inline MicroKernel<double> select_micro<double>(int level) {
#ifdef MCLNER_BIAFFINE_X86
  if (level == cpu_isa::kAvx512) return {12, 16, &micro_avx512_f64, cpu_isa::name(level)};
  if (level == cpu_isa::kAvx2) return {6, 8, &micro_avx2_f64, cpu_isa::name(level)};
#endif
  return {kPortableMR, kPortableNR, &micro_portable<double>, cpu_isa::name(cpu_isa::kGeneric)};
}

}  // namespace biaffine
}  // namespace mclner

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
