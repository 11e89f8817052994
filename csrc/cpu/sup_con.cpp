// Fused supervised contrastive loss on the CPU: never stores the M×N logits.
//
// Inputs are the L2-normalised anchors x [M, P] and candidates y [N, P] (the same array in the
// one-set form, where the pair i = k is left out) and compact int32 label ids (Python makes them; −1
// marks "never an anchor nor a positive"). Work is split in tiles of kBM rows of x × kBN rows of y:
//   forward : S = (s·x_blk) y_blkᵀ (register-blocked micro-kernel); per anchor row an online
//             log-sum-exp over the column tiles, the sum of its positive logits and their count.
//             Saves lse, pos, cnt [M]; the O(M) loss and reduction are done by the caller.
//   backward: recomputes S per tile, dS from the per-anchor weights (sup_con_tile.h), dx_blk += dS·y_blk.
//             Every call owns the rows of x it writes: the two-set form calls it twice (x = anchors
//             with row terms, then x = candidates with column terms); the one-set form once with both
//             terms, since L is symmetric there. Row tiles are independent, so the result does not
//             depend on the number of threads or the OpenMP schedule. Extra memory O((M + N)·P).
// The SIMD code (csrc/include/mclner/sup_con_gemm.h) is compiled once per instruction set under
// `#pragma GCC target` (AVX-512, AVX2, portable), as for info_nce, and chosen per call by the shared
// scheme of csrc/include/mclner/cpu_isa.h.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#pragma GCC diagnostic ignored "-Wpsabi"

#include "mclner/common.h"
#include "mclner/cpu_isa.h"
#include "mclner/op_checks.h"
#include "mclner/sup_con_tile.h"

namespace py = pybind11;

namespace mclner {
namespace sup_con_cpu {

constexpr const char* kOp = "sup_con";
constexpr int kBM = 64;   // rows of x per tile (owned by one thread)
constexpr int kBN = 256;  // rows of y per tile
constexpr int kR = 8;     // rows per micro-kernel call
constexpr float kPadLabel = -2.0f;  // label of padded rows: never equal to a real id or to −1

// One side (x or y) packed for the tiles; rows padded to Np (a multiple of kBN), features to Pp.
template <class T>
struct Operand {
  int64_t n = 0, Np = 0;
  std::vector<T> scaled;  // [Np, Pp] s·z: the left factor of the logits (as x)
  std::vector<T> rows;    // [Np, Pp] z: the right factor of the gradient GEMM (as y)
  std::vector<T> tiles;   // [Np / kBN, P, kBN] z transposed per column tile (as y)
  std::vector<T> lab;     // [Np] label ids as T (exact: ids < 2^24 are checked)
  std::vector<T> aw, ac, alse;  // [Np] per-anchor w, c, lse of the backward (padding 0, 0, +inf)
};

template <class T>
struct Problem {
  int64_t P, Pp, nbi, nbj;
  T s;
  bool one_set, row_terms, col_terms;
  const Operand<T>* x;
  const Operand<T>* y;
};

template <class T>
struct Scratch {
  std::vector<T> S;       // [kBM, kBN] logits, then dlogits
  std::vector<T> dx_blk;  // [kBM, Pp] dx of the current row tile (backward)
};

}  // namespace sup_con_cpu
}  // namespace mclner

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MCLNER_X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define MCLNER_SUP_CON_ISA avx512
#include "mclner/sup_con_gemm.h"
#undef MCLNER_SUP_CON_ISA
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define MCLNER_SUP_CON_ISA avx2
#include "mclner/sup_con_gemm.h"
#undef MCLNER_SUP_CON_ISA
#pragma GCC pop_options
#endif
#define MCLNER_SUP_CON_ISA generic
#include "mclner/sup_con_gemm.h"
#undef MCLNER_SUP_CON_ISA

