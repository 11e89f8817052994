// SIMD tile pipeline of the CPU sup_con kernels (csrc/cpu/sup_con.cpp), included once per instruction
// set, the same way as info_nce_gemm.h: no include guard on purpose; the includer opens
// `#pragma GCC target(...)`, defines MCLNER_SUP_CON_ISA (the namespace of this copy) and includes this
// file, so the 64-byte vector types are laid out for that target.
// Needs, from the includer: kBM, kBN, kR, Operand<T>, Problem<T>, Scratch<T> in mclner::sup_con_cpu.

namespace mclner {
namespace sup_con_cpu {
namespace MCLNER_SUP_CON_ISA {

#include "mclner/simd_gemm.h"  // Simd, Vec, vload/vstore, vbroadcast, vmax, hmax, hsum, vexp, gemm

// S = (s·x_blk) y_blkᵀ for row tile ib of x and column tile jb of y. Padded rows and columns, and the
// pair i = k of the one-set form, become −inf: they drop out of every exp and every positive mask.
template <class T>
inline void logits_tile(const Problem<T>& pb, int64_t ib, int64_t jb, T* S) {
  const Operand<T>& x = *pb.x;
  const Operand<T>& y = *pb.y;
  const int64_t i0 = ib * kBM, j0 = jb * kBN;
  gemm<T, false>(x.scaled.data() + i0 * pb.Pp, pb.Pp, 1, y.tiles.data() + jb * pb.P * kBN, kBN, S, kBN, kBM, pb.P,
                 kBN);
  const int64_t nr = std::min<int64_t>(kBM, x.n - i0), nc = std::min<int64_t>(kBN, y.n - j0);
  const T ninf = sup_con::neg_inf<T>();
  if (nc < kBN)
    for (int64_t r = 0; r < kBM; ++r) std::fill(S + r * kBN + nc, S + (r + 1) * kBN, ninf);
  if (nr < kBM) std::fill(S + nr * kBN, S + kBM * kBN, ninf);
  if (pb.one_set) {
    const int64_t lo = std::max(i0, j0), hi = std::min({i0 + kBM, j0 + kBN, x.n});
    for (int64_t m = lo; m < hi; ++m) S[(m - i0) * kBN + (m - j0)] = ninf;
  }
}

// Per-anchor statistics of row tile ib of x (the anchors) over every candidate tile of y.
template <class T>
inline void forward_block_impl(const Problem<T>& pb, int64_t ib, Scratch<T>& sc, T* lse, T* pos, T* cnt) {
  using V = Vec<T>;
  constexpr int W = Simd<T>::W;
  const Operand<T>& x = *pb.x;
  const Operand<T>& y = *pb.y;
  const int64_t i0 = ib * kBM;
  const int64_t nr = std::min<int64_t>(kBM, x.n - i0);
  sup_con::OnlineLse<T> st[kBM];
  V pos_acc[kBM], cnt_acc[kBM];
  for (int r = 0; r < kBM; ++r) {
    st[r] = sup_con::lse_empty<T>();
    pos_acc[r] = V{};
    cnt_acc[r] = V{};
  }
  const V ninf = vbroadcast(sup_con::neg_inf<T>()), one = vbroadcast(T(1));
  T* S = sc.S.data();
  for (int64_t jb = 0; jb < pb.nbj; ++jb) {
    const int64_t j0 = jb * kBN;
    logits_tile(pb, ib, jb, S);
    for (int64_t r = 0; r < nr; ++r) {
      const T* row = S + r * kBN;
      const T li = x.lab[i0 + r];
      if (li >= T(0)) {  // labels < 0 are never anchors: no positives to collect
        const V lv = vbroadcast(li);
        for (int c = 0; c < kBN; c += W) {
          const V v = vload(row + c);
          const auto m = (vload(y.lab.data() + j0 + c) == lv) & (v > ninf);
          pos_acc[r] += m ? v : V{};
          cnt_acc[r] += m ? one : V{};
        }
      }
      V mv = vload(row);
      for (int c = W; c < kBN; c += W) mv = vmax<T>(mv, vload(row + c));
      const T bm = hmax<T>(mv);
      if (bm == sup_con::neg_inf<T>()) continue;  // nothing valid in this tile (one set, M = 1)
      const V bmv = vbroadcast(bm);
      V acc{};
      for (int c = 0; c < kBN; c += W) acc += vexp(vload(row + c) - bmv);
      sup_con::lse_merge(st[r], bm, hsum<T>(acc));
    }
  }
  for (int64_t r = 0; r < nr; ++r) {
    lse[i0 + r] = sup_con::lse_value(st[r]);
    pos[i0 + r] = hsum<T>(pos_acc[r]);
    cnt[i0 + r] = hsum<T>(cnt_acc[r]);
  }
}

// dx for row tile ib of x: dS = dlogit of the anchor terms that apply (rows of x as anchors: row_terms;
// rows of y as anchors: col_terms), then dx_blk += dS · y_blk, written once (scaled by s) at the end.
// The per-anchor arrays (aw, ac, alse) of each side are padded (0, 0, +inf) to that side's padded size.
template <class T>
inline void backward_block_impl(const Problem<T>& pb, int64_t ib, Scratch<T>& sc, T* dx_out) {
  using V = Vec<T>;
  constexpr int W = Simd<T>::W;
  const Operand<T>& x = *pb.x;
  const Operand<T>& y = *pb.y;
  const int64_t i0 = ib * kBM;
  const V ninf = vbroadcast(sup_con::neg_inf<T>());
  T* S = sc.S.data();
  T* dx = sc.dx_blk.data();
  std::fill(sc.dx_blk.begin(), sc.dx_blk.end(), T(0));
  for (int64_t jb = 0; jb < pb.nbj; ++jb) {
    const int64_t j0 = jb * kBN;
    logits_tile(pb, ib, jb, S);
    const T* ylab = y.lab.data() + j0;
    for (int r = 0; r < kBM; ++r) {
      T* row = S + r * kBN;
      const int64_t i = i0 + r;
      const T wr = pb.row_terms ? x.aw[i] : T(0), cr = pb.row_terms ? x.ac[i] : T(0);
      const V lv = vbroadcast(x.lab[i]);
      if (pb.row_terms && pb.col_terms) {
        const V wrv = vbroadcast(wr), crv = vbroadcast(cr), lrv = vbroadcast(x.alse[i]);
        for (int c = 0; c < kBN; c += W) {
          const V v = vload(row + c);
          const auto m = (vload(ylab + c) == lv) & (v > ninf);
          const V drow = sup_con::dlogit(vexp(v - lrv), wrv, m ? crv : V{});
          const V dcol = sup_con::dlogit(vexp(v - vload(y.alse.data() + j0 + c)), vload(y.aw.data() + j0 + c),
                                         m ? vload(y.ac.data() + j0 + c) : V{});
          vstore(row + c, drow + dcol);
        }
      } else if (pb.row_terms) {
        if (wr == T(0) && cr == T(0)) {
          std::fill(row, row + kBN, T(0));
          continue;
        }
        const V wrv = vbroadcast(wr), crv = vbroadcast(cr), lrv = vbroadcast(x.alse[i]);
        for (int c = 0; c < kBN; c += W) {
          const V v = vload(row + c);
          const auto m = (vload(ylab + c) == lv) & (v > ninf);
          vstore(row + c, sup_con::dlogit(vexp(v - lrv), wrv, m ? crv : V{}));
        }
      } else {
        for (int c = 0; c < kBN; c += W) {
          const V v = vload(row + c);
          const auto m = (vload(ylab + c) == lv) & (v > ninf);
          vstore(row + c, sup_con::dlogit(vexp(v - vload(y.alse.data() + j0 + c)), vload(y.aw.data() + j0 + c),
                                          m ? vload(y.ac.data() + j0 + c) : V{}));
        }
      }
    }
    gemm<T, true>(S, kBN, 1, y.rows.data() + j0 * pb.Pp, pb.Pp, dx, pb.Pp, kBM, kBN, pb.Pp);
  }
  const int64_t nr = std::min<int64_t>(kBM, x.n - i0);
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t p = 0; p < pb.P; ++p) dx_out[(i0 + r) * pb.P + p] = pb.s * dx[r * pb.Pp + p];
}

template <class T>
void forward_block(const Problem<T>& pb, int64_t ib, Scratch<T>& sc, T* lse, T* pos, T* cnt) {
  forward_block_impl(pb, ib, sc, lse, pos, cnt);
}

template <class T>
void backward_block(const Problem<T>& pb, int64_t ib, Scratch<T>& sc, T* dx) {
  backward_block_impl(pb, ib, sc, dx);
}

}  // namespace MCLNER_SUP_CON_ISA
}  // namespace sup_con_cpu
}  // namespace mclner
