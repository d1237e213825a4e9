"""One prepared check of the GPU path (issue 21), for a fresh GPU machine with little time.

    python benchmarks/gpu_check.py [--dry-run] [--out DIR] [--no-build] [--only STEP,...]

Six steps, each in its own subprocess with its own time limit (all together within 8
minutes); a step that cannot run is skipped with its reason, one that fails or times out is
recorded, and the script always finishes and exits 0:

1. ``build``: ``pip install --no-build-isolation --no-deps .``, ``nvidia-smi`` and versions;
2. ``cuda_tests``: ``pytest -m cuda`` (device-comparison tests of each op, CUDA backends);
3. ``kernels``: CUDA self-check verdicts, then occlude_batch and splat_add against torch on
   the device, equal outputs asserted before timing;
4. ``scoring``: images/s per backend (torch eager fp32, fp16, CUDA graphs, onnxruntime CUDA,
   TensorRT where it imports) on the bundled models, dlib's ResNet and a ResNet-50, each
   against the bare forward at the same batch size;
5. ``captum``: exact occlusion map against captum ``Occlusion`` on the GPU (same model,
   image and windows, stride 1; maps asserted equal), seconds of each;
6. ``audit``: a 200-photo audit (the bundled photos, repeated) with alignment overlapped:
   steady-state photos/s and occluded images/s.

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (a section for benchmarks/RESULTS.md).
``--dry-run`` runs the same plan on the CPU: the build is not repeated, and every device
step runs its code at smoke size on the CPU (status ``dry-run``, no figure to record), so
the script cannot rot unnoticed (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480  # the whole plan: 8 minutes


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    limit_s: int


STEPS = [
    Step("build", "build, nvidia-smi and versions", 150),
    Step("cuda_tests", "pytest -m cuda", 100),
    Step("kernels", "native kernels against torch on the device", 40),
    Step("scoring", "scoring throughput per backend against the bare forward", 110),
    Step("captum", "exact occlusion map against captum Occlusion", 40),
    Step("audit", "200-photo audit, alignment overlapped", 60),
]


@dataclass
class Context:
    """What a step function gets: the run's options and its own time limit."""

    out: Path
    dry_run: bool
    no_build: bool
    limit_s: float

    @property
    def device(self):
        """The CUDA device, the CPU in a dry run; None when no GPU can be used."""
        import torch

        if self.dry_run:
            return torch.device("cpu")
        return torch.device("cuda") if torch.cuda.is_available() else None


class Skip(Exception):
    """A step that cannot run here: its message is the reason."""


# ----------------------------------------------------------------------------- helpers


