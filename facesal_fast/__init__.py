"""facesal_fast: fast canonical saliency maps and saliency audits for deep face models.

import facesal_fast as fs
scorer = fs.models.load("gender")
result = fs.cis("photo.jpg", scorer)          # one image: result.canonical, .overlay()
model = fs.cms(["a.jpg", "b.jpg"], scorer)     # many images, streamed
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Imported on first use, so that ``import facesal_fast`` (and ``facesal --help``) does not load torch.
_LAZY = {
    "ops": "facesal_fast.ops",
    "has_cuda": "facesal_fast.ops",
    "cis": "facesal_fast.saliency",
    "cms": "facesal_fast.audit.cms",
    "CISResult": "facesal_fast.saliency",
    "CMSResult": "facesal_fast.saliency",
    "Audit": "facesal_fast.audit.runner",
    "align": "facesal_fast.align",
    "models": "facesal_fast.models",
    "scoring": "facesal_fast.scoring",
    "methods": "facesal_fast.methods",
    "CanonicalOcclusion": "facesal_fast.attribution",
    "compare": "facesal_fast.comparison",
    "identification_scorer": "facesal_fast.saliency.identity",
    "verification_scorer": "facesal_fast.saliency.identity",
    "verification_cis": "facesal_fast.saliency.identity",
}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    """The public API (``__all__``), for ``dir(facesal_fast)`` and tab completion."""
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    """Import the heavier layers (alignment, models, saliency) on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'facesal_fast' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
