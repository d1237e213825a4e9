"""Hypothesis fuzz of the native ops, run by ``test_ops_fuzz.py`` in a subprocess so that a
crash (segfault, abort) fails that test instead of killing pytest.

Every call must either return what the numpy reference (``reference.py``) computes for
the arguments as the op documents them, or raise ``ValueError`` (naming an argument) or
``MemoryError``. The process limits its address space to ~1.5 GiB past its start-up size,
so oversized canvases fail fast instead of eating the machine. Usage:
``python ops_fuzz_worker.py EXAMPLES`` (prints one line per op; exit status 0 = all held).
"""

from __future__ import annotations

import resource
import sys

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import occlude_batch_ref, splat_add_ref

from facesal_fast import ops

EXAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 200
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
F32_EPS = 2.0**-23
#: per op, how the calls ended: a result checked against the reference, or an exception
OUTCOMES = {op: {"result": 0, "ValueError": 0, "MemoryError": 0} for op in ("occlude", "splat")}

# ----------------------------------------------------------------------------- strategies

HUGE = [1e-30, -1e6, 3e9, 2.0**23 + 1, 1e30, -1e30, 3.4e38]  # finite, far off any image
NON_FINITE = [float("nan"), float("inf"), -float("inf")]
ARRAY_DTYPES = [
    np.uint8,
    np.float32,
    np.float64,
    np.int32,
    np.int64,
    np.uint16,
    np.float16,
    np.bool_,
    np.complex64,
    np.dtype(">f4"),
]
coordinates = st.one_of(st.floats(-40, 40, width=32), st.sampled_from([0.5, -0.5, 1.49, 2.5] + HUGE))
hostile_ints = st.sampled_from([0, -1, 2**24, ops.MAX_SIZE, ops.MAX_SIZE + 1, 10**9, 2**31, 2**63, 10**20])
hostile_floats = st.sampled_from([0.0, 1e-300, 1e-30, 1e30, 1e300, -1.0, "a"] + NON_FINITE)


@st.composite
def arrays(draw, shape, dtypes=ARRAY_DTYPES, elements=coordinates):
    """A numpy array (or a torch tensor of it) of ``shape`` with a drawn dtype and values."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if dtype.kind in "fc":
        values = draw(hnp.arrays(np.float64, shape, elements=elements))
        with np.errstate(over="ignore", invalid="ignore"):
            array = values.astype(dtype)
    elif dtype == np.bool_:
        array = draw(hnp.arrays(dtype, shape, elements=st.booleans()))
    else:
        info = np.iinfo(dtype)
        array = draw(hnp.arrays(dtype, shape, elements=st.integers(max(info.min, -300), min(info.max, 300))))
    if draw(st.booleans()) and array.dtype.isnative and array.dtype not in (np.uint16,):
        return torch.from_numpy(array)
    return array


def hostile_arrays(shape, elements):
    """Any dtype; NaN, inf and huge values among the elements."""
    return arrays(shape, ARRAY_DTYPES, st.one_of(elements, st.sampled_from(HUGE + NON_FINITE)))


def shapes(ndims=st.integers(0, 4), side=st.integers(0, 9)):
    return ndims.flatmap(lambda n: st.tuples(*[side] * n))


def per_channel(values):
    return st.one_of(values, st.lists(values, min_size=3, max_size=3))


class Arguments:
    """Draws each argument valid, except at most one (``hostile``), drawn from its hostile
    strategy. ``hostile`` is drawn first; its list starts with "none" entries (the shrink
    target), so most calls are valid and a failing one shrinks towards valid arguments."""

    def __init__(self, data, names: list[str]):
        self.data = data
        self.hostile = data.draw(st.sampled_from(["none"] * len(names) + names), label="hostile argument")

    def draw(self, name: str, valid, hostile):
        return self.data.draw(hostile if name == self.hostile else valid, label=name)


def _numpy(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _call(op: str, names: tuple[str, ...], fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None when it raised ValueError naming one of ``names``
    or MemoryError; outcomes are counted in OUTCOMES."""
    try:
        result = fn(*args, **kwargs)
    except ValueError as err:
        assert any(name in str(err) for name in names), f"ValueError names none of {names}: {err}"
        OUTCOMES[op]["ValueError"] += 1
        return None
    except MemoryError:
        OUTCOMES[op]["MemoryError"] += 1
        return None
    OUTCOMES[op]["result"] += 1
    return result


# ----------------------------------------------------------------------------- occlude_batch


def _fill_reference(fill, image: np.ndarray):
    if isinstance(fill, str):
        return 0.0 if fill == "black" else image.reshape(-1, image.shape[-1]).mean(0)
    fill = _numpy(fill).astype(np.float64)
    return fill.reshape(image.shape) if fill.ndim >= 2 else fill


