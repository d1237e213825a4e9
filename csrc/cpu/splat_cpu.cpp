#include <omp.h>

#include <vector>

#include "splat.h"

namespace facesal {
namespace {

// One task: scatter window corners into `diff`, then prefix-sum it into the output.
template <typename T>
void run_task(const SplatParams& p, int j, std::vector<double>& diff) {
  const int W1 = p.W + 1;
  std::fill(diff.begin(), diff.end(), 0.0);
  int64_t idx[4];
  double delta[4];
  for (int n = 0; n < p.N; ++n)
    if (point_corner_updates(p, j, n, idx, delta))
      for (int q = 0; q < 4; ++q) diff[idx[q]] += delta[q];
  for (int y = 0; y < p.H; ++y)  // row prefix sums
    for (int x = 1; x < p.W; ++x) diff[int64_t(y) * W1 + x] += diff[int64_t(y) * W1 + x - 1];
  T* out = static_cast<T*>(task_output(p, j)) + task_output_offset(p, j);
  for (int x = 0; x < p.W; ++x) out[x] += static_cast<T>(diff[x]);
  for (int y = 1; y < p.H; ++y)  // column prefix sums, added to the output
    for (int x = 0; x < p.W; ++x) {
      diff[int64_t(y) * W1 + x] += diff[int64_t(y - 1) * W1 + x];
      out[int64_t(y) * p.W + x] += static_cast<T>(diff[int64_t(y) * W1 + x]);
    }
}

template <typename T>
void splat_typed(const SplatParams& p) {
  const int tasks = splat_num_tasks(p);
#pragma omp parallel
  {
    std::vector<double> diff(int64_t(p.H + 1) * (p.W + 1));
#pragma omp for schedule(dynamic, 1)
    for (int j = 0; j < tasks; ++j) run_task<T>(p, j, diff);
  }
}

}  // namespace

void splat_add_cpu(const SplatParams& p) {
  if (p.out_double) splat_typed<double>(p);
  else splat_typed<float>(p);
}

}  // namespace facesal
