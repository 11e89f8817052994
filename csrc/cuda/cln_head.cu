// CUDA kernels for the fused cln_head core (docs/METHOD.md §3, §6).
//
// Same decomposition as the CPU kernels (csrc/cpu/cln_head.cpp): the rows of the pair grid are
// processed in chunks of `chunk` rows i for all sequences b at once (R = B·chunk·N pair rows), so the
// only pair-sized buffers are the float32 [R, H] pre-activation workspaces of one chunk (the caller
// bounds them; nothing of size N²·D exists). Every product is one shared-memory tiled GEMM
// (64x64 tile, 16-deep K slices, 4x4 register block per thread, float32 accumulation) with loaders
// that build the operand on the fly (e.g. n_j ⊙ γ_i) and an epilogue that applies the per-element
// formulas of mclner/cln_head_tile.h — the same functions the CPU path runs.
//
// Forward per chunk:  pre = (n_j ⊙ γ_i) W1ᵀ + u_i → g = GELU(pre) (workspace);  S = g W2ᵀ + b2.
// Backward per chunk: recompute pre → dpre, g (workspaces); du_i = Σ_j dpre; E = dpre W1 with
// dn_j += γ_i ⊙ E and dγ_i += n_j ⊙ E (atomics); dW1 += dpreᵀ (n ⊙ γ) and dW2 += dSᵀ g (split-K,
// atomics). S and dS are float32, bfloat16 or float16; everything else is float32.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mclner/cln_head_tile.h"
#include "mclner/cuda_common.cuh"

