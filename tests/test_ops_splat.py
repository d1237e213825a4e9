import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import clipped_area, splat_add_ref

from facesal_fast import ops

RNG = np.random.default_rng(1)


def random_points(N, H, W, margin=3.0):
    return (RNG.random((N, 2)) * [W + 2 * margin, H + 2 * margin] - margin).astype(np.float32)


def border_points(H, W):
    return np.array(
        [
            [0, 0],
            [W - 1, 0],
            [0, H - 1],
            [W - 1, H - 1],
            [-1, H / 2],
            [W, H / 2],
            [W / 2, -4],
            [W / 2, H + 4],
            [0.5, 0.5],
            [-100, -100],
            [3e9, 2.0],
        ],
        np.float32,
    )


@pytest.mark.parametrize("patch", [1, 2, 15, 16])
@pytest.mark.parametrize("H,W", [(23, 31), (16, 16), (1, 7)])
@pytest.mark.parametrize("B", [1, 3])
def test_matches_reference(patch, H, W, B):
    points = np.concatenate([border_points(H, W), random_points(50, H, W)])
    values = RNG.normal(size=(B, len(points))).astype(np.float32)
    sums, counts = ops.splat_add(values, points, patch, (H, W))
    want_sums, want_counts = splat_add_ref(values, points, patch, (H, W))
    assert sums.dtype == np.float32 and sums.shape == (B, H, W) and counts.shape == (H, W)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(counts, want_counts)


