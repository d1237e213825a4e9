"""Run a docs page's python blocks, in order, in one namespace (the pages that say every block runs)."""

import re
from pathlib import Path


def python_blocks(doc: Path) -> list[str]:
    """The page's ```python blocks."""
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def run_blocks(doc: Path) -> dict:
    """Execute every python block of ``doc``; returns the namespace. A failure names the block."""
    namespace: dict = {}
    for k, block in enumerate(python_blocks(doc)):
        try:
            exec(compile(block, f"{doc.name} block {k + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{doc.name}, python block {k + 1} failed: {e!r}\n{block}") from e
    return namespace
