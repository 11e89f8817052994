// CPU kernels for the biaffine pair pass (forward and backward; see biaffine_tile.h for the math).
//
// The dense projections P = hs·U + W[:,Db:] and r = hs·W[:,:Db]ᵀ + b are BLAS GEMMs done by torch in
// mclner/ops/_native_biaffine.py; here is the O(B·N²·C·Db) part, written straight into the
// [B,N,N,C] layout (no permute copies) and, in the backward, reduced straight into dP, dr and dhe.
// Each pass is a per-batch GEMM: panels of the left operand are packed (absorbing strides and the
// (i,c) flattening), the right operand is read in place when its rows are unit-stride and a whole
// number of tiles wide, otherwise from a zero-padded copy.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "mclner/biaffine_gemm.h"
#include "mclner/biaffine_tile.h"
#include "mclner/common.h"
#include "mclner/cpu_isa.h"
#include "mclner/op_checks.h"

namespace py = pybind11;

namespace mclner {
namespace {

constexpr const char* kOp = "biaffine";

using biaffine::MicroKernel;
using biaffine::Strides3;
using biaffine::Strides4;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Dims {
  int64_t B, N, Db, C;
};

// ------------------------------------------------------------------------------------ validation

Strides3 strides3(const std::vector<int64_t>& s, const char* arg) {
  require(s.size() == 3, std::string(kOp) + ": argument '" + arg + "' must hold 3 strides, got " +
                             std::to_string(s.size()));
  for (int64_t v : s) require(v >= 0, std::string(kOp) + ": argument '" + arg + "' has a negative stride");
  return {s[0], s[1], s[2]};
}

Strides4 strides4(const std::vector<int64_t>& s, const char* arg) {
  require(s.size() == 4, std::string(kOp) + ": argument '" + arg + "' must hold 4 strides, got " +
                             std::to_string(s.size()));
  for (int64_t v : s) require(v >= 0, std::string(kOp) + ": argument '" + arg + "' has a negative stride");
  return {s[0], s[1], s[2], s[3]};
}

Dims check_dims(int64_t B, int64_t N, int64_t Db, int64_t C, int dtype, int num_threads) {
  checks::biaffine_sizes(kOp, B, N, Db, C);
  require_positive(num_threads, kOp, "num_threads");
  require(dtype == int(DType::Float32) || dtype == int(DType::Float64),
          std::string(kOp) + ": argument 'dtype' must be float32 (0) or float64 (1) on the CPU, got " +
              std::to_string(dtype) + " (" + dtype_name(dtype) + ")");
  // Every index below is int64; refuse sizes whose S would not even be addressable.
  require(B * N <= (int64_t(1) << 40) / std::max<int64_t>(1, N * C),
          std::string(kOp) + ": sizes B, N, C are too large");
  return {B, N, Db, C};
}

// ------------------------------------------------------------------------------------ threading

template <class F>
void parallel_tasks(int num_threads, int64_t n_tasks, F&& body) {
#ifdef _OPENMP
  const int nt = int(std::min<int64_t>(num_threads, std::max<int64_t>(1, n_tasks)));
#pragma omp parallel num_threads(nt)
  {
    auto local = body.make_local();
#pragma omp for schedule(dynamic, 1)  // coarse tasks; balances a descheduled thread on a busy machine
    for (int64_t t = 0; t < n_tasks; ++t) body(local, t);
  }
#else
  (void)num_threads;
  auto local = body.make_local();
  for (int64_t t = 0; t < n_tasks; ++t) body(local, t);
#endif
}

// Zero-padded copy of a [B, R, D] operand with unit-stride rows of width Dpad (row r of batch b at
// ((b*R + r) * Dpad)); `at(b, r, d)` gives the source offset.
template <class T, class At>
std::vector<T> pad_rows(const T* src, int64_t B, int64_t R, int64_t D, int64_t Dpad, int num_threads, At at) {
  std::vector<T> out(size_t(B * R * Dpad), T(0));
  struct Body {
    const T* src;
    T* out;
    int64_t R, D, Dpad;
    At at;
    int make_local() const { return 0; }
    void operator()(int, int64_t t) const {
      const int64_t b = t / R, r = t % R;
      T* dst = out + t * Dpad;
      for (int64_t d = 0; d < D; ++d) dst[d] = src[at(b, r, d)];
    }
  } body{src, out.data(), R, D, Dpad, at};
  parallel_tasks(num_threads, B * R, body);
  return out;
}

// ------------------------------------------------------------------------------------ forward

// S[b,i,j,c] = Σ_e P[b,i,c,e] he[b,j,e] + r[b,i,c]: rows r=(i,c), columns j, reduction e.
template <class T>
void forward_impl(const MicroKernel<T>& mk, const T* P, Strides4 sP, const T* rt, Strides3 sR, const T* he,
                  Strides3 sHe, T* S, Dims d, int num_threads) {
  const int64_t MR = mk.mr, NR = mk.nr, M = d.N * d.C;
  const int64_t n_jb = ceil_div(d.N, NR), Npad = n_jb * NR;
  // heᵀ in column panels [B][N/NR][Db][NR] (zero-padded): the micro-kernel's right operand needs j
  // contiguous, and one contiguous panel per tile column streams well from L2.
  std::vector<T> heT(size_t(d.B * d.Db * Npad));
  {
    struct Pack {
      const T* he;
      T* out;
      Strides3 sHe;
      int64_t N, Db, NR, n_jb;
      int make_local() const { return 0; }
      void operator()(int, int64_t t) const {
        const int64_t b = t / n_jb, j0 = (t % n_jb) * NR;
        T* panel = out + t * Db * NR;
        for (int64_t n = 0; n < NR; ++n) {
          const int64_t j = j0 + n;
          if (j < N) {
            const T* row = he + biaffine::fwd_b(sHe, b, 0, j);
            for (int64_t e = 0; e < Db; ++e) panel[e * NR + n] = row[e * sHe.s2];
          } else {
            for (int64_t e = 0; e < Db; ++e) panel[e * NR + n] = T(0);
          }
        }
      }
    } pack{he, heT.data(), sHe, d.N, d.Db, NR, n_jb};
    parallel_tasks(num_threads, d.B * n_jb, pack);
  }
  const int64_t n_rb = ceil_div(M, MR);
  struct Local {
    std::vector<T> apk, tile, rv;
  };
  struct Body {
    const MicroKernel<T>& mk;
    const T *P, *rt, *heT;
    Strides4 sP;
    Strides3 sR;
    T* S;
    Dims d;
    int64_t MR, NR, M, Npad, n_rb;
    Local make_local() const {
      return {std::vector<T>(size_t(d.Db * MR)), std::vector<T>(size_t(MR * NR)), std::vector<T>(size_t(MR))};
    }
    void operator()(Local& L, int64_t t) const {
      const int64_t b = t / n_rb, r0 = (t % n_rb) * MR, mr = std::min(MR, M - r0);
      T* apk = L.apk.data();
      for (int64_t m = 0; m < MR; ++m) {
        if (m < mr) {
          const int64_t r = r0 + m;
          const T* row = P + biaffine::fwd_a(sP, d.C, b, r, 0);  // (i, c) split once per row, not per e
          for (int64_t e = 0; e < d.Db; ++e) apk[e * MR + m] = row[e * sP.s3];
          L.rv[m] = rt[biaffine::off3(sR, b, r / d.C, r % d.C)];
        } else {
          for (int64_t e = 0; e < d.Db; ++e) apk[e * MR + m] = T(0);
        }
      }
      const T* heTb = heT + b * d.Db * Npad;
      for (int64_t j0 = 0; j0 < d.N; j0 += NR) {
        mk.fn(d.Db, apk, heTb + j0 * d.Db, NR, L.tile.data(), NR);
        const int64_t nc = std::min(NR, d.N - j0);
        for (int64_t m = 0; m < mr; ++m) {
          const int64_t r = r0 + m, i = r / d.C, c = r % d.C;
          T* out = S + biaffine::s_offset(d.N, d.C, b, i, j0, c);
          const T* tl = L.tile.data() + m * NR;
          for (int64_t n = 0; n < nc; ++n) out[n * d.C] = biaffine::fwd_epilogue(tl[n], L.rv[m]);
        }
      }
    }
  } body{mk, P, rt, heT.data(), sP, sR, S, d, MR, NR, M, Npad, n_rb};
  parallel_tasks(num_threads, d.B * n_rb, body);
}

// ------------------------------------------------------------------------------------ backward

// dP[b,i,c,e] = Σ_j dS[b,i,j,c] he[b,j,e] and dr[b,i,c] = Σ_j dS[b,i,j,c]:
// rows r=(i,c), columns e, reduction j. Outputs contiguous [B,N,C,Db] and [B,N,C].
template <class T>
void backward_dp_impl(const MicroKernel<T>& mk, const T* dS, Strides4 sdS, const T* he, Strides3 sHe, T* dP, T* dr,
                      Dims d, int num_threads) {
  const int64_t MR = mk.mr, NR = mk.nr, M = d.N * d.C;
  const bool direct = sHe.s2 == 1 && d.Db % NR == 0;
  const int64_t Dpad = direct ? d.Db : ceil_div(d.Db, NR) * NR;
  std::vector<T> hepad;
  if (!direct)
    hepad = pad_rows<T>(he, d.B, d.N, d.Db, Dpad, num_threads,
                        [sHe](int64_t b, int64_t j, int64_t e) { return biaffine::dp_b(sHe, b, j, e); });
  const int64_t n_rb = ceil_div(M, MR);
  struct Local {
    std::vector<T> apk, tile;
    std::vector<int64_t> row;
  };
  struct Body {
    const MicroKernel<T>& mk;
    const T *dS, *he, *hepad;
    Strides4 sdS;
    Strides3 sHe;
    T *dP, *dr;
    Dims d;
    bool direct;
    int64_t MR, NR, M, Dpad, n_rb;
    Local make_local() const {
      return {std::vector<T>(size_t(d.N * MR)), std::vector<T>(size_t(MR * NR)), std::vector<int64_t>(size_t(MR))};
    }
    void operator()(Local& L, int64_t t) const {
      const int64_t b = t / n_rb, r0 = (t % n_rb) * MR, mr = std::min(MR, M - r0);
      T* apk = L.apk.data();
      int64_t* row = L.row.data();  // dS offset of (b, i, 0, c) per row: no division in the j loop
      for (int64_t m = 0; m < mr; ++m) row[m] = biaffine::dp_a(sdS, d.C, b, r0 + m, 0);
      for (int64_t j = 0; j < d.N; ++j) {
        const T* col = dS + j * sdS.s2;
        for (int64_t m = 0; m < mr; ++m) apk[j * MR + m] = col[row[m]];
        for (int64_t m = mr; m < MR; ++m) apk[j * MR + m] = T(0);
      }
      if (dr) {
        for (int64_t m = 0; m < mr; ++m) {
          T s = T(0);
          for (int64_t j = 0; j < d.N; ++j) s += apk[j * MR + m];
          dr[b * M + r0 + m] = s;
        }
      }
      if (!dP) return;
      const T* Bb = direct ? he + b * sHe.s0 : hepad + b * d.N * Dpad;
      const int64_t ldb = direct ? sHe.s1 : Dpad;
      for (int64_t e0 = 0; e0 < d.Db; e0 += NR) {
        const int64_t nc = std::min(NR, d.Db - e0);
        if (mr == MR && nc == NR) {  // whole tile: straight into dP
          mk.fn(d.N, apk, Bb + e0, ldb, dP + (b * M + r0) * d.Db + e0, d.Db);
          continue;
        }
        mk.fn(d.N, apk, Bb + e0, ldb, L.tile.data(), NR);
        for (int64_t m = 0; m < mr; ++m) {
          T* out = dP + (b * M + r0 + m) * d.Db + e0;
          const T* tl = L.tile.data() + m * NR;
          for (int64_t n = 0; n < nc; ++n) out[n] = tl[n];
        }
      }
    }
  } body{mk, dS, he, hepad.data(), sdS, sHe, dP, dr, d, direct, MR, NR, M, Dpad, n_rb};
  parallel_tasks(num_threads, d.B * n_rb, body);
}

// dhe[b,j,e] = Σ_{i,c} dS[b,i,j,c] P[b,i,c,e]: rows j, columns e, reduction k=(i,c).
template <class T>
void backward_dhe_impl(const MicroKernel<T>& mk, const T* dS, Strides4 sdS, const T* P, Strides4 sP, T* dhe, Dims d,
                       int num_threads) {
  const int64_t MR = mk.mr, NR = mk.nr, K = d.N * d.C;
  // P's (i,c) rows must be equally spaced to be read in place (true for a contiguous [B,N,C,Db]).
  const bool direct = sP.s3 == 1 && sP.s1 == d.C * sP.s2 && d.Db % NR == 0;
  const int64_t Dpad = direct ? d.Db : ceil_div(d.Db, NR) * NR;
  std::vector<T> ppad;
  if (!direct)
    ppad = pad_rows<T>(P, d.B, K, d.Db, Dpad, num_threads,
                       [sP, C = d.C](int64_t b, int64_t k, int64_t e) { return biaffine::dhe_b(sP, C, b, k, e); });
  const int64_t n_rb = ceil_div(d.N, MR);
  struct Local {
    std::vector<T> apk, tile;
  };
  struct Body {
    const MicroKernel<T>& mk;
    const T *dS, *P, *ppad;
    Strides4 sdS, sP;
    T* dhe;
    Dims d;
    bool direct;
    int64_t MR, NR, K, Dpad, n_rb;
    Local make_local() const { return {std::vector<T>(size_t(K * MR)), std::vector<T>(size_t(MR * NR))}; }
    void operator()(Local& L, int64_t t) const {
      const int64_t b = t / n_rb, j0 = (t % n_rb) * MR, mr = std::min(MR, d.N - j0);
      T* apk = L.apk.data();
      // Loop order i, j, c follows dS's contiguous [.., j, c] rows.
      for (int64_t i = 0; i < d.N; ++i) {
        const T* blk = dS + biaffine::dhe_a(sdS, d.C, b, j0, i * d.C);  // dS[b, i, j0, 0]
        T* dst = apk + i * d.C * MR;
        for (int64_t m = 0; m < MR; ++m)
          for (int64_t c = 0; c < d.C; ++c) dst[c * MR + m] = m < mr ? blk[m * sdS.s2 + c * sdS.s3] : T(0);
      }
      const T* Bb = direct ? P + b * sP.s0 : ppad + b * K * Dpad;
      const int64_t ldb = direct ? sP.s2 : Dpad;
      for (int64_t e0 = 0; e0 < d.Db; e0 += NR) {
        const int64_t nc = std::min(NR, d.Db - e0);
        if (mr == MR && nc == NR) {  // whole tile: straight into dhe
          mk.fn(K, apk, Bb + e0, ldb, dhe + (b * d.N + j0) * d.Db + e0, d.Db);
          continue;
        }
        mk.fn(K, apk, Bb + e0, ldb, L.tile.data(), NR);
        for (int64_t m = 0; m < mr; ++m) {
          T* out = dhe + (b * d.N + j0 + m) * d.Db + e0;
          const T* tl = L.tile.data() + m * NR;
          for (int64_t n = 0; n < nc; ++n) out[n] = tl[n];
        }
      }
    }
  } body{mk, dS, P, ppad.data(), sdS, sP, dhe, d, direct, MR, NR, K, Dpad, n_rb};
  parallel_tasks(num_threads, d.B * n_rb, body);
}

// ------------------------------------------------------------------------------------ entry points

template <class T>
const T* cptr(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <class T>
T* mptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void forward(std::uintptr_t P, const std::vector<int64_t>& P_strides, std::uintptr_t r,
             const std::vector<int64_t>& r_strides, std::uintptr_t he, const std::vector<int64_t>& he_strides,
             std::uintptr_t S, int64_t B, int64_t N, int64_t Db, int64_t C, int dtype, int num_threads, int isa) {
  const Dims d = check_dims(B, N, Db, C, dtype, num_threads);
  const int level = cpu_isa::resolve(kOp, isa);
  checks::biaffine_forward_ptrs(kOp, P, r, he, S);
  const Strides4 sP = strides4(P_strides, "P_strides");
  const Strides3 sR = strides3(r_strides, "r_strides");
  const Strides3 sHe = strides3(he_strides, "he_strides");
  py::gil_scoped_release nogil;
  if (dtype == int(DType::Float32))
    forward_impl<float>(biaffine::select_micro<float>(level), cptr<float>(P), sP, cptr<float>(r), sR,
                        cptr<float>(he), sHe, mptr<float>(S), d, num_threads);
  else
    forward_impl<double>(biaffine::select_micro<double>(level), cptr<double>(P), sP, cptr<double>(r), sR,
                         cptr<double>(he), sHe, mptr<double>(S), d, num_threads);
}

void backward(std::uintptr_t dS, const std::vector<int64_t>& dS_strides, std::uintptr_t P,
              const std::vector<int64_t>& P_strides, std::uintptr_t he, const std::vector<int64_t>& he_strides,
              std::uintptr_t dP, std::uintptr_t dr, std::uintptr_t dhe, int64_t B, int64_t N, int64_t Db, int64_t C,
              int dtype, int num_threads, bool need_dP, bool need_dhe, int isa) {
  const Dims d = check_dims(B, N, Db, C, dtype, num_threads);
  const int level = cpu_isa::resolve(kOp, isa);
  checks::biaffine_backward_ptrs(kOp, dS, P, he, dP, dr, dhe, need_dP, need_dhe);
  const Strides4 sdS = strides4(dS_strides, "dS_strides");
  const Strides4 sP = strides4(P_strides, "P_strides");
  const Strides3 sHe = strides3(he_strides, "he_strides");
  py::gil_scoped_release nogil;
  if (dtype == int(DType::Float32)) {
    const auto mk = biaffine::select_micro<float>(level);
    if (need_dP)
      backward_dp_impl<float>(mk, cptr<float>(dS), sdS, cptr<float>(he), sHe, mptr<float>(dP), mptr<float>(dr), d,
                              num_threads);
    if (need_dhe)
      backward_dhe_impl<float>(mk, cptr<float>(dS), sdS, cptr<float>(P), sP, mptr<float>(dhe), d, num_threads);
  } else {
    const auto mk = biaffine::select_micro<double>(level);
    if (need_dP)
      backward_dp_impl<double>(mk, cptr<double>(dS), sdS, cptr<double>(he), sHe, mptr<double>(dP),
                               mptr<double>(dr), d, num_threads);
    if (need_dhe)
      backward_dhe_impl<double>(mk, cptr<double>(dS), sdS, cptr<double>(P), sP, mptr<double>(dhe), d,
                                num_threads);
  }
}

}  // namespace

void register_biaffine_cpu(py::module_& m) {
  using namespace pybind11::literals;
  m.def("biaffine_forward", &forward,
        "Biaffine pair pass S[b,i,j,c] = P[b,i,c,:]·he[b,j,:] + r[b,i,c] into a contiguous [B,N,N,C] S",
        "P"_a, "P_strides"_a, "r"_a, "r_strides"_a, "he"_a, "he_strides"_a, "S"_a, "B"_a, "N"_a, "Db"_a, "C"_a,
        "dtype"_a, "num_threads"_a, "isa"_a = -1);
  m.def("biaffine_backward", &backward,
        "Biaffine pair-pass backward: dP[b,i,c,:] = Σ_j dS[b,i,j,c] he_j, dr = Σ_j dS (when need_dP) and "
        "dhe[b,j,:] = Σ_{i,c} dS[b,i,j,c] P[b,i,c,:] (when need_dhe); outputs contiguous",
        "dS"_a, "dS_strides"_a, "P"_a, "P_strides"_a, "he"_a, "he_strides"_a, "dP"_a, "dr"_a, "dhe"_a, "B"_a,
        "N"_a, "Db"_a, "C"_a, "dtype"_a, "num_threads"_a, "need_dP"_a, "need_dhe"_a, "isa"_a = -1);
}

}  // namespace mclner
