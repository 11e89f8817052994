// pybind11 glue for the info_nce CUDA kernels: validation here (plain C++), launches in info_nce.cu.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "mclner/common.h"
#include "mclner/info_nce_tile.h"
#include "mclner/op_checks.h"

namespace py = pybind11;

namespace mclner {

// csrc/cuda/info_nce.cu
void info_nce_cuda_forward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P,
                           int dtype, double temperature, bool symmetric, int reduction, std::uintptr_t out,
                           std::uintptr_t row_lse, std::uintptr_t col_lse, std::uintptr_t work, int device,
                           std::uintptr_t stream);
void info_nce_cuda_backward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P,
                            int dtype, double temperature, bool symmetric, int reduction, std::uintptr_t grad,
                            std::uintptr_t row_lse, std::uintptr_t col_lse, std::uintptr_t da, std::uintptr_t db,
                            std::uintptr_t work, int device, std::uintptr_t stream);

namespace {

constexpr const char* kOp = "info_nce";

void validate(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
              double temperature, bool symmetric, int reduction, std::uintptr_t row_lse, std::uintptr_t col_lse,
              std::uintptr_t work, int device) {
  checks::info_nce_views(kOp, a, lda, b, ldb, M, P);
  require(M <= (int64_t(1) << 40) / P, std::string(kOp) + ": sizes M, P are too large");
  require(dtype == int(DType::Float32) || dtype == int(DType::Float16) || dtype == int(DType::BFloat16),
          std::string(kOp) + ": argument 'dtype' must be float32 (0), float16 (2) or bfloat16 (3) on CUDA, got " +
              std::to_string(dtype) + " (" + dtype_name(dtype) + ")");
  checks::info_nce_scalars(kOp, temperature, reduction, info_nce::kMean, info_nce::kNone);
  require_ptr(row_lse, kOp, "row_lse");
  if (symmetric) require_ptr(col_lse, kOp, "col_lse");
  require_ptr(work, kOp, "work");
  require(device >= 0,
          std::string(kOp) + ": argument 'device' must be a CUDA device index, got " + std::to_string(device));
}

void forward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
             double temperature, bool symmetric, int reduction, std::uintptr_t out, std::uintptr_t row_lse,
             std::uintptr_t col_lse, std::uintptr_t work, int device, std::uintptr_t stream) {
  validate(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, row_lse, col_lse, work, device);
  require_ptr(out, kOp, "out");
  py::gil_scoped_release nogil;
  info_nce_cuda_forward(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, out, row_lse, col_lse, work,
                        device, stream);
}

void backward(std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, int64_t M, int64_t P, int dtype,
              double temperature, bool symmetric, int reduction, std::uintptr_t grad, std::uintptr_t row_lse,
              std::uintptr_t col_lse, std::uintptr_t da, std::uintptr_t db, std::uintptr_t work, int device,
              std::uintptr_t stream) {
  validate(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, row_lse, col_lse, work, device);
  checks::info_nce_backward_ptrs(kOp, grad, da, db);
  py::gil_scoped_release nogil;
  info_nce_cuda_backward(a, lda, b, ldb, M, P, dtype, temperature, symmetric, reduction, grad, row_lse, col_lse, da,
                         db, work, device, stream);
}

}  // namespace

void register_info_nce_cuda(py::module_& m) {
  m.def("info_nce_forward", &forward, py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"), py::arg("M"),
        py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("symmetric"), py::arg("reduction"),
        py::arg("out"), py::arg("row_lse"), py::arg("col_lse"), py::arg("work"), py::arg("device"),
        py::arg("stream"),
        "Fused InfoNCE forward on the normalised a, b [M, P] (row strides lda/ldb, unit column stride) on "
        "`stream`: writes the loss to out ([M] for reduction 2 = none, else [1]) and the fp32 log-sum-exps "
        "row_lse (and col_lse when symmetric) [M]; work is an fp32 workspace [M]. Never stores M×M.");
  m.def("info_nce_backward", &backward, py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"), py::arg("M"),
        py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("symmetric"), py::arg("reduction"),
        py::arg("grad"), py::arg("row_lse"), py::arg("col_lse"), py::arg("da"), py::arg("db"), py::arg("work"),
        py::arg("device"), py::arg("stream"),
        "Fused InfoNCE backward: recomputes the logits tile by tile from the saved log-sum-exps and writes the "
        "gradients w.r.t. the normalised a, b into contiguous da, db [M, P]; work is fp32 [M + M·P].");
}

}  // namespace mclner