def _check_occlusion(got, image, centers, patch, fill, mean, std, scale, layout, dtype):
    image = _numpy(image).astype(np.float64)
    image = image[..., None] if image.ndim == 2 else image
    C = image.shape[-1]
    pts = _numpy(centers).astype(np.float64).astype(np.float32)  # the kernels' float32 centres
    f = _fill_reference(fill, image)
    m = np.broadcast_to(np.asarray(mean, np.float64), (C,))
    s = np.broadcast_to(np.asarray(std, np.float64), (C,))
    want = occlude_batch_ref(image, pts, patch, f, m, s, scale=scale, layout=layout)
    got = _numpy(got).astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    bound = (max(np.abs(image).max(initial=0), np.abs(f).max(initial=0)) * scale + np.abs(m).max()) / s.min()
    if dtype == "float16":
        want = want.astype(np.float16).astype(np.float64)
        np.testing.assert_allclose(got, want, rtol=2**-10, atol=2**-24 + 8 * F32_EPS * bound)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=4 * F32_EPS * bound)


OCCLUDE_NAMES = (
    "image",
    "centers",
    "patch",
    "fill",
    "mean",
    "std",
    "scale",
    "layout",
    "dtype",
    "threads",
    "blur_sigma",
)


OCCLUDE_ARGUMENTS = ["image", "centers", "patch", "fill", "mean", "std", "scale", "layout", "dtype", "threads"]


@SETTINGS
@given(st.data())
def fuzz_occlude(data):
    arg = Arguments(data, OCCLUDE_ARGUMENTS)
    shape = arg.draw(
        "image",
        st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3]))
        | st.tuples(st.integers(1, 9), st.integers(1, 9)),
        st.tuples(st.integers(0, 9), st.integers(0, 9), st.sampled_from([1, 3])) | shapes(),
    )
    valid_image = arrays(shape, [np.uint8, np.float32], st.floats(0, 255))
    image = data.draw(
        valid_image if arg.hostile != "image" else st.one_of(valid_image, hostile_arrays(shape, st.floats(0, 255)))
    )
    centers = arg.draw(
        "centers",
        st.tuples(st.integers(0, 12), st.just(2)).flatmap(lambda s: arrays(s, [np.float32, np.float64])),
        st.one_of(st.tuples(st.integers(0, 12), st.just(2)), shapes(st.integers(0, 3))).flatmap(
            lambda s: hostile_arrays(s, coordinates)
        ),
    )
    fill_shape = st.sampled_from([np.shape(image), np.shape(image)[:2]])
    fill = arg.draw(
        "fill",
        st.one_of(
            st.sampled_from(["black", "mean"]),
            per_channel(st.floats(0, 255)),
            fill_shape.flatmap(lambda s: arrays(s, [np.float32, np.uint8, np.float64], st.floats(0, 300))),
        ),
        st.one_of(
            st.just("purple"),
            hostile_floats,
            st.lists(st.floats(0, 255), max_size=4),
            st.sampled_from([(2, 2, 3), np.shape(image)]).flatmap(lambda s: hostile_arrays(s, st.floats(0, 300))),
        ),
    )
    kwargs = dict(
        mean=arg.draw(
            "mean", per_channel(st.floats(-2, 2)), st.one_of(hostile_floats, st.lists(st.floats(-2, 2), max_size=4))
        ),
        std=arg.draw(
            "std", per_channel(st.floats(0.05, 3)), st.one_of(hostile_floats, st.lists(st.floats(-1, 3), max_size=4))
        ),
        scale=arg.draw("scale", st.one_of(st.just(1 / 255), st.just(1.0), st.floats(1e-3, 10)), hostile_floats),
        layout=arg.draw("layout", st.sampled_from(["nchw", "nhwc"]), st.sampled_from(["chw", None])),
        dtype=arg.draw(
            "dtype",
            st.sampled_from(["float32", "float16", np.float16, torch.float16]),
            st.sampled_from(["int8", np.float64]),
        ),
        threads=arg.draw(
            "threads",
            st.one_of(st.none(), st.integers(1, 4)),
            st.one_of(hostile_ints, st.sampled_from([ops.MAX_THREADS, ops.MAX_THREADS + 1, 100000, 1.0])),
        ),
    )
    patch = arg.draw("patch", st.integers(1, 16), st.one_of(hostile_ints, st.sampled_from([2.0, 2.5, True, "3", None])))
    got = _call("occlude", OCCLUDE_NAMES, ops.occlude_batch, image, centers, patch, fill, **kwargs)
    if got is None:
        return
    assert isinstance(got, type(image) if isinstance(image, torch.Tensor) else np.ndarray)
    dtype = "float16" if kwargs["dtype"] in ("float16", np.float16, torch.float16) else "float32"
    _check_occlusion(
        got, image, centers, patch, fill, kwargs["mean"], kwargs["std"], kwargs["scale"], kwargs["layout"], dtype
    )


# ----------------------------------------------------------------------------- splat_add

SPLAT_NAMES = ("values", "points", "patch", "shape", "weights", "out")
SPLAT_ARGUMENTS = ["values", "points", "patch", "shape", "weights", "out"]


