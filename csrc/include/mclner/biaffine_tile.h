// Per-tile arithmetic of the biaffine pair pass, shared by the CPU and the CUDA kernels.
//
// The op is split into dense projections (done by BLAS in Python) and a fused pair pass:
//   P[b,i,c,:] = U_cᵀ hs_i + W_c[Db:]        r[b,i,c] = W_c[:Db]·hs_i + b_c
//   S[b,i,j,c] = P[b,i,c,:]·he_j + r[b,i,c]                       (forward, written as [B,N,N,C])
//   dP[b,i,c,:] = Σ_j dS[b,i,j,c] he_j     dr[b,i,c] = Σ_j dS[b,i,j,c]   (backward "dP")
//   dhe[b,j,:] = Σ_{i,c} dS[b,i,j,c] P[b,i,c,:]                           (backward "dhe")
// Each of the three is, per batch b, a GEMM whose rows/columns/reduction index map onto the
// [B,N,N,C] layout in a non-trivial way; the maps below are that layout knowledge, written once.
// Row index r = i*C + c flattens (i, c) so a tile may straddle two words i.
#pragma once

#include <cstdint>

#include "mclner/common.h"

namespace mclner {
namespace biaffine {

// Strides (in elements) of the tensors the pair pass reads. Outputs are always contiguous.
struct Strides3 {
  int64_t s0, s1, s2;
};
struct Strides4 {
  int64_t s0, s1, s2, s3;
};

// Offset of S[b,i,j,c] (and dS when contiguous) in a contiguous [B,N,N,C] tensor.
MCLNER_HD int64_t s_offset(int64_t N, int64_t C, int64_t b, int64_t i, int64_t j, int64_t c) {
  return ((b * N + i) * N + j) * C + c;
}

// Strided element offsets.
MCLNER_HD int64_t off3(const Strides3& s, int64_t a, int64_t b, int64_t c) {
  return a * s.s0 + b * s.s1 + c * s.s2;
}
MCLNER_HD int64_t off4(const Strides4& s, int64_t a, int64_t b, int64_t c, int64_t d) {
  return a * s.s0 + b * s.s1 + c * s.s2 + d * s.s3;
}

// r = i*C + c -> (i, c). 32-bit division when it fits: 64-bit division is a long software sequence
// on the GPU, and the dhe operands split their reduction index once per element.
MCLNER_HD void split_row(int64_t r, int64_t C, int64_t& i, int64_t& c) {
  if (r <= 0xffffffffLL && C <= 0xffffffffLL) {
    const uint32_t q = uint32_t(r) / uint32_t(C);
    i = q;
    c = r - int64_t(q) * C;
  } else {
    i = r / C;
    c = r - i * C;
  }
}

// Forward GEMM (rows r=(i,c), cols j, reduction e): A(r,e) = P[b,i,c,e], B(e,j) = he[b,j,e].
MCLNER_HD int64_t fwd_a(const Strides4& sP, int64_t C, int64_t b, int64_t r, int64_t e) {
  int64_t i, c;
  split_row(r, C, i, c);
  return off4(sP, b, i, c, e);
}
MCLNER_HD int64_t fwd_b(const Strides3& sHe, int64_t b, int64_t e, int64_t j) { return off3(sHe, b, j, e); }

// dP GEMM (rows r=(i,c), cols e, reduction j): A(r,j) = dS[b,i,j,c], B(j,e) = he[b,j,e].
MCLNER_HD int64_t dp_a(const Strides4& sdS, int64_t C, int64_t b, int64_t r, int64_t j) {
  int64_t i, c;
  split_row(r, C, i, c);
  return off4(sdS, b, i, j, c);
}
MCLNER_HD int64_t dp_b(const Strides3& sHe, int64_t b, int64_t j, int64_t e) { return off3(sHe, b, j, e); }

// dhe GEMM (rows j, cols e, reduction k=(i,c)): A(j,k) = dS[b,i,j,c], B(k,e) = P[b,i,c,e].
MCLNER_HD int64_t dhe_a(const Strides4& sdS, int64_t C, int64_t b, int64_t j, int64_t k) {
  int64_t i, c;
  split_row(k, C, i, c);
  return off4(sdS, b, i, j, c);
}
MCLNER_HD int64_t dhe_b(const Strides4& sP, int64_t C, int64_t b, int64_t k, int64_t e) {
  int64_t i, c;
  split_row(k, C, i, c);
  return off4(sP, b, i, c, e);
}

// Register tile update acc[m][n] += a[m] * b[n]: the inner step of every GEMM above, on the GPU per
// thread and on the CPU in the portable (non-SIMD-dispatched) micro-kernel.
template <int TM, int TN, class Acc>
MCLNER_HD void outer_fma(Acc (&acc)[TM][TN], const Acc (&a)[TM], const Acc (&b)[TN]) {
#if defined(__CUDA_ARCH__)  // device pass only: the host compiler does not know the pragma
#pragma unroll
#endif
  for (int m = 0; m < TM; ++m) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int n = 0; n < TN; ++n) acc[m][n] += a[m] * b[n];
  }
}

// Forward epilogue: the row term r[b,i,c] (W_c[:Db]·hs_i + b_c) is added once per score.
template <class Acc>
MCLNER_HD Acc fwd_epilogue(Acc dot, Acc row_term) {
  return dot + row_term;
}

}  // namespace biaffine
}  // namespace mclner
