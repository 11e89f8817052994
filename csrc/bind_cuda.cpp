// The CUDA module mclner._cuda: built when nvcc is found; imported only when asked for.
// scripts/cuda_emulate.sh builds the same sources against HIP-CPU as mclner._cuda_emu (the kernels
// run on the CPU, for tests): it sets the module name and the emulator's name below.
#include <pybind11/pybind11.h>

#include <string>

#include "mclner/bind_util.h"

namespace py = pybind11;

namespace mclner {
// csrc/cuda/probe.cu
int cuda_runtime_version();
int cuda_device_count(std::string* error);
void register_biaffine_cuda(py::module_& m);
void register_cln_head_cuda(py::module_& m);
void register_info_nce_cuda(py::module_& m);
void register_sup_con_cuda(py::module_& m);
}  // namespace mclner

#ifndef MCLNER_CUDA_MODULE
#define MCLNER_CUDA_MODULE _cuda
#endif
#ifndef MCLNER_CUDA_EMULATOR
#define MCLNER_CUDA_EMULATOR ""
#endif

PYBIND11_MODULE(MCLNER_CUDA_MODULE, m) {
  m.doc() = "mclner fused CUDA kernels (raw pointers, sizes, strides and a stream; no libtorch)";
  mclner::register_exceptions(m);
  m.attr("architectures") = MCLNER_CUDA_ARCHS;
  // '' for a real CUDA build; the emulator's name when the kernels run on the CPU (CPU pointers).
  m.attr("emulator") = MCLNER_CUDA_EMULATOR;
  m.def("runtime_version", &mclner::cuda_runtime_version, "CUDA runtime version the module was built with");
  m.def("device_count", []() {
    std::string err;
    int n = mclner::cuda_device_count(&err);
    return py::make_tuple(n, err);
  }, "(number of visible CUDA devices, error string or '')");
  mclner::register_biaffine_cuda(m);
  mclner::register_cln_head_cuda(m);
  mclner::register_info_nce_cuda(m);
  mclner::register_sup_con_cuda(m);
}
