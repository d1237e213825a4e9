// OpenMP team sizes for the CPU kernels: never more threads than pieces of work.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace facesal {

// `requested` threads (<= 0: OpenMP's default), at most one per work item and at least 1.
inline int team_size(int requested, int64_t work) {
  const int64_t wanted = requested > 0 ? requested : omp_get_max_threads();
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, work)));
}

}  // namespace facesal
