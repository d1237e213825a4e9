"""Typed, checked wrappers over the native kernels in ``facesal_fast._C``.

Every op accepts numpy arrays or torch tensors (CPU or CUDA) and returns the kind it
got: numpy in, numpy out; a CUDA tensor in, a CUDA tensor out on the same device,
computed on torch's current stream. Inputs are validated here, so the kernels never
see a bad shape, dtype or non-finite value: bad input raises ``ValueError`` naming the
argument.

Window rule (shared by both ops, see docs/architecture.md): a square window of size ``p`` centred
at ``(x, y)`` covers columns ``cx - (p-1)//2 .. cx + p//2`` with ``cx = floor(x + 0.5)``,
rows likewise, clipped to the image.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, Union

import numpy as np
import torch

from facesal_fast import _C, _kernels
from facesal_fast._validate import positive_int

Array = Union[np.ndarray, torch.Tensor]
Fill = Union[str, float, Sequence[float], Array]

#: An occlusion centre this far off any image: its window is empty, the copy is the image.
FAR_CENTER = -1.0e6
#: Largest patch, image or canvas side, and number of centres, points or maps (2^29): every
#: index the kernels compute then fits their 32-bit ints.
MAX_SIZE = 2**29
#: Most CPU threads an op accepts: 4 x the machine's cores (more only oversubscribes, and a
#: huge OpenMP team overflows the stack of the thread that starts it).
MAX_THREADS = 4 * (os.cpu_count() or 1)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT16_MAX = float(np.finfo(np.float16).max)

__all__ = [
    "FAR_CENTER",
    "MAX_SIZE",
    "MAX_THREADS",
    "has_cuda",
    "occlude_batch",
    "unoccluded",
    "splat_add",
    "splat_add_grouped",
    "normalize_by_counts",
]


def has_cuda() -> bool:
    """True when the extension was built with CUDA kernels and a CUDA device is usable."""
    return bool(_C.built_with_cuda()) and _C.cuda_device_count() > 0 and torch.cuda.is_available()


# ----------------------------------------------------------------------------- helpers


def _to_tensor(x: Array | Sequence[float], name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided or x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{name}: expected a dense CPU or CUDA tensor, got {x.layout} on {x.device}")
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"{name}: expected a numeric array, got dtype {x.dtype}")
        try:
            return torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name}: unsupported array dtype {x.dtype}") from err
    try:
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}") from err


def _restore(t: torch.Tensor, as_numpy: bool) -> Array:
    return t.numpy() if as_numpy else t


def _check_finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def _float32(t: Array | Sequence[float], name: str, device: torch.device, shape_hint: str) -> torch.Tensor:
    """A contiguous finite float32 tensor on ``device`` (ints and float64 are converted)."""
    t = _to_tensor(t, name)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected real numbers {shape_hint}, got dtype {t.dtype}")
    _check_finite(t, name)
    try:
        t = t.detach().to(device=device, dtype=torch.float32).contiguous()
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"{name}: cannot convert dtype {t.dtype} to float32") from err
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has values beyond float32's range (|x| > {_FLOAT32_MAX:.4g})")
    return t


def _alloc(
    make: Callable[..., torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, what: str
) -> torch.Tensor:
    """``make(shape, dtype=dtype, device=device)`` (torch.empty / torch.zeros); an allocation
    that fails raises ``MemoryError`` naming ``what`` and its size."""
    try:
        return make(shape, dtype=dtype, device=device)
    except RuntimeError as err:
        nbytes = float(np.prod([float(s) for s in shape])) * torch.empty((), dtype=dtype).element_size()
        raise MemoryError(f"cannot allocate {what} of shape {shape} ({nbytes / 2**30:.3g} GiB) on {device}") from err


def _per_channel(v: float | Sequence[float] | Array, C: int, name: str) -> list[float]:
    try:
        arr = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: expected a number or {C} numbers (one per channel), got {v!r}") from err
    if arr.size == 1:
        arr = np.repeat(arr, C)
    if arr.size != C:
        raise ValueError(f"{name}: expected a scalar or {C} values (one per channel), got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return [float(a) for a in arr] + [0.0] * (3 - C)


def _check_threads(threads: int | None) -> int:
    """``threads`` as the kernels take it (0 = OpenMP's default), at most :data:`MAX_THREADS`."""
    if threads is None:
        return 0
    threads = positive_int(threads, "threads", " or None")
    if threads > MAX_THREADS:
        raise ValueError(f"threads must be at most {MAX_THREADS} (4 x the {os.cpu_count()} CPU cores), got {threads}")
    return threads


def _check_size(value: int, name: str) -> int:
    """A size the kernels can index (<= :data:`MAX_SIZE`), else ``ValueError`` naming it."""
    if value > MAX_SIZE:
        raise ValueError(f"{name} must be at most {MAX_SIZE} (2**29), got {value}")
    return int(value)


def _check_patch(patch: int) -> int:
    return _check_size(positive_int(patch, "patch"), "patch")


def _positive_float(value: float, name: str) -> float:
    """``value`` as a float if it is a finite positive number, else ``ValueError`` naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        number = float("nan")
    if isinstance(value, (bool, str)) or not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number


# ----------------------------------------------------------------------------- occlude


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an H x W x C float32 image, reflect padding."""
    radius = min(max(1, int(round(3 * sigma))), max(image.shape[:2]))  # wider is cut off below anyway
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    chw = image.permute(2, 0, 1).unsqueeze(1)  # C x 1 x H x W
    pad_w, pad_h = min(radius, image.shape[1] - 1), min(radius, image.shape[0] - 1)
    k_w = kernel[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1)
    k_h = kernel[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1)
    chw = torch.nn.functional.conv2d(
        torch.nn.functional.pad(chw, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w else "replicate"), k_w / k_w.sum()
    )
    chw = torch.nn.functional.conv2d(
        torch.nn.functional.pad(chw, (0, 0, pad_h, pad_h), mode="reflect" if pad_h else "replicate"), k_h / k_h.sum()
    )
    return chw.squeeze(1).permute(1, 2, 0).contiguous()


def _fill_arguments(fill: Fill, image: torch.Tensor, blur_sigma: float) -> tuple[torch.Tensor | None, list[float]]:
    """(fill image H x W x C float32 or None, per-channel constant fill)."""
    H, W, C = image.shape
    if isinstance(fill, str):
        if fill == "black":
            return None, [0.0, 0.0, 0.0]
        if fill == "mean":
            return None, _per_channel(image.double().mean(dim=(0, 1)).cpu().numpy(), C, "fill")
        if fill == "blur":
            sigma = _positive_float(blur_sigma, "blur_sigma")
            return _gaussian_blur(image.float(), sigma), [0.0, 0.0, 0.0]
        raise ValueError(f"fill must be 'black', 'mean', 'blur', a colour or an image, got {fill!r}")
    if isinstance(fill, (np.ndarray, torch.Tensor)) and np.ndim(fill) >= 2:
        fill_image = _float32(fill, "fill", image.device, "(H x W x C image)")
        if fill_image.ndim == 2:
            fill_image = fill_image.unsqueeze(-1)
        if tuple(fill_image.shape) != (H, W, C):
            raise ValueError(f"fill image must have the image's shape {(H, W, C)}, got {tuple(fill_image.shape)}")
        return fill_image, [0.0, 0.0, 0.0]
    return None, _per_channel(fill, C, "fill")


def _output_dtype(dtype: str | np.dtype | torch.dtype) -> torch.dtype:
    names = {"float32": torch.float32, "float16": torch.float16, "half": torch.float16}
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    if dtype in (np.float32, torch.float32) or (isinstance(dtype, np.dtype) and dtype == np.float32):
        return torch.float32
    if dtype in (np.float16, torch.float16) or (isinstance(dtype, np.dtype) and dtype == np.float16):
        return torch.float16
    raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")


def _check_output_range(call: _kernels.OccludeCall, C: int, dtype: torch.dtype) -> None:
    """Refuse ``mean`` / ``std`` / ``scale`` that would normalise some pixel or fill value to
    a number the output dtype cannot hold (inf instead of an error, e.g. ``std=1e-300``)."""
    img = call.image
    v_max = 255.0 if img.dtype == torch.uint8 else float(img.abs().max()) if img.numel() else 0.0
    if call.fill_image is not None:
        v_max = max(v_max, float(call.fill_image.abs().max()))
    v_max = max([v_max] + [abs(f) for f in call.fill_const[:C]])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # float32 as the kernels see them
        scale, mean, std = np.float32(call.scale), np.float32(call.mean[:C]), np.float32(call.std[:C])
        bound = float((v_max * np.float64(scale) + np.abs(mean).astype(np.float64)).max() * (np.float32(1) / std).max())
    limit = _FLOAT16_MAX if dtype == torch.float16 else _FLOAT32_MAX
    if not bound <= limit:
        name = "float16" if dtype == torch.float16 else "float32"
        raise ValueError(
            f"mean, std and scale normalise values up to {bound:.3g}, beyond {name}'s range ({limit:.5g}): "
            f"check std (too small?) and scale{' or use dtype float32' if name == 'float16' else ''}"
        )


def _check_image(image: Array) -> tuple[torch.Tensor, bool]:
    as_numpy = isinstance(image, np.ndarray)
    t = _to_tensor(image, "image")
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    if t.ndim != 3 or t.shape[2] not in (1, 3):
        raise ValueError(f"image must be H x W x C with C in {{1, 3}} (or H x W), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"image must be uint8 or float32, got {t.dtype}")
    _check_finite(t, "image")
    return t.contiguous(), as_numpy


def occlude_batch(
    image: Array,
    centers: Array,
    patch: int,
    fill: Fill = "black",
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    *,
    scale: float = 1.0 / 255.0,
    layout: str = "nchw",
    dtype: str | np.dtype | torch.dtype = "float32",
    blur_sigma: float = 5.0,
    threads: int | None = None,
) -> Array:
    """K model-ready copies of ``image``, each with one square window replaced by ``fill``.

    Args:
        image: ``H x W x C`` (or ``H x W``) uint8 or float32 in pixel units, C in {1, 3}.
        centers: ``K x 2`` window centres ``(x, y)`` in pixels; centres off the image
            (partly or wholly) clip the window, so a wholly outside centre occludes nothing.
        patch: window side in pixels (>= 1).
        fill: ``"black"`` (0), ``"mean"`` (the image's mean colour), ``"blur"`` (a Gaussian
            blurred copy, ``blur_sigma`` pixels), a number or per-channel colour in pixel
            units (e.g. a skin colour), or a fill image of the image's shape.
        mean, std: per-channel normalisation; output = ``(v * scale - mean) / std``.
        scale: pixel scale applied before normalisation (1/255 for 0..255 images).
        layout: ``"nchw"`` -> ``K x C x H x W``; ``"nhwc"`` -> ``K x H x W x C``.
        dtype: float32 or float16 output.
        threads: CPU threads (default OpenMP's, at most :data:`MAX_THREADS` = 4 x the cores,
            never more than K); 1 when the copies are made while inference runs on the
            other cores (the scorer's producer thread).

    Returns:
        The batch, of the same kind (numpy / torch) and device as ``image``.
    """
    img, as_numpy = _check_image(image)
    H, W, C = img.shape
    _check_size(max(H, W), "the image's height and width")
    patch = _check_patch(patch)
    threads = _check_threads(threads)
    pts = _float32(centers, "centers", img.device, "(K x 2)")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"centers must be K x 2 (x, y), got shape {tuple(pts.shape)}")
    K = _check_size(pts.shape[0], "the number of centers")
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    out_dtype = _output_dtype(dtype)
    mean_c, std_c = _per_channel(mean, C, "mean"), _per_channel(std, C, "std")
    if any(s <= 0 for s in std_c[:C]):
        raise ValueError(f"std must be positive, got {std_c[:C]}")
    scale = _positive_float(scale, "scale")
    std_c = [s if i < C else 1.0 for i, s in enumerate(std_c)]
    fill_image, fill_const = _fill_arguments(fill, img, blur_sigma)
    call = _kernels.OccludeCall(img, pts, patch, fill_image, fill_const, scale, mean_c, std_c, layout == "nhwc")
    _check_output_range(call, C, out_dtype)
    shape = (K, C, H, W) if layout == "nchw" else (K, H, W, C)
    out = _alloc(torch.empty, shape, out_dtype, img.device, "the occluded batch")
    if K and H and W:
        _kernels.occlude(call, out, threads)
    return _restore(out, as_numpy)


def unoccluded(
    image: Array,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    *,
    scale: float = 1.0 / 255.0,
    layout: str = "nchw",
    dtype: str | np.dtype | torch.dtype = "float32",
) -> Array:
    """``image`` itself as a model-ready batch of one (``1 x C x H x W``, or ``1 x H x W x C``),
    normalised by the same kernel as :func:`occlude_batch`'s copies, so that the unoccluded
    score and the occluded ones differ only by the window. Arguments as :func:`occlude_batch`."""
    centers = np.full((1, 2), FAR_CENTER, np.float32)
    return occlude_batch(image, centers, 1, "black", mean, std, scale=scale, layout=layout, dtype=dtype)


# ----------------------------------------------------------------------------- splat


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        H, W = shape
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape must be (H, W), got {shape!r}") from err
    for side in (H, W):
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)):
            raise ValueError(f"shape must be (H, W) integers, got {shape!r}")
        if side < 1:
            raise ValueError(f"shape must be positive, got {shape!r}")
    return _check_size(H, "shape's H"), _check_size(W, "shape's W")