namespace mclner {
namespace cln_cuda {

constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4, THREADS = 256;

constexpr const char* kOp = "cln_head";
using cuda::from_f;
using cuda::to_f;

// Pair row r of a chunk (rows i0 .. i0+ic-1 of every sequence) -> (b, i, j).
struct RowMap {
  int64_t N, ic, i0;
  __device__ __forceinline__ void decode(int64_t r, int64_t& b, int64_t& i, int64_t& j) const {
    const int64_t per_b = ic * N;
    b = r / per_b;
    const int64_t rem = r - b * per_b;
    i = i0 + rem / N;
    j = rem - (rem / N) * N;
  }
};

// Block computes the BM x BN tile (blockIdx.x, blockIdx.y) of A (M x K) * B (K x Nc) over the K
// slice of blockIdx.z (kslice wide). A_ROWS_FAST / B_COLS_FAST choose which index consecutive threads
// walk when filling shared memory, to match the memory layout of the operand (coalescing).
template <bool A_ROWS_FAST, bool B_COLS_FAST, class LoadA, class LoadB, class Epi>
__device__ __forceinline__ void tile_gemm(int64_t M, int64_t Nc, int64_t K, int64_t kslice, const LoadA& la,
                                          const LoadB& lb, const Epi& epi) {
  __shared__ float As[BK][BM + 1];
  __shared__ float Bs[BK][BN + 1];
  const int64_t row0 = int64_t(blockIdx.x) * BM, col0 = int64_t(blockIdx.y) * BN;
  const int64_t kb = int64_t(blockIdx.z) * kslice;
  const int64_t ke = kb + kslice < K ? kb + kslice : K;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[TM][TN];
#pragma unroll
  for (int a = 0; a < TM; ++a)
#pragma unroll
    for (int c = 0; c < TN; ++c) acc[a][c] = 0.f;
  for (int64_t k0 = kb; k0 < ke; k0 += BK) {
    for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
      const int r = A_ROWS_FAST ? e % BM : e / BK;
      const int kk = A_ROWS_FAST ? e / BM : e % BK;
      const int64_t gr = row0 + r, gk = k0 + kk;
      As[kk][r] = (gr < M && gk < ke) ? la(gr, gk) : 0.f;
    }
    for (int e = threadIdx.x; e < BK * BN; e += THREADS) {
      const int c = B_COLS_FAST ? e % BN : e / BK;
      const int kk = B_COLS_FAST ? e / BN : e % BK;
      const int64_t gc = col0 + c, gk = k0 + kk;
      Bs[kk][c] = (gc < Nc && gk < ke) ? lb(gk, gc) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int x = 0; x < TM; ++x) a[x] = As[kk][ty + 16 * x];
#pragma unroll
      for (int y = 0; y < TN; ++y) b[y] = Bs[kk][tx + 16 * y];
#pragma unroll
      for (int x = 0; x < TM; ++x)
#pragma unroll
        for (int y = 0; y < TN; ++y) acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int x = 0; x < TM; ++x)
#pragma unroll
    for (int y = 0; y < TN; ++y) {
      const int64_t r = row0 + ty + 16 * x, c = col0 + tx + 16 * y;
      if (r < M && c < Nc) epi(r, c, acc[x][y]);
    }
}

struct Tensors {
  const float *gamma, *u, *n, *W1, *W2, *b2;
  int64_t B, N, D, H, C;
};

// ---- operand loaders -------------------------------------------------------------------------
// A(r, d) = n[b, j, d] * γ[b, i, d]  (pair feature without the shift; the shift is folded in u).
struct LoadScaledN {
  Tensors t;
  RowMap rm;
  __device__ __forceinline__ float operator()(int64_t r, int64_t d) const {
    int64_t b, i, j;
    rm.decode(r, b, i, j);
    return t.n[(b * t.N + j) * t.D + d] * t.gamma[(b * t.N + i) * t.D + d];
  }
};
// B(d, k) = W1[k, d]
struct LoadW1T {
  const float* W1;
  int64_t D;
  __device__ __forceinline__ float operator()(int64_t d, int64_t k) const { return W1[k * D + d]; }
};
// Row-major [rows, ld] buffer: A(r, k) = buf[r, k]; and its transpose AT(k, r) = buf[r, k].
struct LoadRowMajor {
  const float* p;
  int64_t ld;
  __device__ __forceinline__ float operator()(int64_t r, int64_t c) const { return p[r * ld + c]; }
};
struct LoadTransposed {
  const float* p;
  int64_t ld;
  __device__ __forceinline__ float operator()(int64_t c, int64_t r) const { return p[r * ld + c]; }
};
// B(k, c) = W2[c, k]
struct LoadW2T {
  const float* W2;
  int64_t H;
  __device__ __forceinline__ float operator()(int64_t k, int64_t c) const { return W2[c * H + k]; }
};
// A(c, r) = dS[pair row r, c]
template <class TS>
struct LoadDSTransposed {
  const TS* dS;
  RowMap rm;
  int64_t C;
  __device__ __forceinline__ float operator()(int64_t c, int64_t r) const {
    int64_t b, i, j;
    rm.decode(r, b, i, j);
    return to_f(dS[((b * rm.N + i) * rm.N + j) * C + c]);
  }
};

// ---- epilogues ------------------------------------------------------------------------------
struct EpiGelu {  // forward: g = GELU(acc + u_i)
  Tensors t;
  RowMap rm;
  float* g;
  __device__ __forceinline__ void operator()(int64_t r, int64_t k, float acc) const {
    int64_t b, i, j;
    rm.decode(r, b, i, j);
    g[r * t.H + k] = cln::gelu_f(acc + t.u[(b * t.N + i) * t.H + k]);
  }
};
template <class TS>
struct EpiOut {  // S = acc + b2
  const float* b2;
  RowMap rm;
  int64_t C;
  TS* S;
  __device__ __forceinline__ void operator()(int64_t r, int64_t c, float acc) const {
    int64_t b, i, j;
    rm.decode(r, b, i, j);
    S[((b * rm.N + i) * rm.N + j) * C + c] = from_f<TS>(acc + b2[c]);
  }
};
template <class TS>
struct EpiDpre {  // backward: dpre and g from the recomputed pre-activation
  Tensors t;
  RowMap rm;
  const TS* dS;
  float *dpre, *g;
  __device__ __forceinline__ void operator()(int64_t r, int64_t k, float acc) const {
    int64_t b, i, j;
    rm.decode(r, b, i, j);
    const float pre = acc + t.u[(b * t.N + i) * t.H + k];
    float gv;
    const float dp = cln::pair_hidden_backward<float, TS>(pre, dS + ((b * t.N + i) * t.N + j) * t.C, t.W2 + k,
                                                          t.C, t.H, &gv);
    dpre[r * t.H + k] = dp;
    g[r * t.H + k] = gv;
  }
};
struct EpiE {  // E = dpre W1: dn_j += γ_i ⊙ E, dγ_i += n_j ⊙ E
  Tensors t;
  RowMap rm;
  float *dn, *dgamma;
  __device__ __forceinline__ void operator()(int64_t r, int64_t d, float e) const {
    int64_t b, i, j;
    rm.decode(r, b, i, j);
    atomicAdd(dn + (b * t.N + j) * t.D + d, t.gamma[(b * t.N + i) * t.D + d] * e);
    atomicAdd(dgamma + (b * t.N + i) * t.D + d, t.n[(b * t.N + j) * t.D + d] * e);
  }
};
struct EpiAtomic {  // split-K weight gradients
  float* out;
  int64_t ld;
  __device__ __forceinline__ void operator()(int64_t r, int64_t c, float v) const { atomicAdd(out + r * ld + c, v); }
};

// The minimum of 2 blocks per SM (<= 128 registers a thread) is what keeps nvcc 13's ptxas from
// spilling the 16-bit dS loader on sm_90 (with the thread count alone it capped the kernel at 64
// registers and spilled 24 bytes; scripts/gpu_resources.py reads it from the built module).
template <bool AR, bool BC, class LA, class LB, class EP>
__global__ void __launch_bounds__(THREADS, 2) gemm_kernel(int64_t M, int64_t Nc, int64_t K, int64_t kslice, LA la,
                                                       LB lb, EP ep) {
  tile_gemm<AR, BC>(M, Nc, K, kslice, la, lb, ep);
}

// du[b, i, k] = Σ_j dpre[row(b, i, j), k] for the chunk's rows i.
__global__ void du_kernel(const float* dpre, float* du, RowMap rm, int64_t B, int64_t H) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = B * rm.ic * H;
  if (idx >= total) return;
  const int64_t k = idx % H, bi = idx / H;  // bi = b * ic + ii
  const int64_t b = bi / rm.ic, ii = bi % rm.ic;
  const float* p = dpre + (bi * rm.N) * H + k;
  float s = 0.f;
  for (int64_t j = 0; j < rm.N; ++j) s += p[j * H];
  du[(b * rm.N + rm.i0 + ii) * H + k] = s;
}

