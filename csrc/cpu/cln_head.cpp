// CPU kernels for the fused cln_head core (docs/METHOD.md §3, §6).
//
// The Python side (mclner/ops/_native_cln_head.py) computes the O(B·N·D) prologue with torch:
// γ = h W_αᵀ + b_α, u = (h W_βᵀ + b_β) W1ᵀ + b1, n = LayerNorm(h) without affine. These kernels do
// the O(B·N²·D·H) part pair-block by pair-block without materialising anything of size N²·D or N²·H:
// for one (b, i) the N pairs (i, ·) form the GEMM  pre = n_b (W1 ⊙ γ_i)ᵀ + u_i  (N x H), followed by
// GELU and the C-wide output layer. The backward recomputes pre per (b, i) and runs two more GEMMs
// (E = dpre W1 and dW1 += (dpreᵀ n_b) ⊙ γ_i). Work items (b, i) are spread over OpenMP threads; each
// thread owns its scratch (O(N·(D+H) + H·D)); the backward's sums over items (dn, dW1, dW2) go through
// per-chunk buffers reduced in a fixed order (see backward_impl), so its results do not depend on the
// thread count or the schedule.
//
// The per-pair workers are written once as templates and stamped out per ISA (AVX-512, AVX2+FMA,
// generic) with `target` + `flatten`, so the vector-extension micro-kernel and the GELU loops are
// compiled for the ISA chosen at run time (cpu_isa.h; no -march=native needed).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "mclner/cln_gemm.h"
#include "mclner/cln_head_tile.h"
#include "mclner/common.h"
#include "mclner/op_checks.h"
#include "mclner/cpu_isa.h"
#include "mclner/ordered_chunks.h"

namespace py = pybind11;

namespace mclner {
namespace {

constexpr const char* OP = "cln_head";

template <class T>
struct Problem {
  const T* gamma;  // [B, N, D]
  const T* u;      // [B, N, H]
  const T* n;      // [B, N, D]
  const T* W1;     // [H, D]
  const T* W2;     // [C, H]
  const T* b2;     // [C]
  int64_t B, N, D, H, C;
  // Packed operands shared by all threads (ISA dependent panel widths).
  const T* nA;   // per b: n_b as the A operand (rows j, K = D), packed_a_size(N, D) each
  const T* nB;   // per b: n_b as the B operand (K = N, cols D), packed_b_size(N, D) each
  const T* W1T;  // W1ᵀ as the B operand (K = D, cols H)
  const T* W1B;  // W1 as the B operand (K = H, cols D)
  int64_t nA_stride, nB_stride;
};

template <class T, int MR, int NV, int VB>
struct Kernels {
  static constexpr int NR = NV * (VB / int(sizeof(T)));

  static int64_t fwd_scratch(const Problem<T>& p) {
    return cln::packed_b_size<NR>(p.D, p.H) + p.N * p.H;
  }
  static int64_t bwd_scratch(const Problem<T>& p) {
    return cln::packed_b_size<NR>(p.D, p.H) + p.N * p.H + cln::packed_a_size<MR>(p.N, p.H) +
           cln::packed_a_size<MR>(p.H, p.N) + p.N * p.D + p.H;
  }

  // Packs n (both roles) for sequence b, and (b == 0) the two W1 operands.
  static void pack_shared(const Problem<T>& p, int64_t b, T* nA, T* nB, T* W1T, T* W1B) {
    const T* nb = p.n + b * p.N * p.D;
    cln::pack_a<T, MR>(p.N, p.D, nb, p.D, 1, nA + b * p.nA_stride);
    cln::pack_b<T, NR>(p.N, p.D, nb, p.D, 1, nB + b * p.nB_stride);
    if (b == 0) {
      cln::pack_b<T, NR>(p.D, p.H, p.W1, 1, p.D, W1T);
      cln::pack_b<T, NR>(p.H, p.D, p.W1, p.D, 1, W1B);
    }
  }

  // pre = n_b (W1 ⊙ γ_i)ᵀ + u_i into pre (N x H); Bw is scratch for the scaled packed W1ᵀ.
  static void pre_activation(const Problem<T>& p, int64_t b, int64_t i, T* Bw, T* pre) {
    const T* g = p.gamma + (b * p.N + i) * p.D;
    const int64_t panels = cln::round_up(p.H, NR) / NR;
    for (int64_t q = 0; q < panels; ++q) {
      const T* src = p.W1T + q * p.D * NR;
      T* dst = Bw + q * p.D * NR;
      for (int64_t d = 0; d < p.D; ++d) {
        const T s = g[d];
        for (int c = 0; c < NR; ++c) dst[d * NR + c] = src[d * NR + c] * s;
      }
    }
    cln::gemm_packed<T, MR, NV, VB>(p.N, p.H, p.D, p.nA + b * p.nA_stride, Bw, pre, p.H, nullptr,
                                    p.u + (b * p.N + i) * p.H, false);
  }

