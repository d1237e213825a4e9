"""Absurd arguments to the Python API give one ``ValueError`` naming the argument (issue 27,
items 10 and 20): scorer outputs, model input sizes and devices, CIS window sizes, and the
ops' empty images and overlapping buffers."""

import numpy as np
import pytest
import torch
from photos import BUNDLED
from torch import nn

import facesal_fast as fs
from facesal_fast import ops
from facesal_fast.align import ImageError, default_aligner
from facesal_fast.scoring import Scorer

INPUT = 32  # model input side: small, so that each cis call is quick


def _logits(batch: np.ndarray) -> np.ndarray:
    """Two class scores per image, from its mean brightness (a stand-in model)."""
    mean = batch.reshape(len(batch), -1).mean(axis=1)
    return np.stack([mean, -mean], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def face():
    return default_aligner()(BUNDLED / "img1.jpg")


@pytest.fixture(scope="module")
def scorer():
    return Scorer.from_callable(_logits, INPUT, crop="face", classes=["a", "b"])


class _Net(nn.Module):
    """A 64 px model: a linear layer over the flattened 3 x 64 x 64 input."""

    def __init__(self, side: int = 64) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * side * side, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


# ----------------------------------------------------------------------------- item 10


@pytest.mark.parametrize(
    "rows",
    [
        [[-0.3, 1.3]],  # sums to 1 but leaves [0, 1]
        [[3.2, -1.0]],  # logits declared as probabilities
        [[0.2, 0.3]],  # in [0, 1] but the row sums to 0.5
    ],
)
def test_probabilities_out_of_range_are_refused_suggesting_logits(rows):
    scorer = Scorer.from_callable(lambda b: np.repeat(np.float32(rows), len(b), 0), 8, outputs="probabilities")
    with pytest.raises(ValueError, match=r"outputs='probabilities'.*outputs='logits'"):
        scorer.score(np.zeros((2, 3, 8, 8), np.float32))


def test_probabilities_within_tolerance_are_scored():
    rows = np.float32([[0.25, 0.7501], [1.0, 0.0]])  # float rounding of a softmax
    scorer = Scorer.from_callable(lambda b: rows[: len(b)], 8, outputs="probabilities")
    np.testing.assert_allclose(scorer.score(np.zeros((2, 3, 8, 8), np.float32), 1), [0.7501, 0.0], rtol=1e-6)


# ----------------------------------------------------------------------------- item 20: scorers


@pytest.mark.parametrize("returned", ["abc", None, [["a", "b"]], {"logits": 1}])
def test_a_model_returning_no_numbers_is_a_value_error(returned):
    scorer = Scorer.from_callable(lambda b: returned, 8)
    with pytest.raises(ValueError, match="the model callable returned"):
        scorer.score(np.zeros((1, 3, 8, 8), np.float32))


@pytest.mark.parametrize("returned", [None, "abc", (1, 2)])
def test_a_torch_model_returning_no_tensor_is_a_value_error(returned):
    class Odd(nn.Module):
        def forward(self, x):
            return returned

    with pytest.raises(ValueError, match="the model fails on a 1 x 3 x 8 x 8 input.*the model returned"):
        Scorer.from_torch(Odd(), 8, backend="torch")


def test_a_meta_model_is_refused():
    with torch.device("meta"):
        net = _Net()
    with pytest.raises(ValueError, match="meta device"):
        Scorer.from_torch(net, 64, backend="torch")

    class MetaOut(nn.Module):  # weights fine, output without data
        def forward(self, x):
            return torch.empty((len(x), 2), device="meta")

    with pytest.raises(ValueError, match="the model returned a meta tensor"):
        Scorer.from_torch(MetaOut(), 8, backend="torch")


def test_a_meta_or_complex_image_tensor_is_refused(scorer, tmp_path):
    with pytest.raises(ImageError, match="must hold real pixel values, got a torch.float32 tensor on meta"):
        fs.cis(torch.empty((3, 64, 64), device="meta"), scorer)
    with pytest.raises(ImageError, match="must hold real pixel values, got a torch.complex64 tensor on cpu"):
        fs.cis(torch.zeros((3, 64, 64), dtype=torch.complex64), scorer)
    with pytest.raises(ImageError, match="an image tensor on the meta device holds no pixels"):
        fs.Audit(scorer, tmp_path / "run").run([torch.empty((3, 64, 64), device="meta")], progress=False)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_from_torch_with_the_wrong_input_size_fails_at_once_naming_it(backend):
    with pytest.raises(ValueError, match=r"fails on a 1 x 3 x 48 x 48 input \(input_size=\(48, 48\)"):
        Scorer.from_torch(_Net(64), 48, backend=backend)
    assert Scorer.from_torch(_Net(64), 64, backend="torch").score(np.zeros((1, 3, 64, 64), np.float32)).shape == (1,)


def test_huge_input_size_is_refused_before_any_allocation():
    with pytest.raises(ValueError, match="input_size must be at most 4096 px"):
        Scorer.from_torch(_Net(8), 10**5)
    with pytest.raises(ValueError, match="input_size must be at most 4096 px"):
        Scorer.from_callable(_logits, (64, 10**5))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_device_without_a_gpu_is_one_value_error(device):
    message = rf"device='{device}': no such CUDA GPU here \(0 visible\); use device='cpu'"
    with pytest.raises(ValueError, match=message):
        Scorer.from_torch(_Net(8), 8, device=device, backend="torch")
    with pytest.raises(ValueError, match=message):
        Scorer.from_callable(_logits, 8, device=device, array="torch")
    with pytest.raises(ValueError, match="expected 'cpu', 'cuda' or 'cuda:N'"):
        Scorer.from_torch(_Net(8), 8, device="gpu", backend="torch")


# ----------------------------------------------------------------------------- item 20: CIS sizes


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(patch=10**6), rf"patch 1000000 is larger than the model input {INPUT} x {INPUT} px"),
        (dict(mode="grid", grid_step=10**6), rf"grid_step 1000000 is not smaller than the model input {INPUT}"),
        (dict(mode="adaptive", grid_step=INPUT), rf"grid_step {INPUT} is not smaller than the model input"),
        (dict(stride=10**9), r"stride 1000000000 keeps \d+ of the face's \d+ visible points"),
    ],
)
def test_cis_refuses_window_sizes_that_cannot_make_a_map(face, scorer, options, message):
    with pytest.raises(ValueError, match=message):
        fs.cis(face.image, scorer, face=face, **options)


