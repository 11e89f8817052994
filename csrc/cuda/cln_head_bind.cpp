// pybind11 glue for the cln_head CUDA kernels (plain C++; the kernels live in cln_head.cu).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "mclner/common.h"
#include "mclner/op_checks.h"

namespace py = pybind11;

namespace mclner {

void cln_head_cuda_forward(const float* gamma, const float* u, const float* n, const float* W1, const float* W2,
                           const float* b2, void* S, float* ws, int64_t B, int64_t N, int64_t D, int64_t H,
                           int64_t C, int64_t chunk, int dtype, int device, void* stream);
void cln_head_cuda_backward(const float* gamma, const float* u, const float* n, const float* W1, const float* W2,
                            const void* dS, float* dgamma, float* du, float* dn, float* dW1, float* dW2, float* ws,
                            int64_t B, int64_t N, int64_t D, int64_t H, int64_t C, int64_t chunk, int dtype,
                            int device, void* stream);

namespace {

constexpr const char* OP = "cln_head";

void check_common(int64_t B, int64_t N, int64_t D, int64_t H, int64_t C, int64_t chunk, int dtype, int device) {
  checks::cln_head_sizes(OP, B, N, D, H, C);
  require_positive(chunk, OP, "chunk");
  require(chunk <= N, std::string(OP) + ": argument 'chunk' must be <= N, got " + std::to_string(chunk));
  require(dtype == int(DType::Float32) || dtype == int(DType::BFloat16) || dtype == int(DType::Float16),
          std::string(OP) + ": argument 'dtype' must be float32 (0), float16 (2) or bfloat16 (3) on CUDA, got code " +
              std::to_string(dtype) + " (" + dtype_name(dtype) + ")");
  require(device >= 0, std::string(OP) + ": argument 'device' must be a CUDA device index, got " +
                           std::to_string(device));
}

template <class T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void forward(std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n, std::uintptr_t W1, std::uintptr_t W2,
             std::uintptr_t b2, std::uintptr_t S, std::uintptr_t ws, int64_t B, int64_t N, int64_t D, int64_t H,
             int64_t C, int64_t chunk, int dtype, int device, std::uintptr_t stream) {
  checks::cln_head_forward_ptrs(OP, gamma, u, n, W1, W2, b2, S);
  require_ptr(ws, OP, "workspace");
  check_common(B, N, D, H, C, chunk, dtype, device);
  py::gil_scoped_release nogil;
  cln_head_cuda_forward(ptr<const float>(gamma), ptr<const float>(u), ptr<const float>(n), ptr<const float>(W1),
                        ptr<const float>(W2), ptr<const float>(b2), ptr<void>(S), ptr<float>(ws), B, N, D, H, C,
                        chunk, dtype, device, ptr<void>(stream));
}

void backward(std::uintptr_t gamma, std::uintptr_t u, std::uintptr_t n, std::uintptr_t W1, std::uintptr_t W2,
              std::uintptr_t dS, std::uintptr_t dgamma, std::uintptr_t du, std::uintptr_t dn, std::uintptr_t dW1,
              std::uintptr_t dW2, std::uintptr_t ws, int64_t B, int64_t N, int64_t D, int64_t H, int64_t C,
              int64_t chunk, int dtype, int device, std::uintptr_t stream) {
  checks::cln_head_backward_ptrs(OP, gamma, u, n, W1, W2, dS, dgamma, du, dn, dW1, dW2);
  require_ptr(ws, OP, "workspace");
  check_common(B, N, D, H, C, chunk, dtype, device);
  py::gil_scoped_release nogil;
  cln_head_cuda_backward(ptr<const float>(gamma), ptr<const float>(u), ptr<const float>(n), ptr<const float>(W1),
                         ptr<const float>(W2), ptr<const void>(dS), ptr<float>(dgamma), ptr<float>(du),
                         ptr<float>(dn), ptr<float>(dW1), ptr<float>(dW2), ptr<float>(ws), B, N, D, H, C, chunk,
                         dtype, device, ptr<void>(stream));
}

}  // namespace

void register_cln_head_cuda(py::module_& m) {
  m.def("cln_head_forward", &forward, py::arg("gamma"), py::arg("u"), py::arg("n"), py::arg("W1"), py::arg("W2"),
        py::arg("b2"), py::arg("S"), py::arg("workspace"), py::arg("B"), py::arg("N"), py::arg("D"), py::arg("H"),
        py::arg("C"), py::arg("chunk"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
        "cln_head core forward on CUDA `device`, on `stream`. float32 gamma/u/n/W1/W2/b2 (contiguous), S[B,N,N,C] in `dtype`; "
        "workspace: float32 [B*chunk*N*H].");
  m.def("cln_head_backward", &backward, py::arg("gamma"), py::arg("u"), py::arg("n"), py::arg("W1"),
        py::arg("W2"), py::arg("dS"), py::arg("dgamma"), py::arg("du"), py::arg("dn"), py::arg("dW1"),
        py::arg("dW2"), py::arg("workspace"), py::arg("B"), py::arg("N"), py::arg("D"), py::arg("H"), py::arg("C"),
        py::arg("chunk"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
        "cln_head core backward on CUDA `device`, on `stream`: float32 dgamma, du, dn, dW1 (core part), dW2; dS in `dtype`; "
        "workspace: float32 [2*B*chunk*N*H].");
}

}  // namespace mclner
