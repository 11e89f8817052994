// Argument checks that the CPU bindings (csrc/cpu/*.cpp) and the CUDA bindings (csrc/cuda/*_bind.cpp)
// of each op share: pointers, sizes, strides and scalars, with one message each. What differs per side
// (dtype codes, thread count or device, workspace, size limits) stays with the binding. Plain C++.
#pragma once

#include <cstdint>
#include <string>

#include "mclner/common.h"

namespace mclner {
namespace checks {

inline void temperature(const char* op, double t) {
  require_finite(t, op, "temperature");
  require(t > 0.0, std::string(op) + ": argument 'temperature' must be positive, got " + std::to_string(t));
}

inline void row_stride(const char* op, const char* arg, int64_t ld, int64_t P) {
  require(ld >= P, std::string(op) + ": argument '" + arg + "' must be >= P, got " + std::to_string(ld));
}

// ---------------------------------------------------------------- biaffine
inline void biaffine_sizes(const char* op, int64_t B, int64_t N, int64_t Db, int64_t C) {
  require_positive(B, op, "B");
  require_positive(N, op, "N");
  require_positive(Db, op, "Db");
  require_positive(C, op, "C");
}

inline void biaffine_forward_ptrs(const char* op, std::uintptr_t P, std::uintptr_t r, std::uintptr_t he,
                                  std::uintptr_t S) {
  require_ptr(P, op, "P");
  require_ptr(r, op, "r");
  require_ptr(he, op, "he");
  require_ptr(S, op, "S");
}

inline void biaffine_backward_ptrs(const char* op, std::uintptr_t dS, std::uintptr_t P, std::uintptr_t he,
                                   std::uintptr_t dP, std::uintptr_t dr, std::uintptr_t dhe, bool need_dP,
                                   bool need_dhe) {
  require_ptr(dS, op, "dS");
  if (need_dP) {
    require_ptr(he, op, "he");
    require_ptr(dP, op, "dP");
    require_ptr(dr, op, "dr");
  }
  if (need_dhe) {
    require_ptr(P, op, "P");
    require_ptr(dhe, op, "dhe");
  }
}

// ---------------------------------------------------------------- cln_head
inline void cln_head_sizes(const char* op, int64_t B, int64_t N, int64_t D, int64_t H, int64_t C) {
  require_positive(B, op, "B");
  require_positive(N, op, "N");
  require_positive(D, op, "D");
  require_positive(H, op, "H");
  require_positive(C, op, "C");
}

inline void cln_head_forward_ptrs(const char* op, std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n,
                                  std::uintptr_t W1, std::uintptr_t W2, std::uintptr_t b2, std::uintptr_t S) {
  require_ptr(gamma, op, "gamma");
  require_ptr(u, op, "u");
  require_ptr(n, op, "n");
  require_ptr(W1, op, "W1");
  require_ptr(W2, op, "W2");
  require_ptr(b2, op, "b2");
  require_ptr(S, op, "S");
}

inline void cln_head_backward_ptrs(const char* op, std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n,
                                   std::uintptr_t W1, std::uintptr_t W2, std::uintptr_t dS, std::uintptr_t dgamma,
                                   std::uintptr_t du, std::uintptr_t dn, std::uintptr_t dW1, std::uintptr_t dW2) {
  require_ptr(gamma, op, "gamma");
  require_ptr(u, op, "u");
  require_ptr(n, op, "n");
  require_ptr(W1, op, "W1");
  require_ptr(W2, op, "W2");
  require_ptr(dS, op, "dS");
  require_ptr(dgamma, op, "dgamma");
  require_ptr(du, op, "du");
  require_ptr(dn, op, "dn");
  require_ptr(dW1, op, "dW1");
  require_ptr(dW2, op, "dW2");
}

// ---------------------------------------------------------------- info_nce
// The views a, b [M, P] (row strides lda, ldb).
inline void info_nce_views(const char* op, std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M,
                           int64_t P) {
  require_ptr(a, op, "a");
  require_ptr(b, op, "b");
  require_positive(M, op, "M");
  require_positive(P, op, "P");
  row_stride(op, "lda", lda, P);
  row_stride(op, "ldb", ldb, P);
}

inline void info_nce_scalars(const char* op, double temp, int reduction, int mean, int none) {
  temperature(op, temp);
  require(reduction >= mean && reduction <= none,
          std::string(op) + ": argument 'reduction' must be 0 (mean), 1 (sum) or 2 (none), got " +
              std::to_string(reduction));
}

inline void info_nce_backward_ptrs(const char* op, std::uintptr_t grad, std::uintptr_t da, std::uintptr_t db) {
  require_ptr(grad, op, "grad");
  require_ptr(da, op, "da");
  require_ptr(db, op, "db");
}

// ---------------------------------------------------------------- sup_con
inline void sup_con_sizes(const char* op, int64_t M, int64_t N, int64_t P) {
  require_positive(M, op, "M");
  require_positive(N, op, "N");
  require_positive(P, op, "P");
}

inline void sup_con_forward_ptrs(const char* op, std::uintptr_t lse, std::uintptr_t pos, std::uintptr_t cnt) {
  require_ptr(lse, op, "lse");
  require_ptr(pos, op, "pos");
  require_ptr(cnt, op, "cnt");
}

// The anchor arrays (w, c, lse) of the row terms (x's rows) and of the column terms (y's rows).
inline void sup_con_backward_ptrs(const char* op, bool row_terms, bool col_terms, std::uintptr_t w_x,
                                  std::uintptr_t c_x, std::uintptr_t lse_x, std::uintptr_t w_y, std::uintptr_t c_y,
                                  std::uintptr_t lse_y, std::uintptr_t dx) {
  require(row_terms || col_terms, std::string(op) + ": at least one of 'row_terms', 'col_terms' must be set");
  if (row_terms) {
    require_ptr(w_x, op, "w_x");
    require_ptr(c_x, op, "c_x");
    require_ptr(lse_x, op, "lse_x");
  }
  if (col_terms) {
    require_ptr(w_y, op, "w_y");
    require_ptr(c_y, op, "c_y");
    require_ptr(lse_y, op, "lse_y");
  }
  require_ptr(dx, op, "dx");
}

}  // namespace checks
}  // namespace mclner
