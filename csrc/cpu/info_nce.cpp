// Fused InfoNCE on the CPU (Inf-CL / Cut-Cross-Entropy style): never stores the M×M logits.
//
// Inputs are the L2-normalised views a, b [M, P] (Python normalises with torch, whose autograd
// chains the normalisation's backward). Work is split in tiles of BM rows × BN columns:
//   forward : S = (s·a_blk) b_blkᵀ (register-blocked micro-kernel), per row an online log-sum-exp
//             over column tiles (the row block is owned by one thread), for symmetric column
//             statistics per task merged with the same online-LSE merge. Saves lse [M].
//   backward: recomputes S per tile, dS = dlogit(...) from the saved lse, da_blk += dS·b_blk (rows
//             owned by the thread), db += dSᵀ·(s·a_blk) into a per-thread accumulator [M, P].
//             Extra memory O(threads·M·P), never O(M²).
// Deterministic: row blocks are grouped into at most kMaxTasks consecutive tasks (a function of M
// only); the cross-block sums (column statistics, db) of a task go to its own buffer, merged into the
// result in task order (ordered_chunks.h), and the loss is summed serially, so the results are the
// same bits for any schedule and any thread count.
// The SIMD code (csrc/include/mclner/info_nce_gemm.h) is written with GCC vector extensions and
// compiled once per instruction set under `#pragma GCC target` (AVX-512, AVX2, generic), chosen at
// run time (cpu_isa.h; never -march=native).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdlib>
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
#include "mclner/cpu_isa.h"
#include "mclner/info_nce_tile.h"
#include "mclner/op_checks.h"
#include "mclner/ordered_chunks.h"

namespace py = pybind11;

namespace mclner {
namespace info_nce_cpu {

using info_nce::OnlineLse;

constexpr const char* kOp = "info_nce";
constexpr int kBM = 64;   // rows of a per tile (owned by one thread)
constexpr int kBN = 256;  // columns (rows of b) per tile
constexpr int kR = 8;     // rows per micro-kernel call
constexpr int64_t kMaxTasks = 64;  // consecutive row-block groups reduced in a fixed order

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
  T* col_max = nullptr;       // [Mp] column statistics of the current task's rows (forward, symmetric)
  T* col_sum = nullptr;       // [Mp]
  T* db = nullptr;            // [Mp, Pp] db of the current task (backward)
  std::vector<T> da_blk;      // [kBM, Pp] da of the current row tile (backward)
};

}  // namespace info_nce_cpu
}  // namespace mclner

// One copy of the tile pipeline per instruction set, chosen once per call at run time.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MCLNER_X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define MCLNER_INFO_NCE_ISA avx512
#include "mclner/info_nce_gemm.h"
#undef MCLNER_INFO_NCE_ISA
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define MCLNER_INFO_NCE_ISA avx2
#include "mclner/info_nce_gemm.h"
#undef MCLNER_INFO_NCE_ISA
#pragma GCC pop_options
#endif
#define MCLNER_INFO_NCE_ISA generic
#include "mclner/info_nce_gemm.h"
#undef MCLNER_INFO_NCE_ISA

