// Logit tiles and the gradient sweep shared by the CUDA kernels of the two contrastive losses
// (csrc/cuda/info_nce.cu, csrc/cuda/sup_con.cu). CUDA only.
//
// A block owns kTile rows of a "row" operand X [M, P] and sweeps a "column" operand Y [N, P] in
// kTile × kTile logit tiles built from shared-memory chunks of P: thread (ty, tx) = (threadIdx.x / 8,
// threadIdx.x % 8) holds row ty and the kCols columns tx + 8q of each tile. Every block writes only
// its own rows: no atomics, deterministic results.
#pragma once

#include <cstdint>

#include "mclner/cuda_common.cuh"

namespace mclner {
namespace pair_tiles {
// Unnamed: every .cu that includes this gets its own copies of the kernels (as when they were written
// in each file), so no template kernel is registered twice across translation units.
namespace {

constexpr int kTile = 32;      // rows of X per block = rows of Y per tile = P chunk
constexpr int kThreads = 256;  // 32 rows × 8 threads; each thread holds 4 columns of its row
constexpr int kCols = kTile / (kThreads / kTile);  // 4

// Loads rows [r0, r0 + kTile) × features [p0, p0 + kTile) of Z [n, P] (row stride ld) as fp32, zeros outside.
template <class T>
__device__ __forceinline__ void load_chunk(float (*dst)[kTile + 1], const T* __restrict__ Z, int64_t ld, int64_t n,
                                           int64_t P, int64_t r0, int64_t p0) {
  for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
    const int r = e / kTile, c = e % kTile;
    const int64_t row = r0 + r, col = p0 + c;
    dst[r][c] = (row < n && col < P) ? cuda::to_f(Z[row * ld + col]) : 0.0f;
  }
}

// S[q] = s·X_{i0+ty}·Y_{j0+tx+8q} for this thread's row ty and its kCols columns.
template <class T>
__device__ __forceinline__ void logits_tile(float (*Xs)[kTile + 1], float (*Ys)[kTile + 1], const T* __restrict__ X,
                                            int64_t ldx, const T* __restrict__ Y, int64_t ldy, int64_t M, int64_t N,
                                            int64_t P, int64_t i0, int64_t j0, float s, float S[kCols]) {
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  for (int q = 0; q < kCols; ++q) S[q] = 0.0f;
  for (int64_t p0 = 0; p0 < P; p0 += kTile) {
    __syncthreads();  // previous users of Xs/Ys are done
    load_chunk(Xs, X, ldx, M, P, i0, p0);
    load_chunk(Ys, Y, ldy, N, P, j0, p0);
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kTile; ++k) {
      const float x = Xs[ty][k];
      for (int q = 0; q < kCols; ++q) S[q] += x * Ys[tx + 8 * q][k];
    }
  }
  for (int q = 0; q < kCols; ++q) S[q] *= s;
}

// The backward sweep of one block: acc[i, :] = Σ_j dlogit(i, j, L_ij)·Y_j over all column tiles, for
// the block's kTile rows i of X, in the fp32 workspace acc [M, P] (zeroed here; each block owns its
// rows). `dlogit(i, j, l)` is called for i < M, j < N only (the rest count as 0). Xs, Ys, dS are the
// caller's shared-memory tiles.
template <class T, class DLogit>
__device__ __forceinline__ void grad_rows(float (*Xs)[kTile + 1], float (*Ys)[kTile + 1], float (*dS)[kTile + 1],
                                          const T* __restrict__ X, int64_t ldx, const T* __restrict__ Y, int64_t ldy,
                                          int64_t M, int64_t N, int64_t P, float s, DLogit dlogit,
                                          float* __restrict__ acc) {
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int64_t i0 = int64_t(blockIdx.x) * kTile;
  const int64_t i = i0 + ty;
  for (int64_t e = threadIdx.x; e < int64_t(kTile) * P; e += kThreads) {
    const int64_t r = i0 + e / P;
    if (r < M) acc[r * P + e % P] = 0.0f;
  }
  float S[kCols];
  for (int64_t j0 = 0; j0 < N; j0 += kTile) {
    logits_tile(Xs, Ys, X, ldx, Y, ldy, M, N, P, i0, j0, s, S);
    for (int q = 0; q < kCols; ++q) {
      const int64_t j = j0 + tx + 8 * q;
      dS[ty][tx + 8 * q] = (i < M && j < N) ? dlogit(i, j, S[q]) : 0.0f;
    }
    // acc[i0 + ty, p0 + tx + 8q] += Σ_j dS[ty][j]·Y[j0 + j, p0 + tx + 8q], chunk by chunk of P.
    for (int64_t p0 = 0; p0 < P; p0 += kTile) {
      __syncthreads();  // dS complete, previous Ys users done
      load_chunk(Ys, Y, ldy, N, P, j0, p0);
      __syncthreads();
      float part[kCols] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 8
      for (int j = 0; j < kTile; ++j) {
        const float d = dS[ty][j];
        for (int q = 0; q < kCols; ++q) part[q] += d * Ys[j][tx + 8 * q];
      }
      if (i < M)
        for (int q = 0; q < kCols; ++q) {
          const int64_t p = p0 + tx + 8 * q;
          if (p < P) acc[i * P + p] += part[q];
        }
    }
  }
}

// out = s·acc, converted to the storage type.
template <class T>
__global__ void finish_kernel(const float* __restrict__ acc, int64_t n, float s, T* __restrict__ out) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < n) out[e] = cuda::from_f<T>(s * acc[e]);
}

inline unsigned blocks_for(int64_t n, int64_t per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

}  // namespace
}  // namespace pair_tiles
}  // namespace mclner
