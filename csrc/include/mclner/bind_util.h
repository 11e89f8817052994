// pybind11 helpers shared by the CPU and CUDA bindings (host code only).
#pragma once

#include <pybind11/pybind11.h>

#include "mclner/common.h"

namespace mclner {
namespace py = pybind11;

// Registers the translation ArgumentError -> ValueError once per module.
inline void register_exceptions(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

}  // namespace mclner