template <bool AR, bool BC, class LA, class LB, class EP>
void launch_gemm(const char* what, int64_t M, int64_t Nc, int64_t K, int64_t kslice, LA la, LB lb, EP ep,
                 cudaStream_t s) {
  const int64_t gx = (M + BM - 1) / BM, gy = (Nc + BN - 1) / BN, gz = (K + kslice - 1) / kslice;
  if (gx > cuda::kMaxGridX || gy > cuda::kMaxGridYZ || gz > cuda::kMaxGridYZ)
    throw std::runtime_error(std::string("cln_head: grid too large for kernel '") + what + "'");
  gemm_kernel<AR, BC><<<dim3(unsigned(gx), unsigned(gy), unsigned(gz)), THREADS, 0, s>>>(M, Nc, K, kslice, la, lb, ep);
  cuda::check_launch(kOp, what);
}

// K slice for the split-K weight gradients: enough blocks to fill the GPU, grid.z within limits.
int64_t split_k_slice(int64_t K) {
  int64_t slice = 1024;
  while ((K + slice - 1) / slice > 65535) slice *= 2;
  return slice;
}

template <class TS>
void forward_t(const Tensors& t, TS* S, float* ws, int64_t chunk, cudaStream_t s) {
  for (int64_t i0 = 0; i0 < t.N; i0 += chunk) {
    const RowMap rm{t.N, chunk < t.N - i0 ? chunk : t.N - i0, i0};
    const int64_t R = t.B * rm.ic * t.N;
    launch_gemm<false, false>("forward pre-activation", R, t.H, t.D, t.D, LoadScaledN{t, rm}, LoadW1T{t.W1, t.D},
                              EpiGelu{t, rm, ws}, s);
    launch_gemm<false, false>("forward output layer", R, t.C, t.H, t.H, LoadRowMajor{ws, t.H}, LoadW2T{t.W2, t.H},
                              EpiOut<TS>{t.b2, rm, t.C, S}, s);
  }
}

