// CUDA kernels for cln_head (stub: filled in by the op's implementation).
#include <cuda_runtime.h>
