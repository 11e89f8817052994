// SIMD tile pipeline of the CPU sup_con kernels (csrc/cpu/sup_con.cpp), included once per instruction
// set, the same way as info_nce_gemm.h: no include guard on purpose; the includer opens
// `#pragma GCC target(...)`, defines MCLNER_SUP_CON_ISA (the namespace of this copy) and includes this
// file, so the 64-byte vector types are laid out for that target.
// Needs, from the includer: kBM, kBN, kR, Operand<T>, Problem<T>, Scratch<T> in mclner::sup_con_cpu.

namespace mclner {
namespace sup_con_cpu {
namespace MCLNER_SUP_CON_ISA {

template <class T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
  static constexpr int W = 16;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef int64_t I __attribute__((vector_size(64)));
  static constexpr int W = 8;
};

template <class T>
using Vec = typename Simd<T>::V;

template <class T>
inline Vec<T> vload(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class T>
inline void vstore(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
inline Vec<float> vbroadcast(float x) { return Vec<float>{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline Vec<double> vbroadcast(double x) { return Vec<double>{x, x, x, x, x, x, x, x}; }
template <class T>
inline Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return a > b ? a : b;
}
template <class T>
inline T hmax(Vec<T> v) {
  T m = v[0];
  for (int l = 1; l < Simd<T>::W; ++l) m = v[l] > m ? v[l] : m;
  return m;
}
template <class T>
inline T hsum(Vec<T> v) {
  T s = 0;
  for (int l = 0; l < Simd<T>::W; ++l) s += v[l];
  return s;
}

// exp of x ≤ ~0 (x − max or L − lse; −inf gives exactly 0). float: Cephes-style range reduction and a
// degree-7 polynomial (≤ 2 ulp); double: per-lane std::exp (the double path is for validation).
inline Vec<float> vexp(Vec<float> x) {
  using V = Vec<float>;
  using I = Simd<float>::I;
  const V lo = vbroadcast(-87.33654475f);
  const V xc = x < lo ? lo : (x > vbroadcast(80.0f) ? vbroadcast(80.0f) : x);
  const V magic = vbroadcast(12582912.0f);  // 1.5·2^23: adding it rounds to nearest
  const V t = xc * 1.44269504088896341f + magic;
  const V n = t - magic;
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = vbroadcast(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  const V scale = (V)bits;
  const V y = p * scale;
  return x < lo ? V{} : y;
}
inline Vec<double> vexp(Vec<double> x) {
  Vec<double> y;
  for (int l = 0; l < Simd<double>::W; ++l) y[l] = std::exp(x[l]);
  return y;
}

// C[rows, ncols] (+)= X · Y with X[r, k] = X[r·xr + k·xk], Y[k, c] = Y[k·ldy + c] (c contiguous);
// rows a multiple of kR, ncols of W; R × NV vector accumulators stay in registers.
template <class T, int NV, bool ACC>
inline void micro(const T* X, int64_t xr, int64_t xk, const T* Y, int64_t ldy, T* C, int64_t ldc, int64_t K) {
  constexpr int W = Simd<T>::W;
  Vec<T> acc[kR][NV];
  for (int r = 0; r < kR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = ACC ? vload(C + r * ldc + v * W) : Vec<T>{};
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> y[NV];
    for (int v = 0; v < NV; ++v) y[v] = vload(Y + k * ldy + v * W);
    const T* xcol = X + k * xk;
    for (int r = 0; r < kR; ++r) {
      const Vec<T> xb = vbroadcast(xcol[r * xr]);
      for (int v = 0; v < NV; ++v) acc[r][v] += xb * y[v];
    }
  }
  for (int r = 0; r < kR; ++r)
    for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, acc[r][v]);
}

template <class T, bool ACC>
inline void gemm(const T* X, int64_t xr, int64_t xk, const T* Y, int64_t ldy, T* C, int64_t ldc, int64_t rows,
                 int64_t K, int64_t ncols) {
  constexpr int W = Simd<T>::W;
  int64_t c = 0;
  for (; c + 2 * W <= ncols; c += 2 * W)
    for (int64_t r = 0; r < rows; r += kR)
      micro<T, 2, ACC>(X + r * xr, xr, xk, Y + c, ldy, C + r * ldc + c, ldc, K);
  for (; c < ncols; c += W)
    for (int64_t r = 0; r < rows; r += kR)
      micro<T, 1, ACC>(X + r * xr, xr, xk, Y + c, ldy, C + r * ldc + c, ldc, K);
}

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
