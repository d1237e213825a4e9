"""The ``facesal`` command's habits (issue 18): version, ``python -m``, help with defaults and
examples without importing torch, one exit-code convention (0 done, 1 nothing succeeded,
2 usage error) with a one-line message and no traceback unless ``--debug``."""

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from photos import BUNDLED

import facesal_fast
from facesal_fast import cli
from facesal_fast.cli import EXIT_USAGE, main

COMMANDS = ("audit", "report", "demo", "evaluate", "bench")


def _facesal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facesal_fast", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _message(proc: subprocess.CompletedProcess) -> str:
    """The one ``facesal: ...`` line of a failed command (and no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("facesal: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_version_from_the_script_and_python_m():
    expected = f"facesal_fast {facesal_fast.__version__}"
    assert _facesal("--version").stdout.strip() == expected
    script = shutil.which("facesal")
    if script is None:
        pytest.skip("the facesal script is not on PATH (package not installed)")
    assert subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60).stdout.strip() == expected


def test_help_does_not_import_torch():
    code = (
        "import sys; from facesal_fast.cli import _parser; p = _parser(); p.format_help(); "
        "print(sorted(m for m in ('torch', 'cv2', 'mediapipe') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    help_proc = _facesal("--help")
    assert help_proc.returncode == 0 and "exit codes: 0 done, 1 no image succeeded, 2 usage error" in help_proc.stdout


def _all_commands() -> list[str]:
    (subcommands,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(subcommands.choices)


@pytest.mark.parametrize("command", _all_commands())
def test_every_command_help_shows_defaults_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and f"example:\n  facesal {command}" in out
    assert "(default: " in out or command not in COMMANDS


def test_model_names_in_help_are_the_bundled_classifiers():
    from facesal_fast import models

    assert cli.MODEL_NAMES == tuple(models.MODELS)  # what evaluate takes
    assert sorted(cli.AUDIT_MODEL_NAMES) == sorted(models.CLASSIFIERS)  # what audit takes


def test_evaluate_help_lists_the_method_registry_and_patch_has_one_meaning():
    from facesal_fast.methods import registry

    assert cli.EVALUATION_METHODS == registry.names() and cli.METHOD_ALIASES == dict(registry.ALIASES)
    helps = {command: _facesal(command, "--help").stdout for command in ("audit", "evaluate")}
    listed = " ".join(helps["evaluate"].split())  # argparse wraps the help text
    assert all(name in listed for name in (*registry.names(), *registry.ALIASES))

    def option(text: str, name: str) -> str:
        block = text[text.index(f"  {name} ") :].split("\n  -")[0]
        return " ".join(block.split())

    assert option(helps["audit"], "--patch") == option(helps["evaluate"], "--patch")  # input pixels in both
    assert "model-input pixels" in option(helps["evaluate"], "--patch")
    defaults = {c: cli._parser().parse_args([c, "photos", "--out", "run"]) for c in ("audit", "evaluate")}
    assert {(a.backend, a.patch) for a in defaults.values()} == {("auto", None)}  # one default backend and patch


@pytest.mark.parametrize("command", ["audit", "evaluate"])
def test_unknown_model_exits_2_in_audit_and_evaluate(command, tmp_path):
    proc = _facesal(command, tmp_path, "--out", tmp_path / "run", "--model", "nope")
    assert proc.returncode == EXIT_USAGE and "--model 'nope': unknown model" in _message(proc)
    assert not (tmp_path / "run").exists()


def test_usage_errors_exit_2_and_debug_shows_the_traceback(tmp_path):
    assert _facesal("audit", tmp_path).returncode == EXIT_USAGE  # argparse: --out is required
    proc = _facesal("report", tmp_path / "missing")
    assert proc.returncode == EXIT_USAGE and "is not a facesal run" in _message(proc)
    debug = _facesal("report", tmp_path / "missing", "--debug")
    assert debug.returncode == EXIT_USAGE and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
    assert not (tmp_path / "missing").exists()


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch, capsys):
    import facesal_fast.evaluation

    def without_captum(args: argparse.Namespace) -> int:
        import captum.attr  # noqa: F401 - made unimportable below

        return 0

    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    monkeypatch.setattr(facesal_fast.evaluation, "run_cli", without_captum)
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "run")]) == EXIT_USAGE
    assert 'pip install "facesal_fast[methods]"' in capsys.readouterr().err


def test_error_message_keeps_tracebacks_for_bugs():
    assert cli.error_message(ValueError("x.csv line 3: empty group")) == "x.csv line 3: empty group"
    assert cli.error_message(ModuleNotFoundError("No module named 'ray'", name="ray")).endswith(
        'pip install "facesal_fast[ray]"'
    )
    assert cli.error_message(OSError(28, "No space left on device", "runs/x/results/a.npz")).startswith(
        "runs/x/results/a.npz: No space left on device; free some space"
    )
    assert cli.error_message(ModuleNotFoundError("No module named 'torch'", name="torch")) is None
    assert cli.error_message(RuntimeError("a bug")) is None


def test_tasks_shows_one_bar_and_checks_its_options_first(tmp_path, monkeypatch, capsys):
    from facesal_fast.scoring import progress

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(BUNDLED / "img1.jpg", photos / "img1.jpg")
    (tmp_path / "file").write_text("")
    assert main(["tasks", str(photos), "--out", str(tmp_path / "file"), "--models", "gender"]) == EXIT_USAGE
    assert "--out" in capsys.readouterr().err
    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)  # every inner bar would show at once
    options = ["--models", "gender", "--backend", "torch", "--grid-step", "16"]
    assert main(["tasks", str(photos), "--out", str(tmp_path / "out"), *options]) == 0
    err = capsys.readouterr().err
    assert set(re.findall(r"([a-z][a-z ]*): +\d+%\|", err)) == {"tasks"}
    assert err.count("1/1 [") == 1, err  # its total, and its final line drawn once
    assert (tmp_path / "out" / "tasks.html").is_file()


def test_verbose_shows_info_lines_and_mediapipe_logs_for_the_command_only(monkeypatch, capsys):
    from facesal_fast.align.aligner import MEDIAPIPE_LOGS_ENV

    monkeypatch.delenv(MEDIAPIPE_LOGS_ENV, raising=False)
    seen = []

    def command(args: argparse.Namespace) -> int:
        seen.append(os.environ.get(MEDIAPIPE_LOGS_ENV))
        logging.getLogger("facesal_fast.scoring").info("backend probe: chose onnx-cpu")
        return 0

    monkeypatch.setattr(cli, "_run_command", command)
    assert main(["--verbose", "report", "runs/x"]) == 0 and main(["report", "runs/x", "--verbose"]) == 0
    assert capsys.readouterr().err.count("facesal: facesal_fast.scoring: backend probe: chose onnx-cpu") == 2
    assert main(["report", "runs/x"]) == 0 and "backend probe" not in capsys.readouterr().err
    assert seen == ["1", "1", None] and MEDIAPIPE_LOGS_ENV not in os.environ


@pytest.mark.parametrize("command", ["audit", "demo", "tasks", "evaluate"])
def test_patch_and_backend_mean_the_same_in_every_command(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--backend {auto,torch,onnx,tensorrt}" in out and "(default: auto)" in out
    assert command == "demo" or "occlusion window in model-input pixels" in out


def test_audit_face_choice_on_group_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("couple.jpg", "img1.jpg"):
        shutil.copy(BUNDLED / name, photos / name)
    fast = ["--mode", "grid", "--grid-step", "16", "--backend", "onnx"]
    largest = _facesal("audit", photos, "--out", tmp_path / "largest", *fast)
    assert largest.returncode == 0 and "2 done" in largest.stdout, largest.stderr
    assert re.search(
        r"couple\.jpg: 2 faces found, explaining the largest, box \(x0, y0, x1, y1\) = \(\d+", largest.stderr
    )
    (line,) = [part for part in re.split(r"[\r\n]", largest.stderr) if "faces found" in part]
    assert line.endswith("(--face-index K or --faces all to choose)"), line  # CLI words, not face_index=
    assert "%|" not in line and "img/s" not in line, line  # on its own line, not inside the bar's
    every = _facesal("audit", photos, "--out", tmp_path / "all", "--faces", "all", *fast)
    assert every.returncode == 0 and "3 done" in every.stdout and "faces found" not in every.stderr, every.stderr
    assert json.loads((tmp_path / "all" / "run.json").read_text())["settings"]["faces"] == "all"
    for extra in (["--faces", "all", "--face-index", "1"], ["--faces", "all", "--ray"], ["--face-index", "-1"]):
        proc = _facesal("audit", photos, "--out", tmp_path / "refused", *fast, *extra)
        assert proc.returncode == EXIT_USAGE and "Traceback" not in proc.stderr, (extra, proc.stderr)
        assert not (tmp_path / "refused").exists()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (subcommands,) = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subcommands.choices)


@pytest.mark.parametrize("command", _all_commands())
def test_every_option_has_help_and_its_default_once(command):
    parser = _subparsers()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        text = formatter._expand_help(action) if action.help else ""
        assert text.strip(), f"{command} {action.option_strings or action.dest}: no help"
        assert "(default: None)" not in text, f"{command} {action.option_strings}: {text}"
        assert text.count("default:") <= 1 and text.count("(default") <= 1, f"{command} {action.option_strings}: {text}"
        if action.required or not action.option_strings:
            assert "(default:" not in text, f"{command} {action.dest}: a required argument shows a default"
    out = parser.format_help()
    assert "(default: None)" not in out


def test_map_options_are_the_same_in_every_command_that_computes_maps():
    from facesal_fast.cli_options import MAP_OPTIONS

    parsers = _subparsers()
    commands = ("audit", "demo", "evaluate", "tasks")

    def options(command: str) -> dict[str, argparse.Action]:
        return {a.dest: a for a in parsers[command]._actions if a.dest in MAP_OPTIONS}

    found = {c: options(c) for c in commands}
    for name in ("patch", "stride", "mode", "grid_step", "fill", "backend"):  # in all four
        assert all(name in found[c] for c in commands), name
    for name in MAP_OPTIONS:
        having = [found[c][name] for c in commands if name in found[c]]
        assert len(having) >= 2, f"{name} in one command only"
        same = {(tuple(a.option_strings), a.type, tuple(a.choices or ())) for a in having}
        assert len(same) == 1, f"{name} differs: {same}"
        defaults = {a.default for a in having}
        assert name == "mode" or len(defaults) == 1, f"{name} defaults differ: {defaults}"
        helps = {a.help.split(" (default grid here")[0] for a in having if name != "backend"}
        assert len(helps) <= 1, f"{name} help differs: {helps}"
    assert {found[c]["mode"].default for c in commands} == {"exact", "grid"}  # tasks/evaluate say why grid
    assert all("default grid here" in found[c]["mode"].help for c in ("evaluate", "tasks"))
    assert {"device", "quality", "incremental"} <= set(found["tasks"]) and "max_images" in found["evaluate"]


def test_exit_130_is_documented_and_returned(monkeypatch, capsys):
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_command", interrupted)
    assert main(["report", "runs/x"]) == cli.EXIT_INTERRUPTED == 130
    assert "re-run the same command to resume" in capsys.readouterr().err
    assert "130 interrupted" in cli._parser().format_help() and "``130``" in cli.__doc__
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "130" in readme


def test_a_resume_with_other_settings_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from facesal_fast import models
    from facesal_fast.audit.options import plan_audit
    from facesal_fast.audit.runner import run_settings
    from facesal_fast.audit.store import RunStore

    photos, out = tmp_path / "photos", tmp_path / "run"
    photos.mkdir()
    shutil.copy(BUNDLED / "img1.jpg", photos / "img1.jpg")
    plan = plan_audit(photos, out, mode="grid", grid_step=16)
    RunStore(out, run_settings(plan.target, plan.cis_options, plan.settings)).close()  # a run started so
    assert plan_audit(photos, out, mode="grid", grid_step=16).settings == plan.settings  # the same: resumes

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were compared")

    monkeypatch.setattr(models, "load", load)
    options = ["--mode", "grid", "--grid-step", "16", "--patch", "9"]
    assert main(["audit", str(photos), "--out", str(out), *options]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "was started with other settings (patch: None -> 9)" in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------- issue 28: one CISOptions


def test_the_map_options_take_their_choices_from_the_one_record():
    """``--mode``, ``--fill`` and ``--quality`` offer the names of core/options (not copies), in
    every command that computes maps (``evaluate`` takes ``adaptive`` too)."""
    from facesal_fast import cli_options
    from facesal_fast.core import options

    assert not hasattr(cli_options, "MODES") or cli_options.MODES is options.MODES
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("audit", "demo", "evaluate", "tasks"):
        found = {a.dest: a for a in subparsers[name]._actions}
        assert tuple(found["mode"].choices) == options.MODES and tuple(found["fill"].choices) == options.FILLS
    args = parser.parse_args(["evaluate", "photos", "--out", "runs/x", "--mode", "adaptive"])
    assert cli_options.cis_options(args).mode == "adaptive"
    for name in options.QUALITIES:
        assert cli_options.quality(name) == name
    with pytest.raises(argparse.ArgumentTypeError, match="expected exact, high, fast or a target SSIM"):
        cli_options.quality("1.5")


def test_tasks_refuses_quality_with_its_grid_mode_before_any_model_loads(tmp_path, monkeypatch, capsys):
    """One checked record at the entry: the quality-vs-mode rule is said once, in the command's
    words, before the models load (it used to fail every photo after loading them)."""
    from facesal_fast import models

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(BUNDLED / "img1.jpg", photos / "img1.jpg")

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(models, "load", load)
    assert main(["tasks", str(photos), "--out", str(tmp_path / "out"), "--quality", "fast"]) == EXIT_USAGE
    assert "pass either --quality ('fast') or --mode ('grid'), not both" in capsys.readouterr().err


OLD_RUN_SETTINGS = [  # the CIS part of run.json as plan_audit wrote it before CISOptions, key by key
    ([], {"patch": None, "stride": 1, "fill": "black", "mode": "exact", "grid_step": 2}),
    (
        ["--mode", "grid", "--grid-step", "8", "--patch", "9", "--fill", "blur"],
        {"patch": 9, "stride": 1, "fill": "blur", "mode": "grid", "grid_step": 8},
    ),
    (
        ["--quality", "fast", "--no-incremental"],
        {"patch": None, "stride": 1, "fill": "black", "quality": "fast", "incremental": False},
    ),
    (
        ["--face-index", "1"],
        {"patch": None, "stride": 1, "fill": "black", "mode": "exact", "grid_step": 2, "face_index": 1},
    ),
    (
        ["--faces", "all"],
        {"patch": None, "stride": 1, "fill": "black", "mode": "exact", "grid_step": 2, "faces": "all"},
    ),
]


@pytest.mark.parametrize("flags, recorded", OLD_RUN_SETTINGS)
def test_a_run_started_before_the_options_record_resumes(tmp_path, flags, recorded):
    """A run folder whose run.json holds the settings dict of the code before CISOptions
    resumes: plan_audit and Audit record the same dict, in the same order, from the record."""
    from types import SimpleNamespace

    from facesal_fast.audit.options import plan_audit
    from facesal_fast.audit.runner import Audit
    from facesal_fast.audit.store import RunStore
    from facesal_fast.cli_options import cis_options

    photos, out = tmp_path / "photos", tmp_path / "run"
    photos.mkdir()
    shutil.copy(BUNDLED / "img1.jpg", photos / "img1.jpg")
    args = cli._parser().parse_args(["audit", str(photos), "--out", str(out), *flags])
    plan = plan_audit(photos, out, options=cis_options(args))
    assert list(plan.cis_options.items()) == list(recorded.items())
    RunStore(out, {"target": None, **recorded, **plan.settings}).close()  # as the old code started it
    resumed = plan_audit(photos, out, options=cis_options(args))  # no SettingsMismatchError
    scorer = SimpleNamespace(input_size=(64, 64), classes=["woman", "man"])
    Audit(scorer, out, settings=resumed.settings, options=resumed.options, aligner=lambda *a, **k: None).close()
    assert json.loads((out / "run.json").read_text())["settings"] == {"target": None, **recorded, **plan.settings}