@pytest.mark.parametrize("per_batch", [False, True])
def test_weights(per_batch):
    H, W, B, N = 20, 25, 2, 60
    points = random_points(N, H, W)
    values = RNG.normal(size=(B, N)).astype(np.float32)
    weights = RNG.random((B, N) if per_batch else N).astype(np.float32)
    sums, counts = ops.splat_add(values, points, 5, (H, W), weights)
    want_sums, want_counts = splat_add_ref(values, points, 5, (H, W), weights)
    assert counts.shape == want_counts.shape
    np.testing.assert_allclose(sums, want_sums, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(counts, want_counts, rtol=1e-5, atol=1e-5)


def test_empty_points_give_zeros():
    sums, counts = ops.splat_add(np.zeros((2, 0), np.float32), np.zeros((0, 2), np.float32), 3, (4, 5))
    assert sums.shape == (2, 4, 5) and not sums.any() and not counts.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulates_into_buffers(dtype):
    points = random_points(40, 12, 14)
    a, b = RNG.normal(size=(2, 1, 40)).astype(np.float32)
    sums, counts = np.zeros((1, 12, 14), dtype), np.zeros((12, 14), dtype)
    for values in (a, b):
        out = ops.splat_add(values, points, 3, (12, 14), out=(sums, counts))
        assert out[0] is sums
    want_a, want_counts = splat_add_ref(a, points, 3, (12, 14))
    want_b, _ = splat_add_ref(b, points, 3, (12, 14))
    np.testing.assert_allclose(sums, want_a + want_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(counts, 2 * want_counts)


def test_normalize_by_counts():
    sums = np.array([[[2.0, 3.0], [0.0, 5.0]]], np.float32)
    counts = np.array([[2.0, 0.0], [1.0, 4.0]], np.float32)
    np.testing.assert_array_equal(ops.normalize_by_counts(sums, counts), [[[1.0, 0.0], [0.0, 1.25]]])
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.normalize_by_counts(sums, np.ones((3, 3)))


def test_splat_mean_is_splat_then_normalize():
    points = RNG.uniform(-2, 14, (40, 2)).astype(np.float32)
    values = RNG.normal(size=(3, 40)).astype(np.float32)
    sums, want_counts = splat_add_ref(values, points, 5, (12, 14))
    want = np.where(want_counts > 0, sums / np.where(want_counts > 0, want_counts, 1), 0)
    maps, counts = ops.splat_mean(values, points, 5, (12, 14))
    np.testing.assert_allclose(maps, want, atol=1e-5)
    np.testing.assert_array_equal(counts, want_counts)
    one, _ = ops.splat_mean(values[1].astype(np.float64).tolist(), points, 5, (12, 14))
    assert one.shape == (12, 14) and one.dtype == np.float32
    np.testing.assert_allclose(one, want[1], atol=1e-5)
    as_tensor, _ = ops.splat_mean(torch.from_numpy(values[1]), torch.from_numpy(points), 5, (12, 14))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (12, 14)


@pytest.mark.parametrize("normalize_each", [True, False])
def test_grouped_matches_per_image_reference(normalize_each):
    H, W, B, N = 15, 17, 5, 30
    points = random_points(N, H, W)
    values = RNG.normal(size=(B, N)).astype(np.float32)
    visible = (RNG.random((B, N)) > 0.3).astype(np.float32)
    groups = np.array([1, 0, 1, 2, 1])
    sums, counts = ops.splat_add_grouped(values, points, 4, (H, W), groups, 3, visible, normalize_each=normalize_each)
    ref_sums, ref_counts = splat_add_ref(values, points, 4, (H, W), visible)
    if normalize_each:
        ref_sums = np.where(ref_counts > 0, ref_sums / np.where(ref_counts > 0, ref_counts, 1), 0)
        ref_counts = (ref_counts > 0).astype(np.float64)
    for g in range(3):
        np.testing.assert_allclose(sums[g], ref_sums[groups == g].sum(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(counts[g], ref_counts[groups == g].sum(0), rtol=1e-6)


def test_grouped_rejects_bad_ids():
    values, points = np.ones((2, 3), np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"group_ids must lie in \[0, 2\)"):
        ops.splat_add_grouped(values, points, 3, (4, 4), [0, 2], 2)
    with pytest.raises(ValueError, match="one id per row"):
        ops.splat_add_grouped(values, points, 3, (4, 4), [0, 1, 1], 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(values=np.ones(3, np.float32)), "values must be B x N"),
        (dict(values=np.array([[1.0, np.nan, 0.0]], np.float32)), "values contains NaN"),
        (dict(values=np.array([["a", "b", "c"]])), "values: expected a numeric array"),
        (dict(points=np.zeros((4, 2), np.float32)), "points must be N x 2 with N = 3"),
        (dict(points=np.full((3, 2), np.inf, np.float32)), "points contains NaN or Inf"),
        (dict(patch=-1), "patch must be a positive integer"),
        (dict(shape=(0, 4)), "shape must be positive"),
        (dict(shape=5), r"shape must be \(H, W\)"),
        (dict(weights=np.ones(4, np.float32)), "weights must have shape"),
        (dict(out=(np.zeros((1, 4, 4), np.float32), np.zeros((4, 5), np.float32))), "out counts must have shape"),
        (dict(out=(np.zeros((1, 4, 4), np.int32), np.zeros((4, 4), np.int32))), "float32 or float64"),
        (dict(out=(np.zeros((1, 4, 8), np.float32)[:, :, ::2], np.zeros((4, 4), np.float32))), "contiguous"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, match):
    args = dict(values=np.ones((1, 3), np.float32), points=np.zeros((3, 2), np.float32), patch=3, shape=(4, 4))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ops.splat_add(**args)


@settings(max_examples=60, deadline=None)
@given(
    H=st.integers(1, 24),
    W=st.integers(1, 24),
    N=st.integers(0, 30),
    patch=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_total_mass_and_counts_independent_of_values(H, W, N, patch, seed):
    rng = np.random.default_rng(seed)
    points = (rng.random((N, 2)) * [W + 8, H + 8] - 4).astype(np.float32)
    values = rng.normal(size=(2, N)).astype(np.float32)
    sums, counts = ops.splat_add(values, points, patch, (H, W))
    areas = np.array([clipped_area(x, y, patch, H, W) for x, y in points], np.float64)
    np.testing.assert_allclose(sums.sum(axis=(1, 2)), values.astype(np.float64) @ areas, rtol=1e-4, atol=1e-3)
    assert counts.sum() == areas.sum()
    _, counts_other = ops.splat_add(rng.normal(size=(1, N)).astype(np.float32), points, patch, (H, W))
    np.testing.assert_array_equal(counts, counts_other)


def test_deterministic_across_runs():
    points = random_points(5000, 64, 64)
    values = RNG.normal(size=(4, 5000)).astype(np.float32)
    first = ops.splat_add(values, points, 15, (64, 64))
    second = ops.splat_add(values, points, 15, (64, 64))
    np.testing.assert_array_equal(first[0], second[0])


@pytest.mark.parametrize("per_batch", [None, False, True])
def test_devices_agree(device, per_batch):
    H, W, B, N = 70, 65, 3, 2000
    points = np.concatenate([border_points(H, W), random_points(N, H, W)])
    values = RNG.normal(size=(B, len(points))).astype(np.float32)
    weights = (
        None if per_batch is None else RNG.random((B, len(points)) if per_batch else len(points)).astype(np.float32)
    )
    want = ops.splat_add(values, points, 15, (H, W), weights)
    to = lambda a: None if a is None else torch.from_numpy(a).to(device)
    got = ops.splat_add(to(values), to(points), 15, (H, W), to(weights))
    for g, w in zip(got, want):
        assert g.device.type == device.type
        np.testing.assert_allclose(g.cpu().numpy(), w, rtol=1e-5, atol=1e-4)
    grouped_want = ops.splat_add_grouped(values, points, 15, (H, W), [0, 1, 0], 2, weights)
    grouped_got = ops.splat_add_grouped(to(values), to(points), 15, (H, W), torch.tensor([0, 1, 0]), 2, to(weights))
    for g, w in zip(grouped_got, grouped_want):
        np.testing.assert_allclose(g.cpu().numpy(), w, rtol=1e-5, atol=1e-4)
