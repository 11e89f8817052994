// Per-element arithmetic of the fused supervised contrastive loss, shared by the CPU and CUDA kernels.
//
// Notation: x = the L2-normalised anchors [M, P], y = the candidates [N, P] (y = x, N = M for the
// one-set form, where the pair i = k is left out of everything), s = 1/τ, logits L_ik = s·x_i·y_k.
// Labels are compact int32 ids (equal labels equal ids, −1 for "never an anchor nor a positive").
// k is a positive of i when lab_y[k] == lab_x[i] ≥ 0 (and k ≠ i in the one-set form).
//
// Forward, per anchor row: an online log-sum-exp of L_i· (the one in info_nce_tile.h), the sum of
// its positive logits and their count; loss_i = lse_i − pos_i / cnt_i (the O(M) rest is in Python).
// Backward: with per-anchor weights w_i (upstream), c_i = w_i / cnt_i and lse_i (+inf for anchors
// that do not count), dL/dL_ik = w_i·exp(L_ik − lse_i) − c_i·[k positive of i]; it is recomputed
// tile by tile and dX = s·Σ dlogit·Y for whichever operand owns the rows.
#pragma once

#include <cmath>
#include <cstdint>

#include "mclner/common.h"
#include "mclner/info_nce_tile.h"

namespace mclner {
namespace sup_con {

using info_nce::exp_t;
using info_nce::lse_empty;
using info_nce::lse_merge;
using info_nce::lse_push;
using info_nce::lse_value;
using info_nce::neg_inf;
using info_nce::OnlineLse;

// Per-anchor forward statistics.
template <class T>
struct RowStats {
  OnlineLse<T> lse;
  T pos;  // Σ L_ip over the positives
  T cnt;  // |P(i)|
};

template <class T>
MCLNER_HD RowStats<T> stats_empty() {
  return {lse_empty<T>(), T(0), T(0)};
}

// Is candidate k (label lk) a positive of anchor i (label li)? The pair i = k of the one-set form is
// excluded by the caller.
MCLNER_HD bool is_positive(int32_t li, int32_t lk) { return li >= 0 && li == lk; }

// Fold one valid logit into the anchor's statistics.
template <class T>
MCLNER_HD void stats_push(RowStats<T>& st, T logit, bool positive) {
  lse_push(st.lse, logit);
  if (positive) {
    st.pos += logit;
    st.cnt += T(1);
  }
}

// Merge another partial state of the same anchor (e.g. another thread's columns).
template <class T>
MCLNER_HD void stats_merge(RowStats<T>& st, const RowStats<T>& other) {
  lse_merge(st.lse, other.lse.max, other.lse.sum);
  st.pos += other.pos;
  st.cnt += other.cnt;
}

// dL/dL_ik from the softmax probability p = exp(L_ik − lse_i); cpos = c_i when k is a positive of i,
// else 0. V may be a SIMD vector.
template <class V>
MCLNER_HD V dlogit(V p, V w, V cpos) {
  return w * p - cpos;
}

}  // namespace sup_con
}  // namespace mclner