def _run(cmd: list[str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], Any], device, repeats: int = 5) -> float:
    """Best wall seconds of ``fn`` over ``repeats`` calls after one warm-up (device synced)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _needs_device(ctx: Context):
    device = ctx.device
    if device is None:
        raise Skip("no CUDA device: torch.cuda.is_available() is False")
    return device


def _benchmarks_module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return __import__(name)


# ----------------------------------------------------------------------------- 1. build


def versions() -> dict[str, Any]:
    """Python, torch, CUDA, GPU, nvcc, nvidia-smi, the extension and the optional runtimes."""
    import torch

    info: dict[str, Any] = dict(
        python=platform.python_version(),
        platform=platform.platform(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
    )
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0)))
        )
    for tool, args in (
        ("nvidia-smi", ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
        ("nvcc", ["--version"]),
    ):
        path = shutil.which(tool) or (
            f"/usr/local/cuda/bin/{tool}" if Path(f"/usr/local/cuda/bin/{tool}").exists() else None
        )
        info[tool] = _tail(_run([path, *args], 30).stdout, 2) if path else "not found"
    for module in ("facesal_fast._C", "onnxruntime", "tensorrt", "captum", "mediapipe"):
        try:
            imported = __import__(module, fromlist=["_"])
            info[module] = getattr(imported, "__version__", "imported")
        except Exception as err:  # recorded, never fatal
            info[module] = f"not importable: {type(err).__name__}: {err}"
    try:
        from facesal_fast import _C

        info["extension_built_with_cuda"] = bool(_C.built_with_cuda())
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception as err:
        info["extension_or_onnxruntime"] = f"{type(err).__name__}: {err}"
    return info


def step_build(ctx: Context) -> dict:
    result: dict[str, Any] = {}
    if ctx.dry_run or ctx.no_build:
        result["build"] = "not repeated (" + ("--dry-run" if ctx.dry_run else "--no-build") + ")"
    else:
        built = _run(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "."], ctx.limit_s - 30
        )
        result["build"] = "ok" if built.returncode == 0 else f"failed (rc {built.returncode})"
        result["build_log_tail"] = _tail(built.stdout + built.stderr)
    result["versions"] = versions()
    result["status"] = "failed" if result["build"].startswith("failed") else "ok"
    return result


# ----------------------------------------------------------------------------- 2. CUDA tests

CUDA_TEST_FILES = [
    "tests/test_ops_occlude.py",
    "tests/test_ops_splat.py",
    "tests/test_ops_guard.py",
    "tests/test_scoring.py",
]


def step_cuda_tests(ctx: Context) -> dict:
    # From outside the source tree, so that the installed package (with its compiled _C) is imported.
    files = [str(ROOT / name) for name in CUDA_TEST_FILES]
    run = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "cuda",
            "-rfEs",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            *files,
        ],
        ctx.limit_s - 10,
        cwd=ctx.out,
    )
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", run.stdout)}
    status = "ok" if run.returncode in (0, 5) else "failed"
    if ctx.dry_run:
        status = "dry-run" if run.returncode in (0, 5) else "failed"
    return dict(status=status, counts=counts, rc=run.returncode, summary=_tail(run.stdout, 25))


# ----------------------------------------------------------------------------- 3. kernels


def step_kernels(ctx: Context) -> dict:
    import numpy as np
    import torch

    from facesal_fast import ops
    from facesal_fast.ops import _dispatch
    from facesal_fast.ops.occlude import OccludeCall
    from facesal_fast.ops.splat import SplatCall

    device = _needs_device(ctx)
    if device.type == "cuda" and not ops.has_cuda():
        raise Skip("the extension has no CUDA kernels (built without nvcc?) or sees no device")
    verdicts = {op: _dispatch.native_ok(op, device) for op in _dispatch.OPS} if device.type == "cuda" else {}
    K, size, N = (256, 224, 40_000) if device.type == "cuda" else (16, 48, 2_000)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).to(device)
    centers = torch.from_numpy((rng.random((K, 2)) * size).astype(np.float32)).to(device)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    rows = []
    for dtype in ("float32", "float16"):
        native = lambda: ops.occlude_batch(image, centers, 15, "black", mean, std, dtype=dtype)  # noqa: E731
        call = OccludeCall(image, centers, 15, None, [0.0] * 3, 1 / 255, mean, std, False)
        peer_out = torch.empty((K, 3, size, size), dtype=getattr(torch, dtype), device=device)
        peer = lambda: _dispatch.OPS["occlude_batch"].torch_impl(call, peer_out)  # noqa: E731
        peer()
        torch.testing.assert_close(
            native().float(), peer_out.float(), rtol=1e-3 if dtype == "float16" else 1e-5, atol=1e-3
        )
        rows.append(
            dict(
                kernel=f"occlude_batch K={K} {size}x{size}x3 p=15 {dtype}",
                torch_ms=1e3 * _best_seconds(peer, device),
                facesal_ms=1e3 * _best_seconds(native, device),
            )
        )
    values = torch.from_numpy(rng.normal(size=(1, N)).astype(np.float32)).to(device)
    points = torch.from_numpy((rng.random((N, 2)) * 256).astype(np.float32)).to(device)
    splat = lambda: ops.splat_add(values, points, 15, (256, 256))  # noqa: E731
    call = SplatCall(values, points, None, 15, 256, 256)

    def splat_peer():
        sums, counts = torch.zeros((1, 256, 256), device=device), torch.zeros((256, 256), device=device)
        _dispatch.OPS["splat_add"].torch_impl(call, sums, counts)
        return sums, counts

    for got, want in zip(splat(), splat_peer()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
    rows.append(
        dict(
            kernel=f"splat_add N={N} p=15 256x256",
            torch_ms=1e3 * _best_seconds(splat_peer, device),
            facesal_ms=1e3 * _best_seconds(splat, device),
        )
    )
    return dict(
        status="ok",
        selfcheck=verdicts,
        rows=rows,
        peer="the ops' torch implementations (facesal_fast.ops._dispatch.OPS) on the same device",
    )


# ----------------------------------------------------------------------------- 4. scoring


def _scoring_models(smoke: bool) -> list[tuple[str, Any, int, Any, bool]]:
    """(name, module, input size, (mean, std), grayscale) of the models to time."""
    import torchvision

    from facesal_fast import models

    names = ("gender",) if smoke else ("gender", "expression-fer", "expression-kdef")
    found = [(name, models.load_module(name), 64, (0.5, 0.5), True) for name in names]
    if smoke:
        return found
    try:
        from facesal_fast.models.dlib_resnet import load_dlib_resnet

        found.append(("dlib-resnet", load_dlib_resnet(), 150, (0.0, 1.0), False))
    except Exception as err:  # recorded as a skipped row by the caller
        found.append(("dlib-resnet", err, 150, None, False))
    found.append(
        (
            "resnet50",
            torchvision.models.resnet50(weights=None).eval(),
            224,
            ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            False,
        )
    )
    return found


SCORING_BACKENDS = {  # name -> Scorer.from_torch options
    "torch-fp32": dict(backend="torch", channels_last=False, cuda_graphs=False),
    "torch-fp16": dict(backend="torch", precision="fp16", channels_last=True, cuda_graphs=False),
    "torch-cuda_graphs": dict(backend="torch", channels_last=True, cuda_graphs=True),
    "onnx-cuda": dict(backend="onnx"),
    "tensorrt": dict(backend="tensorrt"),
}


def step_scoring(ctx: Context) -> dict:
    from facesal_fast.scoring import Scorer

    bench_scoring = _benchmarks_module("bench_scoring")
    device = _needs_device(ctx)
    smoke = device.type != "cuda"
    backends = ["torch-fp32"] if smoke else list(SCORING_BACKENDS)
    rows, deadline = [], time.monotonic() + ctx.limit_s - 15
    for name, net, size, norm, grey in _scoring_models(smoke):
        for backend in backends:
            row = dict(model=name, requested=backend)
            rows.append(row)
            if isinstance(net, Exception) or time.monotonic() > deadline:
                row["skipped"] = (
                    f"{type(net).__name__}: {net}" if isinstance(net, Exception) else "out of this step's time"
                )
                continue
            try:
                scorer = Scorer.from_torch(
                    net,
                    size,
                    mean=norm[0],
                    std=norm[1],
                    grayscale=grey,
                    device=device,
                    cache_dir=ctx.out / "onnx",
                    **SCORING_BACKENDS[backend],
                )
                row.update(bench_scoring.measure_scorer(scorer, 0.01 if smoke else 0.5, 1 if smoke else 2))
            except Exception as err:  # one backend that cannot run here is a row, not a failure
                row["skipped"] = f"{type(err).__name__}: {err}"[:300]
    return dict(status="ok", rows=rows)


# ----------------------------------------------------------------------------- 5. captum


def step_captum(ctx: Context) -> dict:
    import numpy as np
    import torch

    from facesal_fast import models, ops

    device = _needs_device(ctx)
    try:
        from captum.attr import Occlusion
    except ImportError as err:
        raise Skip(f"captum is not installed: {err}") from err
    from facesal_fast.benchmark import cases as occlusion

    scorer = models.load("gender", backend="torch", device=device)
    module = scorer.backend.module
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)
    patch, stride, target = (4, 1, 0) if device.type == "cuda" else (8, 8, 0)  # the CPU dry run: 64 windows
    centres = occlusion.window_centres((64, 64), patch, stride)
    x = torch.as_tensor(ops.unoccluded(image, scorer.mean, scorer.std, scale=scorer.scale)).to(device)
    black = ops.unoccluded(np.zeros_like(image), scorer.mean, scorer.std, scale=scorer.scale)  # captum's baseline
    baseline = torch.as_tensor(black).to(device)
    on_device = torch.from_numpy(image).to(device) if device.type == "cuda" else image

    def captum_map():
        with torch.inference_mode():
            attr = Occlusion(lambda t: torch.softmax(module(t), 1)).attribute(
                x,
                sliding_window_shapes=(1, patch, patch),
                strides=(1, stride, stride),
                baselines=baseline,
                target=target,
                perturbations_per_eval=256,
            )
        return torch.nan_to_num(attr[0, 0]).cpu().numpy()

    def facesal_map():
        base = scorer.base_score(image, target)
        drops = base - np.asarray(scorer.score_occluded(on_device, centres, patch, target=target), np.float64)
        return occlusion.occlusion_map(drops, centres, patch, (64, 64))

    captum_seconds, want = _timed(captum_map, device)
    facesal_seconds, got = _timed(facesal_map, device)
    np.testing.assert_allclose(got, want, atol=1e-4, err_msg="facesal occlusion map != captum Occlusion")
    return dict(
        status="ok",
        windows=len(centres),
        stride=stride,
        patch=patch,
        captum_s=captum_seconds,
        facesal_s=facesal_seconds,
        speedup=captum_seconds / facesal_seconds,
        max_abs_diff=float(np.abs(got - want).max()),
    )


def _timed(fn: Callable[[], Any], device) -> tuple[float, Any]:
    fn()  # warm-up (cuDNN autotune, CUDA graphs)
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


# ----------------------------------------------------------------------------- 6. audit


def step_audit(ctx: Context) -> dict:
    device = _needs_device(ctx)
    try:
        import mediapipe  # noqa: F401  (the aligner)
    except ImportError as err:
        raise Skip(f"mediapipe (the aligner) is not installed: {err}") from err
    from facesal_fast import models
    from facesal_fast.audit.runner import Audit

    photos_wanted = 200 if device.type == "cuda" else 1
    faces = sorted((ROOT / "facesal_fast" / "data" / "demo_faces").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos = []
        for i in range(photos_wanted + 1):
            photos.append(folder / f"{i:03d}_{faces[i % len(faces)].name}")
            os.symlink(faces[i % len(faces)], photos[-1])
        scorer = models.load("gender", backend="torch", device=device)
        smoke = {} if device.type == "cuda" else dict(mode="grid", grid_step=16)  # the CPU dry run: a coarse grid
        audit = Audit(scorer, Path(tmp) / "run", **smoke)
        list(audit.feed(photos[:1], progress=False))  # start-up: MediaPipe graph, first batch
        start, done, deadline = time.perf_counter(), 0, time.monotonic() + ctx.limit_s - 15
        for item in audit.feed(photos[1:], progress=False):
            done += item.status == "done"
            if time.monotonic() > deadline:
                break
        seconds = time.perf_counter() - start
    return dict(status="ok", photos=done, seconds=seconds, photos_per_s=done / seconds, backend=scorer.backend.name)


STEP_FUNCTIONS: dict[str, Callable[[Context], dict]] = {
    "build": step_build,
    "cuda_tests": step_cuda_tests,
    "kernels": step_kernels,
    "scoring": step_scoring,
    "captum": step_captum,
    "audit": step_audit,
}


# ----------------------------------------------------------------------------- the plan


def run_step(step: Step, ctx: Context) -> dict:
    """Run one step in a child process within ``ctx.limit_s``; its result, never an exception."""
    result_file = ctx.out / f"{step.name}.json"
    result_file.unlink(missing_ok=True)
    cmd = (
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--step",
            step.name,
            "--out",
            str(ctx.out),
            "--limit",
            str(ctx.limit_s),
        ]
        + (["--dry-run"] if ctx.dry_run else [])
        + (["--no-build"] if ctx.no_build else [])
    )
    start = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("FACESAL_NO_SELFCHECK", None)  # the self-check is part of what is checked
    try:
        child = subprocess.run(cmd, capture_output=True, text=True, timeout=ctx.limit_s, cwd=ROOT, env=env)
        result = (
            json.loads(result_file.read_text())
            if result_file.exists()
            else dict(
                status="failed",
                reason=f"the step process ended with rc {child.returncode} and no result",
                stderr=_tail(child.stderr, 25),
            )
        )
    except subprocess.TimeoutExpired as err:
        result = dict(
            status="timeout", reason=f"over its {ctx.limit_s:.0f} s limit", stdout=_tail(str(err.stdout or ""), 10)
        )
    result.update(step=step.name, title=step.title, seconds=round(time.monotonic() - start, 1), limit_s=ctx.limit_s)
    return result


def child(name: str, ctx: Context) -> None:
    """Inside a step's process: run it and write its JSON result (a failure is a result too)."""
    try:
        result = STEP_FUNCTIONS[name](ctx)
        if ctx.dry_run and result.get("status") == "ok":
            result["status"] = "dry-run"
    except Skip as reason:
        result = dict(status="skipped", reason=str(reason))
    except Exception as err:
        result = dict(
            status="failed", reason=f"{type(err).__name__}: {err}"[:2000], traceback=_tail(traceback.format_exc(), 20)
        )
    (ctx.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))


