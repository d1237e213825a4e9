import pytest
import torch

from facesal_fast.ops import has_cuda

CUDA_REASON = "needs a CUDA GPU and a CUDA build of facesal_fast._C"
requires_cuda = pytest.mark.skipif(not has_cuda(), reason=CUDA_REASON)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=requires_cuda)])
def device(request) -> torch.device:
    return torch.device(request.param)
