"""Typed, checked wrappers over the native kernels in ``facesal_fast._C``.

Every op accepts numpy arrays or torch tensors (CPU or CUDA) and returns the kind it
got: numpy in, numpy out; a CUDA tensor in, a CUDA tensor out on the same device,
computed on torch's current stream. Inputs are validated here, so the kernels never
see a bad shape, dtype or non-finite value: bad input raises ``ValueError`` naming the
argument.

- :func:`occlude_batch`, :func:`unoccluded` (``ops/occlude.py``): image ``H x W x C``,
  centres ``K x 2`` -> batch ``K x C x H x W`` (or ``K x H x W x C``).
- :func:`splat_add`, :func:`splat_add_grouped`, :func:`normalize_by_counts`, :func:`splat_mean`
  (``ops/splat.py``): values ``B x N``, points ``N x 2`` -> sums ``B x H x W`` (``G x H x W``
  per group) and counts ``H x W`` (or per map / group); the mean maps.

Each op's module holds everything of that op on the Python side (checks, call record, kernels,
torch implementation, self-check case) and registers it with ``_dispatch.py`` (the table of
ops and the choice of kernel per device, with the CUDA self-check). Below them, shared by all
ops and naming none: ``checks.py`` (argument checks), ``blur.py`` (the blur fill),
``_native.py`` (the calls into ``_C``, by the op's name) and ``_torch.py`` (the window rule in
torch). Adding an op: docs/architecture.md, "How to add".

Window rule (shared by both ops, see docs/architecture.md): a square window of size ``p`` centred
at ``(x, y)`` covers columns ``cx - (p-1)//2 .. cx + p//2`` with ``cx = floor(x + 0.5)``,
rows likewise, clipped to the image.
"""

from facesal_fast.ops._native import has_cuda
from facesal_fast.ops.checks import MAX_SIZE, MAX_THREADS, Array
from facesal_fast.ops.occlude import FAR_CENTER, Fill, occlude_batch, unoccluded
from facesal_fast.ops.splat import normalize_by_counts, splat_add, splat_add_grouped, splat_mean

__all__ = [
    "Array",
    "Fill",
    "FAR_CENTER",
    "MAX_SIZE",
    "MAX_THREADS",
    "has_cuda",
    "occlude_batch",
    "unoccluded",
    "splat_add",
    "splat_add_grouped",
    "splat_mean",
    "normalize_by_counts",
]
