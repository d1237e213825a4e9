// Python binding of splat_add: the _C.SplatParams record, built from keywords named after the
// fields of splat.h, and the entry points _C.splat_add_cpu(params) / _C.splat_add_cuda(params,
// workspace, stream). Registered with the module by bindings.h.
#include "splat.h"

#include "bindings.h"

namespace py = pybind11;

namespace facesal {
namespace {

SplatParams splat_params(uintptr_t values, int B, int N, uintptr_t points, uintptr_t weights, bool weights_per_batch,
                         int patch, int H, int W, uintptr_t sums, uintptr_t counts, bool out_double) {
  return SplatParams{ptr<const float>(values),
                     B,
                     N,
                     ptr<const float>(points),
                     ptr<const float>(weights),
                     weights_per_batch,
                     patch,
                     H,
                     W,
                     ptr<void>(sums),
                     ptr<void>(counts),
                     out_double};
}

void bind_splat(py::module_& m) {
  py::class_<SplatParams>(m, "SplatParams", "Parameters of splat_add (fields of csrc/splat.h)")
      .def(py::init(&splat_params), py::kw_only(), py::arg("values"), py::arg("B"), py::arg("N"), py::arg("points"),
           py::arg("weights"), py::arg("weights_per_batch"), py::arg("patch"), py::arg("H"), py::arg("W"),
           py::arg("sums"), py::arg("counts"), py::arg("out_double"));
  m.def("splat_add_cpu", &splat_add_cpu, py::kw_only(), py::arg("params"), py::call_guard<py::gil_scoped_release>());
#ifdef FACESAL_WITH_CUDA
  m.def(
      "splat_add_cuda",
      [](const SplatParams& params, uintptr_t workspace, uintptr_t stream) {
        splat_add_cuda(params, ptr<double>(workspace), ptr<void>(stream));
      },
      py::kw_only(), py::arg("params"), py::arg("workspace"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
#endif
}

[[maybe_unused]] const bool registered = register_binding("splat", &bind_splat);

}  // namespace
}  // namespace facesal
