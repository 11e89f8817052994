// pybind11 glue for the info_nce CUDA kernels (stub: filled in by the op's implementation).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace mclner {
void register_info_nce_cuda(py::module_& m) { (void)m; }
}  // namespace mclner
