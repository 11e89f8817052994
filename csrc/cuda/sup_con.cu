// CUDA kernels for the fused supervised contrastive loss: never stores the M×N logits.
//
// Inputs are the L2-normalised anchors x [M, P] and candidates y [N, P] (float32, bfloat16 or
// float16; fp32 accumulation), y = x in the one-set form (the pair i = k is left out), and compact
// int32 label ids. As in csrc/cuda/info_nce.cu, every block owns kTile rows of its "row"
// operand X and sweeps the "column" operand Y in 32×32 logit tiles built from shared-memory chunks, so
// there are no atomics and the results are deterministic.
//   stats_kernel : per anchor row an online log-sum-exp, the sum of its positive logits and their
//                  count (per thread, merged across the row's 8 threads with shuffles).
//   grad_kernel  : dX_i = s·Σ_j dlogit_ij Y_j with dlogit from the per-anchor (w, c, lse) of X's rows
//                  (row terms) and/or of Y's rows (column terms), recomputed tiles, accumulated in an
//                  fp32 workspace row block owned by the block; finish_kernel converts.
//                  Two sets: da = grad(X = a, Y = b, row terms), db = grad(X = b, Y = a, column terms);
//                  one set: da = grad(X = Y = a, both terms), the logits being symmetric.
// The logit tiles and the gradient sweep are csrc/include/mclner/pair_tiles.cuh (shared with
// info_nce.cu); the per-element arithmetic (online LSE, positives, dlogit) is the shared
// csrc/include/mclner/sup_con_tile.h that the CPU kernels run too.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mclner/common.h"
#include "mclner/cuda_common.cuh"
#include "mclner/pair_tiles.cuh"
#include "mclner/sup_con_tile.h"

