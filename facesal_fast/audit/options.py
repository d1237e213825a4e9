"""What an audit of a photo folder with a bundled model takes, checked before any work.

``facesal audit`` (:mod:`facesal_fast.cli`) and its Ray twin (:mod:`facesal_fast.audit.distributed`)
both call :func:`plan_audit`: model, device, folders, target, groups CSV and the CIS options (one
checked :class:`~facesal_fast.core.options.CISOptions`) are checked and the run's identity (model
weights hash, groups digest, backend, :func:`cis_settings`) assembled. Every
mistake is a ``ValueError`` or ``FileNotFoundError`` naming the option or file; nothing here
exits. Importing this module does not import torch (``facesal --help`` stays fast): the
functions that need the models import them when called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from facesal_fast.audit.groups import assign, groups_digest, read_groups_table
from facesal_fast.audit.run_files import check_run_folder
from facesal_fast.core.options import CISOptions
from facesal_fast.report.safe_text import terminal_text

if TYPE_CHECKING:
    from facesal_fast.audit.store import RunStore

__all__ = [
    "AUDIT_CIS_OPTIONS",
    "AUDIT_MODEL_NAMES",
    "MODEL_NAMES",
    "AuditPlan",
    "check_device",
    "check_out_folder",
    "check_model",
    "cis_settings",
    "command_options",
    "model_hash",
    "parse_target",
    "plan_audit",
    "print_summary",
    "read_groups",
    "requested_options",
    "run_settings",
]

#: The bundled classifiers (``facesal_fast.models.MODELS``), named here so ``--help`` needs no torch.
MODEL_NAMES = ("gender", "expression-fer", "expression-kdef")
#: Every bundled classifier an audit takes (``facesal_fast.models.CLASSIFIERS``): the above and the
#: dlib/Cydral and MediaPipe ones.
AUDIT_MODEL_NAMES = (*MODEL_NAMES, "gender-dlib", "age", "head-pose")
#: The CIS options an audit takes: the :class:`~facesal_fast.core.options.CISOptions` fields but
#: ``batch_size`` (an audit scores with its scorer's own).
AUDIT_CIS_OPTIONS = tuple(f.name for f in dataclasses.fields(CISOptions) if f.name != "batch_size")


def model_hash(name: str) -> str:
    """First 16 hex digits of the SHA-256 of the bundled model ``name``'s weights file."""
    from facesal_fast.models import weights_path  # torch: only once an audit runs

    return hashlib.sha256(weights_path(name).read_bytes()).hexdigest()[:16]


def check_model(model: str, names: Sequence[str] = MODEL_NAMES) -> None:
    """``ValueError`` naming ``--model`` unless ``model`` is one of ``names``."""
    if model not in names:
        raise ValueError(f"--model {model!r}: unknown model; bundled models: {', '.join(names)}")


def check_device(device: str) -> None:
    """``cpu``, or ``cuda``/``cuda:N`` on a machine that has that GPU; else ``ValueError``."""
    if device == "cpu":
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    import torch  # only for a CUDA device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ValueError(f"--device {device}: no such CUDA GPU here ({count} visible); use --device cpu")


def parse_target(value: str, model: str | None = None) -> int | str | None:
    """``predicted`` -> ``None``, a number -> class index, else a class name; checked against
    the bundled ``model``'s classes when given (``ValueError`` naming ``--target``)."""
    if value == "predicted":
        return None
    target = int(value) if value.lstrip("-").isdigit() else value
    if model is not None:
        from facesal_fast.models import BLACK_BOX_MODELS, DLIB_CLASSIFIERS, MODELS  # torch: see above
        from facesal_fast.scoring.confidence import resolve_class  # torch too

        classes = {**MODELS, **DLIB_CLASSIFIERS, **BLACK_BOX_MODELS}[model].classes
        try:
            resolve_class(target, classes, len(classes))
        except ValueError as err:
            raise ValueError(f"--target {value!r}: {err} (or 'predicted')") from err
    return target


