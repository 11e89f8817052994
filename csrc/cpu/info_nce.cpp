// Fused InfoNCE on the CPU (Inf-CL / Cut-Cross-Entropy style): never stores the M×M logits.
//
// Inputs are the L2-normalised views a, b [M, P] (Python normalises with torch, whose autograd
// chains the normalisation's backward). Work is split in tiles of BM rows × BN columns:
//   forward : S = (s·a_blk) b_blkᵀ (register-blocked micro-kernel), per row an online log-sum-exp
//             over column tiles (the row block is owned by one thread), for symmetric per-thread
//             column statistics merged at the end with the same online-LSE merge. Saves lse [M].
//   backward: recomputes S per tile, dS = dlogit(...) from the saved lse, da_blk += dS·b_blk (rows
//             owned by the thread), db += dSᵀ·(s·a_blk) into a per-thread accumulator [M, P] that is
//             summed at the end. Extra memory O(threads·M·P), never O(M²).
// The SIMD code is written with GCC vector extensions and compiled for AVX-512 / AVX2 behind
// __attribute__((target)) with runtime dispatch (never -march=native); the default clone is portable.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// The vector helpers (here and instantiated from the tile header) never cross an ABI boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

#include "mclner/common.h"
#include "mclner/info_nce_tile.h"

namespace py = pybind11;

namespace mclner {
namespace {

using info_nce::OnlineLse;

constexpr const char* kOp = "info_nce";
constexpr int kBM = 64;   // rows of a per tile (owned by one thread)
constexpr int kBN = 256;  // columns (rows of b) per tile
constexpr int kR = 8;     // rows per micro-kernel call

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
template <class T>
inline Vec<T> vbroadcast(T x) {
  return Vec<T>{} + x;
}
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

// Packed operands shared by all threads (O(M·P)): rows padded to Mp (multiple of kBM and kBN),
// features padded to Pp (multiple of W) with zeros, so every tile is full.
template <class T>
struct Packed {
  int64_t M, P, Mp, Pp, nbi, nbj;
  T s;
  bool symmetric;
  std::vector<T> As;  // [Mp, Pp] s·a
  std::vector<T> Bp;  // [Mp, Pp] b
  std::vector<T> Bt;  // [nbj, P, kBN] b transposed per column tile
};

// Per-thread scratch.
template <class T>
struct Scratch {
  std::vector<T> S;           // [kBM, kBN] logits, then dlogits
  std::vector<T> col_max;     // [Mp] column statistics of this thread's rows (forward, symmetric)
  std::vector<T> col_sum;     // [Mp]
  std::vector<T> db;          // [Mp, Pp] db accumulator (backward)
};

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

// wr, wc, rlse, clse are padded to Mp (zeros); daP is [Mp, Pp] with this block's rows owned here.
template <class T>
inline void backward_block_impl(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, const T* wr, const T* wc,
                                const T* rlse, const T* clse, T* daP) {
  constexpr int W = Simd<T>::W;
  const int64_t i0 = ib * kBM;
  T* S = sc.S.data();
  T* da = daP + i0 * pk.Pp;
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
    gemm<T, true>(S, 1, kBN, pk.As.data() + i0 * pk.Pp, pk.Pp, sc.db.data() + j0 * pk.Pp, pk.Pp, kBN, kBM, pk.Pp);
  }
}

// ISA clones: flatten inlines the whole tile pipeline into each, so the vector code is generated
// for that target; the choice is made once at run time.
#define MCLNER_INFO_NCE_CLONES(SUFFIX, ATTR)                                                              \
  template <class T>                                                                                      \
  ATTR void forward_block_##SUFFIX(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, T* row_lse) {        \
    forward_block_impl(pk, ib, sc, row_lse);                                                              \
  }                                                                                                       \
  template <class T>                                                                                      \
  ATTR void backward_block_##SUFFIX(const Packed<T>& pk, int64_t ib, Scratch<T>& sc, const T* wr,       \
                                    const T* wc, const T* rlse, const T* clse, T* daP) {                  \
    backward_block_impl(pk, ib, sc, wr, wc, rlse, clse, daP);                                             \
  }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MCLNER_X86 1