  static void forward_pair(const Problem<T>& p, int64_t b, int64_t i, T* scratch, T* S) {
    T* Bw = scratch;
    T* pre = Bw + cln::packed_b_size<NR>(p.D, p.H);
    pre_activation(p, b, i, Bw, pre);
    const int64_t H = p.H, C = p.C;
    T* out = S + (b * p.N + i) * p.N * C;
    for (int64_t j = 0; j < p.N; ++j) {
      T* row = pre + j * H;
      for (int64_t k = 0; k < H; ++k) row[k] = cln::gelu_f(row[k]);
      for (int64_t c = 0; c < C; ++c) {
        const T* w = p.W2 + c * H;
        T acc = T(0);
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < H; ++k) acc += row[k] * w[k];
        out[j * C + c] = acc + p.b2[c];
      }
    }
  }

  // Backward of one (b, i): writes dgamma[b, i], du[b, i]; accumulates dn_b (dn_loc), dW1, dW2.
  static void backward_pair(const Problem<T>& p, int64_t b, int64_t i, const T* dS, T* scratch, T* dgamma,
                            T* du, T* dn_loc, T* dW1_loc, T* dW2_loc) {
    const int64_t N = p.N, D = p.D, H = p.H, C = p.C;
    T* Bw = scratch;
    T* pre = Bw + cln::packed_b_size<NR>(D, H);
    T* dpA = pre + N * H;
    T* dpTA = dpA + cln::packed_a_size<MR>(N, H);
    T* E = dpTA + cln::packed_a_size<MR>(H, N);
    T* dg = E + N * D;
    pre_activation(p, b, i, Bw, pre);

    const T* gi = p.gamma + (b * N + i) * D;
    const T* dSi = dS + (b * N + i) * N * C;
    T* dui = du + (b * N + i) * H;
    std::fill(dui, dui + H, T(0));
    for (int64_t j = 0; j < N; ++j) {
      const T* dSj = dSi + j * C;
      T* row = pre + j * H;
      std::fill(dg, dg + H, T(0));
      for (int64_t c = 0; c < C; ++c) {
        const T s = dSj[c];
        const T* w = p.W2 + c * H;
        for (int64_t k = 0; k < H; ++k) dg[k] += s * w[k];
      }
      // row: pre -> g (kept in dg's place for dW2) and dpre (in row).
      for (int64_t k = 0; k < H; ++k) {
        T g, gp;
        cln::gelu_and_grad(row[k], &g, &gp);
        const T dp = dg[k] * gp;
        dg[k] = g;
        row[k] = dp;
        dui[k] += dp;
      }
      for (int64_t c = 0; c < C; ++c) {
        const T s = dSj[c];
        T* w = dW2_loc + c * H;
        for (int64_t k = 0; k < H; ++k) w[k] += s * dg[k];
      }
    }
    // E = dpre W1 (N x D); dγ_i = Σ_j n_j ⊙ E_j; dn_j += γ_i ⊙ E_j.
    cln::pack_a<T, MR>(N, H, pre, H, 1, dpA);
    cln::gemm_packed<T, MR, NV, VB>(N, D, H, dpA, p.W1B, E, D, nullptr, nullptr, false);
    T* dgi = dgamma + (b * N + i) * D;
    std::fill(dgi, dgi + D, T(0));
    const T* nb = p.n + b * N * D;
    for (int64_t j = 0; j < N; ++j) {
      const T* e = E + j * D;
      const T* nj = nb + j * D;
      T* dnj = dn_loc + j * D;
      for (int64_t d = 0; d < D; ++d) {
        dgi[d] += nj[d] * e[d];
        dnj[d] += gi[d] * e[d];
      }
    }
    // dW1 += (dpreᵀ n_b) ⊙ γ_i (column scale in the GEMM epilogue).
    cln::pack_a<T, MR>(H, N, pre, 1, H, dpTA);
    cln::gemm_packed<T, MR, NV, VB>(H, D, N, dpTA, p.nB + b * p.nB_stride, dW1_loc, D, gi, nullptr, true);
  }
};

// One set of entry points per (dtype, ISA); `flatten` inlines the whole worker (micro-kernel and
// GELU loops included) so it is compiled for that function's target.
template <class T>
struct Isa {
  int64_t mr, nr;
  int64_t (*fwd_scratch)(const Problem<T>&);
  int64_t (*bwd_scratch)(const Problem<T>&);
  void (*pack_shared)(const Problem<T>&, int64_t, T*, T*, T*, T*);
  void (*forward_pair)(const Problem<T>&, int64_t, int64_t, T*, T*);
  void (*backward_pair)(const Problem<T>&, int64_t, int64_t, const T*, T*, T*, T*, T*, T*, T*);
};

#define MCLNER_CLN_STAMP(NAME, ATTR, T, MR, NV, VB)                                                       \
  ATTR static void NAME##_pack(const Problem<T>& p, int64_t b, T* a, T* bb, T* c, T* d) {               \
    Kernels<T, MR, NV, VB>::pack_shared(p, b, a, bb, c, d);                                               \
  }                                                                                                       \
  ATTR static void NAME##_fwd(const Problem<T>& p, int64_t b, int64_t i, T* s, T* S) {                   \
    Kernels<T, MR, NV, VB>::forward_pair(p, b, i, s, S);                                                  \
  }                                                                                                       \
  ATTR static void NAME##_bwd(const Problem<T>& p, int64_t b, int64_t i, const T* dS, T* s, T* dg, T* du, \
                              T* dn, T* dw1, T* dw2) {                                                    \
    Kernels<T, MR, NV, VB>::backward_pair(p, b, i, dS, s, dg, du, dn, dw1, dw2);                          \
  }                                                                                                       \
  static Isa<T> NAME##_isa() {                                                                            \
    using K = Kernels<T, MR, NV, VB>;                                                                     \
    return Isa<T>{MR, K::NR, &K::fwd_scratch, &K::bwd_scratch, &NAME##_pack, &NAME##_fwd, &NAME##_bwd};   \
  }

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define MCLNER_CLN_X86 1
#define MCLNER_ATTR_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma"), flatten))
#define MCLNER_ATTR_AVX2 __attribute__((target("avx2,fma"), flatten))
MCLNER_CLN_STAMP(f32_avx512, MCLNER_ATTR_AVX512, float, 8, 2, 64)
MCLNER_CLN_STAMP(f64_avx512, MCLNER_ATTR_AVX512, double, 8, 2, 64)
MCLNER_CLN_STAMP(f32_avx2, MCLNER_ATTR_AVX2, float, 6, 2, 32)
MCLNER_CLN_STAMP(f64_avx2, MCLNER_ATTR_AVX2, double, 6, 2, 32)
#endif
#if defined(__GNUC__) || defined(__clang__)
#define MCLNER_ATTR_BASE __attribute__((flatten))
#else
#define MCLNER_ATTR_BASE
#endif
MCLNER_CLN_STAMP(f32_base, MCLNER_ATTR_BASE, float, 4, 2, 16)
MCLNER_CLN_STAMP(f64_base, MCLNER_ATTR_BASE, double, 4, 2, 16)

