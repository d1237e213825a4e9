"""backend="auto" probes once per model and machine: stored on disk, reused, never costing more
than the work (facesal_fast.scoring.probe_cache, scoring.selection)."""

import json
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from facesal_fast.scoring import Scorer, probe_cache, selection
from facesal_fast.scoring.probe_cache import CachedProbe, cache_dir, load_probe, probe_key, store_probe
from facesal_fast.scoring.selection import ProbingBackend, select_backend
from facesal_fast.speed.auto import choose_incremental

CPU = torch.device("cpu")
SHAPE = (3, 16, 16)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 16 * 16, 2),
    ).eval()


def _auto(net, tmp_path):
    return Scorer.from_torch(net, SHAPE[1:], mean=0.5, std=0.25, backend="auto", cache_dir=tmp_path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESAL_CACHE_DIR", str(tmp_path / "own"))
    return tmp_path / "own" / "probes"


def _eager_reference(net):
    """torch eager's outputs on the probe's first two images, as a probe stores them."""
    return net(selection._random_batch(2, SHAPE, CPU)).tolist()


def _no_timing(monkeypatch):
    """Any timed probe run fails the test."""

    def timed(*args, **kwargs):
        raise AssertionError("a probe ran")

    monkeypatch.setattr(selection, "_time", timed)


def test_cache_folder_follows_facesal_cache_dir_then_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("FACESAL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "facesal_fast" / "probes"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "facesal_fast" / "probes"
    monkeypatch.setenv("FACESAL_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own" / "probes"


def test_a_probe_is_stored_and_the_next_load_uses_it_without_probing(cache, tmp_path, monkeypatch, caplog):
    net = _net()
    first = _auto(net, tmp_path)
    assert isinstance(first.backend, ProbingBackend) and first.probe == []  # nothing stored: no probe at load
    chosen, table = select_backend(net, SHAPE, CPU, "fp32", 8, tmp_path)
    assert len(list(cache.glob("*.json"))) == 1 and not list(cache.glob("*.tmp"))
    _no_timing(monkeypatch)
    with caplog.at_level(logging.INFO, logger="facesal_fast.scoring"):
        again = _auto(net, tmp_path)
    assert again.backend.name == chosen.name and again.probe == table
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f"{chosen.name}, the fastest in the probe stored on" in lines[0], lines
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(again.backend(x), net(x), rtol=1e-4, atol=1e-4)


def test_the_key_changes_with_weights_shape_and_versions(monkeypatch):
    net = _net()
    key = probe_key(net, SHAPE, CPU, "fp32", False)
    assert key == probe_key(_net(), SHAPE, CPU, "fp32", False)  # same weights: same key
    assert key != probe_key(_net(seed=1), SHAPE, CPU, "fp32", False)
    assert key != probe_key(net, (3, 16, 17), CPU, "fp32", False)
    monkeypatch.setattr(probe_cache, "installed_version", lambda name: None if name == "onnxruntime" else "1.0")
    assert key != probe_key(net, SHAPE, CPU, "fp32", False)  # e.g. onnxruntime uninstalled


def test_a_corrupt_or_stale_entry_is_ignored_with_a_warning_and_probed_again(cache, tmp_path):
    net = _net()
    key = probe_key(net, SHAPE, CPU, "fp32", False)
    cache.mkdir(parents=True)
    (cache / f"{key}.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable backend probe cache entry ignored"):
        backend, _ = select_backend(net, SHAPE, CPU, "fp32", 8, tmp_path)
    assert load_probe(key).chosen in ("torch", "onnx-cpu", "torch-channels_last")  # rewritten by the new probe
    (cache / f"{key}.json").write_text(json.dumps({"chosen": "onnx-cpu", "rows": [[1, 2]], "probed_at": "x"}))
    with pytest.warns(UserWarning, match="corrupt backend probe cache entry ignored"):
        assert load_probe(key) is None
    store_probe(key, CachedProbe("no-such-backend", [("torch-fp32", 1.0, 0.0, "")], "then", [[0.0, 0.0]] * 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a choice that no longer builds is logged, not warned
        backend, table = select_backend(net, SHAPE, CPU, "fp32", 8, tmp_path)
    assert load_probe(key).chosen != "no-such-backend" and len(table) >= 2
    store_probe(key, CachedProbe("torch", [("torch-fp32", 1.0, 0.0, "")], "then", [[1e3, 1e3]] * 2))
    select_backend(net, SHAPE, CPU, "fp32", 8, tmp_path)  # disagrees with eager's stored outputs: probed again
    assert load_probe(key).reference != [[1e3, 1e3]] * 2


def test_an_unwritable_cache_is_only_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FACESAL_CACHE_DIR", str(blocker))  # probes/ cannot be made under a file
    with pytest.warns(UserWarning, match="cannot store the backend probe"):
        backend, _ = select_backend(_net(), SHAPE, CPU, "fp32", 8, tmp_path)
    assert backend.name


def test_a_spent_budget_skips_the_remaining_candidates_and_stores_nothing(cache, tmp_path):
    backend, table = select_backend(_net(), SHAPE, CPU, "fp32", 8, tmp_path, budget=0.0)
    assert backend.name == "torch-fp32" and table[0].ms_per_image is not None
    assert len(table) >= 2 and all(r.note.startswith("not probed: the probe's budget") for r in table[1:])
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_probing_backend_probes_only_after_the_work_cost_a_probe_and_within_that_time(cache, tmp_path, monkeypatch):
    net = _net()
    backend = ProbingBackend(net, CPU, cache_dir=tmp_path)
    x = torch.randn(4, *SHAPE)
    torch.testing.assert_close(backend(x), net(x))
    seconds, images = backend._spent[SHAPE]
    assert images == 4 and backend.probe_cost(SHAPE) >= 1.0 and backend.probes == {}  # tiny work: not probed
    budgets = []

    def recorded(*args):
        budgets.append(args[-1])
        return selection.TorchBackend(net, CPU), [selection.ProbeResult("torch-fp32", 1.0, 0.0)]

    monkeypatch.setattr(selection, "select_backend", recorded)
    backend.probe_after = 0.0
    backend(x)
    assert budgets == [pytest.approx(backend._spent[SHAPE][0])]  # the probe may take what the work took
    assert backend.speedup(SHAPE) == 1.0


def test_probing_backend_reads_a_stored_probe_per_shape_and_wraps_an_nhwc_choice(cache, tmp_path, monkeypatch):
    net = _net()
    key = probe_key(net, SHAPE, CPU, "fp32", False)
    store_probe(
        key,
        CachedProbe(
            "torch-channels_last",
            [("torch-fp32", 2.0, 0.0, ""), ("torch-fp32-channels_last", 1.0, 0.0, "")],
            "then",
            _eager_reference(net),
        ),
    )
    _no_timing(monkeypatch)
    backend = ProbingBackend(net, CPU, cache_dir=tmp_path)
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(backend(x), net(x), rtol=1e-4, atol=1e-4)
    assert backend.chosen[SHAPE].layout == "nchw" and backend.chosen[SHAPE].name == "torch-fp32-channels_last"
    assert backend.speedup(SHAPE) == 2.0


def test_incremental_waits_for_the_probe_then_weighs_its_speed(cache, tmp_path):
    net = _net()
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    cold = choose_incremental(_auto(net, tmp_path), image, 3)
    assert not cold.incremental and "has not probed this input shape yet" in cold.reason
    key = probe_key(net, SHAPE, CPU, "fp32", False)
    store_probe(key, CachedProbe("torch", [("torch-fp32", 1.0, 0.0, "")], "then", _eager_reference(net)))
    warm = choose_incremental(_auto(net, tmp_path), image, 3)
    assert "multiply-add ratio" in warm.reason and "at 1.00x torch eager" in warm.reason
