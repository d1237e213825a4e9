"""facesal_fast: fast canonical saliency maps and saliency audits for deep face models."""
from facesal_fast import ops
from facesal_fast.ops import has_cuda

__version__ = "0.1.0"

__all__ = ["__version__", "has_cuda", "ops"]