def read_groups(
    value: str | None, keys: Sequence[str] = ()
) -> tuple[str | dict[str, str] | None, dict[str, str] | None, str | None]:
    """(groups for the audit, persons or None, what the run's identity records): ``None``,
    ``"predicted"`` or ``{photo key: group}`` from the CSV file ``value`` (persons from its
    optional ``person`` column), matched to the photos' ``keys`` (photos without a line are
    a warning; a bad file, no photo named or a line naming two photos a ``ValueError`` /
    ``FileNotFoundError``)."""
    if value in (None, "predicted"):
        return value, None, value
    table, persons = read_groups_table(value)
    groups, message = assign(table, keys, where=f"--groups {value}")
    if message:
        warnings.warn(message, stacklevel=2)
    found_persons = assign(persons, keys, where=f"--groups {value}", what="person")[0] if persons else None
    return groups, found_persons, f"csv sha256:{groups_digest(table, persons)}"


def check_out_folder(photos: Path, out: Path, *, run: bool = True) -> None:
    """``--out`` can hold the results of the photo folder ``photos``: not a file, not the
    photo folder itself nor a folder above it and, for a ``run``, not a folder of the user's
    that is not a run (:func:`~facesal_fast.audit.run_files.check_run_folder`); ``ValueError``
    naming ``--out``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run folder")
    here, photo_folder = out.resolve(), photos.resolve()
    if here == photo_folder or here in photo_folder.parents:
        where = "is the photo folder itself" if here == photo_folder else f"holds the photo folder {photos}"
        raise ValueError(
            f"--out {out} {where}; give a run folder of its own (a new folder, or a subfolder of the photo folder)"
        )
    if run:
        check_run_folder(out)


def cis_settings(options: CISOptions) -> dict[str, Any]:
    """The CIS options a run records in its run.json settings and compares on resume:
    ``patch``, ``stride``, ``fill``; ``mode`` and ``grid_step`` unless a ``quality`` sets them
    per photo; the other fields only when they are not their defaults (so that a run started
    before they existed resumes), ``batch_size`` never (it does not change a map)."""
    found = {"patch": options.patch, "stride": options.stride, "fill": options.fill}
    if options.quality is None:
        found.update(mode=options.mode, grid_step=options.grid_step)
    defaults = CISOptions()
    for name in ("quality", "incremental", "face_index", "faces", "canonical_patch", "refine", "certify"):
        if getattr(options, name) != getattr(defaults, name):
            found[name] = getattr(options, name)
    return found


def command_options(options: CISOptions | Mapping[str, Any] | None = None, **overrides: Any) -> CISOptions:
    """The checked :class:`~facesal_fast.core.options.CISOptions` of a command: its
    ``ValueError`` names the command's option (``--quality``, ``--grid-step``) instead of the field."""
    try:
        return CISOptions.build(options, **overrides)
    except ValueError as err:
        flag = re.compile(rf"\b({'|'.join(AUDIT_CIS_OPTIONS)})\b(?= \(| must)")
        raise ValueError(flag.sub(lambda m: "--" + m.group(1).replace("_", "-"), str(err))) from None


