"""Backend probes remembered on disk: a model is probed once per machine, not on every load.

A probe's result (the backend chosen and every candidate's row) is stored as one small JSON
file named by a key of everything that decides it: the model's structure and weights, the
input shape, device, precision and ``compile``, the versions of torch, onnxruntime and
TensorRT, the CPU model and torch's thread count, and the GPU's name on CUDA. Anything else
(another model, an upgrade, another machine) is another key, so a stale entry is never used.

Directory: ``$FACESAL_CACHE_DIR/probes`` if set, else ``$XDG_CACHE_HOME/facesal_fast/probes``
(default ``~/.cache/facesal_fast/probes``). Files are written atomically (a temporary file
renamed), so concurrent processes see an old entry or a new one, never half of one; an
entry that cannot be read is ignored with a warning and probed again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "CACHE_ENV",
    "CachedProbe",
    "cache_dir",
    "installed_version",
    "load_probe",
    "probe_key",
    "store_probe",
    "weights_digest",
]

CACHE_ENV = "FACESAL_CACHE_DIR"
_FORMAT = 2  # bump when the entry's fields change: older entries are then other keys


def cache_dir() -> Path:
    """Where probe results live (see the module docstring for the order of lookup)."""
    own = os.environ.get(CACHE_ENV)
    if own:
        return Path(own).expanduser() / "probes"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "facesal_fast" / "probes"


def installed_version(distribution: str) -> str | None:
    """Installed version of ``distribution``, or None (without importing it)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def weights_digest(module: nn.Module) -> str:
    """sha256 of ``module``'s structure (its repr) and every state-dict tensor."""
    h = hashlib.sha256(repr(module).encode())
    for name, value in module.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def probe_key(
    module: nn.Module, input_shape: tuple[int, ...], device: torch.device, precision: str, compile: bool
) -> str:
    """The cache key of a probe of ``module`` on ``input_shape`` (``C x H x W``) batches."""
    fields = {
        "format": _FORMAT,
        "weights": weights_digest(module),
        "input_shape": [int(d) for d in input_shape],
        "device": str(device),
        "precision": precision,
        "compile": bool(compile),
        "versions": {name: installed_version(name) for name in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt")},
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedProbe:
    """A stored probe: the candidate chosen (its name in the probe, e.g. ``"onnx-cpu"``), the
    probe's rows as ``(name, ms_per_image, max_abs_diff, note)``, when it was probed, and
    torch eager's outputs (``2 x D``) on the probe's first two images, against which the
    choice is checked when it is read back (without running torch eager again)."""

    chosen: str
    rows: list[tuple[str, float | None, float | None, str]]
    probed_at: str
    reference: list[list[float]]


def load_probe(key: str) -> CachedProbe | None:
    """The stored probe of ``key``, or None (none stored; an unreadable entry is ignored with a
    warning naming the file)."""
    path = cache_dir() / f"{key}.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as err:
        warnings.warn(f"{path}: unreadable backend probe cache entry ignored ({err}); probing again", stacklevel=2)
        return None
    try:
        rows = [(str(n), _number(ms), _number(diff), str(note)) for n, ms, diff, note in data["rows"]]
        reference = [[float(v) for v in row] for row in data["reference"]]
        return CachedProbe(str(data["chosen"]), rows, str(data["probed_at"]), reference)
    except (KeyError, TypeError, ValueError) as err:
        warnings.warn(f"{path}: corrupt backend probe cache entry ignored ({err!r}); probing again", stacklevel=2)
        return None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def store_probe(key: str, probe: CachedProbe) -> None:
    """Store ``probe`` under ``key`` atomically; a cache that cannot be written (read-only home,
    full disk) is only a warning: the probe simply runs again next time."""
    folder = cache_dir()
    data = json.dumps(
        {"chosen": probe.chosen, "rows": probe.rows, "probed_at": probe.probed_at, "reference": probe.reference}
    ).encode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
    except OSError as err:
        warnings.warn(f"{folder}: cannot store the backend probe ({err}); it will run again next time", stacklevel=2)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / f"{key}.json")
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"{folder}: cannot store the backend probe ({err}); it will run again next time", stacklevel=2)
