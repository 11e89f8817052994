// Build probe for the CUDA module: runtime version and device count (no kernels needed).
#include <cuda_runtime.h>

#include <string>

namespace mclner {

int cuda_runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

int cuda_device_count(std::string* error) {
  int n = 0;
  cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess) {
    if (error) *error = cudaGetErrorString(st);
    cudaGetLastError();  // clear the sticky-free error state
    return 0;
  }
  return n;
}

}  // namespace mclner