def requested_options(
    options: CISOptions | Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> tuple[CISOptions, dict[str, Any]]:
    """(the checked record, the CIS options the run records): :func:`cis_settings` of a
    :class:`~facesal_fast.core.options.CISOptions`; for keywords or a mapping the options as
    given (what :class:`~facesal_fast.audit.Audit` has always recorded, so its runs resume).

    Raises:
        ValueError: an unknown option name (listing the known ones) or a bad value, naming it.
    """
    given = dict(options) if isinstance(options, Mapping) else {}
    batch = {"batch_size"} if getattr(options, "batch_size", None) is not None else set()
    unknown = sorted((set(given) | set(overrides) | batch) - set(AUDIT_CIS_OPTIONS))
    if unknown:
        raise ValueError(f"unknown CIS option(s) {unknown}; known: {list(AUDIT_CIS_OPTIONS)}")
    record = CISOptions.build(options, **overrides)
    return record, cis_settings(record) if isinstance(options, CISOptions) else {**given, **overrides}


def run_settings(
    target: int | str | None, cis_options: Mapping[str, Any], settings: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a run's identity compares on resume: the target, the CIS options as recorded
    (``patch=None`` stays ``None``: a Ray driver without the model writes the same) and the
    caller's settings (model, its hash, photo folder, groups' digest, ...)."""
    return {"target": target, **dict(cis_options), **dict(settings or {})}


@dataclass
class AuditPlan:
    """An audit's checked arguments (nothing written yet): what ``facesal audit`` runs, in one
    process or on Ray.

    Attributes:
        photos: the photo folder.
        out: the run folder.
        model, device, backend: as given.
        target: class index or name, ``None`` for the predicted class.
        groups: ``None``, ``"predicted"`` or ``{photo key: group}`` (matched from the CSV).
        settings: the run's identity beyond the CIS options: model and weights hash,
            resolved photo folder, groups (``csv sha256:...`` for a CSV), backend.
        options: the checked CIS options (:attr:`cis_options`: what the run records of them).
        persons: ``{photo key: person}`` from the CSV's ``person`` column, or None.
        groups_from: how messages name the groups (``--groups FILE``).
    """

    photos: Path
    out: Path
    model: str
    device: str
    backend: str
    target: int | str | None
    groups: str | Mapping[str, str] | None
    settings: dict[str, Any]
    options: CISOptions
    persons: Mapping[str, str] | None = None
    groups_from: str = "groups"

    @property
    def cis_options(self) -> dict[str, Any]:
        """The CIS options as the run records them (:func:`cis_settings`)."""
        return cis_settings(self.options)


def plan_audit(
    photos: str | Path,
    out: str | Path,
    *,
    model: str = "gender",
    target: str = "predicted",
    groups: str | None = None,
    device: str = "cpu",
    backend: str = "auto",
    options: CISOptions | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AuditPlan:
    """Check every argument of an audit before any work: model, device, photo folder, run
    folder, target against the model's classes, groups CSV against the photos, and a run
    folder's settings against these (a resume with other settings), all before a model loads.
    ``options`` / ``overrides`` (``patch=``, ``mode=``, ``face_index=``, ...): the CIS options,
    built into one checked :class:`~facesal_fast.core.options.CISOptions` here.

    Raises:
        ValueError / FileNotFoundError: naming the option or file.
    """
    from facesal_fast.audit.inputs import iter_inputs  # torch: see above
    from facesal_fast.audit.store import check_same_settings

    cis_options = command_options(options, **overrides)
    check_model(model, AUDIT_MODEL_NAMES)
    check_device(device)
    photos, out = Path(photos), Path(out)
    if not photos.is_dir():
        raise FileNotFoundError(f"{photos}: no such photo folder")
    check_out_folder(photos, out)
    keys = [key for key, _, _ in iter_inputs(photos, exclude=out)]
    if not keys:
        raise ValueError(f"{photos}: no photo files in this folder")
    groups_value, persons, groups_setting = read_groups(groups, keys)
    settings = {
        "model": model,
        "model_sha256": model_hash(model),
        "photos": str(photos.resolve()),
        "groups": groups_setting,
        "backend": backend,
    }
    target_value = parse_target(target, model)
    if (out / "run.json").is_file():  # a resumed run with other settings: said before the model loads
        check_same_settings(out, run_settings(target_value, cis_settings(cis_options), settings))
    where = f"--groups {groups}"
    return AuditPlan(
        photos, out, model, device, backend, target_value, groups_value, settings, cis_options, persons, where
    )


def print_summary(summary: Mapping[str, int], seconds: float, how: str, store: RunStore) -> None:
    """The closing lines of ``facesal audit``: counts (photos changed since the last run and
    explained again, photos gone from the folder and left out, when any), time, rate, ``how``
    it ran and the run folder on stdout, then each failure of the run ``store`` on stderr."""
    rate = summary["done"] / seconds if seconds > 0 else 0.0
    changed = f", {summary['changed']} changed (re-explained)" if summary.get("changed") else ""
    gone = f", {summary['gone']} gone (left out)" if summary.get("gone") else ""
    print(
        f"facesal audit: {summary['done']} done, {summary['failed']} failed, {summary['skipped']} skipped "
        f"(already done){changed}{gone} in {seconds:.1f} s ({rate:.2f} images/s, {how}); "
        f"results in {terminal_text(str(store.path))}"
    )
    for row in store.rows("failed"):
        print(f"  failed: {terminal_text(row.error or '')}", file=sys.stderr)