// isa: a cpu_isa level (0 generic, 1 AVX2+FMA, 2 AVX-512), already resolved.
template <class T>
Isa<T> select_isa(int isa);
template <>
Isa<float> select_isa<float>(int isa) {
#ifdef MCLNER_CLN_X86
  if (isa == cpu_isa::kAvx512) return f32_avx512_isa();
  if (isa == cpu_isa::kAvx2) return f32_avx2_isa();
#endif
  return f32_base_isa();
}
template <>
Isa<double> select_isa<double>(int isa) {
#ifdef MCLNER_CLN_X86
  if (isa == cpu_isa::kAvx512) return f64_avx512_isa();
  if (isa == cpu_isa::kAvx2) return f64_avx2_isa();
#endif
  return f64_base_isa();
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Packs the shared operands (n in both roles, W1 in both roles) into `buf`.
template <class T>
std::vector<T> pack_problem(Problem<T>& p, const Isa<T>& isa, int threads) {
  p.nA_stride = cln::round_up(p.N, isa.mr) * p.D;
  p.nB_stride = cln::round_up(p.D, isa.nr) * p.N;
  const int64_t w1t = cln::round_up(p.H, isa.nr) * p.D;
  const int64_t w1b = cln::round_up(p.D, isa.nr) * p.H;
  std::vector<T> buf(size_t(p.B * (p.nA_stride + p.nB_stride) + w1t + w1b));
  T* nA = buf.data();
  T* nB = nA + p.B * p.nA_stride;
  T* W1T = nB + p.B * p.nB_stride;
  T* W1B = W1T + w1t;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < p.B; ++b) isa.pack_shared(p, b, nA, nB, W1T, W1B);
  p.nA = nA;
  p.nB = nB;
  p.W1T = W1T;
  p.W1B = W1B;
  return buf;
}

