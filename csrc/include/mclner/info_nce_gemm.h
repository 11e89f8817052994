// SIMD tile pipeline of the CPU info_nce kernels (csrc/cpu/info_nce.cpp), included once per
// instruction set. No include guard on purpose: the includer opens `#pragma GCC target(...)`, defines
// MCLNER_INFO_NCE_ISA (the namespace of this copy) and includes this file, so that the vector types
// themselves are laid out for that target (a plain __attribute__((target)) on functions leaves
// 64-byte vector types in memory form: spills and lane-by-lane broadcasts).
// Needs, from the includer: kBM, kBN, kR, Packed<T>, Scratch<T> in mclner::info_nce_cpu.

namespace mclner {
namespace info_nce_cpu {
namespace MCLNER_INFO_NCE_ISA {

using info_nce::OnlineLse;

#include "mclner/simd_gemm.h"  // Simd, Vec, vload/vstore, vbroadcast, vmax, hmax, hsum, vexp, gemm

// S = s·a_blk b_blkᵀ for row tile ib and column tile jb; padded columns and rows become −inf so that
// they drop out of every exp.
template <class T>
inline void logits_tile(const Packed<T>& pk, int64_t ib, int64_t jb, T* S) {
  const int64_t i0 = ib * kBM, j0 = jb * kBN;
  gemm<T, false>(pk.As.data() + i0 * pk.Pp, pk.Pp, 1, pk.Bt.data() + jb * pk.P * kBN, kBN, S, kBN, kBM, pk.P, kBN);
  const int64_t nr = std::min<int64_t>(kBM, pk.M - i0), nc = std::min<int64_t>(kBN, pk.M - j0);
  const T ninf = info_nce::neg_inf<T>();
  if (nc < kBN)
    for (int64_t r = 0; r < kBM; ++r) std::fill(S + r * kBN + nc, S + (r + 1) * kBN, ninf);
  if (nr < kBM) std::fill(S + nr * kBN, S + kBM * kBN, ninf);
}

template <class T>
inline void forward_block_impl(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, T* row_lse) {
  constexpr int W = Simd<T>::W;
  const int64_t i0 = ib * kBM;
  const int64_t nr = std::min<int64_t>(kBM, pk.M - i0);
  OnlineLse<T> row_st[kBM];
  for (int r = 0; r < kBM; ++r) row_st[r] = info_nce::lse_empty<T>();
  T* S = sc.S.data();
  for (int64_t jb = 0; jb < pk.nbj; ++jb) {
    logits_tile(pk, ib, jb, S);
    for (int64_t r = 0; r < nr; ++r) {
      const T* row = S + r * kBN;
      Vec<T> m = vload(row);
      for (int c = W; c < kBN; c += W) m = vmax<T>(m, vload(row + c));
      const T bm = hmax<T>(m);
      const Vec<T> bmv = vbroadcast(bm);
      Vec<T> acc{};
      for (int c = 0; c < kBN; c += W) acc += vexp(vload(row + c) - bmv);
      info_nce::lse_merge(row_st[r], bm, hsum<T>(acc));
    }
    if (pk.symmetric) {
      const int64_t j0 = jb * kBN, nc = std::min<int64_t>(kBN, pk.M - j0);
      for (int c = 0; c < kBN && c < nc; c += W) {
        Vec<T> m = vload(S + c);
        for (int64_t r = 1; r < nr; ++r) m = vmax<T>(m, vload(S + r * kBN + c));
        Vec<T> acc{};
        for (int64_t r = 0; r < nr; ++r) acc += vexp(vload(S + r * kBN + c) - m);
        for (int l = 0; l < W && c + l < nc; ++l) {
          OnlineLse<T> st{sc.col_max[j0 + c + l], sc.col_sum[j0 + c + l]};
          info_nce::lse_merge(st, m[l], acc[l]);
          sc.col_max[j0 + c + l] = st.max;
          sc.col_sum[j0 + c + l] = st.sum;
        }
      }
    }
  }
  for (int64_t r = 0; r < nr; ++r) row_lse[i0 + r] = info_nce::lse_value(row_st[r]);
}

// wr, wc, rlse, clse are padded to Mp (zeros). This block's rows of da [M, P] are owned here: they are
// accumulated in the thread's [kBM, Pp] tile and written once, scaled by s, at the end.
template <class T>
inline void backward_block_impl(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, const T* wr, const T* wc,
                                const T* rlse, const T* clse, T* da_out) {
  constexpr int W = Simd<T>::W;
  const int64_t i0 = ib * kBM;
  T* S = sc.S.data();
  T* da = sc.da_blk.data();
  std::fill(sc.da_blk.begin(), sc.da_blk.end(), T(0));
  for (int64_t jb = 0; jb < pk.nbj; ++jb) {
    const int64_t j0 = jb * kBN;
    logits_tile(pk, ib, jb, S);
    for (int r = 0; r < kBM; ++r) {
      T* row = S + r * kBN;
      const Vec<T> wrv = vbroadcast(wr[i0 + r]), rl = vbroadcast(rlse[i0 + r]);
      if (pk.symmetric) {
        for (int c = 0; c < kBN; c += W) {
          const Vec<T> x = vload(row + c);
          vstore(row + c, info_nce::dlogit(vexp(x - rl), wrv, vexp(x - vload(clse + j0 + c)), vload(wc + j0 + c)));
        }
      } else {
        for (int c = 0; c < kBN; c += W) vstore(row + c, wrv * vexp(vload(row + c) - rl));
      }
    }
    // δ_mk: the diagonal of the logit matrix crosses this tile.
    const int64_t lo = std::max(i0, j0), hi = std::min({i0 + kBM, j0 + kBN, pk.M});
    for (int64_t m = lo; m < hi; ++m)
      S[(m - i0) * kBN + (m - j0)] += info_nce::dlogit_diag_correction(wr[m], wc[m]);
    // da_blk += dS · b_blk ; db_blk += dSᵀ · (s·a_blk)   (the s of da is applied at the end)
    gemm<T, true>(S, kBN, 1, pk.Bp.data() + j0 * pk.Pp, pk.Pp, da, pk.Pp, kBM, kBN, pk.Pp);
    gemm<T, true>(S, 1, kBN, pk.As.data() + i0 * pk.Pp, pk.Pp, sc.db + j0 * pk.Pp, pk.Pp, kBN, kBM, pk.Pp);
  }
  const int64_t nr = std::min<int64_t>(kBM, pk.M - i0);
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t p = 0; p < pk.P; ++p) da_out[(i0 + r) * pk.P + p] = pk.s * da[r * pk.Pp + p];
}

template <class T>
void forward_block(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, T* row_lse) {
  forward_block_impl(pk, ib, sc, row_lse);
}

template <class T>
void backward_block(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, const T* wr, const T* wc, const T* rlse,
                    const T* clse, T* da) {
  backward_block_impl(pk, ib, sc, wr, wc, rlse, clse, da);
}

}  // namespace MCLNER_INFO_NCE_ISA
}  // namespace info_nce_cpu
}  // namespace mclner