@st.composite
def out_buffers(draw, B, H, W, weights, kinds):
    """None, or (sums, counts) starting at ones, numpy or torch; ``kinds`` other than "right"
    are broken: wrong shape, int dtype, strided, read-only, mixed dtypes."""
    kind = draw(st.sampled_from(kinds))
    if kind == "none" or not all(isinstance(d, int) and 0 < d < 50 for d in (B + 1, H, W)):
        return None
    counts_shape = (B, H, W) if weights is not None and np.ndim(weights) == 2 else (H, W)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    sums, counts = np.ones((B, H, W), dtype), np.ones(counts_shape, dtype)
    if kind == "wrong shape":
        counts = np.ones((H + 1, W), dtype)
    elif kind == "int":
        sums, counts = sums.astype(np.int32), counts.astype(np.int32)
    elif kind == "strided":
        sums = np.ones((B, H, 2 * W), dtype)[:, :, ::2]
    elif kind == "read-only":
        sums.flags.writeable = False
    elif kind == "mixed":
        counts = counts.astype(np.float64 if dtype == np.float32 else np.float32)
    return (
        (torch.from_numpy(sums), torch.from_numpy(counts))
        if draw(st.booleans()) and kind != "read-only"
        else (sums, counts)
    )


def _check_splat(got, out, values, points, patch, shape, weights):
    v = _numpy(values).astype(np.float64).astype(np.float32).astype(np.float64)
    pts = _numpy(points).astype(np.float64).astype(np.float32)
    w = None if weights is None else _numpy(weights).astype(np.float64).astype(np.float32).astype(np.float64)
    want_sums, want_counts = splat_add_ref(v, pts, patch, shape, w)
    start = 0.0 if out is None else 1.0  # out buffers start at ones
    w_abs = np.ones(v.shape[1]) if w is None else np.abs(w)
    mass = float((np.abs(v) * w_abs).sum(axis=1).max(initial=0))
    for g, want in zip(got, (want_sums, want_counts)):
        g = _numpy(g).astype(np.float64)
        assert g.shape == want.shape, (g.shape, want.shape)
        np.testing.assert_allclose(g, want + start, rtol=2e-6, atol=1e-6 * (1 + mass + float(w_abs.sum())))


@SETTINGS
@given(st.data())
def fuzz_splat(data):
    arg = Arguments(data, SPLAT_ARGUMENTS)
    B, N = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 10))
    values = arg.draw(
        "values",
        arrays((B, N), [np.float32, np.float64], st.floats(-1e3, 1e3)),
        st.sampled_from([(B, N), (N,), (B, N + 1)]).flatmap(lambda s: hostile_arrays(s, st.floats(-1e3, 1e3))),
    )
    points = arg.draw(
        "points",
        arrays((N, 2), [np.float32, np.float64]),
        st.sampled_from([(N, 2), (N, 3), (N + 1, 2)]).flatmap(lambda s: hostile_arrays(s, coordinates)),
    )
    weights = arg.draw(
        "weights",
        st.sampled_from([None, (N,), (B, N)]).flatmap(
            lambda s: st.none() if s is None else arrays(s, [np.float32, np.float64], st.floats(-1, 2))
        ),
        st.sampled_from([(N,), (B, N), (N + 2,)]).flatmap(lambda s: hostile_arrays(s, st.floats(-1, 2))),
    )
    shape = arg.draw(
        "shape",
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
        st.sampled_from([(0, 5), (5, -1), (14000, 14000), (1, 2**31), (3.5, 4), (4,), (2, 3, 4), 7]),
    )
    patch = arg.draw("patch", st.integers(1, 16), st.one_of(hostile_ints, st.sampled_from([2.0, 2.5, True, "3", None])))
    H, W = shape if isinstance(shape, tuple) and len(shape) == 2 else (0, 0)
    out = arg.draw(
        "out",
        out_buffers(B, H, W, weights, ["none", "right"]),
        out_buffers(B, H, W, weights, ["wrong shape", "int", "strided", "read-only", "mixed"]),
    )
    got = _call("splat", SPLAT_NAMES, ops.splat_add, values, points, patch, shape, weights, out=out)
    if got is None:
        return
    if out is not None:
        assert got[0] is out[0] and got[1] is out[1]
    _check_splat(got, out, values, points, patch, shape, weights)


def _limit_address_space(extra_bytes: int) -> None:
    ops.splat_add(np.ones((3, 5), np.float32), np.ones((5, 2), np.float32), 3, (8, 8))  # start the OpenMP team
    vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, resource.RLIM_INFINITY))


if __name__ == "__main__":
    _limit_address_space(3 * 2**29)
    for op, fuzz in (("occlude", fuzz_occlude), ("splat", fuzz_splat)):
        fuzz()
        print(op, " ".join(f"{k}={v}" for k, v in OUTCOMES[op].items()), flush=True)