template <class T>
void forward_impl(Problem<T> p, T* S, int threads, int isa_code) {
  const Isa<T> isa = select_isa<T>(isa_code);
  std::vector<T> packed = pack_problem(p, isa, threads);
  const int64_t per = isa.fwd_scratch(p);
  std::vector<T> scratch(size_t(per * threads));
  const int64_t items = p.B * p.N;
  // Dynamic schedule: items are ~0.1-1 ms each, and on a busy machine a static split waits for the
  // slowest (descheduled) thread.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 2)
  for (int64_t it = 0; it < items; ++it)
    isa.forward_pair(p, it / p.N, it % p.N, scratch.data() + per * thread_id(), S);
}

// Items (b, i) are cut into at most kMaxChunks consecutive chunks whose size depends only on B·N; each
// chunk's contributions to dn, dW1 and dW2 are summed in item order into its own buffer and the buffers
// are added to the outputs in chunk order (ordered_chunks.h). The gradients are therefore the same bits
// for any schedule and any thread count (dgamma and du are per item and written once).
constexpr int64_t kMaxChunks = 64;

template <class T>
void backward_impl(Problem<T> p, const T* dS, T* dgamma, T* du, T* dn, T* dW1, T* dW2, int threads,
                   int isa_code) {
  const Isa<T> isa = select_isa<T>(isa_code);
  std::vector<T> packed = pack_problem(p, isa, threads);
  const int64_t N = p.N, D = p.D, H = p.H, C = p.C;
  const int64_t items = p.B * N;
  const int64_t chunk = (items + kMaxChunks - 1) / kMaxChunks;
  const int64_t n_chunks = (items + chunk - 1) / chunk;
  const int64_t span = std::min<int64_t>(p.B, chunk / N + 2);  // sequences one chunk can touch
  const int64_t per = isa.bwd_scratch(p);
  std::vector<T> scratch(size_t(per * threads));
  // A chunk's partial: dn of its sequences [span, N, D], then dW1 [H, D], then dW2 [C, H].
  const int64_t dn_part = span * N * D;
  std::fill(dn, dn + p.B * N * D, T(0));
  std::fill(dW1, dW1 + H * D, T(0));
  std::fill(dW2, dW2 + C * H, T(0));
  auto range = [&](int64_t c, int64_t& first, int64_t& last, int64_t& b0, int64_t& nb) {
    first = c * chunk;
    last = std::min(items, first + chunk);
    b0 = first / N;
    nb = (last - 1) / N - b0 + 1;
  };
  ordered_chunks<T>(
      n_chunks, threads, dn_part + H * D + C * H,
      [&](int t, int64_t c, T* part) {
        int64_t first, last, b0, nb;
        range(c, first, last, b0, nb);
        T* dW = part + dn_part;
        std::fill(part, part + nb * N * D, T(0));
        std::fill(dW, dW + H * D + C * H, T(0));
        T* s = scratch.data() + per * t;
        for (int64_t it = first; it < last; ++it) {
          const int64_t b = it / N;
          isa.backward_pair(p, b, it % N, dS, s, dgamma, du, part + (b - b0) * N * D, dW, dW + H * D);
        }
      },
      [&](int64_t c, const T* part) {
        int64_t first, last, b0, nb;
        range(c, first, last, b0, nb);
        T* dst = dn + b0 * N * D;
        for (int64_t x = 0; x < nb * N * D; ++x) dst[x] += part[x];
        const T* dW = part + dn_part;
        for (int64_t x = 0; x < H * D; ++x) dW1[x] += dW[x];
        for (int64_t x = 0; x < C * H; ++x) dW2[x] += dW[H * D + x];
      });
}

void check_sizes(int64_t B, int64_t N, int64_t D, int64_t H, int64_t C, int dtype, int threads) {
  checks::cln_head_sizes(OP, B, N, D, H, C);
  require_positive(threads, OP, "num_threads");
  require(dtype == int(DType::Float32) || dtype == int(DType::Float64),
          std::string(OP) + ": argument 'dtype' must be float32 (0) or float64 (1) on the CPU, got code " +
              std::to_string(dtype) + " (" + dtype_name(dtype) + ")");
}