def test_cis_accepts_the_largest_sizes_that_still_make_a_map(face, scorer):
    result = fs.cis(face.image, scorer, face=face, patch=INPUT, mode="grid", grid_step=INPUT - 1, stride=16)
    assert result.patch == INPUT and np.isfinite(result.canonical).all()


def test_audit_refuses_a_grid_step_as_large_as_the_model_input(scorer, tmp_path):
    with pytest.raises(ValueError, match=f"grid_step {INPUT} is not smaller than the model input"):
        fs.Audit(scorer, tmp_path / "run", mode="grid", grid_step=INPUT)


# ----------------------------------------------------------------------------- item 20: ops


@pytest.mark.parametrize(
    "fill", ["blur", "mean", np.zeros((0, 4, 3), np.uint8), torch.zeros((0, 4, 3))], ids=["blur", "mean", "np", "t"]
)
def test_occlude_batch_on_an_empty_image_with_a_fill_taken_from_it_is_a_value_error(fill):
    with pytest.raises(ValueError, match=r"fill .*the image is empty \(0 x 4 px\)"):
        ops.occlude_batch(np.zeros((0, 4, 3), np.uint8), np.zeros((2, 2), np.float32), 3, fill=fill)
    assert ops.occlude_batch(np.zeros((0, 4, 3), np.uint8), np.zeros((2, 2), np.float32), 3).shape == (2, 3, 0, 4)


def test_splat_add_refuses_buffers_that_share_memory():
    values, points = np.ones((2, 3), np.float32), np.float32([[1, 1], [2, 2], [3, 1]])
    weights = np.ones((2, 3), np.float32)  # per-map weights: counts have the sums' shape
    buf = np.zeros((2, 4, 5), np.float32)
    with pytest.raises(ValueError, match="out sums shares memory with out counts"):
        ops.splat_add(values, points, 3, (4, 5), weights, out=(buf, buf))
    memory = torch.zeros(100)
    sums, counts = memory[:40].view(2, 4, 5), memory[40:80].view(2, 4, 5)
    with pytest.raises(ValueError, match="out sums shares memory with values"):
        ops.splat_add(memory[10:16].view(2, 3), torch.from_numpy(points), 3, (4, 5), weights, out=(sums, counts))
    with pytest.raises(ValueError, match="out counts shares memory with points"):
        ops.splat_add(torch.from_numpy(values), memory[50:56].view(3, 2), 3, (4, 5), weights, out=(sums, counts))
    with pytest.raises(ValueError, match="out counts shares memory with weights"):
        ops.splat_add(
            torch.from_numpy(values), torch.from_numpy(points), 3, (4, 5), memory[60:66].view(2, 3), out=(sums, counts)
        )
    with pytest.raises(ValueError, match="out sums shares memory with out counts"):
        ops.splat_add_grouped(
            values, points, 3, (4, 5), [0, 1], out=(memory[:40].view(2, 4, 5), memory[20:60].view(2, 4, 5))
        )
    # neighbouring slices of one buffer do not overlap: accepted, and equal to separate buffers
    apart = ops.splat_add(memory[80:86].view(2, 3), torch.from_numpy(points), 3, (4, 5), weights, out=(sums, counts))
    alone = ops.splat_add(memory[80:86].view(2, 3).clone(), torch.from_numpy(points), 3, (4, 5), weights)
    torch.testing.assert_close(apart[0], alone[0])
