// The CPU module mclner._C: always built, never depends on CUDA.
#include <pybind11/pybind11.h>

#include "mclner/bind_util.h"

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
}