MCLNER_INFO_NCE_CLONES(avx512, __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"), flatten)))
MCLNER_INFO_NCE_CLONES(avx2, __attribute__((target("avx2,fma"), flatten)))
#endif
MCLNER_INFO_NCE_CLONES(generic, __attribute__((flatten)))

template <class T>
struct Kernels {
  void (*forward)(const Packed<T>&, int64_t, Scratch<T>&, T*);
  void (*backward)(const Packed<T>&, int64_t, Scratch<T>&, const T*, const T*, const T*, const T*, T*);
};

template <class T>
Kernels<T> pick_kernels() {
#ifdef MCLNER_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return {forward_block_avx512<T>, backward_block_avx512<T>};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {forward_block_avx2<T>, backward_block_avx2<T>};
#endif
  return {forward_block_generic<T>, backward_block_generic<T>};
}

std::string isa_name() {
#ifdef MCLNER_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "generic";
}

int thread_count(int requested) {
#ifdef _OPENMP
  return std::max(1, requested);
#else
  (void)requested;
  return 1;
#endif
}

template <class T>
void pack(Packed<T>& pk, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, double temperature,
          bool symmetric, int threads) {
  constexpr int W = Simd<T>::W;
  pk.M = M;
  pk.P = P;
  pk.Mp = (M + kBN - 1) / kBN * kBN;  // kBN is a multiple of kBM
  pk.Pp = (P + W - 1) / W * W;
  pk.nbi = pk.Mp / kBM;
  pk.nbj = pk.Mp / kBN;
  pk.s = static_cast<T>(1.0 / temperature);
  pk.symmetric = symmetric;
  pk.As.assign(pk.Mp * pk.Pp, T(0));
  pk.Bp.assign(pk.Mp * pk.Pp, T(0));
  pk.Bt.assign(pk.nbj * P * kBN, T(0));
  const T s = pk.s;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t p = 0; p < P; ++p) {
      pk.As[m * pk.Pp + p] = s * a[m * lda + p];
      pk.Bp[m * pk.Pp + p] = b[m * ldb + p];
    }
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t jb = 0; jb < pk.nbj; ++jb) {
    T* dst = pk.Bt.data() + jb * P * kBN;
    const int64_t nc = std::min<int64_t>(kBN, M - jb * kBN);
    for (int64_t j = 0; j < nc; ++j)
      for (int64_t p = 0; p < P; ++p) dst[p * kBN + j] = b[(jb * kBN + j) * ldb + p];
  }
}

// Positive logit L_mm = (s·a_m)·b_m.
template <class T>
T positive(const Packed<T>& pk, int64_t m) {
  T acc = 0;
  for (int64_t p = 0; p < pk.P; ++p) acc += pk.As[m * pk.Pp + p] * pk.Bp[m * pk.Pp + p];
  return acc;
}

template <class T>
void forward_impl(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, double temperature,
                  bool symmetric, int reduction, T* out, T* row_lse, T* col_lse, int threads) {
  Packed<T> pk;
  pack(pk, a, lda, b, ldb, M, P, temperature, symmetric, threads);
  const Kernels<T> k = pick_kernels<T>();
  std::vector<Scratch<T>> scratch(threads);
  // Column statistics are merged across threads afterwards; per-thread copies avoid any locking.
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    Scratch<T>& sc = scratch[omp_get_thread_num()];
#else
    Scratch<T>& sc = scratch[0];
#endif
    sc.S.assign(static_cast<size_t>(kBM) * kBN, T(0));
    if (symmetric) {
      sc.col_max.assign(pk.Mp, info_nce::neg_inf<T>());
      sc.col_sum.assign(pk.Mp, T(0));
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t ib = 0; ib < pk.nbi; ++ib)
      if (ib * kBM < M) k.forward(pk, ib, sc, row_lse);
  }
  if (symmetric) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t j = 0; j < M; ++j) {
      OnlineLse<T> st = info_nce::lse_empty<T>();
      for (const Scratch<T>& sc : scratch)
        if (!sc.col_max.empty()) info_nce::lse_merge(st, sc.col_max[j], sc.col_sum[j]);
      col_lse[j] = info_nce::lse_value(st);
    }
  }
  double total = 0.0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
  for (int64_t m = 0; m < M; ++m) {
    const T loss = info_nce::row_loss(row_lse[m], symmetric ? col_lse[m] : T(0), positive(pk, m), symmetric);
    if (reduction == info_nce::kNone) out[m] = loss;
    total += static_cast<double>(loss);
  }
  if (reduction == info_nce::kMean) out[0] = static_cast<T>(total / static_cast<double>(M));
  if (reduction == info_nce::kSum) out[0] = static_cast<T>(total);
}

