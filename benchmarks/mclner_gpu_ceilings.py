"""Measured ceilings of the GPU at hand: dense matrix-product rate and device-memory bandwidth.

The benchmark table's achieved TFLOP/s is read against these (METHOD: measure the two ceilings once
on the device, do not trust datasheets). Prints one JSON object; `--out PATH` also writes it.
"""

from __future__ import annotations

import argparse
import json

import torch


def _time_ms(fn, warmup: int = 3, reps: int = 10) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def matmul_tflops(dtype: torch.dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)  # random data: zeros run faster than real data
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = _time_ms(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_gbps(nbytes: int = 4 << 30) -> float:
    src = torch.empty(nbytes // 4, device="cuda", dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    ms = _time_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9  # bytes read + bytes written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("mclner_gpu_ceilings: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {
        "device": torch.cuda.get_device_name(),
        "bf16_matmul_tflops": matmul_tflops(torch.bfloat16),
        "fp32_matmul_tflops": matmul_tflops(torch.float32),
        "copy_gbps": copy_gbps(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
