import os

import pytest
import torch

from facesal_fast.ops import has_cuda
from facesal_fast.scoring.probe_cache import CACHE_ENV

CUDA_REASON = "needs a CUDA GPU and a CUDA build of facesal_fast._C"
requires_cuda = pytest.mark.skipif(not has_cuda(), reason=CUDA_REASON)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=requires_cuda)])
def device(request) -> torch.device:
    return torch.device(request.param)


def pytest_collection_modifyitems(items):
    """Every test whose name or parameters say cuda or tensorrt is marked ``cuda``:
    ``pytest -m cuda`` runs the device tests (benchmarks/gpu_check.py step 2)."""
    for item in items:
        if "cuda" in item.name or "tensorrt" in item.name:
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(autouse=True, scope="session")
def _probe_cache_in_a_tmp_dir(tmp_path_factory):
    """Backend probes are stored in a folder of this test session, not the user's cache
    (``FACESAL_CACHE_DIR``; subprocesses inherit it)."""
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("facesal_cache"))


@pytest.fixture(autouse=True, scope="session")
def _run_outside_the_source_tree(tmp_path_factory):
    """Subprocesses and Ray workers must import the installed package (with its compiled
    ``_C``), not the source checkout that ``pytest`` was started from."""
    os.chdir(tmp_path_factory.mktemp("cwd"))
