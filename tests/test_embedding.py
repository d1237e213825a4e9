"""Eq. 7 / eq. 8 confidences on hand-made embeddings, pair occlusion, tau calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facesal_fast.ops import occlude_batch
from facesal_fast.scoring.embedding import (
    calibrate_tau,
    cosine_similarity,
    identification_confidence,
    verification_confidence,
    verification_pair_scores,
    verification_score,
)


def _unit(deg: float) -> list[float]:
    return [float(np.cos(np.radians(deg))), float(np.sin(np.radians(deg))), 0.0]


def test_identification_picks_closest_gallery_image_of_true_identity() -> None:
    gallery = torch.tensor([_unit(0), _unit(90), _unit(10), _unit(-60)]) * torch.tensor([[2.0], [1.0], [5.0], [0.5]])
    labels = ["ann", "bob", "bob", "ann"]
    conf = identification_confidence(gallery, labels, "ann")
    queries = torch.tensor([_unit(5), _unit(-50), _unit(80)]) * 3.0
    # ann's gallery images sit at 0 and -60 degrees: closest of the two, whatever the norms.
    expected = torch.tensor(
        [np.cos(np.radians(5)), np.cos(np.radians(10)), np.cos(np.radians(80))], dtype=torch.float32
    )
    torch.testing.assert_close(conf(queries), expected)
    # bob at 90 and 10 degrees; labels as a numpy array work too.
    conf_bob = identification_confidence(gallery.numpy(), np.array(labels), "bob")
    torch.testing.assert_close(
        conf_bob(queries),
        torch.tensor([np.cos(np.radians(5)), np.cos(np.radians(60)), np.cos(np.radians(10))], dtype=torch.float32),
    )


def test_identification_rejects_unknown_identity_and_bad_shapes() -> None:
    gallery = torch.eye(3)
    with pytest.raises(ValueError, match="no gallery embedding"):
        identification_confidence(gallery, [0, 1, 2], 7)
    with pytest.raises(ValueError):
        identification_confidence(gallery, [0, 1], 0)
    with pytest.raises(ValueError):
        identification_confidence(gallery, [0, 1, 2], 0)(torch.ones(2, 4))


def test_verification_sign_fixed_eq8() -> None:
    tau = 0.5
    q = torch.tensor([_unit(0), _unit(30), _unit(90)])
    other = torch.tensor(_unit(0)) * 4.0
    cos = torch.tensor([1.0, np.cos(np.radians(30)), 0.0], dtype=torch.float32)
    genuine = verification_confidence(other, +1, tau)(q)
    impostor = verification_confidence(other.numpy(), -1, tau)(q)
    torch.testing.assert_close(genuine, cos - tau)
    torch.testing.assert_close(impostor, tau - cos)
    # Correct decisions score positive: a genuine pair above tau, an impostor pair below it.
    assert genuine[0] > 0 and impostor[2] > 0
    # Row-wise pairs: (K, D) against (K, D).
    torch.testing.assert_close(verification_score(q, q.flip(0), 1, 0.0), cosine_similarity(q, q.flip(0)))
    with pytest.raises(ValueError):
        verification_confidence(other, 0, tau)


def test_calibrate_tau_separable_and_overlapping() -> None:
    emb = {"a": np.array(_unit(0)), "b": np.array(_unit(20)), "c": np.array(_unit(70)), "d": np.array(_unit(85))}
    pairs = [("a", "b", True), ("c", "d", True), ("a", "c", False), ("b", "d", False), ("a", "d", False)]
    tau, acc = calibrate_tau(pairs, emb)
    assert acc == 1.0
    assert np.cos(np.radians(50)) < tau < np.cos(np.radians(20))
    # One genuine pair below an impostor: 4 of 5 at best.
    pairs.append(("a", "d", True))
    tau, acc = calibrate_tau(pairs, emb)
    assert acc == pytest.approx(5 / 6)
    # Integer keys into an (N, D) array.
    arr = np.stack([emb[k] for k in "abcd"])
    assert calibrate_tau([(0, 1, True), (0, 2, False)], arr)[1] == 1.0


class _TinyEmbedder(nn.Module):
    """A small random network standing in for a face model: (B, 3, 24, 24) -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 11 * 11, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_verification_pair_scores_occlude_same_region_in_both() -> None:
    rng = np.random.default_rng(1)
    chip1 = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    chip2 = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    centers = np.array([[3, 4], [12, 12], [20.4, 7.6], [-50, -50]], dtype=np.float32)
    model = _TinyEmbedder().eval()
    norm = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), scale=1 / 255)
    got = verification_pair_scores(model, chip1, chip2, centers, 5, -1, 0.3, batch_size=3, **norm)
    with torch.no_grad():
        q1 = model(torch.as_tensor(occlude_batch(chip1, centers, 5, "black", **norm)))
        q2 = model(torch.as_tensor(occlude_batch(chip2, centers, 5, "black", **norm)))
    expected = -(cosine_similarity(q1, q2) - 0.3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # A centre off the chip occludes nothing: the intact pair's score.
    with torch.no_grad():
        intact = verification_score(
            model(torch.as_tensor(occlude_batch(chip1, centers[3:], 1, "black", **norm))),
            model(torch.as_tensor(occlude_batch(chip2, centers[3:], 1, "black", **norm))),
            -1,
            0.3,
        )
    torch.testing.assert_close(got[3:], intact, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        verification_pair_scores(model, chip1, chip2[:20], centers, 5, 1, 0.3)