template <class T>
Problem<T> make_problem(std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n, std::uintptr_t W1,
                        std::uintptr_t W2, std::uintptr_t b2, int64_t B, int64_t N, int64_t D, int64_t H,
                        int64_t C) {
  Problem<T> p{};
  p.gamma = reinterpret_cast<const T*>(gamma);
  p.u = reinterpret_cast<const T*>(u);
  p.n = reinterpret_cast<const T*>(n);
  p.W1 = reinterpret_cast<const T*>(W1);
  p.W2 = reinterpret_cast<const T*>(W2);
  p.b2 = reinterpret_cast<const T*>(b2);
  p.B = B;
  p.N = N;
  p.D = D;
  p.H = H;
  p.C = C;
  return p;
}

void forward(std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n, std::uintptr_t W1, std::uintptr_t W2,
             std::uintptr_t b2, std::uintptr_t S, int64_t B, int64_t N, int64_t D, int64_t H, int64_t C,
             int dtype, int threads, int isa) {
  checks::cln_head_forward_ptrs(OP, gamma, u, n, W1, W2, b2, S);
  check_sizes(B, N, D, H, C, dtype, threads);
  const int code = cpu_isa::resolve(OP, isa);
  py::gil_scoped_release nogil;
  if (dtype == int(DType::Float32))
    forward_impl(make_problem<float>(gamma, u, n, W1, W2, b2, B, N, D, H, C), reinterpret_cast<float*>(S),
                 threads, code);
  else
    forward_impl(make_problem<double>(gamma, u, n, W1, W2, b2, B, N, D, H, C), reinterpret_cast<double*>(S),
                 threads, code);
}

void backward(std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n, std::uintptr_t W1, std::uintptr_t W2,
              std::uintptr_t dS, std::uintptr_t dgamma, std::uintptr_t du, std::uintptr_t dn, std::uintptr_t dW1,
              std::uintptr_t dW2, int64_t B, int64_t N, int64_t D, int64_t H, int64_t C, int dtype, int threads,
              int isa) {
  checks::cln_head_backward_ptrs(OP, gamma, u, n, W1, W2, dS, dgamma, du, dn, dW1, dW2);
  check_sizes(B, N, D, H, C, dtype, threads);
  const int code = cpu_isa::resolve(OP, isa);
  py::gil_scoped_release nogil;
  // b2 is not needed by the backward; W2 stands in so make_problem sees a valid pointer.
  if (dtype == int(DType::Float32)) {
    using T = float;
    backward_impl(make_problem<T>(gamma, u, n, W1, W2, W2, B, N, D, H, C), reinterpret_cast<const T*>(dS),
                  reinterpret_cast<T*>(dgamma), reinterpret_cast<T*>(du), reinterpret_cast<T*>(dn),
                  reinterpret_cast<T*>(dW1), reinterpret_cast<T*>(dW2), threads, code);
  } else {
    using T = double;
    backward_impl(make_problem<T>(gamma, u, n, W1, W2, W2, B, N, D, H, C), reinterpret_cast<const T*>(dS),
                  reinterpret_cast<T*>(dgamma), reinterpret_cast<T*>(du), reinterpret_cast<T*>(dn),
                  reinterpret_cast<T*>(dW1), reinterpret_cast<T*>(dW2), threads, code);
  }
}

}  // namespace

void register_cln_head_cpu(py::module_& m) {
  m.def("cln_head_forward", &forward, py::arg("gamma"), py::arg("u"), py::arg("n"), py::arg("W1"), py::arg("W2"),
        py::arg("b2"), py::arg("S"), py::arg("B"), py::arg("N"), py::arg("D"), py::arg("H"), py::arg("C"),
        py::arg("dtype"), py::arg("num_threads"), py::arg("isa") = -1,
        "cln_head core forward: S[B,N,N,C] from gamma[B,N,D], u[B,N,H], n[B,N,D], W1[H,D], W2[C,H], b2[C] "
        "(contiguous; u = lambda W1^T + b1). isa: -1 auto (MCLNER_CPU_ISA caps it), 0 generic, 1 avx2, 2 avx512.");
  m.def("cln_head_backward", &backward, py::arg("gamma"), py::arg("u"), py::arg("n"), py::arg("W1"),
        py::arg("W2"), py::arg("dS"), py::arg("dgamma"), py::arg("du"), py::arg("dn"), py::arg("dW1"),
        py::arg("dW2"), py::arg("B"), py::arg("N"), py::arg("D"), py::arg("H"), py::arg("C"), py::arg("dtype"),
        py::arg("num_threads"), py::arg("isa") = -1,
        "cln_head core backward: writes dgamma, du, dn, dW1 (core part), dW2; db2 = dS summed.");
}

}  // namespace mclner
