// pybind11 glue for the biaffine CUDA kernels: validation here (plain C++), launches in biaffine.cu.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mclner/common.h"
#include "mclner/op_checks.h"

namespace py = pybind11;

namespace mclner {

// csrc/cuda/biaffine.cu
void biaffine_cuda_forward(std::uintptr_t P, const int64_t* sP, std::uintptr_t r, const int64_t* sR,
                           std::uintptr_t he, const int64_t* sHe, std::uintptr_t S, int64_t B, int64_t N, int64_t Db,
                           int64_t C, int dtype, int device, std::uintptr_t stream);
void biaffine_cuda_backward(std::uintptr_t dS, const int64_t* sdS, std::uintptr_t P, const int64_t* sP,
                            std::uintptr_t he, const int64_t* sHe, std::uintptr_t dP, std::uintptr_t dr,
                            std::uintptr_t dhe, int64_t B, int64_t N, int64_t Db, int64_t C, int dtype, int device,
                            std::uintptr_t stream, bool need_dP, bool need_dhe);

namespace {

constexpr const char* kOp = "biaffine";

void check_strides(const std::vector<int64_t>& s, size_t n, const char* arg) {
  require(s.size() == n, std::string(kOp) + ": argument '" + arg + "' must hold " + std::to_string(n) +
                             " strides, got " + std::to_string(s.size()));
  for (int64_t v : s) require(v >= 0, std::string(kOp) + ": argument '" + arg + "' has a negative stride");
}

void check_common(int64_t B, int64_t N, int64_t Db, int64_t C, int dtype, int device) {
  checks::biaffine_sizes(kOp, B, N, Db, C);
  require(device >= 0, std::string(kOp) + ": argument 'device' must be a CUDA device index, got " +
                           std::to_string(device));
  require(dtype == int(DType::Float32) || dtype == int(DType::Float16) || dtype == int(DType::BFloat16),
          std::string(kOp) + ": argument 'dtype' must be float32 (0), float16 (2) or bfloat16 (3) on CUDA, got " +
              std::to_string(dtype) + " (" + dtype_name(dtype) + ")");
  require(B * N <= (int64_t(1) << 40) / (N * C), std::string(kOp) + ": sizes B, N, C are too large");
}

void forward(std::uintptr_t P, const std::vector<int64_t>& P_strides, std::uintptr_t r,
             const std::vector<int64_t>& r_strides, std::uintptr_t he, const std::vector<int64_t>& he_strides,
             std::uintptr_t S, int64_t B, int64_t N, int64_t Db, int64_t C, int dtype, int device,
             std::uintptr_t stream) {
  check_common(B, N, Db, C, dtype, device);
  checks::biaffine_forward_ptrs(kOp, P, r, he, S);
  check_strides(P_strides, 4, "P_strides");
  check_strides(r_strides, 3, "r_strides");
  check_strides(he_strides, 3, "he_strides");
  py::gil_scoped_release nogil;
  biaffine_cuda_forward(P, P_strides.data(), r, r_strides.data(), he, he_strides.data(), S, B, N, Db, C, dtype,
                        device, stream);
}

void backward(std::uintptr_t dS, const std::vector<int64_t>& dS_strides, std::uintptr_t P,
              const std::vector<int64_t>& P_strides, std::uintptr_t he, const std::vector<int64_t>& he_strides,
              std::uintptr_t dP, std::uintptr_t dr, std::uintptr_t dhe, int64_t B, int64_t N, int64_t Db, int64_t C,
              int dtype, int device, std::uintptr_t stream, bool need_dP, bool need_dhe) {
  check_common(B, N, Db, C, dtype, device);
  checks::biaffine_backward_ptrs(kOp, dS, P, he, dP, dr, dhe, need_dP, need_dhe);
  check_strides(dS_strides, 4, "dS_strides");
  check_strides(P_strides, 4, "P_strides");
  check_strides(he_strides, 3, "he_strides");
  py::gil_scoped_release nogil;
  biaffine_cuda_backward(dS, dS_strides.data(), P, P_strides.data(), he, he_strides.data(), dP, dr, dhe, B, N, Db, C,
                         dtype, device, stream, need_dP, need_dhe);
}

}  // namespace

void register_biaffine_cuda(py::module_& m) {
  using namespace pybind11::literals;
  m.def("biaffine_forward", &forward,
        "Biaffine pair pass S[b,i,j,c] = P[b,i,c,:]·he[b,j,:] + r[b,i,c] into a contiguous [B,N,N,C] S "
        "(float32/float16/bfloat16, fp32 accumulation) on `stream` of `device`",
        "P"_a, "P_strides"_a, "r"_a, "r_strides"_a, "he"_a, "he_strides"_a, "S"_a, "B"_a, "N"_a, "Db"_a, "C"_a,
        "dtype"_a, "device"_a, "stream"_a);
  m.def("biaffine_backward", &backward,
        "Biaffine pair-pass backward: dP = Σ_j dS·he_j and dr = Σ_j dS (need_dP), dhe = Σ_{i,c} dS·P "
        "(need_dhe); contiguous outputs, on `stream` of `device`",
        "dS"_a, "dS_strides"_a, "P"_a, "P_strides"_a, "he"_a, "he_strides"_a, "dP"_a, "dr"_a, "dhe"_a, "B"_a, "N"_a,
        "Db"_a, "C"_a, "dtype"_a, "device"_a, "stream"_a, "need_dP"_a, "need_dhe"_a);
}

}  // namespace mclner
