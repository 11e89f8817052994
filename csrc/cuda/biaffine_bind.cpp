// pybind11 glue for the biaffine CUDA kernels (stub: filled in by the op's implementation).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace mclner {
void register_biaffine_cuda(py::module_& m) { (void)m; }
}  // namespace mclner
