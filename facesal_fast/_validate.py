"""Argument checks shared across the package (each raises ``ValueError`` naming the argument)."""

from __future__ import annotations

from typing import Any

import numpy as np


def positive_int(value: Any, name: str, hint: str = "") -> int:
    """``value`` as an ``int`` if it is a positive integer (``bool`` is refused), else
    ``ValueError("NAME must be a positive integer{hint}, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{hint}, got {value!r}")
    return int(value)
