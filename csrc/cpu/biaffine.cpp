// CPU kernels for biaffine (stub: filled in by the op's implementation).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace mclner {
void register_biaffine_cpu(py::module_& m) { (void)m; }
}  // namespace mclner
