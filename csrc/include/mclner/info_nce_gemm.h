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
// Brace fills compile to one broadcast (`Vec{} + x` would cost a scalar add: −0.0 rules).
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

// exp on a vector of x ≤ ~0 (arguments are always x − max or L − lse). float: Cephes-style
// range reduction + degree-7 polynomial (≤ 2 ulp), exactly 0 below the smallest normal; double:
// per-lane std::exp (the double path is for validation, not speed).
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

// C[rows, ncols] (+)= X · Y with X[r, k] = X[r·xr + k·xk], Y[k, c] = Y[k·ldy + c] (c contiguous).
// rows is a multiple of kR and ncols of W; R × NV vector accumulators stay in registers.
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
