// CUDA kernels for biaffine (stub: filled in by the op's implementation).
#include <cuda_runtime.h>
