"""Copy the demo photos into the package: real faces from the deepface unit-test set, at most 512 px.

Usage: python scripts/make_demo_faces.py DEEPFACE_UNIT_DIR
"""

import shutil
import sys
from pathlib import Path

import cv2

SRC = Path(sys.argv[1])
DST = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
PHOTOS = [f"img{i}.jpg" for i in range(1, 31) if (SRC / f"img{i}.jpg").exists()][:24] + ["couple.jpg"]

DST.mkdir(parents=True, exist_ok=True)
for name in PHOTOS:
    image = cv2.imread(str(SRC / name), cv2.IMREAD_COLOR)
    scale = 512 / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(DST / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
shutil.copy(SRC / "LICENSE-deepface.txt", DST / "LICENSE-deepface.txt")
(DST / "SOURCE.md").write_text(
    "Demo photos: a subset of the unit-test photos of serengil/deepface (MIT, LICENSE-deepface.txt),\n"
    "resized to at most 512 px by scripts/make_demo_faces.py.\n"
)
print(f"{len(PHOTOS)} photos -> {DST}")
