// pybind11 glue for the sup_con CUDA kernels: validation here (plain C++), launches in sup_con.cu.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "mclner/common.h"
#include "mclner/op_checks.h"

namespace py = pybind11;

namespace mclner {

// csrc/cuda/sup_con.cu
void sup_con_cuda_forward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N,
                          int64_t P, int dtype, double temperature, bool one_set, std::uintptr_t lab_x,
                          std::uintptr_t lab_y, std::uintptr_t lse, std::uintptr_t pos, std::uintptr_t cnt, int device,
                          std::uintptr_t stream);
void sup_con_cuda_backward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N,
                           int64_t P, int dtype, double temperature, bool one_set, std::uintptr_t lab_x,
                           std::uintptr_t lab_y, bool row_terms, bool col_terms, std::uintptr_t w_x,
                           std::uintptr_t c_x, std::uintptr_t lse_x, std::uintptr_t w_y, std::uintptr_t c_y,
                           std::uintptr_t lse_y, std::uintptr_t dx, std::uintptr_t work, int device,
                           std::uintptr_t stream);

namespace {

constexpr const char* kOp = "sup_con";

void validate(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N, int64_t P,
              int dtype, double temperature, bool one_set, std::uintptr_t lab_x, std::uintptr_t lab_y, int device) {
  require_ptr(x, kOp, "x");
  require_ptr(y, kOp, "y");
  require_ptr(lab_x, kOp, "lab_x");
  require_ptr(lab_y, kOp, "lab_y");
  checks::sup_con_sizes(kOp, M, N, P);
  checks::row_stride(kOp, "ldx", ldx, P);
  checks::row_stride(kOp, "ldy", ldy, P);
  if (one_set)
    require(N == M && x == y && lab_x == lab_y,
            std::string(kOp) + ": one-set form needs N == M and the same x/y and label arrays");
  require(M <= (int64_t(1) << 40) / P && N <= (int64_t(1) << 40) / P, std::string(kOp) + ": sizes M, N, P are too large");
  require(dtype == int(DType::Float32) || dtype == int(DType::Float16) || dtype == int(DType::BFloat16),
          std::string(kOp) + ": argument 'dtype' must be float32 (0), float16 (2) or bfloat16 (3) on CUDA, got " +
              std::to_string(dtype) + " (" + dtype_name(dtype) + ")");
  checks::temperature(kOp, temperature);
  require(device >= 0,
          std::string(kOp) + ": argument 'device' must be a CUDA device index, got " + std::to_string(device));
}

void forward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N, int64_t P,
             int dtype, double temperature, bool one_set, std::uintptr_t lab_x, std::uintptr_t lab_y,
             std::uintptr_t lse, std::uintptr_t pos, std::uintptr_t cnt, int device, std::uintptr_t stream) {
  validate(x, ldx, y, ldy, M, N, P, dtype, temperature, one_set, lab_x, lab_y, device);
  checks::sup_con_forward_ptrs(kOp, lse, pos, cnt);
  py::gil_scoped_release nogil;
  sup_con_cuda_forward(x, ldx, y, ldy, M, N, P, dtype, temperature, one_set, lab_x, lab_y, lse, pos, cnt, device,
                       stream);
}

void backward(std::uintptr_t x, int64_t ldx, std::uintptr_t y, int64_t ldy, int64_t M, int64_t N, int64_t P,
              int dtype, double temperature, bool one_set, std::uintptr_t lab_x, std::uintptr_t lab_y, bool row_terms,
              bool col_terms, std::uintptr_t w_x, std::uintptr_t c_x, std::uintptr_t lse_x, std::uintptr_t w_y,
              std::uintptr_t c_y, std::uintptr_t lse_y, std::uintptr_t dx, std::uintptr_t work, int device,
              std::uintptr_t stream) {
  validate(x, ldx, y, ldy, M, N, P, dtype, temperature, one_set, lab_x, lab_y, device);
  checks::sup_con_backward_ptrs(kOp, row_terms, col_terms, w_x, c_x, lse_x, w_y, c_y, lse_y, dx);
  require_ptr(work, kOp, "work");
  py::gil_scoped_release nogil;
  sup_con_cuda_backward(x, ldx, y, ldy, M, N, P, dtype, temperature, one_set, lab_x, lab_y, row_terms, col_terms, w_x,
                        c_x, lse_x, w_y, c_y, lse_y, dx, work, device, stream);
}

}  // namespace

void register_sup_con_cuda(py::module_& m) {
  m.def("sup_con_forward", &forward, py::arg("x"), py::arg("ldx"), py::arg("y"), py::arg("ldy"), py::arg("M"),
        py::arg("N"), py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("one_set"), py::arg("lab_x"),
        py::arg("lab_y"), py::arg("lse"), py::arg("pos"), py::arg("cnt"), py::arg("device"), py::arg("stream"),
        "Fused sup_con forward on `stream`: normalised anchors x [M, P] and candidates y [N, P] (row strides "
        "ldx/ldy, unit column stride; one_set: y is x, the pair i = k left out), int32 label ids lab_x [M], "
        "lab_y [N]. Writes per anchor the fp32 log-sum-exp, sum of positive logits and positive count [M]. "
        "Never stores the M×N logits.");
  m.def("sup_con_backward", &backward, py::arg("x"), py::arg("ldx"), py::arg("y"), py::arg("ldy"), py::arg("M"),
        py::arg("N"), py::arg("P"), py::arg("dtype"), py::arg("temperature"), py::arg("one_set"), py::arg("lab_x"),
        py::arg("lab_y"), py::arg("row_terms"), py::arg("col_terms"), py::arg("w_x"), py::arg("c_x"),
        py::arg("lse_x"), py::arg("w_y"), py::arg("c_y"), py::arg("lse_y"), py::arg("dx"), py::arg("work"),
        py::arg("device"), py::arg("stream"),
        "Fused sup_con backward for the rows of x: recomputes the logits tile by tile and writes into contiguous "
        "dx [M, P] the gradient of the anchor terms of x's rows (row_terms: fp32 w_x, c_x, lse_x [M]) and/or of "
        "y's rows (col_terms: w_y, c_y, lse_y [N]); work is an fp32 workspace [M·P].");
}

}  // namespace mclner
