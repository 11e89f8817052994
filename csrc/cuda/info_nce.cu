// CUDA kernels for the fused InfoNCE (docs/METHOD.md §4, §6): never stores the M×M logits.
//
// Inputs are the L2-normalised views a, b [M, P] (float32, bfloat16 or float16; fp32 accumulation).
// All kernels are written for a "row" operand X and a "column" operand Y, so the column-wise
// quantities come from the same kernel with the roles swapped (X = b, Y = a): every block owns its
// rows, there are no atomics and the results are deterministic.
//   lse_kernel   : lse_i = logsumexp_j s·X_i·Y_j, 32×32 logit tiles from shared-memory chunks, an
//                  online log-sum-exp per thread, merged across the row's threads with shuffles.
//   loss_kernel  : positive logit and per-row loss (one warp per row); reduce_kernel: mean/sum in one
//                  block (deterministic).
//   grad_kernel  : dX_i = s·Σ_j dlogit_ij Y_j with dlogit from the saved lse (recomputed tiles),
//                  accumulated in an fp32 workspace row block owned by the block; finish_kernel
//                  converts. da = grad(X=a, Y=b), db = grad(X=b, Y=a).
// The logit tiles and the gradient sweep are csrc/include/mclner/pair_tiles.cuh (shared with
// sup_con.cu); the per-element arithmetic (online LSE, dlogit, row loss, upstream weight) is the shared
// csrc/include/mclner/info_nce_tile.h that the CPU kernels run too.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mclner/common.h"
#include "mclner/cuda_common.cuh"
#include "mclner/info_nce_tile.h"
#include "mclner/pair_tiles.cuh"

namespace mclner {
namespace {

using info_nce::OnlineLse;

constexpr const char* kOp = "info_nce";

using pair_tiles::kCols;
using pair_tiles::kThreads;
using pair_tiles::kTile;
using pair_tiles::blocks_for;
using pair_tiles::finish_kernel;
using pair_tiles::logits_tile;

using cuda::from_f;
using cuda::to_f;

// Merges the 8 per-thread states of one row (8 consecutive lanes of a warp).
__device__ __forceinline__ OnlineLse<float> merge_row(OnlineLse<float> st) {
  for (int off = 4; off > 0; off /= 2) {
    const float m = __shfl_xor_sync(0xffffffffu, st.max, off);
    const float z = __shfl_xor_sync(0xffffffffu, st.sum, off);
    info_nce::lse_merge(st, m, z);
  }
  return st;
}

template <class T>
__global__ void __launch_bounds__(kThreads) lse_kernel(const T* __restrict__ X, int64_t ldx, const T* __restrict__ Y,
                                                       int64_t ldy, int64_t M, int64_t P, float s,
                                                       float* __restrict__ lse) {
  __shared__ float Xs[kTile][kTile + 1];
  __shared__ float Ys[kTile][kTile + 1];
  const int ty = threadIdx.x / 8, tx = threadIdx.x % 8;
  const int64_t i0 = int64_t(blockIdx.x) * kTile;
  OnlineLse<float> st = info_nce::lse_empty<float>();
  float S[kCols];
  for (int64_t j0 = 0; j0 < M; j0 += kTile) {
    logits_tile(Xs, Ys, X, ldx, Y, ldy, M, M, P, i0, j0, s, S);
    for (int q = 0; q < kCols; ++q)
      if (j0 + tx + 8 * q < M) info_nce::lse_push(st, S[q]);
  }
  st = merge_row(st);
  if (tx == 0 && i0 + ty < M) lse[i0 + ty] = info_nce::lse_value(st);
}

// One warp per row: positive logit s·a_m·b_m and the per-row loss.
template <class T>
__global__ void loss_kernel(const T* __restrict__ a, int64_t lda, const T* __restrict__ b, int64_t ldb, int64_t M,
                            int64_t P, float s, const float* __restrict__ row_lse, const float* __restrict__ col_lse,
                            bool symmetric, int reduction, T* __restrict__ out, float* __restrict__ work) {
  const int64_t m = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (m >= M) return;
  float dot = 0.0f;
  for (int64_t p = lane; p < P; p += 32) dot += to_f(a[m * lda + p]) * to_f(b[m * ldb + p]);
  for (int off = 16; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
  if (lane != 0) return;
  const float loss = info_nce::row_loss(row_lse[m], symmetric ? col_lse[m] : 0.0f, s * dot, symmetric);
  if (reduction == info_nce::kNone)
    out[m] = from_f<T>(loss);
  else
    work[m] = loss;
}

template <class T>
__global__ void __launch_bounds__(1024) reduce_kernel(const float* __restrict__ work, int64_t M, int reduction,
                                                      T* __restrict__ out) {
  __shared__ float part[32];
  float acc = 0.0f;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) acc += work[m];
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    acc = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (threadIdx.x == 0) out[0] = from_f<T>(reduction == info_nce::kMean ? acc / float(M) : acc);
  }
}

// Term weights from the upstream gradient: w_m = term_weight(upstream_weight(g)).
template <class T>
__global__ void weights_kernel(const T* __restrict__ grad, int64_t M, int reduction, bool symmetric,
                               float* __restrict__ w) {
  const int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m >= M) return;
  const float g = to_f(grad[reduction == info_nce::kNone ? m : 0]);
  w[m] = info_nce::term_weight(info_nce::upstream_weight(g, M, reduction), symmetric);
}