namespace mclner {
namespace sup_con_cpu {

template <class T>
struct Kernels {
  void (*forward)(const Problem<T>&, int64_t, Scratch<T>&, T*, T*, T*);
  void (*backward)(const Problem<T>&, int64_t, Scratch<T>&, T*);
};

// level: a resolved cpu_isa level (cpu_isa.h).
template <class T>
Kernels<T> pick_kernels(int level) {
#ifdef MCLNER_X86
  if (level == cpu_isa::kAvx512) return {avx512::forward_block<T>, avx512::backward_block<T>};
  if (level == cpu_isa::kAvx2) return {avx2::forward_block<T>, avx2::backward_block<T>};
#endif
  return {generic::forward_block<T>, generic::backward_block<T>};
}

int thread_count(int requested) {
#ifdef _OPENMP
  return std::max(1, requested);
#else
  (void)requested;
  return 1;
#endif
}

int64_t padded_features(int64_t P, size_t elem) {
  const int64_t W = 64 / static_cast<int64_t>(elem);  // lanes of one 64-byte vector
  return (P + W - 1) / W * W;
}

template <class T>
void pack(Operand<T>& op, const T* z, int64_t ld, int64_t n, int64_t P, int64_t Pp, T s, const int32_t* lab,
          bool scaled, bool rows, bool tiles, int threads) {
  op.n = n;
  op.Np = (n + kBN - 1) / kBN * kBN;  // kBN is a multiple of kBM
  if (scaled) op.scaled.assign(op.Np * Pp, T(0));
  if (rows) op.rows.assign(op.Np * Pp, T(0));
  op.lab.assign(op.Np, T(kPadLabel));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < n; ++m) {
    for (int64_t p = 0; p < P; ++p) {
      if (scaled) op.scaled[m * Pp + p] = s * z[m * ld + p];
      if (rows) op.rows[m * Pp + p] = z[m * ld + p];
    }
    op.lab[m] = static_cast<T>(lab[m]);
  }
  if (tiles) {
    const int64_t nbj = op.Np / kBN;
    op.tiles.assign(nbj * P * kBN, T(0));
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t jb = 0; jb < nbj; ++jb) {
      T* dst = op.tiles.data() + jb * P * kBN;
      const int64_t nc = std::min<int64_t>(kBN, n - jb * kBN);
      for (int64_t j = 0; j < nc; ++j)
        for (int64_t p = 0; p < P; ++p) dst[p * kBN + j] = z[(jb * kBN + j) * ld + p];
    }
  }
}

// Per-anchor backward arrays of one side, padded so padded rows contribute nothing.
template <class T>
void set_anchor_terms(Operand<T>& op, const T* w, const T* c, const T* lse) {
  op.aw.assign(op.Np, T(0));
  op.ac.assign(op.Np, T(0));
  op.alse.assign(op.Np, T(INFINITY));
  std::copy(w, w + op.n, op.aw.begin());
  std::copy(c, c + op.n, op.ac.begin());
  std::copy(lse, lse + op.n, op.alse.begin());
}

template <class T>
void forward_impl(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t M, int64_t N, int64_t P,
                  double temperature, bool one_set, const int32_t* lab_x, const int32_t* lab_y, T* lse, T* pos, T* cnt,
                  int threads, int level) {
  const int64_t Pp = padded_features(P, sizeof(T));
  const T s = static_cast<T>(1.0 / temperature);
  Operand<T> ox, oy;
  pack(ox, x, ldx, M, P, Pp, s, lab_x, true, false, one_set, threads);
  if (!one_set) pack(oy, y, ldy, N, P, Pp, s, lab_y, false, false, true, threads);
  const Operand<T>* py_ = one_set ? &ox : &oy;
  const Problem<T> pb{P, Pp, ox.Np / kBM, py_->Np / kBN, s, one_set, false, false, &ox, py_};
  const Kernels<T> k = pick_kernels<T>(level);
#pragma omp parallel num_threads(threads)
  {
    Scratch<T> sc;
    sc.S.assign(static_cast<size_t>(kBM) * kBN, T(0));
#pragma omp for schedule(dynamic, 1)
    for (int64_t ib = 0; ib < pb.nbi; ++ib)
      if (ib * kBM < M) k.forward(pb, ib, sc, lse, pos, cnt);
  }
}

