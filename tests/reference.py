"""Plain numpy references for the native ops (loops over windows, float64)."""

import numpy as np


def window(x: float, y: float, patch: int, H: int, W: int):
    """Inclusive clipped window (x0, x1, y0, y1) of docs/architecture.md, or None when empty."""
    cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    x0, x1 = max(cx - (patch - 1) // 2, 0), min(cx + patch // 2, W - 1)
    y0, y1 = max(cy - (patch - 1) // 2, 0), min(cy + patch // 2, H - 1)
    return None if x0 > x1 or y0 > y1 else (x0, x1, y0, y1)


def occlude_batch_ref(image, centers, patch, fill_image, mean, std, scale=1 / 255, layout="nchw"):
    """K x C x H x W (or K x H x W x C) float64: the fill in each window, then normalised."""
    image = image.astype(np.float64)
    if image.ndim == 2:
        image = image[..., None]
    H, W, C = image.shape
    fill = np.broadcast_to(np.asarray(fill_image, np.float64), image.shape)
    out = np.empty((len(centers), H, W, C))
    for k, (x, y) in enumerate(centers):
        out[k] = image
        win = window(x, y, patch, H, W)
        if win:
            x0, x1, y0, y1 = win
            out[k, y0 : y1 + 1, x0 : x1 + 1] = fill[y0 : y1 + 1, x0 : x1 + 1]
    out = (out * scale - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    return out.transpose(0, 3, 1, 2) if layout == "nchw" else out


def splat_add_ref(values, points, patch, shape, weights=None):
    """(sums B x H x W, counts H x W or B x H x W) in float64 by looping over windows."""
    values = np.asarray(values, np.float64)
    B, N = values.shape
    H, W = shape
    w = np.ones(N) if weights is None else np.asarray(weights, np.float64)
    w_b = np.broadcast_to(w, (B, N))
    sums = np.zeros((B, H, W))
    counts = np.zeros((B, H, W) if w.ndim == 2 else (H, W))
    for n, (x, y) in enumerate(points):
        win = window(x, y, patch, H, W)
        if not win:
            continue
        x0, x1, y0, y1 = win
        sums[:, y0 : y1 + 1, x0 : x1 + 1] += (values[:, n] * w_b[:, n])[:, None, None]
        if w.ndim == 2:
            counts[:, y0 : y1 + 1, x0 : x1 + 1] += w[:, n][:, None, None]
        else:
            counts[y0 : y1 + 1, x0 : x1 + 1] += w[n]
    return sums, counts


def clipped_area(x: float, y: float, patch: int, H: int, W: int) -> int:
    win = window(x, y, patch, H, W)
    return 0 if win is None else (win[1] - win[0] + 1) * (win[3] - win[2] + 1)