def _check_sum_range(call: _kernels.SplatCall, dtype: torch.dtype) -> None:
    """Refuse values whose sums could overflow float32 outputs (inf instead of an error)."""
    if dtype != torch.float32 or not call.values.numel():
        return
    w_max = 1.0 if call.weights is None or not call.weights.numel() else float(call.weights.abs().max())
    bound = max(float(call.values.abs().max()), 1.0) * w_max * call.values.shape[1]
    if bound > _FLOAT32_MAX:
        raise ValueError(
            f"values x weights summed over {call.values.shape[1]} points can reach {bound:.3g}, beyond float32's "
            f"range: pass float64 out buffers (out=(sums, counts))"
        )


def _check_out(out: tuple[Array, Array], sums_shape: tuple, counts_shape: tuple, device: torch.device):
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError("out must be a (sums, counts) pair")
    for o, name in zip(out, ("out sums", "out counts")):
        if isinstance(o, np.ndarray) and not (o.flags.c_contiguous and o.flags.writeable):
            raise ValueError(f"{name} must be a contiguous, writeable array (it is written in place)")
    sums, counts = (_to_tensor(o, name) for o, name in zip(out, ("out sums", "out counts")))
    for t, name, shape in ((sums, "out sums", sums_shape), (counts, "out counts", counts_shape)):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name} must be float32 or float64, got {t.dtype}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is written in place)")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device}, expected {device}")
    if sums.dtype != counts.dtype:
        raise ValueError(f"out sums and counts must share a dtype, got {sums.dtype} and {counts.dtype}")
    return sums, counts


