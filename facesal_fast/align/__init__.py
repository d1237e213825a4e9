"""Dense 3D face alignment, the canonical face, and warps between them (CIS/CMS section 3.1).

Quick use::

    from facesal_fast.align import default_aligner, load_image
    face = default_aligner()(load_image("photo.jpg"))      # AlignedFace
    face.verts_image, face.verts_canonical, face.visible   # M_I (N,2), M_F (N,2), (N,)
    tex = face.to_canonical()                              # (256, 256, 3) unwrapped texture
    overlay = face.to_image(cms_map)                       # canonical map -> photo
"""

from .aligner import Aligner, default_aligner, find_face
from .canonical import canonical_face, canonical_geometry, canonical_mask
from .errors import ImageError, NoFaceError
from .face import AlignedFace
from .image_io import as_rgb_uint8, load_image
from .regions import REGION_NAMES, region_masks, region_shares
from .warp import to_canonical, to_image

__all__ = [
    "AlignedFace",
    "Aligner",
    "ImageError",
    "NoFaceError",
    "REGION_NAMES",
    "as_rgb_uint8",
    "canonical_face",
    "canonical_geometry",
    "canonical_mask",
    "default_aligner",
    "find_face",
    "load_image",
    "region_masks",
    "region_shares",
    "to_canonical",
    "to_image",
]
