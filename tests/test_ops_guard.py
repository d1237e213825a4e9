"""The run-time guard of the native device kernels (issue 21) and their torch fallbacks.

No GPU is needed: a faked device kernel is registered for the CPU device type, so the
self-check, the one warning and the switch to the torch implementation run for real."""

import warnings

import numpy as np
import pytest
import torch
from reference import occlude_batch_ref, splat_add_ref

from facesal_fast import ops
from facesal_fast.ops import _dispatch, _native, _torch
from facesal_fast.ops.occlude import OccludeCall
from facesal_fast.ops.splat import SplatCall

RNG = np.random.default_rng(21)
OCCLUDE, SPLAT = _dispatch.OPS["occlude_batch"], _dispatch.OPS["splat_add"]


def _broken_occlude(call, out, threads=0):
    OCCLUDE.cpu(call, out, threads=threads)
    out.view(-1)[-1] += 1  # one wrong pixel in the last copy


def _failing_kernel(*args, **kwargs):
    raise RuntimeError("no kernel image is available for execution on the device")


@pytest.fixture
def fake_device(monkeypatch):
    """Register device kernels for the CPU device type with an empty verdict cache; returns
    a function installing ``{op: kernel}`` and counting its calls."""
    monkeypatch.setattr(_dispatch, "_verdicts", {})
    monkeypatch.delenv(_dispatch.SELFCHECK_ENV, raising=False)
    calls = {"occlude_batch": 0, "splat_add": 0}

    def install(**kernels):
        def counted(op, fn):
            def wrapper(*args, **kwargs):
                calls[op] += 1
                return fn(*args, **kwargs)

            return wrapper

        monkeypatch.setattr(_dispatch, "GUARDED", {"cpu": {op: counted(op, fn) for op, fn in kernels.items()}})
        return calls

    return install


def _occlusion_case():
    image = RNG.integers(0, 256, (17, 14, 3)).astype(np.uint8)
    centers = np.array([[0, 0], [13, 16], [-1, 4], [6.5, 8.49], [20, 3], [7, 7]], np.float32)
    return image, centers


def test_mismatching_kernel_is_disabled_with_one_warning_and_the_torch_fallback_is_right(fake_device):
    calls = fake_device(occlude_batch=_broken_occlude)
    image, centers = _occlusion_case()
    want = occlude_batch_ref(image, centers, 5, 0.0, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4])
    with pytest.warns(
        RuntimeWarning, match=r"native CPU occlude_batch kernel is disabled on cpu .*disagrees"
    ) as record:
        got = ops.occlude_batch(torch.from_numpy(image), centers, 5, "black", [0.5, 0.4, 0.3], [0.2, 0.3, 0.4])
    assert len(record) == 1 and calls["occlude_batch"] == 2  # the self-check's two configurations, then never again
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ops.occlude_batch(torch.from_numpy(image), centers, 5, "black", [0.5, 0.4, 0.3], [0.2, 0.3, 0.4])
    assert calls["occlude_batch"] == 2
    np.testing.assert_array_equal(again.numpy(), got.numpy())


