// One instruction-set scheme for the four CPU kernels (biaffine, cln_head, info_nce, sup_con).
//
// Each kernel is compiled for AVX-512, AVX2+FMA and baseline x86-64 in the same module and picks one
// copy per call: level 2 = "avx512" (AVX-512 F, DQ, VL), 1 = "avx2" (AVX2 + FMA), 0 = "generic"
// (no ISA-specific code). Every bound kernel function takes `isa` (-1 = auto); auto is the best level
// this CPU supports, capped by the environment variable MCLNER_CPU_ISA=generic|avx2|avx512 (read per
// call, so tests and users can force the slower copies of all four kernels at once).
#pragma once

#include <cstdlib>
#include <string>

#include "mclner/common.h"

namespace mclner {
namespace cpu_isa {

enum Level : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* name(int level) {
  switch (level) {
    case kAvx512: return "avx512";
    case kAvx2: return "avx2";
    default: return "generic";
  }
}

// Highest level this CPU (and this compiler) supports.
inline int best() {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return kAvx512;
  if (avx2) return kAvx2;
#endif
  return kGeneric;
}

// The cap set by MCLNER_CPU_ISA (kAvx512 when unset or empty); any other value is an error.
inline int env_cap() {
  const char* env = std::getenv("MCLNER_CPU_ISA");
  const std::string v = env ? env : "";
  if (v.empty() || v == "avx512") return kAvx512;
  if (v == "avx2") return kAvx2;
  if (v == "generic") return kGeneric;
  throw ArgumentError("MCLNER_CPU_ISA must be one of generic, avx2, avx512 (or unset), got '" + v + "'");
}

// The level a kernel of `op` runs: -1 = auto (best, capped by MCLNER_CPU_ISA), else the level asked
// for, which this CPU must support.
inline int resolve(const char* op, int requested) {
  require(requested >= -1 && requested <= kAvx512,
          std::string(op) + ": argument 'isa' must be -1 (auto), 0 (generic), 1 (avx2) or 2 (avx512), got " +
              std::to_string(requested));
  const int top = best();
  if (requested == -1) {
    const int cap = env_cap();
    return cap < top ? cap : top;
  }
  require(requested <= top, std::string(op) + ": argument 'isa' = " + std::to_string(requested) + " (" +
                                name(requested) + ") is not supported by this CPU (best: " + name(top) + ")");
  return requested;
}

}  // namespace cpu_isa
}  // namespace mclner