namespace mclner {
namespace {

using sup_con::RowStats;

constexpr const char* kOp = "sup_con";

using pair_tiles::kCols;
using pair_tiles::kThreads;
using pair_tiles::kTile;
using pair_tiles::blocks_for;
using pair_tiles::finish_kernel;
using pair_tiles::logits_tile;

// Merges the 8 per-thread states of one row (8 consecutive lanes of a warp).
__device__ __forceinline__ RowStats<float> merge_row(RowStats<float> st) {
  for (int off = 4; off > 0; off /= 2) {
    RowStats<float> other;
    other.lse.max = __shfl_xor_sync(0xffffffffu, st.lse.max, off);
    other.lse.sum = __shfl_xor_sync(0xffffffffu, st.lse.sum, off);
    other.pos = __shfl_xor_sync(0xffffffffu, st.pos, off);
    other.cnt = __shfl_xor_sync(0xffffffffu, st.cnt, off);
    sup_con::stats_merge(st, other);
  }
  return st;
}

// At least 2 blocks per SM (<= 128 registers a thread): with the thread count alone nvcc 13's ptxas
// kept this kernel at 32 registers on sm_80 and spilled 32 bytes (scripts/gpu_resources.py).
template <class T>
__global__ void __launch_bounds__(kThreads, 2) stats_kernel(const T* __restrict__ X, int64_t ldx, const T* __restrict__ Y,
                                                         int64_t ldy, int64_t M, int64_t N, int64_t P, float s,
                                                         bool one_set, const int32_t* __restrict__ lab_x,
                                                         const int32_t* __restrict__ lab_y, float* __restrict__ lse,
                                                         float* __restrict__ pos, float* __restrict__ cnt) {
  __shared__ float Xs[kTile][kTile + 1];
  __shared__ float Ys[kTile][kTile + 1];
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int64_t i0 = int64_t(blockIdx.x) * kTile;
  const int64_t i = i0 + ty;
  const int32_t li = i < M ? lab_x[i] : -1;
  RowStats<float> st = sup_con::stats_empty<float>();
  float S[kCols];
  for (int64_t j0 = 0; j0 < N; j0 += kTile) {
    logits_tile(Xs, Ys, X, ldx, Y, ldy, M, N, P, i0, j0, s, S);
    for (int q = 0; q < kCols; ++q) {
      const int64_t j = j0 + tx + 8 * q;
      if (j < N && !(one_set && i == j)) sup_con::stats_push(st, S[q], sup_con::is_positive(li, lab_y[j]));
    }
  }
  st = merge_row(st);
  if (tx == 0 && i < M) {
    lse[i] = sup_con::lse_value(st.lse);
    pos[i] = st.pos;
    cnt[i] = st.cnt;
  }
}

// acc[i, :] = Σ_j dlogit_ij Y_j over all column tiles for the block's kTile rows of X. Row terms use the
// anchors (wx, cx, lse_x) of X's rows, column terms those (wy, cy, lse_y) of Y's rows; a null wx / wy
// switches that term off. dlogit = w·exp(L − lse) − c·[same label]; c is 0 for anchors that do not
// count, so the label test needs no sign check.
template <class T>
__global__ void __launch_bounds__(kThreads) grad_kernel(const T* __restrict__ X, int64_t ldx, const T* __restrict__ Y,
                                                        int64_t ldy, int64_t M, int64_t N, int64_t P, float s,
                                                        bool one_set, const int32_t* __restrict__ lab_x,
                                                        const int32_t* __restrict__ lab_y,
                                                        const float* __restrict__ wx, const float* __restrict__ cx,
                                                        const float* __restrict__ lse_x,
                                                        const float* __restrict__ wy, const float* __restrict__ cy,
                                                        const float* __restrict__ lse_y, float* __restrict__ acc) {
  __shared__ float Xs[kTile][kTile + 1];
  __shared__ float Ys[kTile][kTile + 1];
  __shared__ float dS[kTile][kTile + 1];
  const int64_t i = int64_t(blockIdx.x) * kTile + threadIdx.x / 8;
  const int32_t li = i < M ? lab_x[i] : -2;
  const float wxi = (wx && i < M) ? wx[i] : 0.0f;
  const float cxi = (wx && i < M) ? cx[i] : 0.0f;
  const float lxi = (wx && i < M) ? lse_x[i] : 0.0f;
  auto dlogit = [&](int64_t r, int64_t j, float l) {
    float d = 0.0f;
    if (one_set && r == j) return d;  // the pair i = k is left out
    const bool same = li == lab_y[j];
    if (wxi != 0.0f) d += sup_con::dlogit(info_nce::exp_t(l - lxi), wxi, same ? cxi : 0.0f);
    if (wy) {
      const float wyj = wy[j];
      if (wyj != 0.0f) d += sup_con::dlogit(info_nce::exp_t(l - lse_y[j]), wyj, same ? cy[j] : 0.0f);
    }
    return d;
  };
  pair_tiles::grad_rows(Xs, Ys, dS, X, ldx, Y, ldy, M, N, P, s, dlogit, acc);
}

template <class T>
void forward_t(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t M, int64_t N, int64_t P, float s,
               bool one_set, const int32_t* lab_x, const int32_t* lab_y, float* lse, float* pos, float* cnt,
               cudaStream_t stream) {
  stats_kernel<T><<<blocks_for(M, kTile), kThreads, 0, stream>>>(x, ldx, y, ldy, M, N, P, s, one_set, lab_x, lab_y,
                                                                  lse, pos, cnt);
  cuda::check_launch(kOp, "stats_kernel");
}

template <class T>
void backward_t(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t M, int64_t N, int64_t P, float s,
                bool one_set, const int32_t* lab_x, const int32_t* lab_y, const float* wx, const float* cx,
                const float* lse_x, const float* wy, const float* cy, const float* lse_y, T* dx, float* work,
                cudaStream_t stream) {
  grad_kernel<T><<<blocks_for(M, kTile), kThreads, 0, stream>>>(x, ldx, y, ldy, M, N, P, s, one_set, lab_x, lab_y,
                                                                 wx, cx, lse_x, wy, cy, lse_y, work);
  cuda::check_launch(kOp, "grad_kernel");
  finish_kernel<T><<<blocks_for(M * P, 256), 256, 0, stream>>>(work, M * P, s, dx);
  cuda::check_launch(kOp, "finish_kernel");
}

}  // namespace

// Launchers called by csrc/cuda/sup_con_bind.cpp after validation. Statistics and per-anchor arrays
// are fp32; `work` (backward) is an fp32 workspace [M·P].
void sup_con_cuda_forward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N,
                          int64_t P, int dtype, double temperature, bool one_set, std::uintptr_t lab_x,
                          std::uintptr_t lab_y, std::uintptr_t lse, std::uintptr_t pos, std::uintptr_t cnt, int device,
                          std::uintptr_t stream) {
  cuda::DeviceScope scope(kOp, device);
  const float s = static_cast<float>(1.0 / temperature);
  auto st = reinterpret_cast<cudaStream_t>(stream);
  auto lx = reinterpret_cast<const int32_t*>(lab_x);
  auto ly = reinterpret_cast<const int32_t*>(lab_y);
  auto l = reinterpret_cast<float*>(lse);
  auto p = reinterpret_cast<float*>(pos);
  auto c = reinterpret_cast<float*>(cnt);
  switch (static_cast<DType>(dtype)) {
    case DType::Float32:
      forward_t(reinterpret_cast<const float*>(x), ldx, reinterpret_cast<const float*>(y), ldy, M, N, P, s, one_set,
                lx, ly, l, p, c, st);
      break;
    case DType::Float16:
      forward_t(reinterpret_cast<const __half*>(x), ldx, reinterpret_cast<const __half*>(y), ldy, M, N, P, s,
                one_set, lx, ly, l, p, c, st);
      break;
    case DType::BFloat16:
      forward_t(reinterpret_cast<const __nv_bfloat16*>(x), ldx, reinterpret_cast<const __nv_bfloat16*>(y), ldy, M, N,
                P, s, one_set, lx, ly, l, p, c, st);
      break;
    default:
      throw ArgumentError(std::string("sup_con: unsupported dtype ") + dtype_name(dtype) + " on CUDA");
  }
}