template <class T>
void backward_impl(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t M, int64_t N, int64_t P,
                   double temperature, bool one_set, const int32_t* lab_x, const int32_t* lab_y, bool row_terms,
                   bool col_terms, const T* w_x, const T* c_x, const T* lse_x, const T* w_y, const T* c_y,
                   const T* lse_y, T* dx, int threads, int level) {
  const int64_t Pp = padded_features(P, sizeof(T));
  const T s = static_cast<T>(1.0 / temperature);
  Operand<T> ox, oy;
  pack(ox, x, ldx, M, P, Pp, s, lab_x, true, one_set, one_set, threads);
  if (!one_set) pack(oy, y, ldy, N, P, Pp, s, lab_y, false, true, true, threads);
  Operand<T>& ry = one_set ? ox : oy;
  if (row_terms) set_anchor_terms(ox, w_x, c_x, lse_x);
  if (col_terms && !(one_set && row_terms)) set_anchor_terms(ry, w_y, c_y, lse_y);
  const Problem<T> pb{P, Pp, ox.Np / kBM, ry.Np / kBN, s, one_set, row_terms, col_terms, &ox, &ry};
  const Kernels<T> k = pick_kernels<T>(level);
#pragma omp parallel num_threads(threads)
  {
    Scratch<T> sc;
    sc.S.assign(static_cast<size_t>(kBM) * kBN, T(0));
    sc.dx_blk.assign(static_cast<size_t>(kBM) * Pp, T(0));
#pragma omp for schedule(dynamic, 1)
    for (int64_t ib = 0; ib < pb.nbi; ++ib)
      if (ib * kBM < M) k.backward(pb, ib, sc, dx);
  }
}

void validate(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N, int64_t P,
              int dtype, double temperature, bool one_set, std::uintptr_t lab_x, std::uintptr_t lab_y,
              int num_threads) {
  require_ptr(x, kOp, "x");
  require_ptr(lab_x, kOp, "lab_x");
  checks::sup_con_sizes(kOp, M, N, P);
  checks::row_stride(kOp, "ldx", ldx, P);
  if (one_set) {
    require(N == M, std::string(kOp) + ": one-set form needs N == M, got N = " + std::to_string(N) +
                        ", M = " + std::to_string(M));
  } else {
    require_ptr(y, kOp, "y");
    require_ptr(lab_y, kOp, "lab_y");
    checks::row_stride(kOp, "ldy", ldy, P);
  }
  require(dtype == static_cast<int>(DType::Float32) || dtype == static_cast<int>(DType::Float64),
          std::string(kOp) + ": argument 'dtype' must be float32 or float64 on the CPU, got " + dtype_name(dtype));
  // Label ids are compared as T: float32 holds every id below 2^24 exactly.
  require(M + N < (int64_t(1) << 24), std::string(kOp) + ": M + N must be below 2^24 on the CPU, got " +
                                          std::to_string(M + N));
  checks::temperature(kOp, temperature);
  require_positive(num_threads, kOp, "num_threads");
}

void forward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N, int64_t P,
             int dtype, double temperature, bool one_set, std::uintptr_t lab_x, std::uintptr_t lab_y,
             std::uintptr_t lse, std::uintptr_t pos, std::uintptr_t cnt, int num_threads, int isa) {
  validate(x, ldx, y, ldy, M, N, P, dtype, temperature, one_set, lab_x, lab_y, num_threads);
  checks::sup_con_forward_ptrs(kOp, lse, pos, cnt);
  const int threads = thread_count(num_threads);
  const int level = cpu_isa::resolve(kOp, isa);
  const auto lx = reinterpret_cast<const int32_t*>(lab_x);
  const auto ly = reinterpret_cast<const int32_t*>(lab_y);
  py::gil_scoped_release nogil;
  if (dtype == static_cast<int>(DType::Float32)) {
    forward_impl<float>(reinterpret_cast<const float*>(x), ldx, reinterpret_cast<const float*>(y), ldy, M, N, P,
                        temperature, one_set, lx, ly, reinterpret_cast<float*>(lse), reinterpret_cast<float*>(pos),
                        reinterpret_cast<float*>(cnt), threads, level);
  } else {
    forward_impl<double>(reinterpret_cast<const double*>(x), ldx, reinterpret_cast<const double*>(y), ldy, M, N, P,
                         temperature, one_set, lx, ly, reinterpret_cast<double*>(lse),
                         reinterpret_cast<double*>(pos), reinterpret_cast<double*>(cnt), threads, level);
  }
}

