#include "cuda/cuda_check.h"
#include "splat.h"

namespace facesal {
namespace {

constexpr int kThreads = 1024;

// One block per task: zero its difference image, scatter window corners (float64
// atomics), warp-scan each row, then scan columns (coalesced) and add to the output.
template <typename T>
__global__ void splat_kernel(SplatParams p, double* workspace) {
  const int j = blockIdx.x, W1 = p.W + 1;
  const int64_t plane = int64_t(p.H + 1) * W1;
  double* diff = workspace + j * plane;
  for (int64_t i = threadIdx.x; i < plane; i += blockDim.x) diff[i] = 0.0;
  __syncthreads();

  int64_t idx[4];
  double delta[4];
  for (int n = threadIdx.x; n < p.N; n += blockDim.x)
    if (point_corner_updates(p, j, n, idx, delta))
      for (int q = 0; q < 4; ++q) atomicAdd(diff + idx[q], delta[q]);
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int y = warp; y < p.H; y += warps) {
    double carry = 0.0;
    for (int x0 = 0; x0 < p.W; x0 += 32) {
      const int x = x0 + lane;
      double v = x < p.W ? diff[int64_t(y) * W1 + x] : 0.0;
      for (int d = 1; d < 32; d <<= 1) {
        const double u = __shfl_up_sync(0xffffffffu, v, d);
        if (lane >= d) v += u;
      }
      v += carry;
      if (x < p.W) diff[int64_t(y) * W1 + x] = v;
      carry = __shfl_sync(0xffffffffu, v, 31);
    }
  }
  __syncthreads();

  T* out = static_cast<T*>(task_output(p, j)) + task_output_offset(p, j);
  for (int x = threadIdx.x; x < p.W; x += blockDim.x) {
    double acc = 0.0;
    for (int y = 0; y < p.H; ++y) {
      acc += diff[int64_t(y) * W1 + x];
      out[int64_t(y) * p.W + x] += static_cast<T>(acc);
    }
  }
}

}  // namespace

void splat_add_cuda(const SplatParams& p, double* workspace, void* stream) {
  if (p.H == 0 || p.W == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const int tasks = splat_num_tasks(p);
  if (p.out_double)
    splat_kernel<double><<<tasks, kThreads, 0, s>>>(p, workspace);
  else
    splat_kernel<float><<<tasks, kThreads, 0, s>>>(p, workspace);
  check_cuda(cudaGetLastError(), "splat_add kernel launch");
}

}  // namespace facesal
