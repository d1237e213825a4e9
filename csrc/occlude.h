// occlude_batch: K copies of one image, each with one square window replaced by a fill,
// normalised as (v * scale - mean[c]) / std[c] and written in NCHW or NHWC order.
#pragma once
#include "common.h"

namespace facesal {

struct OccludeParams {
  const void* image;  // H x W x C, uint8 or float32
  bool image_u8;
  int H, W, C;           // C in {1, 3}
  const float* centers;  // K x 2, (x, y)
  int K;
  int patch;
  const float* fill_image;  // H x W x C float32 in pixel units, or nullptr for fill_const
  float fill_const[3];      // per-channel fill in pixel units
  float scale;              // e.g. 1/255
  float mean[3];
  float inv_std[3];
  bool nhwc;
  bool half_out;  // float16 output instead of float32
  void* out;      // K x C x H x W or K x H x W x C
};

FS_HD int64_t image_elems(const OccludeParams& p) { return int64_t(p.H) * p.W * p.C; }

// Decode a flat index within one output image into (c, y, x) for the chosen layout.
FS_HD void decode_output_index(const OccludeParams& p, int64_t i, int& c, int& y, int& x) {
  if (p.nhwc) {
    c = static_cast<int>(i % p.C);
    const int64_t yx = i / p.C;
    x = static_cast<int>(yx % p.W);
    y = static_cast<int>(yx / p.W);
  } else {
    x = static_cast<int>(i % p.W);
    const int64_t cy = i / p.W;
    y = static_cast<int>(cy % p.H);
    c = static_cast<int>(cy / p.H);
  }
}

FS_HD int64_t output_index(const OccludeParams& p, int c, int y, int x) {
  return p.nhwc ? (int64_t(y) * p.W + x) * p.C + c : (int64_t(c) * p.H + y) * p.W + x;
}

FS_HD float image_value(const OccludeParams& p, int c, int y, int x) {
  const int64_t j = (int64_t(y) * p.W + x) * p.C + c;
  return p.image_u8 ? static_cast<float>(static_cast<const uint8_t*>(p.image)[j])
                    : static_cast<const float*>(p.image)[j];
}

FS_HD float fill_value(const OccludeParams& p, int c, int y, int x) {
  return p.fill_image ? p.fill_image[(int64_t(y) * p.W + x) * p.C + c] : p.fill_const[c];
}

FS_HD float normalize_value(const OccludeParams& p, float v, int c) { return (v * p.scale - p.mean[c]) * p.inv_std[c]; }

FS_HD Window center_window(const OccludeParams& p, int k) {
  return window_at(p.centers[2 * k], p.centers[2 * k + 1], p.patch, p.H, p.W);
}

// threads <= 0: OpenMP's default team size.
void occlude_batch_cpu(const OccludeParams& p, int threads);
#ifdef FACESAL_WITH_CUDA
void occlude_batch_cuda(const OccludeParams& p, void* stream);
#endif

}  // namespace facesal
