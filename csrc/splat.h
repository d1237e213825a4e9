// splat_add: add values[b, n] over the square window around points[n] into sums[b],
// and the (weighted) number of windows covering each pixel into counts.
//
// Both CPU and CUDA use the same two-step scheme per task: scatter +/-v at the four
// corners of each window into a (H+1) x (W+1) float64 difference image, then take
// its 2-D inclusive prefix sum and add it to the output. Task j < B produces sums[j];
// task j >= B produces counts[j - B] (one counts map, or B when weights are per batch).
#pragma once
#include "common.h"

namespace facesal {

struct SplatParams {
  const float* values;  // B x N
  int B, N;
  const float* points;   // N x 2, (x, y)
  const float* weights;  // N or B x N, or nullptr (weight 1)
  bool weights_per_batch;
  int patch, H, W;
  void* sums;       // B x H x W, accumulated into
  void* counts;     // H x W (or B x H x W when weights_per_batch), accumulated into
  bool out_double;  // outputs are float64 instead of float32
};

FS_HD int splat_num_tasks(const SplatParams& p) { return p.B + (p.weights_per_batch ? p.B : 1); }

FS_HD float point_weight(const SplatParams& p, int b, int n) {
  if (!p.weights) return 1.0f;
  return p.weights[p.weights_per_batch ? int64_t(b) * p.N + n : n];
}

// Contribution of point n to task j.
FS_HD double task_value(const SplatParams& p, int j, int n) {
  if (j < p.B) return double(p.values[int64_t(j) * p.N + n]) * point_weight(p, j, n);
  return point_weight(p, j - p.B, n);
}

FS_HD int64_t task_output_offset(const SplatParams& p, int j) {
  return (j < p.B ? int64_t(j) : int64_t(j - p.B)) * p.H * p.W;
}

FS_HD void* task_output(const SplatParams& p, int j) { return j < p.B ? p.sums : p.counts; }

// The four updates (index, signed amount) that point n adds to task j's (H+1) x (W+1)
// difference image; false when the point adds nothing (zero value or window off the image).
FS_HD bool point_corner_updates(const SplatParams& p, int j, int n, int64_t idx[4], double delta[4]) {
  const double v = task_value(p, j, n);
  if (v == 0.0) return false;
  const Window w = window_at(p.points[2 * n], p.points[2 * n + 1], p.patch, p.H, p.W);
  if (w.empty()) return false;
  const int W1 = p.W + 1;
  idx[0] = int64_t(w.y0) * W1 + w.x0;
  delta[0] = v;
  idx[1] = int64_t(w.y0) * W1 + w.x1 + 1;
  delta[1] = -v;
  idx[2] = int64_t(w.y1 + 1) * W1 + w.x0;
  delta[2] = -v;
  idx[3] = int64_t(w.y1 + 1) * W1 + w.x1 + 1;
  delta[3] = v;
  return true;
}

void splat_add_cpu(const SplatParams& p);
#ifdef FACESAL_WITH_CUDA
// workspace: splat_num_tasks(p) * (H+1) * (W+1) float64 on the device.
void splat_add_cuda(const SplatParams& p, double* workspace, void* stream);
#endif

}  // namespace facesal
