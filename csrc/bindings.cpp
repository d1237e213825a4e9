// The extension module _C: every op's binding registered from its csrc/<op>.cpp (bindings.h),
// plus what the Python side asks of the build itself (built_with_cuda, cuda_device_count).
// Every array crosses as a raw address, so nothing here links libtorch.
#include "bindings.h"

#include <map>
#include <string>
#ifdef FACESAL_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace py = pybind11;

namespace facesal {
namespace {

// Function-local, so that it exists before the first op file's static initialiser uses it.
std::map<std::string, Binder>& binders() {
  static std::map<std::string, Binder> all;
  return all;
}

bool built_with_cuda() {
#ifdef FACESAL_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef FACESAL_WITH_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
#else
  return 0;
#endif
}

}  // namespace

bool register_binding(const char* op, Binder bind) {
  binders().emplace(op, bind);
  return true;
}

}  // namespace facesal

PYBIND11_MODULE(_C, m) {
  m.doc() = "facesal_fast native kernels (CPU/OpenMP and, when built, CUDA)";
  m.def("built_with_cuda", &facesal::built_with_cuda);
  m.def("cuda_device_count", &facesal::cuda_device_count, py::call_guard<py::gil_scoped_release>());
  for (const auto& [op, bind] : facesal::binders()) bind(m);
}
