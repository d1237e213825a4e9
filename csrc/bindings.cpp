// pybind11 entry points, one name per op: _C.occlude_batch_cpu / _C.occlude_batch_cuda and
// _C.splat_add_cpu / _C.splat_add_cuda call facesal::occlude_batch_cpu / ..._cuda and
// facesal::splat_add_cpu / ..._cuda. Every parameter is passed by keyword: the Python side
// builds an OccludeParams / SplatParams record whose keywords are the fields of the C++ structs
// (occlude.h, splat.h). Every array arrives as a raw address (torch .data_ptr()) already checked
// by facesal_fast/ops/; nothing here links libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "occlude.h"
#include "splat.h"
#ifdef FACESAL_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace py = pybind11;
using facesal::OccludeParams;
using facesal::SplatParams;

namespace {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

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

void bind_params(py::module_& m) {
  py::class_<OccludeParams>(m, "OccludeParams",
                            "Parameters of occlude_batch (fields of csrc/occlude.h; std, not 1/std)")
      .def(py::init(&occlude_params), py::kw_only(), py::arg("image"), py::arg("image_u8"), py::arg("H"), py::arg("W"),
           py::arg("C"), py::arg("centers"), py::arg("K"), py::arg("patch"), py::arg("fill_image"),
           py::arg("fill_const"), py::arg("scale"), py::arg("mean"), py::arg("std"), py::arg("nhwc"),
           py::arg("half_out"), py::arg("out"));
  py::class_<SplatParams>(m, "SplatParams", "Parameters of splat_add (fields of csrc/splat.h)")
      .def(py::init(&splat_params), py::kw_only(), py::arg("values"), py::arg("B"), py::arg("N"), py::arg("points"),
           py::arg("weights"), py::arg("weights_per_batch"), py::arg("patch"), py::arg("H"), py::arg("W"),
           py::arg("sums"), py::arg("counts"), py::arg("out_double"));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "facesal_fast native kernels (CPU/OpenMP and, when built, CUDA)";
  bind_params(m);
  m.def("built_with_cuda", &built_with_cuda);
  m.def("cuda_device_count", &cuda_device_count, py::call_guard<py::gil_scoped_release>());
  m.def("occlude_batch_cpu", &facesal::occlude_batch_cpu, py::kw_only(), py::arg("params"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>());
  m.def("splat_add_cpu", &facesal::splat_add_cpu, py::kw_only(), py::arg("params"),
        py::call_guard<py::gil_scoped_release>());
#ifdef FACESAL_WITH_CUDA
  m.def(
      "occlude_batch_cuda",
      [](const OccludeParams& params, uintptr_t stream) { facesal::occlude_batch_cuda(params, ptr<void>(stream)); },
      py::kw_only(), py::arg("params"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "splat_add_cuda",
      [](const SplatParams& params, uintptr_t workspace, uintptr_t stream) {
        facesal::splat_add_cuda(params, ptr<double>(workspace), ptr<void>(stream));
      },
      py::kw_only(), py::arg("params"), py::arg("workspace"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());
#endif
}