void backward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N, int64_t P,
              int dtype, double temperature, bool one_set, std::uintptr_t lab_x, std::uintptr_t lab_y,
              bool row_terms, bool col_terms, std::uintptr_t w_x, std::uintptr_t c_x, std::uintptr_t lse_x,
              std::uintptr_t w_y, std::uintptr_t c_y, std::uintptr_t lse_y, std::uintptr_t dx, int num_threads,
              int isa) {
  validate(x, ldx, y, ldy, M, N, P, dtype, temperature, one_set, lab_x, lab_y, num_threads);
  checks::sup_con_backward_ptrs(kOp, row_terms, col_terms, w_x, c_x, lse_x, w_y, c_y, lse_y, dx);
  require(!(one_set && row_terms && col_terms) || (w_x == w_y && c_x == c_y && lse_x == lse_y),
          std::string(kOp) + ": one-set form with both terms needs the same anchor arrays for x and y");
  const int threads = thread_count(num_threads);
  const int level = cpu_isa::resolve(kOp, isa);
  const auto lx = reinterpret_cast<const int32_t*>(lab_x);
  const auto ly = reinterpret_cast<const int32_t*>(lab_y);
  py::gil_scoped_release nogil;
  if (dtype == static_cast<int>(DType::Float32)) {
    using T = float;
    backward_impl<T>(reinterpret_cast<const T*>(x), ldx, reinterpret_cast<const T*>(y), ldy, M, N, P, temperature,
                     one_set, lx, ly, row_terms, col_terms, reinterpret_cast<const T*>(w_x),
                     reinterpret_cast<const T*>(c_x), reinterpret_cast<const T*>(lse_x),
                     reinterpret_cast<const T*>(w_y), reinterpret_cast<const T*>(c_y),
                     reinterpret_cast<const T*>(lse_y), reinterpret_cast<T*>(dx), threads, level);
  } else {
    using T = double;
    backward_impl<T>(reinterpret_cast<const T*>(x), ldx, reinterpret_cast<const T*>(y), ldy, M, N, P, temperature,
                     one_set, lx, ly, row_terms, col_terms, reinterpret_cast<const T*>(w_x),
                     reinterpret_cast<const T*>(c_x), reinterpret_cast<const T*>(lse_x),
                     reinterpret_cast<const T*>(w_y), reinterpret_cast<const T*>(c_y),
                     reinterpret_cast<const T*>(lse_y), reinterpret_cast<T*>(dx), threads, level);
  }
}

}  // namespace sup_con_cpu

void register_sup_con_cpu(py::module_& m) {
  m.def("sup_con_forward", &sup_con_cpu::forward, py::arg("x"), py::arg("ldx"), py::arg("y"), py::arg("ldy"),
        py::arg("M"), py::arg("N"), py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("one_set"),
        py::arg("lab_x"), py::arg("lab_y"), py::arg("lse"), py::arg("pos"), py::arg("cnt"), py::arg("num_threads"),
        py::arg("isa") = -1,
        "Fused sup_con forward on normalised anchors x [M, P] and candidates y [N, P] (row strides ldx/ldy, unit "
        "column stride; one_set: y is x and the pair i = k is left out) with int32 label ids lab_x [M], lab_y [N] "
        "(−1: never an anchor nor a positive). Writes per anchor the log-sum-exp of its logits, the sum of its "
        "positive logits and their count ([M] each, in the input dtype). Never stores the M×N logits. "
        "isa: -1 auto, 0 generic, 1 avx2, 2 avx512.");
  m.def("sup_con_backward", &sup_con_cpu::backward, py::arg("x"), py::arg("ldx"), py::arg("y"), py::arg("ldy"),
        py::arg("M"), py::arg("N"), py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("one_set"),
        py::arg("lab_x"), py::arg("lab_y"), py::arg("row_terms"), py::arg("col_terms"), py::arg("w_x"),
        py::arg("c_x"), py::arg("lse_x"), py::arg("w_y"), py::arg("c_y"), py::arg("lse_y"), py::arg("dx"),
        py::arg("num_threads"), py::arg("isa") = -1,
        "Fused sup_con backward for the rows of x: recomputes the logits tile by tile and writes into contiguous "
        "dx [M, P] the gradient of the anchor terms of x's rows (row_terms: per-anchor w_x, c_x, lse_x [M]) "
        "and/or of y's rows (col_terms: w_y, c_y, lse_y [N]); dlogit = w·exp(L − lse) − c·[positive].");
}

}  // namespace mclner