template <class T>
void backward_impl(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, double temperature,
                   bool symmetric, int reduction, const T* grad, const T* row_lse, const T* col_lse, T* da, T* db,
                   int threads) {
  Packed<T> pk;
  pack(pk, a, lda, b, ldb, M, P, temperature, symmetric, threads);
  const Kernels<T> k = pick_kernels<T>();
  // Term weights and log-sum-exps padded with zeros: padded rows/columns contribute nothing.
  std::vector<T> wr(pk.Mp, T(0)), wc(pk.Mp, T(0)), rl(pk.Mp, T(0)), cl(pk.Mp, T(0));
  for (int64_t m = 0; m < M; ++m) {
    const T g = grad[reduction == info_nce::kNone ? m : 0];
    wr[m] = info_nce::term_weight(info_nce::upstream_weight(g, M, reduction), symmetric);
    rl[m] = row_lse[m];
    if (symmetric) {
      wc[m] = wr[m];
      cl[m] = col_lse[m];
    }
  }
  std::vector<T> daP(pk.Mp * pk.Pp, T(0));
  std::vector<Scratch<T>> scratch(threads);
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    Scratch<T>& sc = scratch[omp_get_thread_num()];
#else
    Scratch<T>& sc = scratch[0];
#endif
    sc.S.assign(static_cast<size_t>(kBM) * kBN, T(0));
    sc.db.assign(pk.Mp * pk.Pp, T(0));
#pragma omp for schedule(dynamic, 1)
    for (int64_t ib = 0; ib < pk.nbi; ++ib)
      if (ib * kBM < M) k.backward(pk, ib, sc, wr.data(), wc.data(), rl.data(), cl.data(), daP.data());
  }
  const T s = pk.s;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t p = 0; p < P; ++p) {
      T acc = 0;
      for (const Scratch<T>& sc : scratch)
        if (!sc.db.empty()) acc += sc.db[m * pk.Pp + p];
      db[m * P + p] = acc;
      da[m * P + p] = s * daP[m * pk.Pp + p];
    }
  }
}

void validate(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
              double temperature, bool symmetric, int reduction, std::uintptr_t col_lse, int num_threads) {
  require_ptr(a, kOp, "a");
  require_ptr(b, kOp, "b");
  require_positive(M, kOp, "M");
  require_positive(P, kOp, "P");
  require(lda >= P, std::string(kOp) + ": argument 'lda' must be >= P, got " + std::to_string(lda));
  require(ldb >= P, std::string(kOp) + ": argument 'ldb' must be >= P, got " + std::to_string(ldb));
  require(dtype == static_cast<int>(DType::Float32) || dtype == static_cast<int>(DType::Float64),
          std::string(kOp) + ": argument 'dtype' must be float32 or float64 on the CPU, got " + dtype_name(dtype));
  require_finite(temperature, kOp, "temperature");
  require(temperature > 0.0,
          std::string(kOp) + ": argument 'temperature' must be positive, got " + std::to_string(temperature));
  require(reduction >= info_nce::kMean && reduction <= info_nce::kNone,
          std::string(kOp) + ": argument 'reduction' must be 0 (mean), 1 (sum) or 2 (none), got " +
              std::to_string(reduction));
  if (symmetric) require_ptr(col_lse, kOp, "col_lse");
  require_positive(num_threads, kOp, "num_threads");
}

