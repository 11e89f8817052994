// Shared by every csrc/cuda/*.cu: storage-type conversions, launch/call error checks and the
// device scope every host entry point opens. CUDA only (the CPU kernels never include it).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "mclner/common.h"

namespace mclner {
namespace cuda {

// Storage type <-> fp32 (every kernel accumulates in fp32; stores round to nearest even).
// `static`: one copy per .cu, whatever `__forceinline__` expands to (HIP-CPU drops the `inline` in
// builds without NDEBUG, which would make these duplicate definitions at link time).
static __device__ __forceinline__ float to_f(float x) { return x; }
static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
static __device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// After a launch: a bad configuration (grid, block, shared memory) is reported here, synchronously.
inline void check_launch(const char* op, const char* what) {
  const cudaError_t st = cudaGetLastError();
  if (st != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": CUDA launch of " + what + " failed: " + cudaGetErrorString(st));
}

inline void check_call(const char* op, cudaError_t st, const char* what) {
  if (st != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so that later calls are not blamed for it
    throw std::runtime_error(std::string(op) + ": " + what + " failed: " + cudaGetErrorString(st));
  }
}

// Grid limits the launchers check (or tile over) before launching.
constexpr int64_t kMaxGridX = (int64_t(1) << 31) - 1;
constexpr int64_t kMaxGridYZ = 65535;

// Every host entry point runs on `device` and gives the caller's current device back on exit
// (including by exception), so a call never changes the thread's current device behind torch.
class DeviceScope {
 public:
  DeviceScope(const char* op, int device) : op_(op) {
    check_call(op_, cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check_call(op_, cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_ && prev_ >= 0) cudaSetDevice(prev_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  const char* op_;
  int prev_ = -1;
};

}  // namespace cuda
}  // namespace mclner
