"""docs/from-captum.md runs: every python block, in order, in one namespace."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "from-captum.md"

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_page_has_the_three_ways():
    text = "\n".join(_blocks())
    for needle in (
        "Occlusion(model).attribute",
        "GradCAM(",
        "fs.CanonicalOcclusion(",
        "infidelity(",
        "sensitivity_max(",
    ):
        assert needle in text


def test_from_captum_page_runs():
    namespace: dict = {}
    for k, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"{DOC.name} block {k + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{DOC.name}, python block {k + 1} failed: {e!r}\n{block}") from e
    attributions, canonical = namespace["attributions"], namespace["canonical"]
    assert float(attributions.abs().max()) > 0 and float(canonical.abs().max()) > 0
