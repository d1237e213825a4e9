// Indexing math shared by the CPU and CUDA kernels (the window rule of docs/architecture.md).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace facesal {

// Inclusive window [x0, x1] x [y0, y1] of a square patch, clipped to the image.
struct Window {
  int x0, x1, y0, y1;
  FS_HD bool empty() const { return x0 > x1 || y0 > y1; }
  FS_HD bool contains(int y, int x) const { return x >= x0 && x <= x1 && y >= y0 && y <= y1; }
};

FS_HD int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Window of size `patch` centred at point (x, y): centre pixel c = floor(p + 0.5),
// columns c - (patch - 1) / 2 .. c + patch / 2, clipped to [0, W-1] x [0, H-1].
// Points far outside the image (any finite value) give an empty window. The Python
// wrapper keeps patch, H and W <= 2^29, so every int below fits.
FS_HD Window window_at(float x, float y, int patch, int H, int W) {
  const float fx = floorf(x + 0.5f), fy = floorf(y + 0.5f);
  const float margin = static_cast<float>(patch) + 1.0f;
  if (!(fx > -margin && fx < W + margin && fy > -margin && fy < H + margin)) return {1, 0, 1, 0};
  const int cx = static_cast<int>(fx), cy = static_cast<int>(fy);
  const int lo = (patch - 1) / 2, hi = patch / 2;
  return {clamp_int(cx - lo, 0, W), clamp_int(cx + hi, -1, W - 1), clamp_int(cy - lo, 0, H),
          clamp_int(cy + hi, -1, H - 1)};
}

// IEEE binary16 bits of a float, round to nearest even (matches __float2half_rn).
inline uint16_t float_to_half_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u) return sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u);  // inf / nan
  if (mag >= 0x477ff000u) return sign | 0x7c00u;                                      // overflow
  if (mag < 0x38800000u) {                                                            // subnormal
    if (mag < 0x33000000u) return sign;
    const uint32_t m = (mag & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(mag >> 23);
    uint32_t h = m >> (shift + 1);
    const uint32_t rem = m & ((1u << (shift + 1)) - 1u), half = 1u << shift;
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return sign | h;
  }
  uint32_t h = ((mag - 0x38000000u) >> 13);
  const uint32_t rem = mag & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | h;
}

}  // namespace facesal
