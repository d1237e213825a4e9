"""Where the tests find real face photos.

The shared deepface-unit set (``../shared/faces/deepface-unit`` beside the checkout) when it
is there, else the photos bundled with the package (a subset, at most 512 px), so the
photo tests run on a bare checkout too
(``FACESAL_TEST_BUNDLED_PHOTOS=1`` forces the bundle, to check that). A test needing a photo outside the bundle skips.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "facesal_fast" / "data" / "demo_faces"
_SHARED = [ROOT.parent / "shared" / "faces" / "deepface-unit", Path("/work/shared/faces/deepface-unit")]
SHARED = None if os.environ.get("FACESAL_TEST_BUNDLED_PHOTOS") else next((p for p in _SHARED if p.is_dir()), None)
FACES = SHARED or BUNDLED


def photo(name: str) -> Path:
    """Path of a photo by file name, skipping the test when it is not available."""
    path = FACES / name
    if not path.is_file():
        pytest.skip(f"{name} is not among the available photos ({FACES})")
    return path

requires_shared = pytest.mark.skipif(
    SHARED is None, reason="needs the full-size shared deepface-unit photos (../shared/faces beside the checkout)"
)
