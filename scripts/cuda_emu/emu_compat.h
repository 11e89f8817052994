// Force-included (-include) into every hipified csrc/cuda/*.cu of the emulated build
// (scripts/cuda_emulate.sh). Nothing here changes what a kernel computes.
#pragma once
#include "hipcpu_compat.h"  // HIP-CPU kit: the CUDA 9 *_sync warp shuffles

// Launches block until the kernel is done (as CUDA_LAUNCH_BLOCKING=1). In the emulation the
// "device" buffers are the CPU tensors themselves: Python reads (and may free) them as soon as an
// entry point returns, while a HIP-CPU launch is otherwise asynchronous on a runtime thread.
#undef hipLaunchKernelGGL
#define hipLaunchKernelGGL(kernel_name, num_blocks, dim_blocks, group_mem_bytes, stream, ...)            \
  if (true) {                                                                                            \
    ::hip::detail::launch(                                                                               \
        num_blocks, dim_blocks, group_mem_bytes, stream,                                                 \
        [=](auto&&... xs) noexcept { kernel_name(std::forward<decltype(xs)>(xs)...); },                  \
        std::make_tuple(__VA_ARGS__));                                                                   \
    (void)hipDeviceSynchronize();                                                                        \
  } else                                                                                                 \
    ((void)0)

// Likewise for the asynchronous memset (the next launch would wait for it, but an entry point may
// end with one).
#define hipMemsetAsync(dst, value, bytes, stream) hipMemset((dst), (value), (bytes))