void forward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
             double temperature, bool symmetric, int reduction, std::uintptr_t out, std::uintptr_t row_lse,
             std::uintptr_t col_lse, int num_threads) {
  validate(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, col_lse, num_threads);
  require_ptr(out, kOp, "out");
  require_ptr(row_lse, kOp, "row_lse");
  const int threads = thread_count(num_threads);
  py::gil_scoped_release nogil;
  if (dtype == static_cast<int>(DType::Float32)) {
    forward_impl<float>(reinterpret_cast<const float*>(a), lda, reinterpret_cast<const float*>(b), ldb, M, P,
                        temperature, symmetric, reduction, reinterpret_cast<float*>(out),
                        reinterpret_cast<float*>(row_lse), reinterpret_cast<float*>(col_lse), threads);
  } else {
    forward_impl<double>(reinterpret_cast<const double*>(a), lda, reinterpret_cast<const double*>(b), ldb, M, P,
                         temperature, symmetric, reduction, reinterpret_cast<double*>(out),
                         reinterpret_cast<double*>(row_lse), reinterpret_cast<double*>(col_lse), threads);
  }
}

void backward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
              double temperature, bool symmetric, int reduction, std::uintptr_t grad, std::uintptr_t row_lse,
              std::uintptr_t col_lse, std::uintptr_t da, std::uintptr_t db, int num_threads) {
  validate(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, col_lse, num_threads);
  require_ptr(grad, kOp, "grad");
  require_ptr(row_lse, kOp, "row_lse");
  require_ptr(da, kOp, "da");
  require_ptr(db, kOp, "db");
  const int threads = thread_count(num_threads);
  py::gil_scoped_release nogil;
  if (dtype == static_cast<int>(DType::Float32)) {
    backward_impl<float>(reinterpret_cast<const float*>(a), lda, reinterpret_cast<const float*>(b), ldb, M, P,
                         temperature, symmetric, reduction, reinterpret_cast<const float*>(grad),
                         reinterpret_cast<const float*>(row_lse), reinterpret_cast<const float*>(col_lse),
                         reinterpret_cast<float*>(da), reinterpret_cast<float*>(db), threads);
  } else {
    backward_impl<double>(reinterpret_cast<const double*>(a), lda, reinterpret_cast<const double*>(b), ldb, M, P,
                          temperature, symmetric, reduction, reinterpret_cast<const double*>(grad),
                          reinterpret_cast<const double*>(row_lse), reinterpret_cast<const double*>(col_lse),
                          reinterpret_cast<double*>(da), reinterpret_cast<double*>(db), threads);
  }
}

}  // namespace

void register_info_nce_cpu(py::module_& m) {
  m.def("info_nce_forward", &forward, py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"), py::arg("M"),
        py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("symmetric"), py::arg("reduction"),
        py::arg("out"), py::arg("row_lse"), py::arg("col_lse"), py::arg("num_threads"),
        "Fused InfoNCE forward on normalised a, b [M, P] (row stride lda/ldb, unit column stride). Writes the "
        "loss to out ([M] for reduction 2 = none, else [1]) and the per-row (and, when symmetric, per-column) "
        "log-sum-exp [M] for the backward. Never stores the M×M logits.");
  m.def("info_nce_backward", &backward, py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"), py::arg("M"),
        py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("symmetric"), py::arg("reduction"),
        py::arg("grad"), py::arg("row_lse"), py::arg("col_lse"), py::arg("da"), py::arg("db"),
        py::arg("num_threads"),
        "Fused InfoNCE backward: recomputes the logits tile by tile from the saved log-sum-exps and writes "
        "the gradients w.r.t. the normalised a, b into contiguous da, db [M, P].");
  m.def("info_nce_isa", &isa_name, "SIMD clone the CPU info_nce kernels dispatch to on this machine");
}

}  // namespace mclner