def test_splat_kernel_that_cannot_launch_falls_back(fake_device):
    calls = fake_device(splat_add=_failing_kernel)
    points = np.array([[0, 0], [10, 12], [-1, 6], [5.5, 6.5]], np.float32)
    values = RNG.normal(size=(2, 4)).astype(np.float32)
    with pytest.warns(
        RuntimeWarning, match=r"splat_add kernel is disabled on cpu .*failed: RuntimeError: no kernel image"
    ):
        sums, counts = ops.splat_add(torch.from_numpy(values), torch.from_numpy(points), 3, (13, 11))
    want_sums, want_counts = splat_add_ref(values, points, 3, (13, 11))
    np.testing.assert_allclose(sums.numpy(), want_sums, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(counts.numpy(), want_counts)
    assert calls["splat_add"] == 1


def test_agreeing_kernel_is_kept_without_a_warning(fake_device):
    calls = fake_device(occlude_batch=OCCLUDE.cpu, splat_add=SPLAT.cpu)
    image, centers = _occlusion_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.occlude_batch(image, centers, 5)
        ops.splat_add_grouped(np.ones((2, 6), np.float32), centers, 3, (9, 9), [0, 1])
        ops.occlude_batch(image, centers, 5)
    assert calls == {"occlude_batch": 2 + 2, "splat_add": 3 + 1}  # self-checks once, then every call
    assert _dispatch._verdicts == {("occlude_batch", "cpu"): True, ("splat_add", "cpu"): True}


def test_cuda_tensors_without_cuda_kernels_fall_back_with_the_reason(fake_device, monkeypatch):
    """A build without nvcc: the CUDA kernel refuses to run, the op warns once and uses torch."""
    monkeypatch.setattr(_native._C, "built_with_cuda", lambda: False)
    fake_device(splat_add=SPLAT.cuda)
    values, points = np.ones((1, 2), np.float32), np.array([[1, 1], [3, 2]], np.float32)
    with pytest.warns(RuntimeWarning, match="splat_add kernel is disabled on cpu .*built without CUDA kernels"):
        sums, counts = ops.splat_add(torch.from_numpy(values), torch.from_numpy(points), 3, (5, 5))
    np.testing.assert_array_equal(counts.numpy(), splat_add_ref(values, points, 3, (5, 5))[1])


def test_environment_variable_skips_the_self_check(fake_device, monkeypatch):
    calls = fake_device(occlude_batch=_broken_occlude)
    monkeypatch.setenv(_dispatch.SELFCHECK_ENV, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.occlude_batch(*_occlusion_case(), 5)
    assert calls["occlude_batch"] == 1 and _dispatch._verdicts == {}


def _one_wrong_value(kernel):
    """``kernel`` followed by +1 on the last value of its last output."""

    def run(call, *outputs, **options):
        kernel(call, *outputs, **options)
        outputs[-1].view(-1)[-1] += 1

    return run


@pytest.mark.parametrize("name", sorted(_dispatch.OPS))
def test_every_registered_op_has_a_self_check_that_its_torch_implementation_passes(name):
    """Each op's module registers all of it: its CUDA kernel is guarded, its self-check
    passes its CPU kernel and its torch implementation and catches one wrong value."""
    op = _dispatch.OPS[name]
    cpu = torch.device("cpu")
    assert op.name == name and _dispatch.GUARDED["cuda"][name] is op.cuda
    assert op.selfcheck(op.cpu, cpu) == 0.0
    assert op.selfcheck(op.torch_impl, cpu) <= 1.0
    assert op.selfcheck(_one_wrong_value(op.cpu), cpu) > 1.0


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fill", ["black", "image", (200.0, 150.0, 120.0)])
def test_torch_occlude_matches_the_reference(layout, dtype, fill):
    H, W = 19, 12
    image = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    fill_image = RNG.random((H, W, 3)).astype(np.float32) * 255
    centers = np.concatenate(
        [[[0, 0], [W - 1, H - 1], [-0.5, -0.51], [W + 2, 3], [1e6, -1e6], [5.5, 2.5]], RNG.random((20, 2)) * [W, H]]
    ).astype(np.float32)
    fill_arg = fill_image if fill == "image" else (0.0 if fill == "black" else fill)
    call = OccludeCall(
        torch.from_numpy(image),
        torch.from_numpy(centers),
        6,
        torch.from_numpy(fill_image) if fill == "image" else None,
        [0.0] * 3 if fill in ("black", "image") else list(fill),
        1 / 255,
        [0.485, 0.456, 0.406],
        [0.229, 0.224, 0.225],
        layout == "nhwc",
    )
    shape = (len(centers), H, W, 3) if layout == "nhwc" else (len(centers), 3, H, W)
    out = torch.empty(shape, dtype=getattr(torch, dtype))
    OCCLUDE.torch_impl(call, out)
    want = occlude_batch_ref(image, centers, 6, fill_arg, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], layout=layout)
    if dtype == "float16":
        want = want.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(out.double().numpy(), want, rtol=1e-3 if dtype == "float16" else 1e-5, atol=1e-5)
    native = torch.empty_like(out)
    OCCLUDE.cpu(call, native)
    np.testing.assert_allclose(out.double().numpy(), native.double().numpy(), rtol=1e-3 if dtype == "float16" else 1e-6)


@pytest.mark.parametrize("weights", [None, "per point", "per map"])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("patch", [1, 4, 15])
def test_torch_splat_matches_the_reference(weights, out_dtype, patch):
    H, W, B = 23, 18, 3
    points = np.concatenate(
        [
            [[0, 0], [W - 1, H - 1], [-1, H / 2], [W / 2, H + 4], [3e9, 2], [0.5, 0.5]],
            RNG.random((60, 2)) * [W + 6, H + 6] - 3,
        ]
    ).astype(np.float32)
    values = RNG.normal(size=(B, len(points))).astype(np.float32)
    w = {None: None, "per point": RNG.random(len(points)), "per map": RNG.random((B, len(points)))}[weights]
    w = None if w is None else w.astype(np.float32)
    call = SplatCall(
        torch.from_numpy(values), torch.from_numpy(points), None if w is None else torch.from_numpy(w), patch, H, W
    )
    want_sums, want_counts = splat_add_ref(values, points, patch, (H, W), w)
    sums, counts = torch.ones((B, H, W), dtype=out_dtype), torch.ones(want_counts.shape, dtype=out_dtype)
    SPLAT.torch_impl(call, sums, counts)  # accumulates into the buffers, like the kernels
    np.testing.assert_allclose(sums.numpy(), want_sums + 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(counts.numpy(), want_counts + 1, rtol=1e-6)


def test_windows_follow_the_kernel_rule_at_huge_centres():
    """floor(x + 0.5) is taken in float32 like the kernels: at 2^23 + 1 it rounds up."""
    centers = torch.tensor([[2**23 + 1, 2.0], [-(2.0**25), 0.0]])
    lo, hi, valid = _torch.windows(centers, 2**24, 6, 8)
    image = np.arange(1, 6 * 8 + 1, dtype=np.uint8).reshape(6, 8)
    native = ops.occlude_batch(image, centers.numpy(), 2**24, scale=1.0)[0, 0]
    covered = np.argwhere(native == 0)
    assert bool(valid[0]) and not bool(valid[1])
    assert (lo[0].tolist(), hi[0].tolist()) == ([covered[:, 1].min(), covered[:, 0].min()], [7, 5])


@pytest.mark.cuda
@pytest.mark.skipif(not ops.has_cuda(), reason="needs a CUDA GPU and a CUDA build of facesal_fast._C")
def test_cuda_kernels_pass_their_self_check(monkeypatch):
    monkeypatch.setattr(_dispatch, "_verdicts", {})
    monkeypatch.delenv(_dispatch.SELFCHECK_ENV, raising=False)
    device = torch.device("cuda")
    for name, op in _dispatch.OPS.items():
        assert op.selfcheck(op.cuda, device) <= 1.0, name
        assert _dispatch.native_ok(name, device), name
    image, centers = _occlusion_case()
    got = ops.occlude_batch(torch.from_numpy(image).cuda(), centers, 5)
    fallback = torch.empty_like(got)
    OCCLUDE.torch_impl(
        OccludeCall(
            torch.from_numpy(image).cuda(),
            torch.from_numpy(centers).cuda(),
            5,
            None,
            [0.0] * 3,
            1 / 255,
            [0.0] * 3,
            [1.0] * 3,
            False,
        ),
        fallback,
    )
    torch.testing.assert_close(got, fallback)
