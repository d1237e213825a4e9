"""Where the tests find real face photos.

The full-size deepface unit-test photo set (the ``tests/dataset`` folder of the public
serengil/deepface repository, MIT) when ``FACESAL_TEST_PHOTOS`` names a folder holding it,
else the photos bundled with the package (a subset, at most 512 px), so the photo tests run on
a bare checkout. A test needing a photo outside the bundle skips.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "facesal_fast" / "data" / "demo_faces"
_FULL = os.environ.get("FACESAL_TEST_PHOTOS")
FULL_PHOTOS = Path(_FULL) if _FULL and Path(_FULL).is_dir() else None
FACES = FULL_PHOTOS or BUNDLED


def photo(name: str) -> Path:
    """Path of a photo by file name, skipping the test when it is not available."""
    path = FACES / name
    if not path.is_file():
        pytest.skip(f"{name} is not among the available photos ({FACES})")
    return path


requires_full_photos = pytest.mark.skipif(
    FULL_PHOTOS is None,
    reason="needs the full-size deepface unit-test photos (set FACESAL_TEST_PHOTOS to their folder)",
)