def splat_add(
    values: Array,
    points: Array,
    patch: int,
    shape: Sequence[int],
    weights: Array | None = None,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """Add each value over the square window around its point.

    ``sums[b, y, x] = sum_n w[n] * values[b, n] * [pixel (x, y) in window(points[n])]`` and
    ``counts[y, x] = sum_n w[n] * [pixel in window(points[n])]`` (``w = 1`` without weights),
    so ``sums / counts`` is the density-normalised map (see :func:`normalize_by_counts`).
    Sums are accumulated in float64 before the final cast; results are deterministic.

    Args:
        values: ``B x N`` float32 (one row per map, e.g. score drops of B images).
        points: ``N x 2`` window centres ``(x, y)`` in output pixels.
        patch: window side in pixels (>= 1).
        shape: output ``(H, W)``.
        weights: optional ``N`` or ``B x N`` weights (e.g. 0/1 visibility per image);
            with ``B x N`` weights the counts are per map, ``B x H x W``.
        out: optional ``(sums, counts)`` float32 or float64 buffers to accumulate into
            (streaming); they are returned.

    Returns:
        ``(sums B x H x W, counts H x W or B x H x W)``, float32 unless ``out`` says otherwise.
    """
    as_numpy = isinstance(values, np.ndarray)
    vals = _to_tensor(values, "values")
    device = vals.device
    vals = _float32(vals, "values", device, "(B x N)")
    if vals.ndim != 2:
        raise ValueError(f"values must be B x N, got shape {tuple(vals.shape)}")
    B, N = (
        _check_size(vals.shape[0], "the number of maps (rows of values)"),
        _check_size(vals.shape[1], "the number of points"),
    )
    pts = _float32(points, "points", device, "(N x 2)")
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] != N:
        raise ValueError(f"points must be N x 2 with N = {N} (columns of values), got shape {tuple(pts.shape)}")
    patch = _check_patch(patch)
    H, W = _check_shape(shape)
    w = None
    if weights is not None:
        w = _float32(weights, "weights", device, "(N or B x N)")
        if tuple(w.shape) not in ((N,), (B, N)):
            raise ValueError(f"weights must have shape ({N},) or ({B}, {N}), got {tuple(w.shape)}")
    per_batch = w is not None and w.ndim == 2
    counts_shape = (B, H, W) if per_batch else (H, W)
    call = _kernels.SplatCall(vals, pts, w, patch, H, W)
    if out is None:
        _check_sum_range(call, torch.float32)
        sums = _alloc(torch.zeros, (B, H, W), torch.float32, device, "the sums")
        counts = _alloc(torch.zeros, counts_shape, torch.float32, device, "the counts")
    else:
        sums, counts = _check_out(out, (B, H, W), counts_shape, device)
        _check_sum_range(call, sums.dtype)
    _kernels.splat(call, sums, counts)
    if out is not None:
        return out[0], out[1]
    return _restore(sums, as_numpy), _restore(counts, as_numpy)


