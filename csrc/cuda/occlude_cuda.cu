#include <cuda_fp16.h>

#include "cuda/cuda_check.h"
#include "occlude.h"

namespace facesal {
namespace {

template <typename T>
__device__ __forceinline__ T to_output(float v);
template <>
__device__ __forceinline__ float to_output<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half to_output<__half>(float v) {
  return __float2half_rn(v);
}

// One thread per output element, grid-stride; consecutive threads write consecutive elements.
template <typename T>
__global__ void occlude_kernel(OccludeParams p) {
  const int64_t n = image_elems(p), total = n * p.K;
  T* out = static_cast<T*>(p.out);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int k = static_cast<int>(i / n);
    int c, y, x;
    decode_output_index(p, i % n, c, y, x);
    const float v = center_window(p, k).contains(y, x) ? fill_value(p, c, y, x) : image_value(p, c, y, x);
    out[i] = to_output<T>(normalize_value(p, v, c));
  }
}

}  // namespace

void occlude_batch_cuda(const OccludeParams& p, void* stream) {
  const int64_t total = image_elems(p) * p.K;
  if (total == 0) return;
  const int threads = 256;
  auto s = static_cast<cudaStream_t>(stream);
  if (p.half_out)
    occlude_kernel<__half><<<blocks_for(total, threads), threads, 0, s>>>(p);
  else
    occlude_kernel<float><<<blocks_for(total, threads), threads, 0, s>>>(p);
  check_cuda(cudaGetLastError(), "occlude_batch kernel launch");
}

}  // namespace facesal
