import numpy as np
import pytest
import torch
from reference import occlude_batch_ref, window

from facesal_fast import ops

RNG = np.random.default_rng(0)


def random_image(H, W, C, dtype=np.uint8):
    img = RNG.integers(0, 256, (H, W, C)).astype(dtype)
    return img + RNG.random((H, W, C)).astype(np.float32) if dtype == np.float32 else img


def edge_centers(H, W):
    """Corners, borders, the middle, half-pixel ties and points off the image."""
    return np.array(
        [
            [0, 0],
            [W - 1, 0],
            [0, H - 1],
            [W - 1, H - 1],
            [W / 2, 0],
            [0, H / 2],
            [W - 1, H / 2],
            [W / 2, H - 1],
            [W / 2, H / 2],
            [1.5, 2.5],
            [-0.5, -0.51],
            [-3, 4],
            [W + 2, H / 2],
            [1e6, -1e6],
        ],
        dtype=np.float32,
    )


@pytest.mark.parametrize("patch", [1, 2, 15, 16])
@pytest.mark.parametrize("H,W,C", [(17, 24, 3), (32, 31, 1), (5, 4, 3)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_matches_reference_black_fill(patch, H, W, C, layout):
    img = random_image(H, W, C)
    centers = np.concatenate([edge_centers(H, W), RNG.random((9, 2), dtype=np.float32) * [W, H]])
    mean, std = RNG.random(C) * 0.5, 0.2 + RNG.random(C)
    got = ops.occlude_batch(img, centers, patch, "black", mean, std, layout=layout)
    want = occlude_batch_ref(img, centers, patch, 0.0, mean, std, layout=layout)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float32_image_and_scale():
    img = random_image(20, 21, 3, np.float32)
    centers = RNG.random((7, 2), dtype=np.float32) * 20
    got = ops.occlude_batch(img, centers, 5, fill=(10, 20, 30), scale=1.0)
    want = occlude_batch_ref(img, centers, 5, np.array([10.0, 20.0, 30.0]), 0.0, 1.0, scale=1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_mean_fill_uses_image_mean_colour():
    img = random_image(12, 13, 3)
    got = ops.occlude_batch(img, [[6, 6]], 3, fill="mean", scale=1.0)
    np.testing.assert_allclose(got[0, :, 6, 6], img.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_array_equal(got[0, :, 0, 0], img[0, 0])


def test_fill_image_and_blur():
    img = random_image(16, 18, 3)
    fill = random_image(16, 18, 3, np.float32)
    centers = np.array([[3, 4], [17, 15]], np.float32)
    got = ops.occlude_batch(img, centers, 4, fill=fill, scale=1.0)
    np.testing.assert_allclose(got, occlude_batch_ref(img, centers, 4, fill, 0.0, 1.0, scale=1.0), rtol=1e-6)
    blurred = ops.occlude_batch(img, [[8, 8]], 5, fill="blur", scale=1.0, blur_sigma=2.0)[0]
    window_pixels = blurred[:, 6:11, 6:11]
    assert window_pixels.std() < img[6:11, 6:11].std()  # a blur flattens the patch
    np.testing.assert_array_equal(blurred[:, 0, 0], img[0, 0])


def test_blur_of_constant_image_is_constant():
    img = np.full((9, 7, 3), 77, np.uint8)
    got = ops.occlude_batch(img, [[3, 4]], 9, fill="blur", scale=1.0, blur_sigma=3.0)
    np.testing.assert_allclose(got, 77.0, rtol=1e-5)


def test_float16_output_matches_rounded_reference():
    img = random_image(19, 22, 3)
    centers = edge_centers(19, 22)
    got = ops.occlude_batch(img, centers, 7, "black", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], dtype="float16")
    want = occlude_batch_ref(img, centers, 7, 0.0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3)


def test_grayscale_2d_input_and_empty_batch():
    img = random_image(10, 11, 1)[..., 0]
    assert ops.occlude_batch(img, [[5, 5]], 3).shape == (1, 1, 10, 11)
    empty = ops.occlude_batch(img, np.zeros((0, 2), np.float32), 3)
    assert empty.shape == (0, 1, 10, 11)


def test_window_outside_image_leaves_it_unchanged():
    img = random_image(8, 8, 3)
    got = ops.occlude_batch(img, [[-20, 3], [3, 50]], 5, scale=1.0)
    np.testing.assert_array_equal(got, np.broadcast_to(img.transpose(2, 0, 1), got.shape))


def test_torch_in_torch_out():
    img = torch.from_numpy(random_image(9, 10, 3))
    out = ops.occlude_batch(img, torch.tensor([[4.0, 4.0]]), 3)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 9, 10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(image=np.zeros((4, 4, 2), np.uint8)), "C in"),
        (dict(image=np.zeros((4, 4, 3), np.float64)), "uint8 or float32"),
        (dict(image=np.full((4, 4, 3), np.nan, np.float32)), "image contains NaN"),
        (dict(centers=np.zeros((3, 3), np.float32)), "centers must be K x 2"),
        (dict(centers=np.array([[np.nan, 1.0]], np.float32)), "centers contains NaN"),
        (dict(patch=0), "patch must be a positive integer"),
        (dict(patch=2.5), "patch must be a positive integer"),
        (dict(fill="purple"), "fill must be"),
        (dict(fill=np.zeros((3, 3, 3), np.float32)), "fill image must have"),
        (dict(fill=(1, 2)), "fill: expected a scalar or 3"),
        (dict(std=0.0), "std must be positive"),
        (dict(mean=[0.1, 0.2]), "mean: expected"),
        (dict(layout="chw"), "layout"),
        (dict(dtype="int8"), "dtype must be"),
        (dict(threads=0), "threads must be a positive integer"),
        (dict(threads=1.5), "threads must be a positive integer"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, match):
    args = dict(image=np.zeros((4, 4, 3), np.uint8), centers=np.zeros((1, 2), np.float32), patch=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ops.occlude_batch(**args)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_the_batch(threads):
    img = random_image(19, 23, 3)
    centers = np.concatenate([edge_centers(19, 23), RNG.random((40, 2), dtype=np.float32) * [23, 19]])
    expected = occlude_batch_ref(img, centers, 5, 0.0, 0.5, 0.25)
    np.testing.assert_allclose(
        ops.occlude_batch(img, centers, 5, mean=0.5, std=0.25, threads=threads), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_unoccluded_is_the_normalised_image(layout):
    img = random_image(9, 14, 3)
    expected = (img.astype(np.float64) / 255 - [0.1, 0.2, 0.3]) / 0.5
    expected = expected.transpose(2, 0, 1)[None] if layout == "nchw" else expected[None]
    got = ops.unoccluded(img, [0.1, 0.2, 0.3], 0.5, layout=layout)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        ops.unoccluded(torch.from_numpy(img), [0.1, 0.2, 0.3], 0.5, layout=layout), torch.from_numpy(got)
    )


def test_reference_window_rule():
    assert window(0, 0, 1, 5, 5) == (0, 0, 0, 0)
    assert window(2, 2, 2, 5, 5) == (2, 3, 2, 3)  # even patch extends right/down
    assert window(1.5, 1.49, 3, 5, 5) == (1, 3, 0, 2)  # floor(x + 0.5)
    assert window(-5, 2, 3, 5, 5) is None


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fill", ["black", "mean", "blur", (200.0, 150.0, 120.0)])
def test_devices_agree(device, layout, dtype, fill):
    img = random_image(37, 29, 3)
    centers = np.concatenate([edge_centers(37, 29), RNG.random((40, 2), dtype=np.float32) * [29, 37]])
    args = dict(patch=15, fill=fill, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4], layout=layout, dtype=dtype)
    want = ops.occlude_batch(img, centers, **args)
    got = ops.occlude_batch(torch.from_numpy(img).to(device), torch.from_numpy(centers).to(device), **args)
    assert got.device.type == device.type
    np.testing.assert_allclose(
        got.float().cpu().numpy(), want.astype(np.float32), rtol=1e-3 if dtype == "float16" else 1e-5, atol=1e-5
    )