void sup_con_cuda_backward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N,
                           int64_t P, int dtype, double temperature, bool one_set, std::uintptr_t lab_x,
                           std::uintptr_t lab_y, bool row_terms, bool col_terms, std::uintptr_t w_x,
                           std::uintptr_t c_x, std::uintptr_t lse_x, std::uintptr_t w_y, std::uintptr_t c_y,
                           std::uintptr_t lse_y, std::uintptr_t dx, std::uintptr_t work, int device,
                           std::uintptr_t stream) {
  cuda::DeviceScope scope(kOp, device);
  const float s = static_cast<float>(1.0 / temperature);
  auto st = reinterpret_cast<cudaStream_t>(stream);
  auto lx = reinterpret_cast<const int32_t*>(lab_x);
  auto ly = reinterpret_cast<const int32_t*>(lab_y);
  auto f = [](std::uintptr_t p, bool on) { return on ? reinterpret_cast<const float*>(p) : nullptr; };
  const float *wx = f(w_x, row_terms), *cx = f(c_x, row_terms), *lxs = f(lse_x, row_terms);
  const float *wy = f(w_y, col_terms), *cy = f(c_y, col_terms), *lys = f(lse_y, col_terms);
  auto wk = reinterpret_cast<float*>(work);
  switch (static_cast<DType>(dtype)) {
    case DType::Float32:
      backward_t(reinterpret_cast<const float*>(x), ldx, reinterpret_cast<const float*>(y), ldy, M, N, P, s, one_set,
                 lx, ly, wx, cx, lxs, wy, cy, lys, reinterpret_cast<float*>(dx), wk, st);
      break;
    case DType::Float16:
      backward_t(reinterpret_cast<const __half*>(x), ldx, reinterpret_cast<const __half*>(y), ldy, M, N, P, s,
                 one_set, lx, ly, wx, cx, lxs, wy, cy, lys, reinterpret_cast<__half*>(dx), wk, st);
      break;
    case DType::BFloat16:
      backward_t(reinterpret_cast<const __nv_bfloat16*>(x), ldx, reinterpret_cast<const __nv_bfloat16*>(y), ldy, M,
                 N, P, s, one_set, lx, ly, wx, cx, lxs, wy, cy, lys, reinterpret_cast<__nv_bfloat16*>(dx), wk, st);
      break;
    default:
      throw ArgumentError(std::string("sup_con: unsupported dtype ") + dtype_name(dtype) + " on CUDA");
  }
}

}  // namespace mclner