namespace mclner {
namespace info_nce_cpu {

template <class T>
struct Kernels {
  void (*forward)(const Packed<T>&, int64_t, Scratch<T>&, T*);
  void (*backward)(const Packed<T>&, int64_t, Scratch<T>&, const T*, const T*, const T*, const T*, T*);
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

// Row blocks holding real rows, cut into consecutive tasks: block range [task·per, min(blocks, ...)).
struct Tasks {
  int64_t blocks, per, count;
  explicit Tasks(int64_t M) : blocks((M + kBM - 1) / kBM) {
    per = (blocks + kMaxTasks - 1) / kMaxTasks;
    count = (blocks + per - 1) / per;
  }
  int64_t begin(int64_t t) const { return t * per; }
  int64_t end(int64_t t) const { return std::min(blocks, (t + 1) * per); }
};

template <class T>
void pack(Packed<T>& pk, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, double temperature,
          bool symmetric, int threads) {
  constexpr int W = 64 / sizeof(T);  // lanes of one 64-byte vector (simd_gemm.h)
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
                  bool symmetric, int reduction, T* out, T* row_lse, T* col_lse, int threads, int isa) {
  Packed<T> pk;
  pack(pk, a, lda, b, ldb, M, P, temperature, symmetric, threads);
  const Kernels<T> k = pick_kernels<T>(isa);
  std::vector<Scratch<T>> scratch(threads);
  const Tasks tasks(M);
  std::vector<T> gmax, gsum;  // column statistics merged over tasks, in task order
  if (symmetric) {
    gmax.assign(M, info_nce::neg_inf<T>());
    gsum.assign(M, T(0));
  }
  ordered_chunks<T>(
      tasks.count, threads, symmetric ? 2 * pk.Mp : 0,
      [&](int t, int64_t task, T* stats) {
        Scratch<T>& sc = scratch[t];
        if (sc.S.empty()) sc.S.assign(static_cast<size_t>(kBM) * kBN, T(0));
        if (symmetric) {
          sc.col_max = stats;
          sc.col_sum = stats + pk.Mp;
          std::fill(sc.col_max, sc.col_max + pk.Mp, info_nce::neg_inf<T>());
          std::fill(sc.col_sum, sc.col_sum + pk.Mp, T(0));
        }
        for (int64_t ib = tasks.begin(task); ib < tasks.end(task); ++ib) k.forward(pk, ib, sc, row_lse);
      },
      [&](int64_t, const T* stats) {
        if (!symmetric) return;
        for (int64_t j = 0; j < M; ++j) {
          OnlineLse<T> st{gmax[j], gsum[j]};
          info_nce::lse_merge(st, stats[j], stats[pk.Mp + j]);
          gmax[j] = st.max;
          gsum[j] = st.sum;
        }
      });
  if (symmetric) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t j = 0; j < M; ++j) col_lse[j] = info_nce::lse_value(OnlineLse<T>{gmax[j], gsum[j]});
  }
  // Per-row losses in parallel, their sum serially in row order (an OpenMP reduction would add the
  // per-thread partials in a thread-count dependent grouping).
  std::vector<T> loss(M);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m)
    loss[m] = info_nce::row_loss(row_lse[m], symmetric ? col_lse[m] : T(0), positive(pk, m), symmetric);
  double total = 0.0;
  for (int64_t m = 0; m < M; ++m) {
    if (reduction == info_nce::kNone) out[m] = loss[m];
    total += static_cast<double>(loss[m]);
  }
  if (reduction == info_nce::kMean) out[0] = static_cast<T>(total / static_cast<double>(M));
  if (reduction == info_nce::kSum) out[0] = static_cast<T>(total);
}

template <class T>
void backward_impl(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, double temperature,
                   bool symmetric, int reduction, const T* grad, const T* row_lse, const T* col_lse, T* da, T* db,
                   int threads, int isa) {
  Packed<T> pk;
  pack(pk, a, lda, b, ldb, M, P, temperature, symmetric, threads);
  const Kernels<T> k = pick_kernels<T>(isa);
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
  std::vector<Scratch<T>> scratch(threads);
  const Tasks tasks(M);
  std::fill(db, db + M * P, T(0));
  ordered_chunks<T>(
      tasks.count, threads, pk.Mp * pk.Pp,
      [&](int t, int64_t task, T* part) {
        Scratch<T>& sc = scratch[t];
        if (sc.S.empty()) {
          sc.S.assign(static_cast<size_t>(kBM) * kBN, T(0));
          sc.da_blk.assign(static_cast<size_t>(kBM) * pk.Pp, T(0));
        }
        sc.db = part;
        std::fill(part, part + pk.Mp * pk.Pp, T(0));
        for (int64_t ib = tasks.begin(task); ib < tasks.end(task); ++ib)
          k.backward(pk, ib, sc, wr.data(), wc.data(), rl.data(), cl.data(), da);
      },
      [&](int64_t, const T* part) {
        for (int64_t m = 0; m < M; ++m)
          for (int64_t p = 0; p < P; ++p) db[m * P + p] += part[m * pk.Pp + p];
      });
}

