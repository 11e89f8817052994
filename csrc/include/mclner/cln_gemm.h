// Small packed GEMM for the cln_head CPU kernels (host only).
//
// C[M x N] (op)= A[M x K] * B[K x N] with A packed in panels of MR rows (k-major: panel[k*MR + r])
// and B packed in panels of NR columns (panel[k*NR + c]); panels are zero-padded so the micro-kernel
// never branches inside the K loop. The micro-kernel keeps an MR x NR block of C in registers
// (MR rows x NV vectors of VB bytes) using GCC/Clang vector extensions: the same source becomes
// AVX-512, AVX2 or SSE code depending on the `target` of the function it is inlined into (see
// cln_head.cpp, which stamps the per-pair workers out per ISA with `flatten`).
//
// The operands of cln_head are small (<= a few hundred rows and columns) and fit in L2, so there is
// no K blocking: the whole K extent of a panel is streamed per micro-tile.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace mclner {
namespace cln {

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Epilogue of one micro-tile: C = (accumulate ? C : 0) + acc * colscale[c] + colbias[c]
// (colscale / colbias may be null).
template <class T>
struct Epilogue {
  const T* colscale = nullptr;
  const T* colbias = nullptr;
  bool accumulate = false;
};

// Packs rows [0, M) x cols [0, K) of src (element (r, k) at src[r*rs + k*cs]) into MR-row panels.
template <class T, int MR>
inline void pack_a(int64_t M, int64_t K, const T* src, int64_t rs, int64_t cs, T* dst) {
  for (int64_t p = 0; p < M; p += MR) {
    const int64_t m = std::min<int64_t>(MR, M - p);
    T* d = dst + p * K;
    if (cs == 1 && m == MR) {
      for (int64_t k = 0; k < K; ++k)
        for (int r = 0; r < MR; ++r) d[k * MR + r] = src[(p + r) * rs + k];
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int r = 0; r < MR; ++r) d[k * MR + r] = r < m ? src[(p + r) * rs + k * cs] : T(0);
    }
  }
}

// Packs rows [0, K) x cols [0, N) of src (element (k, c) at src[k*rs + c*cs]) into NR-column panels.
template <class T, int NR>
inline void pack_b(int64_t K, int64_t N, const T* src, int64_t rs, int64_t cs, T* dst) {
  for (int64_t q = 0; q < N; q += NR) {
    const int64_t n = std::min<int64_t>(NR, N - q);
    T* d = dst + q * K;
    for (int64_t k = 0; k < K; ++k)
      for (int c = 0; c < NR; ++c) d[k * NR + c] = c < n ? src[k * rs + (q + c) * cs] : T(0);
  }
}

// Size (elements) of the packed form of an M x K A operand / K x N B operand.
template <int MR>
inline int64_t packed_a_size(int64_t M, int64_t K) { return round_up(M, MR) * K; }
template <int NR>
inline int64_t packed_b_size(int64_t K, int64_t N) { return round_up(N, NR) * K; }

// Register-blocked micro-kernel: MR x (NV * lanes) tile of C from K steps of packed A and B.
template <class T, int MR, int NV, int VB>
inline void micro_kernel(int64_t K, const T* __restrict Ap, const T* __restrict Bp, T* __restrict C,
                         int64_t ldc, int m, int n, const Epilogue<T>& ep) {
  typedef T V __attribute__((vector_size(VB)));
  constexpr int L = VB / int(sizeof(T));
  constexpr int NR = NV * L;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], Bp + k * NR + v * L, sizeof(V));
    const T* a = Ap + k * MR;
    for (int r = 0; r < MR; ++r) {
      // scalar * vector splats a[r] (a broadcast load / embedded broadcast); `V{} + a[r]` would
      // add 0.0f in scalar first (to keep -0.0 semantics) and cost one extra instruction per FMA pair.
      const T ar = a[r];
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * b[v];
    }
  }
  V scale[NV], bias[NV];
  if (ep.colscale || ep.colbias) {
    T s[NR], bb[NR];
    for (int c = 0; c < NR; ++c) {
      s[c] = ep.colscale && c < n ? ep.colscale[c] : T(1);
      bb[c] = ep.colbias && c < n ? ep.colbias[c] : T(0);
    }
    for (int v = 0; v < NV; ++v) {
      std::memcpy(&scale[v], s + v * L, sizeof(V));
      std::memcpy(&bias[v], bb + v * L, sizeof(V));
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = acc[r][v] * scale[v] + bias[v];
  }
  if (m == MR && n == NR) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) {
        T* cp = C + r * ldc + v * L;
        if (ep.accumulate) {
          V old;
          std::memcpy(&old, cp, sizeof(V));
          acc[r][v] += old;
        }
        std::memcpy(cp, &acc[r][v], sizeof(V));
      }
    return;
  }
  T tmp[MR * NR];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) std::memcpy(tmp + r * NR + v * L, &acc[r][v], sizeof(V));
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c) {
      T x = tmp[r * NR + c];
      if (ep.accumulate) x += C[r * ldc + c];
      C[r * ldc + c] = x;
    }
}

// C (row-major, ldc) (op)= A * B from packed operands. colscale / colbias are indexed by the column
// of C (length N).
template <class T, int MR, int NV, int VB>
inline void gemm_packed(int64_t M, int64_t N, int64_t K, const T* Ap, const T* Bp, T* C, int64_t ldc,
                        const T* colscale, const T* colbias, bool accumulate) {
  constexpr int NR = NV * (VB / int(sizeof(T)));
  for (int64_t q = 0; q < N; q += NR) {
    Epilogue<T> ep;
    ep.colscale = colscale ? colscale + q : nullptr;
    ep.colbias = colbias ? colbias + q : nullptr;
    ep.accumulate = accumulate;
    const int n = int(std::min<int64_t>(NR, N - q));
    for (int64_t p = 0; p < M; p += MR) {
      const int m = int(std::min<int64_t>(MR, M - p));
      micro_kernel<T, MR, NV, VB>(K, Ap + p * K, Bp + q * K, C + p * ldc + q, ldc, m, n, ep);
    }
  }
}

}  // namespace cln
}  // namespace mclner
