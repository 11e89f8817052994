// CUDA kernels for info_nce (stub: filled in by the op's implementation).
#include <cuda_runtime.h>
