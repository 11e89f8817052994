// CUDA kernels for the biaffine pair pass (forward and backward; math in biaffine_tile.h).
//
// All three products of the pass are per-batch GEMMs whose operand and output addresses are the
// [B,N,N,C] layout maps of biaffine_tile.h (the same functions the CPU kernels use):
//   forward  S[b,i,j,c] = Σ_e P[b,i,c,e] he[b,j,e] + r[b,i,c]   rows (i,c), cols j, reduce e
//   dP       dP[b,i,c,e] = Σ_j dS[b,i,j,c] he[b,j,e]             rows (i,c), cols e, reduce j
//   dhe      dhe[b,j,e] = Σ_{i,c} dS[b,i,j,c] P[b,i,c,e]         rows j, cols e, reduce (i,c)
//   dr       dr[b,i,c] = Σ_j dS[b,i,j,c]
// One shared-memory tiled kernel (64x64 block tile, 16-deep K slices, 4x4 register tile per thread,
// fp32 accumulation for every storage dtype) serves the three; the operand loaders are chosen per
// product so that consecutive threads read consecutive addresses.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mclner/biaffine_tile.h"
#include "mclner/common.h"
#include "mclner/cuda_common.cuh"

namespace mclner {
namespace {

using biaffine::Strides3;
using cuda::from_f;
using cuda::to_f;
using biaffine::Strides4;

constexpr const char* kOp = "biaffine";
constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
constexpr int kThreads = (kBM / kTM) * (kBN / kTN);  // 256
static_assert(kBM * kBK % kThreads == 0 && kBN * kBK % kThreads == 0, "tile loads must divide evenly");

enum Mode : int { kForward = 0, kGradP = 1, kGradHe = 2 };

struct Geometry {
  int64_t N, Db, C;
  int64_t M, Ncols, K;  // per-batch GEMM sizes for the mode
  Strides4 s4a;         // forward: P;  dP/dhe: dS
  Strides3 s3b;         // forward/dP: he
  Strides4 s4b;         // dhe: P
  Strides3 sR;          // forward: r
};

// Operand address maps and load order per mode. kAKFast: consecutive threads walk the reduction
// index of A (else its row index); kBKFast likewise for B (else its column index).
template <int MODE>
struct Maps;
template <>
struct Maps<kForward> {
  static constexpr bool kAKFast = true, kBKFast = true;
  __device__ static int64_t a(const Geometry& g, int64_t b, int64_t row, int64_t k) {
    return biaffine::fwd_a(g.s4a, g.C, b, row, k);
  }
  __device__ static int64_t bop(const Geometry& g, int64_t b, int64_t k, int64_t col) {
    return biaffine::fwd_b(g.s3b, b, k, col);
  }
};
template <>
struct Maps<kGradP> {
  static constexpr bool kAKFast = false, kBKFast = false;
  __device__ static int64_t a(const Geometry& g, int64_t b, int64_t row, int64_t k) {
    return biaffine::dp_a(g.s4a, g.C, b, row, k);
  }
  __device__ static int64_t bop(const Geometry& g, int64_t b, int64_t k, int64_t col) {
    return biaffine::dp_b(g.s3b, b, k, col);
  }
};
template <>
struct Maps<kGradHe> {
  static constexpr bool kAKFast = true, kBKFast = false;
  __device__ static int64_t a(const Geometry& g, int64_t b, int64_t row, int64_t k) {
    return biaffine::dhe_a(g.s4a, g.C, b, row, k);
  }
  __device__ static int64_t bop(const Geometry& g, int64_t b, int64_t k, int64_t col) {
    return biaffine::dhe_b(g.s4b, g.C, b, k, col);
  }
};

template <class T, int MODE>
__global__ void __launch_bounds__(kThreads) pair_gemm_kernel(const T* __restrict__ A, const T* __restrict__ Bop,
                                                             const T* __restrict__ rterm, T* __restrict__ out,
                                                             Geometry g, int64_t b_offset, int64_t row_tile_offset) {
  using Map = Maps<MODE>;
  __shared__ float As[kBK][kBM + 1];
  __shared__ float Bs[kBK][kBN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % (kBN / kTN), ty = tid / (kBN / kTN);
  const int64_t b = int64_t(blockIdx.z) + b_offset;
  const int64_t row0 = (int64_t(blockIdx.y) + row_tile_offset) * kBM, col0 = int64_t(blockIdx.x) * kBN;

  float acc[kTM][kTN];
#pragma unroll
  for (int m = 0; m < kTM; ++m)
#pragma unroll
    for (int n = 0; n < kTN; ++n) acc[m][n] = 0.f;

  for (int64_t k0 = 0; k0 < g.K; k0 += kBK) {
#pragma unroll
    for (int q = 0; q < kBM * kBK / kThreads; ++q) {
      const int idx = tid + q * kThreads;
      const int kk = Map::kAKFast ? idx % kBK : idx / kBM;
      const int rr = Map::kAKFast ? idx / kBK : idx % kBM;
      const int64_t row = row0 + rr, k = k0 + kk;
      As[kk][rr] = (row < g.M && k < g.K) ? to_f(A[Map::a(g, b, row, k)]) : 0.f;
    }
#pragma unroll
    for (int q = 0; q < kBN * kBK / kThreads; ++q) {
      const int idx = tid + q * kThreads;
      const int kk = Map::kBKFast ? idx % kBK : idx / kBN;
      const int cc = Map::kBKFast ? idx / kBK : idx % kBN;
      const int64_t col = col0 + cc, k = k0 + kk;
      Bs[kk][cc] = (col < g.Ncols && k < g.K) ? to_f(Bop[Map::bop(g, b, k, col)]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float av[kTM], bv[kTN];
#pragma unroll
      for (int m = 0; m < kTM; ++m) av[m] = As[kk][ty + m * (kBM / kTM)];
#pragma unroll
      for (int n = 0; n < kTN; ++n) bv[n] = Bs[kk][tx + n * (kBN / kTN)];
      biaffine::outer_fma<kTM, kTN, float>(acc, av, bv);
    }
    __syncthreads();
  }

#pragma unroll
  for (int m = 0; m < kTM; ++m) {
    const int64_t row = row0 + ty + m * (kBM / kTM);
    if (row >= g.M) continue;
#pragma unroll
    for (int n = 0; n < kTN; ++n) {
      const int64_t col = col0 + tx + n * (kBN / kTN);
      if (col >= g.Ncols) continue;
      if (MODE == kForward) {
        int64_t i, c;
        biaffine::split_row(row, g.C, i, c);
        const float rv = to_f(rterm[biaffine::off3(g.sR, b, i, c)]);
        out[biaffine::s_offset(g.N, g.C, b, i, col, c)] = from_f<T>(biaffine::fwd_epilogue(acc[m][n], rv));
      } else {
        out[(b * g.M + row) * g.Ncols + col] = from_f<T>(acc[m][n]);  // dP [B,N·C,Db] / dhe [B,N,Db]
      }
    }
  }
}

// dr[b,i,c] = Σ_j dS[b,i,j,c], one thread per (b,i,c): consecutive threads read consecutive c.
template <class T>
__global__ void row_sum_kernel(const T* __restrict__ dS, T* __restrict__ dr, Geometry g, int64_t B) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t M = g.N * g.C;
  if (t >= B * M) return;
  const int64_t b = t / M, r = t % M;
  float s = 0.f;
  for (int64_t j = 0; j < g.N; ++j) s += to_f(dS[biaffine::dp_a(g.s4a, g.C, b, r, j)]);
  dr[t] = from_f<T>(s);
}

template <class T, int MODE>
void launch_gemm(const void* A, const void* Bop, const void* rterm, void* out, const Geometry& g, int64_t B,
                 cudaStream_t stream) {
  const int64_t row_tiles = (g.M + kBM - 1) / kBM, col_tiles = (g.Ncols + kBN - 1) / kBN;
  if (col_tiles > cuda::kMaxGridX)
    throw ArgumentError("biaffine: too many columns for the CUDA grid (" + std::to_string(g.Ncols) + ")");
  // Row tiles (N·C rows for the forward and dP) and batches go on gridDim.y and gridDim.z, each at
  // most 65,535: larger sizes are covered by several launches with a tile/batch offset.
  for (int64_t b0 = 0; b0 < B; b0 += cuda::kMaxGridYZ) {
    for (int64_t t0 = 0; t0 < row_tiles; t0 += cuda::kMaxGridYZ) {
      const dim3 grid(unsigned(col_tiles), unsigned(std::min(cuda::kMaxGridYZ, row_tiles - t0)),
                      unsigned(std::min(cuda::kMaxGridYZ, B - b0)));
      pair_gemm_kernel<T, MODE><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(A), static_cast<const T*>(Bop),
                                                               static_cast<const T*>(rterm), static_cast<T*>(out), g,
                                                               b0, t0);
      cuda::check_launch(kOp, MODE == kForward ? "the forward kernel" : MODE == kGradP ? "the dP kernel"
                                                                                       : "the dhe kernel");
    }
  }
}

template <class T>
void forward_t(const void* P, const void* r, const void* he, void* S, Geometry g, int64_t B, cudaStream_t st) {
  g.M = g.N * g.C;
  g.Ncols = g.N;
  g.K = g.Db;
  launch_gemm<T, kForward>(P, he, r, S, g, B, st);
}

template <class T>
void backward_t(const void* dS, const void* P, const void* he, void* dP, void* dr, void* dhe, Geometry g, int64_t B,
                bool need_dP, bool need_dhe, cudaStream_t st) {
  if (need_dP) {
    Geometry gp = g;
    gp.M = g.N * g.C;
    gp.Ncols = g.Db;
    gp.K = g.N;
    launch_gemm<T, kGradP>(dS, he, nullptr, dP, gp, B, st);
    const int64_t rows = B * g.N * g.C;
    const int threads = 256;
    const int64_t blocks = (rows + threads - 1) / threads;
    if (blocks > cuda::kMaxGridX) throw ArgumentError("biaffine: too many rows for the CUDA grid");
    row_sum_kernel<T><<<unsigned(blocks), threads, 0, st>>>(static_cast<const T*>(dS), static_cast<T*>(dr), gp, B);
    cuda::check_launch(kOp, "the dr kernel");
  }
  if (need_dhe) {
    Geometry gh = g;
    gh.M = g.N;
    gh.Ncols = g.Db;
    gh.K = g.N * g.C;
    launch_gemm<T, kGradHe>(dS, P, nullptr, dhe, gh, B, st);
  }
}

}  // namespace

// Entry points for csrc/cuda/biaffine_bind.cpp (arguments already validated there).
void biaffine_cuda_forward(std::uintptr_t P, const int64_t* sP, std::uintptr_t r, const int64_t* sR,
                           std::uintptr_t he, const int64_t* sHe, std::uintptr_t S, int64_t B, int64_t N, int64_t Db,
                           int64_t C, int dtype, int device, std::uintptr_t stream) {
  cuda::DeviceScope scope(kOp, device);
  Geometry g{};
  g.N = N;
  g.Db = Db;
  g.C = C;
  g.s4a = {sP[0], sP[1], sP[2], sP[3]};
  g.s3b = {sHe[0], sHe[1], sHe[2]};
  g.sR = {sR[0], sR[1], sR[2]};
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const void *p = reinterpret_cast<const void*>(P), *rp = reinterpret_cast<const void*>(r),
             *h = reinterpret_cast<const void*>(he);
  void* s = reinterpret_cast<void*>(S);
  switch (dtype) {
    case int(DType::Float32): forward_t<float>(p, rp, h, s, g, B, st); break;
    case int(DType::Float16): forward_t<__half>(p, rp, h, s, g, B, st); break;
    case int(DType::BFloat16): forward_t<__nv_bfloat16>(p, rp, h, s, g, B, st); break;
    default: throw ArgumentError(std::string("biaffine: unsupported dtype ") + dtype_name(dtype));
  }
}

void biaffine_cuda_backward(std::uintptr_t dS, const int64_t* sdS, std::uintptr_t P, const int64_t* sP,
                            std::uintptr_t he, const int64_t* sHe, std::uintptr_t dP, std::uintptr_t dr,
                            std::uintptr_t dhe, int64_t B, int64_t N, int64_t Db, int64_t C, int dtype, int device,
                            std::uintptr_t stream, bool need_dP, bool need_dhe) {
  cuda::DeviceScope scope(kOp, device);
  Geometry g{};
  g.N = N;
  g.Db = Db;
  g.C = C;
  g.s4a = {sdS[0], sdS[1], sdS[2], sdS[3]};
  g.s3b = {sHe[0], sHe[1], sHe[2]};
  g.s4b = {sP[0], sP[1], sP[2], sP[3]};
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const void *ds = reinterpret_cast<const void*>(dS), *p = reinterpret_cast<const void*>(P),
             *h = reinterpret_cast<const void*>(he);
  void *dp = reinterpret_cast<void*>(dP), *drp = reinterpret_cast<void*>(dr), *dh = reinterpret_cast<void*>(dhe);
  switch (dtype) {
    case int(DType::Float32): backward_t<float>(ds, p, h, dp, drp, dh, g, B, need_dP, need_dhe, st); break;
    case int(DType::Float16): backward_t<__half>(ds, p, h, dp, drp, dh, g, B, need_dP, need_dhe, st); break;
    case int(DType::BFloat16):
      backward_t<__nv_bfloat16>(ds, p, h, dp, drp, dh, g, B, need_dP, need_dhe, st);
      break;
    default: throw ArgumentError(std::string("biaffine: unsupported dtype ") + dtype_name(dtype));
  }
}

}  // namespace mclner
