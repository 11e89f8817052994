// CPU kernels for info_nce (stub: filled in by the op's implementation).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace mclner {
void register_info_nce_cpu(py::module_& m) { (void)m; }
}  // namespace mclner
