// Per-element / per-tile arithmetic of cln_head shared by the CPU and CUDA kernels.
//
// Notation (docs/METHOD.md §3): per pair (i, j) of one sequence, pre_ij = W1 (γ_i ⊙ n_j) + u_i with
// u_i = W1 λ_i + b1, g = GELU(pre), S_ij = W2 g + b2. The backward recomputes pre and uses
//   dg = W2ᵀ dS_ij, dpre = dg ⊙ GELU'(pre), du_i += dpre, dW2 += dS gᵀ,
//   E_ij = W1ᵀ dpre (D), dγ_i += n_j ⊙ E_ij, dn_j += γ_i ⊙ E_ij, dW1 += dpre (γ_i ⊙ n_j)ᵀ.
//
// The float GELU uses a branch-free rational erf (Eigen's generic_fast_erf_float, |err| < 5e-7) and a
// Cephes-style exp so that the CPU loops vectorise; both devices evaluate the same formulas.
// float64 uses the exact libm versions from common.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "mclner/common.h"

namespace mclner {
namespace cln {

MCLNER_HD float bits_to_float(int32_t b) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

// erf(x) for float, branch-free (x clamped to [-4, 4], where erf is ±1 in float).
MCLNER_HD float erf_fast(float x) {
  x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

// exp(x) for x <= 0 (clamped at -87 where the result is below the smallest normal float anyway).
MCLNER_HD float exp_neg_fast(float x) {
  x = x < -87.0f ? -87.0f : (x > 0.0f ? 0.0f : x);
  // Round x*log2(e) to the nearest integer with the 1.5*2^23 trick (no floor: vectorises on SSE2).
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float fx = t - 12582912.0f;
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(fx) + 127) << 23;
  return y * bits_to_float(e);
}

MCLNER_HD float gelu_f(float x) { return 0.5f * x * (1.0f + erf_fast(x * 0.70710678118654752440f)); }
MCLNER_HD double gelu_f(double x) { return gelu(x); }

// GELU(x) and GELU'(x) together (the backward needs both).
MCLNER_HD void gelu_and_grad(float x, float* g, float* gp) {
  const float cdf = 0.5f * (1.0f + erf_fast(x * 0.70710678118654752440f));
  const float pdf = 0.39894228040143267794f * exp_neg_fast(-0.5f * x * x);
  *g = x * cdf;
  *gp = cdf + x * pdf;
}
MCLNER_HD void gelu_and_grad(double x, double* g, double* gp) {
  *g = gelu(x);
  *gp = gelu_grad(x);
}

// Backward of one (pair, hidden unit) element: given pre and the upstream dS of the pair (C values,
// stride 1) and column k of W2 (stride ldw2 = H), returns dpre and g (g feeds dW2).
template <class T, class TS>
MCLNER_HD T pair_hidden_backward(T pre, const TS* dS, const T* W2k, int64_t C, int64_t ldw2, T* g_out) {
  T g, gp;
  gelu_and_grad(pre, &g, &gp);
  T dg = T(0);
  for (int64_t c = 0; c < C; ++c) dg += static_cast<T>(dS[c]) * W2k[c * ldw2];
  *g_out = g;
  return dg * gp;
}

}  // namespace cln
}  // namespace mclner
