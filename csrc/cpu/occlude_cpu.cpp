#include <vector>

#include "cpu/omp_team.h"
#include "occlude.h"

namespace facesal {
namespace {

// Normalise every pixel of `value(c, y, x)` once, in output layout and dtype.
template <typename T, typename F>
std::vector<T> normalized_plane(const OccludeParams& p, F value) {
  const int64_t n = image_elems(p);
  std::vector<T> plane(n);
  for (int64_t i = 0; i < n; ++i) {
    int c, y, x;
    decode_output_index(p, i, c, y, x);
    const float v = normalize_value(p, value(c, y, x), c);
    if constexpr (sizeof(T) == 2)
      plane[i] = float_to_half_bits(v);
    else
      plane[i] = v;
  }
  return plane;
}

template <typename T>
void occlude_typed(const OccludeParams& p, int threads) {
  const auto base = normalized_plane<T>(p, [&](int c, int y, int x) { return image_value(p, c, y, x); });
  const auto fill = normalized_plane<T>(p, [&](int c, int y, int x) { return fill_value(p, c, y, x); });
  const int64_t n = image_elems(p);
  T* out = static_cast<T*>(p.out);
#pragma omp parallel for schedule(static) num_threads(team_size(threads, p.K))
  for (int k = 0; k < p.K; ++k) {
    T* dst = out + int64_t(k) * n;
    std::memcpy(dst, base.data(), n * sizeof(T));
    const Window w = center_window(p, k);
    if (w.empty()) continue;
    for (int c = 0; c < p.C; ++c)
      for (int y = w.y0; y <= w.y1; ++y)
        for (int x = w.x0; x <= w.x1; ++x) {
          const int64_t i = output_index(p, c, y, x);
          dst[i] = fill[i];
        }
  }
}

}  // namespace

void occlude_batch_cpu(const OccludeParams& p, int threads) {
  if (p.half_out)
    occlude_typed<uint16_t>(p, threads);
  else
    occlude_typed<float>(p, threads);
}

}  // namespace facesal
