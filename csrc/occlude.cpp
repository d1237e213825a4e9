// Python binding of occlude_batch: the _C.OccludeParams record, built from keywords named after
// the fields of occlude.h (std, not 1/std), and the entry points _C.occlude_batch_cpu(params,
// threads) / _C.occlude_batch_cuda(params, stream). Registered with the module by bindings.h.
#include "occlude.h"

#include <pybind11/stl.h>

#include <array>

#include "bindings.h"

namespace py = pybind11;

namespace facesal {
namespace {

void copy3(float dst[3], const std::array<float, 3>& src) {
  for (int i = 0; i < 3; ++i) dst[i] = src[i];
}

OccludeParams occlude_params(uintptr_t image, bool image_u8, int H, int W, int C, uintptr_t centers, int K, int patch,
                             uintptr_t fill_image, const std::array<float, 3>& fill_const, float scale,
                             const std::array<float, 3>& mean, const std::array<float, 3>& std, bool nhwc,
                             bool half_out, uintptr_t out) {
  OccludeParams p{};
  p.image = ptr<const void>(image);
  p.image_u8 = image_u8;
  p.H = H;
  p.W = W;
  p.C = C;
  p.centers = ptr<const float>(centers);
  p.K = K;
  p.patch = patch;
  p.fill_image = ptr<const float>(fill_image);
  copy3(p.fill_const, fill_const);
  p.scale = scale;
  copy3(p.mean, mean);
  for (int i = 0; i < 3; ++i) p.inv_std[i] = 1.0f / std[i];
  p.nhwc = nhwc;
  p.half_out = half_out;
  p.out = ptr<void>(out);
  return p;
}

void bind_occlude(py::module_& m) {
  py::class_<OccludeParams>(m, "OccludeParams",
                            "Parameters of occlude_batch (fields of csrc/occlude.h; std, not 1/std)")
      .def(py::init(&occlude_params), py::kw_only(), py::arg("image"), py::arg("image_u8"), py::arg("H"), py::arg("W"),
           py::arg("C"), py::arg("centers"), py::arg("K"), py::arg("patch"), py::arg("fill_image"),
           py::arg("fill_const"), py::arg("scale"), py::arg("mean"), py::arg("std"), py::arg("nhwc"),
           py::arg("half_out"), py::arg("out"));
  m.def("occlude_batch_cpu", &occlude_batch_cpu, py::kw_only(), py::arg("params"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>());
#ifdef FACESAL_WITH_CUDA
  m.def(
      "occlude_batch_cuda",
      [](const OccludeParams& params, uintptr_t stream) { occlude_batch_cuda(params, ptr<void>(stream)); },
      py::kw_only(), py::arg("params"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
#endif
}

[[maybe_unused]] const bool registered = register_binding("occlude", &bind_occlude);

}  // namespace
}  // namespace facesal