template <class TS>
void backward_t(const Tensors& t, const TS* dS, float* dgamma, float* du, float* dn, float* dW1, float* dW2,
                float* ws, int64_t chunk, cudaStream_t s) {
  cuda::check_call(kOp, cudaMemsetAsync(dgamma, 0, sizeof(float) * t.B * t.N * t.D, s), "cudaMemsetAsync(dgamma)");
  cuda::check_call(kOp, cudaMemsetAsync(dn, 0, sizeof(float) * t.B * t.N * t.D, s), "cudaMemsetAsync(dn)");
  cuda::check_call(kOp, cudaMemsetAsync(dW1, 0, sizeof(float) * t.H * t.D, s), "cudaMemsetAsync(dW1)");
  cuda::check_call(kOp, cudaMemsetAsync(dW2, 0, sizeof(float) * t.C * t.H, s), "cudaMemsetAsync(dW2)");
  const int64_t rows_max = t.B * chunk * t.N;
  float* dpre = ws;
  float* g = ws + rows_max * t.H;
  for (int64_t i0 = 0; i0 < t.N; i0 += chunk) {
    const RowMap rm{t.N, chunk < t.N - i0 ? chunk : t.N - i0, i0};
    const int64_t R = t.B * rm.ic * t.N;
    launch_gemm<false, false>("backward recompute", R, t.H, t.D, t.D, LoadScaledN{t, rm}, LoadW1T{t.W1, t.D},
                              EpiDpre<TS>{t, rm, dS, dpre, g}, s);
    const int64_t nd = t.B * rm.ic * t.H;
    du_kernel<<<unsigned((nd + 255) / 256), 256, 0, s>>>(dpre, du, rm, t.B, t.H);
    cuda::check_launch(kOp, "backward du");
    launch_gemm<false, true>("backward dn/dgamma", R, t.D, t.H, t.H, LoadRowMajor{dpre, t.H},
                             LoadRowMajor{t.W1, t.D}, EpiE{t, rm, dn, dgamma}, s);
    const int64_t ks = split_k_slice(R);
    launch_gemm<true, true>("backward dW1", t.H, t.D, R, ks, LoadTransposed{dpre, t.H}, LoadScaledN{t, rm},
                            EpiAtomic{dW1, t.D}, s);
    launch_gemm<false, true>("backward dW2", t.C, t.H, R, ks, LoadDSTransposed<TS>{dS, rm, t.C},
                             LoadRowMajor{g, t.H}, EpiAtomic{dW2, t.H}, s);
  }
}

}  // namespace cln_cuda

// Host entry points used by csrc/cuda/cln_head_bind.cpp (arguments validated there).
void cln_head_cuda_forward(const float* gamma, const float* u, const float* n, const float* W1, const float* W2,
                           const float* b2, void* S, float* ws, int64_t B, int64_t N, int64_t D, int64_t H,
                           int64_t C, int64_t chunk, int dtype, int device, void* stream) {
  using namespace cln_cuda;
  cuda::DeviceScope scope(kOp, device);
  const Tensors t{gamma, u, n, W1, W2, b2, B, N, D, H, C};
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == 0)
    forward_t(t, static_cast<float*>(S), ws, chunk, s);
  else if (dtype == 3)
    forward_t(t, static_cast<__nv_bfloat16*>(S), ws, chunk, s);
  else
    forward_t(t, static_cast<__half*>(S), ws, chunk, s);
}

void cln_head_cuda_backward(const float* gamma, const float* u, const float* n, const float* W1, const float* W2,
                            const void* dS, float* dgamma, float* du, float* dn, float* dW1, float* dW2, float* ws,
                            int64_t B, int64_t N, int64_t D, int64_t H, int64_t C, int64_t chunk, int dtype,
                            int device, void* stream) {
  using namespace cln_cuda;
  cuda::DeviceScope scope(kOp, device);
  const Tensors t{gamma, u, n, W1, W2, nullptr, B, N, D, H, C};
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == 0)
    backward_t(t, static_cast<const float*>(dS), dgamma, du, dn, dW1, dW2, ws, chunk, s);
  else if (dtype == 3)
    backward_t(t, static_cast<const __nv_bfloat16*>(dS), dgamma, du, dn, dW1, dW2, ws, chunk, s);
  else
    backward_t(t, static_cast<const __half*>(dS), dgamma, du, dn, dW1, dW2, ws, chunk, s);
}

}  // namespace mclner