void validate(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
              double temperature, bool symmetric, int reduction, std::uintptr_t col_lse, int num_threads) {
  checks::info_nce_views(kOp, a, lda, b, ldb, M, P);
  require(dtype == static_cast<int>(DType::Float32) || dtype == static_cast<int>(DType::Float64),
          std::string(kOp) + ": argument 'dtype' must be float32 or float64 on the CPU, got " + dtype_name(dtype));
  checks::info_nce_scalars(kOp, temperature, reduction, info_nce::kMean, info_nce::kNone);
  if (symmetric) require_ptr(col_lse, kOp, "col_lse");
  require_positive(num_threads, kOp, "num_threads");
}

void forward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
             double temperature, bool symmetric, int reduction, std::uintptr_t out, std::uintptr_t row_lse,
             std::uintptr_t col_lse, int num_threads, int isa) {
  validate(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, col_lse, num_threads);
  require_ptr(out, kOp, "out");
  require_ptr(row_lse, kOp, "row_lse");
  const int threads = thread_count(num_threads);
  const int level = cpu_isa::resolve(kOp, isa);
  py::gil_scoped_release nogil;
  if (dtype == static_cast<int>(DType::Float32)) {
    forward_impl<float>(reinterpret_cast<const float*>(a), lda, reinterpret_cast<const float*>(b), ldb, M, P,
                        temperature, symmetric, reduction, reinterpret_cast<float*>(out),
                        reinterpret_cast<float*>(row_lse), reinterpret_cast<float*>(col_lse), threads, level);
  } else {
    forward_impl<double>(reinterpret_cast<const double*>(a), lda, reinterpret_cast<const double*>(b), ldb, M, P,
                         temperature, symmetric, reduction, reinterpret_cast<double*>(out),
                         reinterpret_cast<double*>(row_lse), reinterpret_cast<double*>(col_lse), threads, level);
  }
}

void backward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
              double temperature, bool symmetric, int reduction, std::uintptr_t grad, std::uintptr_t row_lse,
              std::uintptr_t col_lse, std::uintptr_t da, std::uintptr_t db, int num_threads, int isa) {
  validate(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, col_lse, num_threads);
  checks::info_nce_backward_ptrs(kOp, grad, da, db);
  require_ptr(row_lse, kOp, "row_lse");
  const int threads = thread_count(num_threads);
  const int level = cpu_isa::resolve(kOp, isa);
  py::gil_scoped_release nogil;
  if (dtype == static_cast<int>(DType::Float32)) {
    backward_impl<float>(reinterpret_cast<const float*>(a), lda, reinterpret_cast<const float*>(b), ldb, M, P,
                         temperature, symmetric, reduction, reinterpret_cast<const float*>(grad),
                         reinterpret_cast<const float*>(row_lse), reinterpret_cast<const float*>(col_lse),
                         reinterpret_cast<float*>(da), reinterpret_cast<float*>(db), threads, level);
  } else {
    backward_impl<double>(reinterpret_cast<const double*>(a), lda, reinterpret_cast<const double*>(b), ldb, M, P,
                          temperature, symmetric, reduction, reinterpret_cast<const double*>(grad),
                          reinterpret_cast<const double*>(row_lse), reinterpret_cast<const double*>(col_lse),
                          reinterpret_cast<double*>(da), reinterpret_cast<double*>(db), threads, level);
  }
}

}  // namespace info_nce_cpu

void register_info_nce_cpu(py::module_& m) {
  m.def("info_nce_forward", &info_nce_cpu::forward, py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"), py::arg("M"),
        py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("symmetric"), py::arg("reduction"),
        py::arg("out"), py::arg("row_lse"), py::arg("col_lse"), py::arg("num_threads"), py::arg("isa") = -1,
        "Fused InfoNCE forward on normalised a, b [M, P] (row stride lda/ldb, unit column stride). Writes the "
        "loss to out ([M] for reduction 2 = none, else [1]) and the per-row (and, when symmetric, per-column) "
        "log-sum-exp [M] for the backward. Never stores the M×M logits.");
  m.def("info_nce_backward", &info_nce_cpu::backward, py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"), py::arg("M"),
        py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("symmetric"), py::arg("reduction"),
        py::arg("grad"), py::arg("row_lse"), py::arg("col_lse"), py::arg("da"), py::arg("db"),
        py::arg("num_threads"), py::arg("isa") = -1,
        "Fused InfoNCE backward: recomputes the logits tile by tile from the saved log-sum-exps and writes "
        "the gradients w.r.t. the normalised a, b into contiguous da, db [M, P].");
}

}  // namespace mclner
