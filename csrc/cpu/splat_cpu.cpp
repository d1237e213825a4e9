#include <vector>

#include "cpu/omp_team.h"
#include "splat.h"

namespace facesal {
namespace {

// Workspace beyond one difference image per thread is granted up to this many bytes or
// the size of the outputs, whichever is larger; past it the team shrinks (down to 1).
constexpr int64_t kWorkspaceBudget = int64_t(256) << 20;

// One task: scatter window corners into `diff`, then prefix-sum it into the output.
template <typename T>
void run_task(const SplatParams& p, int j, double* diff) {
  const int W1 = p.W + 1;
  std::fill(diff, diff + int64_t(p.H + 1) * W1, 0.0);
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

// Threads: one per task at most, and no more difference images than the budget holds.
int splat_team(const SplatParams& p, int tasks, int64_t plane, int64_t out_bytes) {
  const int64_t budget = std::max(kWorkspaceBudget, out_bytes);
  const int64_t affordable = std::max<int64_t>(1, budget / (plane * int64_t(sizeof(double))));
  return team_size(0, std::min<int64_t>(tasks, affordable));
}

template <typename T>
void splat_typed(const SplatParams& p) {
  const int tasks = splat_num_tasks(p);
  const int64_t plane = int64_t(p.H + 1) * (p.W + 1);
  const int team = splat_team(p, tasks, plane, int64_t(tasks) * p.H * p.W * int64_t(sizeof(T)));
  // Allocated here, before the parallel region: std::bad_alloc leaves this function (pybind11
  // turns it into MemoryError) and no exception is ever thrown inside the OpenMP region.
  std::vector<double> workspace(plane * team);
#pragma omp parallel num_threads(team)
  {
    double* diff = workspace.data() + plane * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int j = 0; j < tasks; ++j) run_task<T>(p, j, diff);
  }
}

}  // namespace

void splat_add_cpu(const SplatParams& p) {
  if (p.out_double)
    splat_typed<double>(p);
  else
    splat_typed<float>(p);
}

}  // namespace facesal
