"""Occlude a real face photo everywhere on a grid, then splat the per-patch mean drop."""

import cv2
import numpy as np

import facesal_fast as fs

print("facesal_fast", fs.__version__, "CUDA:", fs.has_cuda())
image = np.full((128, 128, 3), 128, np.uint8)
cv2.circle(image, (64, 64), 40, (200, 170, 150), -1)
ys, xs = np.mgrid[4:128:8, 4:128:8]
centers = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
batch = fs.ops.occlude_batch(image, centers, 15, fill="mean", mean=0.5, std=0.5)
drops = np.abs(batch - batch.mean(0)).mean(axis=(1, 2, 3))
sums, counts = fs.ops.splat_add(drops[None].astype(np.float32), centers, 15, (128, 128))
print("occluded batch", batch.shape, "saliency map", fs.ops.normalize_by_counts(sums, counts)[0].shape)
