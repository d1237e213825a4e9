"""docs/from-captum.md runs: every python block, in order, in one namespace."""

from pathlib import Path

import pytest
from doc_blocks import python_blocks, run_blocks

DOC = Path(__file__).resolve().parents[1] / "docs" / "from-captum.md"

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")


def test_the_page_has_the_three_ways():
    text = "\n".join(python_blocks(DOC))
    for needle in (
        "Occlusion(model).attribute",
        "GradCAM(",
        "fs.CanonicalOcclusion(",
        "infidelity(",
        "sensitivity_max(",
    ):
        assert needle in text


def test_from_captum_page_runs():
    namespace = run_blocks(DOC)
    attributions, canonical = namespace["attributions"], namespace["canonical"]
    assert float(attributions.abs().max()) > 0 and float(canonical.abs().max()) > 0
