// Shared definitions for the mclner native kernels (CPU and CUDA).
//
// The extension never links against libtorch: Python passes raw data pointers (as integers),
// sizes, strides, a dtype code and, for CUDA, a stream handle. Everything here compiles with a
// plain C++17 compiler and with nvcc, so the per-tile arithmetic in the *_tile.h headers is the
// same code on both sides.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define MCLNER_HD __host__ __device__ __forceinline__
#else
#define MCLNER_HD inline
#endif

namespace mclner {

// dtype codes shared with mclner/_native.py (keep in sync).
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

inline const char* dtype_name(int code) {
  switch (code) {
    case 0: return "float32";
    case 1: return "float64";
    case 2: return "float16";
    case 3: return "bfloat16";
    default: return "unknown";
  }
}

// Raised for bad arguments; the bindings translate it to Python's ValueError.
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

inline void require(bool ok, const std::string& what) {
  if (!ok) throw ArgumentError(what);
}

inline void require_ptr(std::uintptr_t p, const char* op, const char* arg) {
  require(p != 0, std::string(op) + ": argument '" + arg + "' is a null pointer");
}

inline void require_positive(int64_t v, const char* op, const char* arg) {
  require(v > 0, std::string(op) + ": size '" + arg + "' must be positive, got " + std::to_string(v));
}

inline void require_finite(double v, const char* op, const char* arg) {
  require(std::isfinite(v), std::string(op) + ": argument '" + arg + "' must be finite, got " + std::to_string(v));
}

// Exact (erf) GELU and its derivative, as torch.nn.functional.gelu(approximate="none").
MCLNER_HD float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }
MCLNER_HD double gelu(double x) { return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440)); }
MCLNER_HD float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
  const float pdf = 0.39894228040143267794f * expf(-0.5f * x * x);
  return cdf + x * pdf;
}
MCLNER_HD double gelu_grad(double x) {
  const double cdf = 0.5 * (1.0 + erf(x * 0.70710678118654752440));
  const double pdf = 0.39894228040143267794 * exp(-0.5 * x * x);
  return cdf + x * pdf;
}

}  // namespace mclner