def normalize_by_counts(sums: Array, counts: Array) -> Array:
    """``sums / counts`` where ``counts > 0`` and 0 elsewhere (the CIS rule of docs/architecture.md).

    Args:
        sums: ``... x H x W``.
        counts: broadcastable to ``sums`` (``H x W`` or ``... x H x W``).

    Returns:
        Same shape and kind as ``sums``, in ``sums``' floating dtype.
    """
    as_numpy = isinstance(sums, np.ndarray)
    s, c = _to_tensor(sums, "sums"), _to_tensor(counts, "counts")
    if not s.is_floating_point():
        s = s.float()
    c = c.to(device=s.device, dtype=s.dtype)
    try:
        torch.broadcast_shapes(s.shape, c.shape)
    except RuntimeError as err:
        raise ValueError(f"counts of shape {tuple(c.shape)} do not broadcast to sums {tuple(s.shape)}") from err
    covered = c > 0
    result = torch.where(covered, s / torch.where(covered, c, torch.ones_like(c)), torch.zeros_like(s))
    return _restore(result, as_numpy)


def splat_add_grouped(
    values: Array,
    points: Array,
    patch: int,
    shape: Sequence[int],
    group_ids: Array | Sequence[int],
    num_groups: int | None = None,
    weights: Array | None = None,
    *,
    normalize_each: bool = True,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """Per-group sums and counts of splatted maps, for streaming per-group CMS.

    With ``normalize_each`` (default) every map is first density-normalised on its own
    (its CIS), then ``sums[g] = sum of the CIS of the maps in group g`` and
    ``counts[g] = number of those maps that cover each pixel``; the per-group CMS is
    ``sums[g] / n_g`` (mean over images, uncovered pixels counting as 0) or
    ``normalize_by_counts(sums, counts)`` (mean over covering images). Without it,
    ``sums[g]`` and ``counts[g]`` add the raw :func:`splat_add` sums and counts.
    Group reduction runs in a fixed order (float64), so results are deterministic.

    Args:
        values: ``B x N``; points: ``N x 2``; patch, shape, weights: as :func:`splat_add`.
        group_ids: ``B`` integers in ``[0, num_groups)``.
        num_groups: number of groups G (default ``max(group_ids) + 1``).
        out: optional ``(sums G x H x W, counts G x H x W)`` buffers to accumulate into.

    Returns:
        ``(sums G x H x W, counts G x H x W)``, float32 unless ``out`` says otherwise.
    """
    as_numpy = isinstance(values, np.ndarray)
    vals = _to_tensor(values, "values")
    device = vals.device
    gid = _to_tensor(group_ids, "group_ids").to(device)
    if gid.is_floating_point() and not bool((gid == gid.round()).all()):
        raise ValueError("group_ids must be integers")
    gid = gid.long()
    if gid.ndim != 1 or (vals.ndim == 2 and gid.shape[0] != vals.shape[0]):
        raise ValueError(f"group_ids must have one id per row of values, got shape {tuple(gid.shape)}")
    if num_groups is not None:
        num_groups = _check_size(positive_int(num_groups, "num_groups", " or None"), "num_groups")
    G = _check_size(
        int(gid.max()) + 1 if num_groups is None and gid.numel() else int(num_groups or 0), "the number of groups"
    )
    if gid.numel() and (int(gid.min()) < 0 or int(gid.max()) >= G):
        raise ValueError(f"group_ids must lie in [0, {G}), got range [{int(gid.min())}, {int(gid.max())}]")
    H, W = _check_shape(shape)
    B = gid.shape[0]
    sums_b, counts_b = splat_add(
        vals,
        points,
        patch,
        (H, W),
        weights,
        out=(
            _alloc(torch.zeros, (B, H, W), torch.float64, device, "the per-map sums"),
            _alloc(
                torch.zeros,
                (B, H, W) if weights is not None and np.ndim(weights) == 2 else (H, W),
                torch.float64,
                device,
                "the per-map counts",
            ),
        ),
    )
    counts_b = counts_b.expand(B, H, W)
    if normalize_each:
        sums_b, counts_b = normalize_by_counts(sums_b, counts_b), (counts_b > 0).double()
    if out is None:
        sums = _alloc(torch.zeros, (G, H, W), torch.float32, device, "the group sums")
        counts = _alloc(torch.zeros, (G, H, W), torch.float32, device, "the group counts")
    else:
        sums, counts = _check_out(out, (G, H, W), (G, H, W), device)
    for g in torch.unique(gid).tolist():
        members = gid == g
        sums[g] += sums_b[members].sum(0).to(sums.dtype)
        counts[g] += counts_b[members].sum(0).to(counts.dtype)
    if out is not None:
        return out[0], out[1]
    return _restore(sums, as_numpy), _restore(counts, as_numpy)
