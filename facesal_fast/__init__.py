"""facesal_fast: fast canonical saliency maps and saliency audits for deep face models.

import facesal_fast as fs
scorer = fs.models.load("gender")
result = fs.cis("photo.jpg", scorer)          # one image: result.canonical, .overlay()
model = fs.cms(["a.jpg", "b.jpg"], scorer)     # many images, streamed
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
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
    "CanonicalOcclusion": "facesal_fast.interop.captum",
    "compare": "facesal_fast.audit.comparison",
    "identification_scorer": "facesal_fast.saliency.identity",
    "verification_scorer": "facesal_fast.saliency.identity",
    "verification_cis": "facesal_fast.saliency.identity",
    "CISOptions": "facesal_fast.core.options",
    "StatsOptions": "facesal_fast.core.options",
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


#: Public modules that moved when the package root was left to the facade and the CLI; the old
#: import path still works for one release, with a ``DeprecationWarning``.
MOVED_MODULES = {
    "facesal_fast.attribution": "facesal_fast.interop.captum",
    "facesal_fast.comparison": "facesal_fast.audit.comparison",
    "facesal_fast.distributed": "facesal_fast.audit.distributed",
    "facesal_fast.inputs": "facesal_fast.scoring.photos",
    "facesal_fast.tasks": "facesal_fast.audit.tasks",
}


#: Public names that moved to another module (one of a higher layer, which their old module may
#: not import): ``old module.name`` -> new module. The old path still works for one release,
#: with a ``DeprecationWarning``, through the old module's ``__getattr__`` (:func:`moved_name`).
MOVED_NAMES = {
    "facesal_fast.report.html.write_report": "facesal_fast.audit.run_report",
}


def moved_name(module: str, name: str) -> Any:
    """``module.name`` of :data:`MOVED_NAMES`, from its new module, warned (a module's
    ``__getattr__`` returns this); AttributeError for any other name."""
    new = MOVED_NAMES.get(f"{module}.{name}")
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is now {new}.{name}; the old name goes in the next release", DeprecationWarning, 3)
    return getattr(importlib.import_module(new), name)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a module of :data:`MOVED_MODULES` by its old name: the new module, with a warning."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} is now {new}; the old name goes in the next release", DeprecationWarning, 2)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        """Nothing to run: the new module was imported whole."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
