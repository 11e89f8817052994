#!/usr/bin/env python
"""Registers, spills and shared memory of every GPU kernel, compiled here without a GPU.

Every Triton kernel of every op (forward and backward, each variant) with every configuration its
launcher can choose at the GPU benchmark and default training shapes (the default and the autotune
candidates), float32/float16/bfloat16, for sm_80 and sm_90; then the kernels of the built CUDA module.
One table row per kernel x dtype x arch x configuration; exit 1 if any row spills or overflows shared
memory. The test suite runs the focused `--ci` list (tests/ops/test_triton_compile.py).

usage: python scripts/gpu_resources.py [--ci] [--archs 80 90] [--dtypes fp32 fp16 bf16] [--ops ...]
                                       [--defaults-only] [--jobs N] [--markdown FILE] [--json FILE]
About 3 minutes for the full sweep on 16 cores; it runs the installed mclner (its kernels).
"""

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # compile the kernels, not their interpreted form

from mclner.kernels._resources import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
