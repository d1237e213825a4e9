"""What a run's maps are, photo by photo: exact, or an approximation with its certificate.

Each result file keeps the CIS settings its photo was explained with (``settings``, a JSON
string: the mode actually used, the grid step, ``quality``, ``estimated_ssim``,
``estimated_share_error``, forward passes). :func:`record_approximation` summarises them
into ``run.json`` (``resolved.approximation``) at the end of an audit, and the report and
``compare`` show that summary, so ``--quality fast`` is never recorded as the exact mode it
did not use.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from facesal_fast.audit.store import atomic_write_bytes

if TYPE_CHECKING:
    from facesal_fast.audit.store import RunStore

__all__ = ["approximation_line", "record_approximation", "result_settings", "settings_array", "summarise"]


def settings_array(settings: dict[str, Any]) -> np.ndarray:
    """A result's settings as the 0-d string array its result file stores."""
    return np.asarray(json.dumps(settings, default=str, sort_keys=True))


def result_settings(store: RunStore, key: str) -> dict[str, Any] | None:
    """The settings stored with result ``key`` (None for results written before they were
    stored, or an unreadable file: the report names those elsewhere)."""
    try:
        with np.load(store.result_path(key), allow_pickle=False) as data:
            if "settings" not in data.files:
                return None
            value = json.loads(str(data["settings"]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return value if isinstance(value, dict) else None


def summarise(store: RunStore) -> dict[str, Any] | None:
    """``{"quality", "modes", "estimated_ssim": {"min", "mean"}, "estimated_share_error":
    {"max", "mean"}, "forward_passes"}`` over the run's done results (None when none records
    its settings)."""
    found = [s for s in (result_settings(store, row.key) for row in store.rows("done")) if s is not None]
    if not found:
        return None
    ssims = [float(s["estimated_ssim"]) for s in found if s.get("estimated_ssim") is not None]
    errors = [float(s["estimated_share_error"]) for s in found if s.get("estimated_share_error") is not None]
    summary: dict[str, Any] = {
        "quality": sorted({str(s.get("quality")) for s in found}),
        "modes": dict(Counter(str(s.get("mode")) for s in found)),
        "forward_passes": int(sum(int(s.get("forward_passes") or 0) for s in found)),
        "photos": len(found),
    }
    if ssims:
        summary["estimated_ssim"] = {"min": round(min(ssims), 4), "mean": round(float(np.mean(ssims)), 4)}
    if errors:
        summary["estimated_share_error"] = {"max": round(max(errors), 3), "mean": round(float(np.mean(errors)), 3)}
    return summary


def record_approximation(store: RunStore) -> None:
    """Write :func:`summarise` into ``run.json`` as ``resolved.approximation``."""
    summary = summarise(store)
    if summary is None or store.meta.get("resolved", {}).get("approximation") == summary:
        return
    store.meta.setdefault("resolved", {})["approximation"] = summary
    atomic_write_bytes(store.path / "run.json", json.dumps(store.meta, indent=2, sort_keys=True).encode())


def approximation_line(meta: dict[str, Any]) -> str | None:
    """One sentence on the maps of a run (from its ``run.json``): which modes were used and,
    for approximations, the certificate's estimates; None when the run recorded nothing."""
    summary = (meta.get("resolved") or {}).get("approximation")
    if not isinstance(summary, dict):
        return None
    modes = ", ".join(f"{mode} {count}" for mode, count in sorted(summary.get("modes", {}).items()))
    qualities = [q for q in summary.get("quality", []) if q != "None"]
    line = f"Maps by mode (photos): {modes}" + (f"; quality {', '.join(qualities)}." if qualities else ".")
    ssim, share = summary.get("estimated_ssim"), summary.get("estimated_share_error")
    if ssim and ssim.get("min", 1.0) < 1.0:
        line += (
            f" Estimated SSIM against exact: min {ssim['min']:.3f}, mean {ssim['mean']:.3f}; largest region-share "
            f"error up to {share['max']:.1f} points (estimated from windows scored exactly for the check)."
        )
    return line
