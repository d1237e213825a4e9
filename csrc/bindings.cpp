// pybind11 entry points. Every array arrives as a raw address (numpy .ctypes.data or
// torch .data_ptr()) already checked by facesal_fast/ops.py; nothing here links libtorch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>

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
                             uintptr_t fill_image, std::array<float, 3> fill_const, float scale,
                             std::array<float, 3> mean, std::array<float, 3> std, bool nhwc, bool half_out,
                             uintptr_t out) {
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

#ifdef FACESAL_WITH_CUDA
void occlude_cuda(uintptr_t image, bool image_u8, int H, int W, int C, uintptr_t centers, int K, int patch,
                  uintptr_t fill_image, std::array<float, 3> fill_const, float scale, std::array<float, 3> mean,
                  std::array<float, 3> std, bool nhwc, bool half_out, uintptr_t out, uintptr_t stream) {
  facesal::occlude_batch_cuda(occlude_params(image, image_u8, H, W, C, centers, K, patch, fill_image, fill_const, scale,
                                             mean, std, nhwc, half_out, out),
                              ptr<void>(stream));
}

void splat_cuda(uintptr_t values, int B, int N, uintptr_t points, uintptr_t weights, bool weights_per_batch, int patch,
                int H, int W, uintptr_t sums, uintptr_t counts, bool out_double, uintptr_t workspace,
                uintptr_t stream) {
  facesal::splat_add_cuda(
      splat_params(values, B, N, points, weights, weights_per_batch, patch, H, W, sums, counts, out_double),
      ptr<double>(workspace), ptr<void>(stream));
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "facesal_fast native kernels (CPU/OpenMP and, when built, CUDA)";
  m.def("built_with_cuda", &built_with_cuda);
  m.def("cuda_device_count", &cuda_device_count, py::call_guard<py::gil_scoped_release>());
  m.def(
      "occlude_cpu",
      [](uintptr_t image, bool image_u8, int H, int W, int C, uintptr_t centers, int K, int patch, uintptr_t fill_image,
         std::array<float, 3> fill_const, float scale, std::array<float, 3> mean, std::array<float, 3> std, bool nhwc,
         bool half_out, uintptr_t out, int threads) {
        facesal::occlude_batch_cpu(occlude_params(image, image_u8, H, W, C, centers, K, patch, fill_image, fill_const,
                                                  scale, mean, std, nhwc, half_out, out),
                                   threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "splat_cpu",
      [](uintptr_t values, int B, int N, uintptr_t points, uintptr_t weights, bool weights_per_batch, int patch, int H,
         int W, uintptr_t sums, uintptr_t counts, bool out_double) {
        facesal::splat_add_cpu(
            splat_params(values, B, N, points, weights, weights_per_batch, patch, H, W, sums, counts, out_double));
      },
      py::call_guard<py::gil_scoped_release>());
#ifdef FACESAL_WITH_CUDA
  m.def("occlude_cuda", &occlude_cuda, py::call_guard<py::gil_scoped_release>());
  m.def("splat_cuda", &splat_cuda, py::call_guard<py::gil_scoped_release>());
#endif
}
