"""docs/quantus.md runs: every python block, in order, in one namespace (skipped without quantus)."""

from pathlib import Path

import numpy as np
import pytest
from doc_blocks import python_blocks, run_blocks

DOC = Path(__file__).resolve().parents[1] / "docs" / "quantus.md"

pytest.importorskip("quantus")


def test_the_page_uses_one_metric_of_each_quantus_category():
    text = "\n".join(python_blocks(DOC))
    for needle in ("FaithfulnessCorrelation(", "MaxSensitivity(", "Sparseness(", "RandomLogit(", "PixelFlipping("):
        assert needle in text


def test_quantus_page_runs():
    namespace = run_blocks(DOC)
    scores = namespace["scores"]
    assert set(scores) == {"FaithfulnessCorrelation", "MaxSensitivity", "Sparseness", "RandomLogit"}
    for name, values in scores.items():
        values = np.asarray(values, float)
        assert values.shape == (2,) and np.isfinite(values).all(), (name, values)
    assert 0 < min(scores["Sparseness"]) and max(scores["Sparseness"]) < 1
    assert float(np.ravel(namespace["sparse_photo"])[0]) > float(scores["Sparseness"][0])  # the zeros outside the crop
