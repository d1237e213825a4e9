"""The ``facesal`` command: ``audit``, ``report``, ``demo``, ``compare``, ``evaluate``, ``tasks``
and ``bench``.

Exit codes (the same for every command):

* ``0``: done (an audit where at least one image succeeded, failures listed);
* ``1``: the command ran but no image succeeded;
* ``2``: a usage error or a problem with a file or folder (bad option, unknown model or
  class, bad groups CSV, run folder in use or started with other settings, disk full,
  missing optional package): one line ``facesal: ...`` naming the option or file, no
  traceback (``--debug`` shows it). Every argument is checked before any work is done;
* ``130``: interrupted (Ctrl-C): ``facesal: interrupted; re-run the same command to resume``
  (an audit keeps its finished images and resumes where it stopped).

The options that compute maps are the same, with the same defaults, in every command that has
them (:mod:`facesal_fast.cli_options`).

Library code raises ``ValueError`` / ``FileNotFoundError`` / ``OSError``; :func:`main`
turns them into that line. ``--help`` does not import torch.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from facesal_fast import __version__
from facesal_fast.audit.comparison import add_compare_arguments, add_statistics_arguments, statistics_options
from facesal_fast.audit.comparison import run_cli as run_compare
from facesal_fast.audit.options import (
    AUDIT_MODEL_NAMES,
    MODEL_NAMES,
    AuditPlan,
    check_model,
    check_out_folder,
    plan_audit,
    print_summary,
)
from facesal_fast.audit.store import RunStore
from facesal_fast.audit.tasks import add_tasks_arguments, run_tasks_cli
from facesal_fast.benchmark.command import add_bench_arguments, run_bench
from facesal_fast.cli_options import (
    HelpFormatter,
    add_face_choice,
    add_map_options,
    cis_options,
    examples_epilog,
    positive_int,
)
from facesal_fast.report.safe_text import terminal_text

__all__ = ["EXIT_INTERRUPTED", "EXIT_NOTHING_SUCCEEDED", "EXIT_OK", "EXIT_USAGE", "main", "run_audit"]

EXIT_OK, EXIT_NOTHING_SUCCEEDED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEMO_DIR = "data/demo_faces"
VERBOSE_HELP = "show MediaPipe's native logs and facesal_fast's INFO lines (backend probe, faces found)"
#: What ``facesal evaluate --methods`` takes: ``facesal_fast.evaluation.EVALUATION_METHODS``, the
#: method registry's names (``facesal_fast.methods.registry``), named here so ``--help`` needs no torch.
EVALUATION_METHODS = (
    "cms",
    "cis",
    "occlusion",
    "occlusion-skin",
    "gradcam",
    "gradcam++",
    "scorecam",
    "guided-backprop",
    "lrp-epsilon",
    "lrp-alpha-beta",
)
#: Map options ``facesal evaluate`` leaves out: its ablations set the mode and grid step
#: themselves (so no ``--quality``), and its gradient methods run the torch module on the CPU.
EVALUATE_WITHOUT = ("device", "quality", "incremental")
#: The registry's aliases, alias -> canonical name.
METHOD_ALIASES = {"gradcampp": "gradcam++", "gb": "guided-backprop", "lrp": "lrp-epsilon"}
#: Optional package (import name) -> the extra that installs it.
EXTRAS = {
    "captum": "methods",
    "zennit": "methods",
    "pytorch_grad_cam": "methods",
    "ray": "ray",
    "tensorrt": "tensorrt",
    "dlib": "dlib",
}


def run_audit(plan: AuditPlan, *, progress: bool = True) -> dict[str, int]:
    """Audit every photo of a checked :class:`~facesal_fast.audit.options.AuditPlan` (from
    :func:`~facesal_fast.audit.options.plan_audit`) with its bundled model; returns the summary counts."""
    # lazy: keeps torch out of facesal --help
    from facesal_fast import models
    from facesal_fast.audit.runner import Audit

    scorer = models.load(plan.model, backend=plan.backend, device=plan.device)
    audit = Audit(scorer, plan.out, target=plan.target, settings=plan.settings, options=plan.options)
    try:
        start = time.perf_counter()
        summary = audit.run(
            plan.photos, groups=plan.groups, progress=progress, persons=plan.persons, groups_from=plan.groups_from
        )
        print_summary(summary, time.perf_counter() - start, f"backend {scorer.backend.name}", audit.store)
    finally:
        audit.store.close()
    return summary


def _demo_photos() -> Path:
    return Path(str(resources.files("facesal_fast").joinpath(DEMO_DIR)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facesal",
        description="Canonical saliency audits of face models.",
        formatter_class=HelpFormatter,
        epilog="exit codes: 0 done, 1 no image succeeded, 2 usage error or file problem (one-line message), "
        "130 interrupted (Ctrl-C; re-run the same command to resume)\n\n"
        + examples_epilog(
            "facesal demo", "facesal audit photos/ --out runs/mine --groups groups.csv", "facesal report runs/mine"
        ),
    )
    parser.add_argument("--version", action="version", version=f"facesal_fast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line messages")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            formatter_class=HelpFormatter,
            epilog=examples_epilog(*examples),
        )

    _add_audit(
        command(
            "audit",
            "explain every photo of a folder and store the results",
            "facesal audit photos/ --out runs/gender --model gender --groups groups.csv",
        )
    )
    report = command("report", "write the run's self-contained HTML report", "facesal report runs/gender")
    report.add_argument("run", help="run folder")
    report.add_argument("--out", help="HTML path (default: RUN/report.html)")
    add_statistics_arguments(report)
    demo = command(
        "demo", "audit the bundled photos with the bundled gender model, then report", "facesal demo --out runs/demo"
    )
    demo.add_argument("--out", default="runs/demo", help="run folder")
    add_map_options(demo, without=["max_images"])
    add_compare_arguments(
        command(
            "compare",
            "compare two finished runs (two models, or before/after retraining): region and pixel tests, HTML page",
            "facesal compare runs/A runs/B --out runs/A-vs-B --fail-on-shift 5",
        )
    )
    _add_evaluate(
        command(
            "evaluate",
            "faithfulness metrics, ablations, CMS stability and sanity check",
            "facesal evaluate photos/ --out runs/gender --methods cms,gradcam --max-images 8",
        )
    )
    tasks = command(
        "tasks",
        "CMS of recognition, gender, age, head pose and expression side by side",
        "facesal tasks photos/ --out runs/tasks --max-images 8",
    )
    add_tasks_arguments(tasks)
    add_map_options(tasks, mode="grid", why="default grid here: the head-pose model runs MediaPipe on every copy")
    bench = command(
        "bench",
        "end-to-end CIS benchmark suite vs captum and the published CSM loop",
        "facesal bench --quick",
    )
    add_bench_arguments(bench)
    return parser


def _add_audit(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("photos", help="folder of face photos")
    audit.add_argument("--out", required=True, help="run folder (re-running the same command resumes it)")
    audit.add_argument("--model", default="gender", help=f"bundled model: {', '.join(AUDIT_MODEL_NAMES)}")
    audit.add_argument("--target", default="predicted", help="class index or name, or 'predicted'")
    audit.add_argument("--groups", help="CSV with the columns image,group, or 'predicted' to group by predicted class")
    audit.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="shard over Ray workers: a local Ray (no ADDRESS) or a cluster (auto, ray://head:10001)",
    )
    add_map_options(audit, without=["max_images"])
    add_face_choice(audit)


def _add_evaluate(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("photos", help="folder of face photos")
    evaluate.add_argument("--out", required=True, help="run folder; results go to OUT/evaluate/")
    evaluate.add_argument("--model", default="gender", help=f"bundled model: {', '.join(MODEL_NAMES)}")
    aliases = ", ".join(f"{a} = {n}" for a, n in METHOD_ALIASES.items())
    evaluate.add_argument(
        "--methods",
        default="cms,cis,gradcam,gradcam++,scorecam,guided-backprop,lrp-epsilon",
        help=f"comma-separated: {', '.join(EVALUATION_METHODS)} (aliases: {aliases})",
    )
    add_map_options(
        evaluate,
        mode="grid",
        why="default grid here: every method's maps and the ablations are computed",
        without=EVALUATE_WITHOUT,
        backend_help="backend of M(.) and occlusion (the gradient methods use the torch module)",
    )
    evaluate.add_argument(
        "--budget", type=float, default=0.2, help="equal heatmap mass s, as a fraction of the input pixels"
    )
    evaluate.add_argument("--steps", type=positive_int, default=16, help="deletion / insertion steps")
    evaluate.add_argument("--ablation-images", type=int, default=8, help="images used by the ablations (0: none)")
    evaluate.add_argument(
        "--sanity-images", type=int, default=2, help="images used by the randomisation check (0: none)"
    )
    for flag, choices, text in (  # the first choice is the default
        ("--gb-output", ("probability", "logit"), "Guided Backprop from P(y) (Sun et al.) or the logit"),
        ("--ties", ("random", "row-major"), "deletion/insertion order of equal saliency values (random: RISE, seeded)"),
        (
            "--deletion-fill",
            ("grey", "black"),
            "deleted pixels: grey = the value that normalises to 0 (RISE), or black",
        ),
        ("--insertion-blur", ("rise", "wide"), "insertion start: rise = 11x11 sigma 5 kernel, wide = sigma side/8"),
    ):
        evaluate.add_argument(flag, default=choices[0], choices=choices, help=text)
    evaluate.add_argument(
        "--tie-draws", dest="tie_draws", type=positive_int, default=3, help="random tie orders averaged per curve"
    )


def _os_message(err: OSError) -> str:
    """One line for a file-system error, with what to do for the common ones."""
    where = f"{err.filename}: " if err.filename else ""
    hint = {
        errno.ENOSPC: "; free some space and re-run the same command (finished images are kept)",
        errno.EACCES: "; check the permissions or choose another path",
        errno.EROFS: "; choose a writable path",
    }.get(err.errno, "")
    return f"{where}{err.strerror or err}{hint}"


def error_message(err: BaseException) -> str | None:
    """The one-line message for a user's mistake or an environment problem; ``None`` for a bug
    (whose traceback is shown)."""
    if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] in EXTRAS:
        name = err.name.split(".")[0]
        return f'this needs the optional package {name!r}: pip install "facesal_fast[{EXTRAS[name]}]"'
    if isinstance(err, (ValueError, FileNotFoundError)):
        return str(err)
    if isinstance(err, OSError):
        return _os_message(err)
    return None


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Warnings printed once each as ``facesal: warning: ...`` (no file and line)."""
    seen: set[str] = set()

    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        if str(message) not in seen:
            seen.add(str(message))
            from tqdm.auto import tqdm  # lazy: only when there is a warning; above any progress bar

            tqdm.write(f"facesal: warning: {terminal_text(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "compare":
        return run_compare(args)
    if args.command == "evaluate":
        check_model(args.model)
        if not Path(args.photos).is_dir():
            raise FileNotFoundError(f"{args.photos}: no such photo folder")
        check_out_folder(Path(args.photos), Path(args.out), run=False)
        from facesal_fast.evaluation import run_cli  # lazy: keeps torch out of facesal --help

        return run_cli(args)
    if args.command == "tasks":
        return run_tasks_cli(args, cis_options(args))
    if args.command == "bench":
        return run_bench(args)
    if args.command == "report":
        RunStore(args.run).close()  # a missing or corrupt run is said before the report's heavy imports
    from facesal_fast.audit.run_report import write_report  # lazy: keeps torch out of facesal --help

    if args.command == "report":
        print(f"facesal report: {terminal_text(str(write_report(args.run, args.out, stats=statistics_options(args))))}")
        return EXIT_OK
    run = dict(device=args.device, backend=args.backend, options=cis_options(args))
    if args.command == "demo":
        summary = run_audit(plan_audit(_demo_photos(), args.out, groups="predicted", **run))
    else:
        audit = run_audit
        if args.ray is not None:
            from facesal_fast.audit.distributed import run_audit_ray  # lazy: keeps torch out of facesal --help

            audit = functools.partial(run_audit_ray, address=None if args.ray == "local" else args.ray)
        summary = audit(
            plan_audit(args.photos, args.out, model=args.model, target=args.target, groups=args.groups, **run)
        )
    if summary["done"] + summary["skipped"] == 0:
        print("facesal: no image succeeded", file=sys.stderr)
        return EXIT_NOTHING_SUCCEEDED
    if args.command == "demo":
        print(f"facesal report: {write_report(args.out)}")
    return EXIT_OK


class _TerminalFormatter(logging.Formatter):
    """Log lines with control characters shown escaped: a file name in a warning (``2 faces
    found`` in ``\x1b[2J.jpg``) cannot drive the terminal; advice in the command's words
    (``--face-index K``, not ``face_index=``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = terminal_text(super().format(record))
        if "face_index=" in text:
            from facesal_fast.align.choice import CLI_ADVICE, PYTHON_ADVICE  # lazy: keeps cv2 out of --help

            text = text.replace(PYTHON_ADVICE, CLI_ADVICE)
        return text


class _LineHandler(logging.Handler):
    """Each record on its own stderr line above any progress bar (``tqdm.write``), never inside
    the bar's line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm  # lazy: only when there is a line to write

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own convention: a broken handler reports, never raises
            self.handleError(record)


@contextmanager
def _verbose(on: bool) -> Iterator[None]:
    """facesal_fast's WARNING lines on stderr, escaped; with ``--verbose`` its INFO lines too
    (backend probe, faces found) and MediaPipe's native logs (``FACESAL_MEDIAPIPE_LOGS=1``),
    for this command only."""
    logger, handler = logging.getLogger("facesal_fast"), _LineHandler()
    handler.setFormatter(_TerminalFormatter("facesal: %(name)s: %(message)s" if on else "%(message)s"))
    handler.setLevel(logging.INFO if on else logging.WARNING)
    level, env = logger.level, None
    logger.addHandler(handler)
    if on:
        from facesal_fast.align.aligner import MEDIAPIPE_LOGS_ENV  # lazy: keeps cv2 out of facesal --help

        env = os.environ.get(MEDIAPIPE_LOGS_ENV)
        logger.setLevel(logging.INFO)
        os.environ[MEDIAPIPE_LOGS_ENV] = "1"
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        if on and env is None:
            del os.environ[MEDIAPIPE_LOGS_ENV]
        elif on:
            os.environ[MEDIAPIPE_LOGS_ENV] = env


def main(argv: Sequence[str] | None = None) -> int:
    """The ``facesal`` command; returns the exit code (0 done, 1 nothing succeeded, 2 usage error)."""
    args = _parser().parse_args(argv)
    try:
        with _warnings_as_lines(), _verbose(args.verbose):
            return _run_command(args)
    except KeyboardInterrupt:
        print("facesal: interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - user mistakes become one line, bugs keep their traceback
        message = error_message(err)
        if message is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"facesal: {terminal_text(message)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