def run_plan(
    out: Path, dry_run: bool, no_build: bool, only: list[str] | None = None, budget_s: float = BUDGET_S
) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    results, start = [], time.monotonic()
    for step in STEPS:
        left = budget_s - (time.monotonic() - start) - 5
        if only and step.name not in only:
            results.append(dict(step=step.name, title=step.title, status="skipped", reason="not selected (--only)"))
            continue
        if left < 15:
            results.append(
                dict(step=step.name, title=step.title, status="skipped", reason="out of the plan's time budget")
            )
            continue
        results.append(run_step(step, Context(out, dry_run, no_build, min(step.limit_s, left))))
        print(
            f"{step.name}: {results[-1]['status']} ({results[-1].get('seconds', 0)} s) {results[-1].get('reason', '')}",
            flush=True,
        )
    return results


def markdown(results: list[dict], dry_run: bool) -> str:
    """A section for benchmarks/RESULTS.md."""
    build = next((r for r in results if r["step"] == "build"), {})
    v = build.get("versions", {})
    lines = [
        f"## GPU check ({time.strftime('%Y-%m-%d')}, `benchmarks/gpu_check.py`"
        f"{', DRY RUN on the CPU: no device figure' if dry_run else ''})",
        "",
        f"Machine: {v.get('gpu', 'no GPU')} (capability {v.get('capability', '-')}), driver/nvidia-smi: "
        f"{v.get('nvidia-smi', '-')}; "
        f"torch {v.get('torch', '?')} (CUDA {v.get('torch_cuda', '-')}), Python {v.get('python', '?')}; "
        f"extension built with CUDA: {v.get('extension_built_with_cuda', '?')}; build: {build.get('build', '?')}.",
        "",
        "| step | status | seconds | note |",
        "|---|---|---:|---|",
    ]
    for r in results:
        note = r.get("reason") or ", ".join(f"{k} {n}" for k, n in r.get("counts", {}).items())
        lines.append(f"| {r['step']} ({r['title']}) | {r['status']} | {r.get('seconds', '')} | {str(note)[:160]} |")
    for r in results:
        if r.get("rows"):
            keys = list(dict.fromkeys(k for row in r["rows"] for k in row))
            lines += [
                "",
                f"**{r['step']}**"
                + (" (kernel self-check: " + json.dumps(r["selfcheck"]) + ")" if r.get("selfcheck") else ""),
                "",
                "| " + " | ".join(keys) + " |",
                "|" + "---|" * len(keys),
            ]
            lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in r["rows"]]
    captum = next((r for r in results if r["step"] == "captum" and "speedup" in r), None)
    if captum:
        lines += [
            "",
            f"Exact occlusion map, gender model, {captum['windows']} windows (stride {captum['stride']}, patch "
            f"{captum['patch']}): "
            f"captum {captum['captum_s']:.3f} s, facesal {captum['facesal_s']:.3f} s ({captum['speedup']:.1f}x), "
            f"max |diff| {captum['max_abs_diff']:.2g}.",
        ]
    audit = next((r for r in results if r["step"] == "audit" and "photos_per_s" in r), None)
    if audit:
        lines += [
            "",
            f"Audit: {audit['photos']} photos in {audit['seconds']:.1f} s, {audit['photos_per_s']:.2f} photos/s "
            f"({audit['backend']}).",
        ]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value).replace("|", "/")[:120]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="the same plan on the CPU: device steps at smoke size, no build"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_check"), help="folder for gpu_check.json and gpu_check.md"
    )
    parser.add_argument(
        "--no-build", action="store_true", help="skip the pip install (the package is installed already)"
    )
    parser.add_argument(
        "--only", type=lambda v: v.split(","), help=f"comma-separated steps to run: {','.join(STEP_FUNCTIONS)}"
    )
    parser.add_argument("--step", choices=list(STEP_FUNCTIONS), help=argparse.SUPPRESS)  # inside a step's process
    parser.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only and set(args.only) - set(STEP_FUNCTIONS):
        parser.error(
            f"--only: unknown steps {sorted(set(args.only) - set(STEP_FUNCTIONS))}; steps: {list(STEP_FUNCTIONS)}"
        )
    out = args.out.resolve()
    if args.step:
        child(args.step, Context(out, args.dry_run, args.no_build, args.limit))
        return 0
    results = run_plan(out, args.dry_run, args.no_build, args.only)
    (out / "gpu_check.json").write_text(json.dumps(dict(dry_run=args.dry_run, steps=results), indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(results, args.dry_run))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
