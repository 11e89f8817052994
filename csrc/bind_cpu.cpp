// The CPU module mclner._C: always built, never depends on CUDA.
#include <pybind11/pybind11.h>

#include <string>

#include "mclner/bind_util.h"
#include "mclner/cpu_isa.h"

namespace py = pybind11;

namespace mclner {
void register_biaffine_cpu(py::module_& m);
void register_cln_head_cpu(py::module_& m);
void register_info_nce_cpu(py::module_& m);
void register_sup_con_cpu(py::module_& m);
}  // namespace mclner

PYBIND11_MODULE(_C, m) {
  m.doc() = "mclner fused CPU kernels (raw pointers, sizes and strides; no libtorch)";
  mclner::register_exceptions(m);
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  mclner::register_biaffine_cpu(m);
  mclner::register_cln_head_cpu(m);
  mclner::register_info_nce_cpu(m);
  mclner::register_sup_con_cpu(m);
  m.def(
      "cpu_isa", [](int isa) { return std::string(mclner::cpu_isa::name(mclner::cpu_isa::resolve("cpu_isa", isa))); },
      pybind11::arg("isa") = -1,
      "Instruction set the CPU kernels (biaffine, cln_head, info_nce, sup_con) run with for argument isa (-1: "
      "auto, the best this CPU supports capped by MCLNER_CPU_ISA): 'avx512', 'avx2' or 'generic'");
  m.def(
      "cpu_best_isa", []() { return std::string(mclner::cpu_isa::name(mclner::cpu_isa::best())); },
      "Best instruction set this CPU supports for the CPU kernels: 'avx512', 'avx2' or 'generic'");
}
