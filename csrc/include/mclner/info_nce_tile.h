// Per-tile arithmetic of the fused InfoNCE (docs/METHOD.md §4, §6), shared by the CPU and CUDA kernels.
//
// Notation: a, b are the L2-normalised views [M, P], s = 1/τ, logits L_mk = s·a_m·b_k.
// Row loss_m = lse_k(L_mk) − L_mm; column loss_m = lse_k(L_km) − L_mm; symmetric averages both.
// Neither side ever stores the M×M matrix: the forward keeps an online log-sum-exp (running max and
// running sum of exp(x − max)) per row (and per column), the backward recomputes logits tile by tile
// from the saved log-sum-exps.
#pragma once

#include <cmath>

#include "mclner/common.h"

namespace mclner {
namespace info_nce {

// Reduction codes shared with mclner/ops/_native_info_nce.py.
enum Reduction : int { kMean = 0, kSum = 1, kNone = 2 };

template <class T>
MCLNER_HD T neg_inf() {
  return -INFINITY;
}

MCLNER_HD float exp_t(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return std::exp(x);
#endif
}
MCLNER_HD double exp_t(double x) { return exp(x); }
MCLNER_HD float log_t(float x) {
#if defined(__CUDA_ARCH__)
  return __logf(x);
#else
  return std::log(x);
#endif
}
MCLNER_HD double log_t(double x) { return log(x); }

// Running log-sum-exp state: lse = max + log(sum), sum = Σ exp(x − max). max = −inf means empty.
template <class T>
struct OnlineLse {
  T max;
  T sum;
};

template <class T>
MCLNER_HD OnlineLse<T> lse_empty() {
  return {neg_inf<T>(), T(0)};
}

// Rescale factor exp(old − new) that never forms (−inf) − (−inf).
template <class T>
MCLNER_HD T lse_rescale(T old_max, T new_max) {
  return old_max == neg_inf<T>() ? T(0) : exp_t(old_max - new_max);
}

// Fold a block summary (its max and Σ exp(x − block_max)) into the running state.
template <class T>
MCLNER_HD void lse_merge(OnlineLse<T>& st, T block_max, T block_sum) {
  if (block_max == neg_inf<T>()) return;  // empty block
  if (block_max <= st.max) {
    st.sum += block_sum * exp_t(block_max - st.max);
  } else {
    st.sum = st.sum * lse_rescale(st.max, block_max) + block_sum;
    st.max = block_max;
  }
}

// Fold one value into the running state (the CUDA kernels stream logits one at a time).
template <class T>
MCLNER_HD void lse_push(OnlineLse<T>& st, T x) {
  lse_merge(st, x, T(1));
}

template <class T>
MCLNER_HD T lse_value(const OnlineLse<T>& st) {
  return st.max + log_t(st.sum);
}

// Per-row loss from the saved log-sum-exps and the positive logit L_mm.
template <class T>
MCLNER_HD T row_loss(T row_lse, T col_lse, T pos, bool symmetric) {
  return symmetric ? T(0.5) * ((row_lse - pos) + (col_lse - pos)) : row_lse - pos;
}

// Upstream weight of row m's loss from g = grad[reduction == kNone ? m : 0]: mean spreads g over
// the M rows, sum and none take it as it is.
template <class T>
MCLNER_HD T upstream_weight(T g, int64_t M, int reduction) {
  return reduction == kMean ? g / T(M) : g;
}

// Weight of the row-wise (and column-wise) term inside loss_m: symmetric averages the two.
template <class T>
MCLNER_HD T term_weight(T w, bool symmetric) {
  return symmetric ? T(0.5) * w : w;
}

// d loss / d L_mk = wr_m (softmax_row_mk − δ_mk) + wc_k (softmax_col_mk − δ_mk), with
// softmax_row_mk = exp(L_mk − lse_row_m), softmax_col_mk = exp(L_mk − lse_col_k) and wr, wc the
// term weights (wc = 0 when not symmetric). Then dL/da_m = s·Σ_k that·b_k, dL/db_k = s·Σ_m that·a_m.
// Takes the probabilities, so V may be a SIMD vector whose exp the caller provides.
template <class V>
MCLNER_HD V dlogit(V p_row, V wr, V p_col, V wc) {
  return wr * p_row + wc * p_col;
}
// The δ_mk part, added once per diagonal element.
template <class T>
MCLNER_HD T dlogit_diag_correction(T wr, T wc) {
  return -(wr + wc);
}

}  // namespace info_nce
}  // namespace mclner