// acc[i, :] = Σ_j dlogit_ij Y_j over all column tiles for the block's kTile rows (wy/lse_y may be
// null: no column term). dlogit_ij = wx_i (exp(L_ij − lse_x_i) − δ_ij) + wy_j (exp(L_ij − lse_y_j) − δ_ij).
template <class T>
__global__ void __launch_bounds__(kThreads) grad_kernel(const T* __restrict__ X, int64_t ldx, const T* __restrict__ Y,
                                                        int64_t ldy, int64_t M, int64_t P, float s,
                                                        const float* __restrict__ wx, const float* __restrict__ lse_x,
                                                        const float* __restrict__ wy, const float* __restrict__ lse_y,
                                                        float* __restrict__ acc) {
  __shared__ float Xs[kTile][kTile + 1];
  __shared__ float Ys[kTile][kTile + 1];
  __shared__ float dS[kTile][kTile + 1];
  const int64_t i = int64_t(blockIdx.x) * kTile + threadIdx.x / 8;
  const float wxi = (wx && i < M) ? wx[i] : 0.0f;
  const float lxi = (lse_x && i < M) ? lse_x[i] : 0.0f;
  auto dlogit = [&](int64_t r, int64_t j, float l) {
    const float wyj = wy ? wy[j] : 0.0f;
    const float pr = wxi != 0.0f ? info_nce::exp_t(l - lxi) : 0.0f;
    const float pc = wyj != 0.0f ? info_nce::exp_t(l - lse_y[j]) : 0.0f;
    float d = info_nce::dlogit(pr, wxi, pc, wyj);
    if (r == j) d += info_nce::dlogit_diag_correction(wxi, wyj);
    return d;
  };
  pair_tiles::grad_rows(Xs, Ys, dS, X, ldx, Y, ldy, M, M, P, s, dlogit, acc);
}

template <class T>
void forward_t(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, float s, bool symmetric,
               int reduction, T* out, float* row_lse, float* col_lse, float* work, cudaStream_t stream) {
  const unsigned tiles = blocks_for(M, kTile);
  lse_kernel<T><<<tiles, kThreads, 0, stream>>>(a, lda, b, ldb, M, P, s, row_lse);
  cuda::check_launch(kOp, "lse_kernel (rows)");
  if (symmetric) {
    lse_kernel<T><<<tiles, kThreads, 0, stream>>>(b, ldb, a, lda, M, P, s, col_lse);
    cuda::check_launch(kOp, "lse_kernel (columns)");
  }
  loss_kernel<T><<<blocks_for(M, 8), 256, 0, stream>>>(a, lda, b, ldb, M, P, s, row_lse, col_lse, symmetric,
                                                        reduction, out, work);
  cuda::check_launch(kOp, "loss_kernel");
  if (reduction != info_nce::kNone) {
    reduce_kernel<T><<<1, 1024, 0, stream>>>(work, M, reduction, out);
    cuda::check_launch(kOp, "reduce_kernel");
  }
}

template <class T>
void backward_t(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t P, float s, bool symmetric,
                int reduction, const T* grad, const float* row_lse, const float* col_lse, T* da, T* db, float* work,
                cudaStream_t stream) {
  float* w = work;       // [M] term weights (row and, when symmetric, column: the same values)
  float* acc = work + M;  // [M, P] fp32 accumulator, reused for da then db
  const unsigned tiles = blocks_for(M, kTile);
  weights_kernel<T><<<blocks_for(M, 256), 256, 0, stream>>>(grad, M, reduction, symmetric, w);
  cuda::check_launch(kOp, "weights_kernel");
  const float* wc = symmetric ? w : nullptr;
  const float* cl = symmetric ? col_lse : nullptr;
  // da: rows of a against columns b; row term (w, row_lse), column term (wc, col_lse).
  grad_kernel<T><<<tiles, kThreads, 0, stream>>>(a, lda, b, ldb, M, P, s, w, row_lse, wc, cl, acc);
  cuda::check_launch(kOp, "grad_kernel (da)");
  finish_kernel<T><<<blocks_for(M * P, 256), 256, 0, stream>>>(acc, M * P, s, da);
  cuda::check_launch(kOp, "finish_kernel (da)");
  // db: roles swapped, L_km = L_mk; its row term is the column loss, its column term the row loss.
  grad_kernel<T><<<tiles, kThreads, 0, stream>>>(b, ldb, a, lda, M, P, s, wc, cl, w, row_lse, acc);
  cuda::check_launch(kOp, "grad_kernel (db)");
  finish_kernel<T><<<blocks_for(M * P, 256), 256, 0, stream>>>(acc, M * P, s, db);
  cuda::check_launch(kOp, "finish_kernel (db)");
}

}  // namespace

// Launchers called by csrc/cuda/info_nce_bind.cpp after validation. `work` is an fp32 workspace:
// forward [M], backward [M + M·P]. LSE buffers are fp32 [M].
void info_nce_cuda_forward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P,
                           int dtype, double temperature, bool symmetric, int reduction, std::uintptr_t out,
                           std::uintptr_t row_lse, std::uintptr_t col_lse, std::uintptr_t work, int device,
                           std::uintptr_t stream) {
  cuda::DeviceScope scope(kOp, device);
  const float s = static_cast<float>(1.0 / temperature);
  auto st = reinterpret_cast<cudaStream_t>(stream);
  auto rl = reinterpret_cast<float*>(row_lse);
  auto cl = reinterpret_cast<float*>(col_lse);
  auto wk = reinterpret_cast<float*>(work);
  switch (static_cast<DType>(dtype)) {
    case DType::Float32:
      forward_t(reinterpret_cast<const float*>(a), lda, reinterpret_cast<const float*>(b), ldb, M, P, s, symmetric,
                reduction, reinterpret_cast<float*>(out), rl, cl, wk, st);
      break;
    case DType::Float16:
      forward_t(reinterpret_cast<const __half*>(a), lda, reinterpret_cast<const __half*>(b), ldb, M, P, s, symmetric,
                reduction, reinterpret_cast<__half*>(out), rl, cl, wk, st);
      break;
    case DType::BFloat16:
      forward_t(reinterpret_cast<const __nv_bfloat16*>(a), lda, reinterpret_cast<const __nv_bfloat16*>(b), ldb, M, P,
                s, symmetric, reduction, reinterpret_cast<__nv_bfloat16*>(out), rl, cl, wk, st);
      break;
    default:
      throw ArgumentError(std::string("info_nce: unsupported dtype ") + dtype_name(dtype) + " on CUDA");
  }
}

void info_nce_cuda_backward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P,
                            int dtype, double temperature, bool symmetric, int reduction, std::uintptr_t grad,
                            std::uintptr_t row_lse, std::uintptr_t col_lse, std::uintptr_t da, std::uintptr_t db,
                            std::uintptr_t work, int device, std::uintptr_t stream) {
  cuda::DeviceScope scope(kOp, device);
  const float s = static_cast<float>(1.0 / temperature);
  auto st = reinterpret_cast<cudaStream_t>(stream);
  auto rl = reinterpret_cast<const float*>(row_lse);
  auto cl = reinterpret_cast<const float*>(col_lse);
  auto wk = reinterpret_cast<float*>(work);
  switch (static_cast<DType>(dtype)) {
    case DType::Float32:
      backward_t(reinterpret_cast<const float*>(a), lda, reinterpret_cast<const float*>(b), ldb, M, P, s, symmetric,
                 reduction, reinterpret_cast<const float*>(grad), rl, cl, reinterpret_cast<float*>(da),
                 reinterpret_cast<float*>(db), wk, st);
      break;
    case DType::Float16:
      backward_t(reinterpret_cast<const __half*>(a), lda, reinterpret_cast<const __half*>(b), ldb, M, P, s, symmetric,
                 reduction, reinterpret_cast<const __half*>(grad), rl, cl, reinterpret_cast<__half*>(da),
                 reinterpret_cast<__half*>(db), wk, st);
      break;
    case DType::BFloat16:
      backward_t(reinterpret_cast<const __nv_bfloat16*>(a), lda, reinterpret_cast<const __nv_bfloat16*>(b), ldb, M, P,
                 s, symmetric, reduction, reinterpret_cast<const __nv_bfloat16*>(grad), rl, cl,
                 reinterpret_cast<__nv_bfloat16*>(da), reinterpret_cast<__nv_bfloat16*>(db), wk, st);
      break;
    default:
      throw ArgumentError(std::string("info_nce: unsupported dtype ") + dtype_name(dtype) + " on CUDA");
  }
}

}  // namespace mclner
