"""SHA-256 of every map the public API computes on the bundled photos: run it before and
after a refactor and compare the two JSON files (maps must stay equal bit for bit).

    python scripts/map_digests.py before.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import facesal_fast as fs

PHOTOS = sorted((Path(fs.__file__).parent / "data" / "demo_faces").glob("img*.jpg"))


def digest(array) -> str:
    """SHA-256 of an array's bytes, its dtype and shape."""
    array = np.ascontiguousarray(np.asarray(array))
    return hashlib.sha256(array.tobytes() + str((array.dtype, array.shape)).encode()).hexdigest()[:20]


def cis_digests(scorer, name: str, photos, **options) -> dict[str, str]:
    """One digest per photo of ``fs.cis(photo, scorer, **options)``'s canonical map."""
    out = {}
    for photo in photos:
        result = fs.cis(photo, scorer, **options)
        key = f"{name} {photo.name} {sorted(options.items())}"
        out[key] = digest(result.canonical) + " " + digest(result.drops) + f" {result.forward_passes}"
    return out


def main(path: str) -> None:
    """Write the digests of the maps of a fixed set of models, modes and photos to ``path``."""
    found: dict[str, str] = {}
    gender = fs.models.load("gender", backend="torch")
    for options in ({}, {"mode": "grid"}, {"mode": "adaptive"}, {"quality": "fast"}, {"stride": 3, "fill": "mean"}):
        found.update(cis_digests(gender, "gender", PHOTOS[:6], **options))
    fer = fs.models.load("expression-fer", backend="torch")
    found.update(cis_digests(fer, "fer", PHOTOS[6:9], target="happy") if "happy" in fer.classes else {})
    found.update(cis_digests(fer, "fer", PHOTOS[6:9]))
    faces = {photo: fs.cis(photo, gender).face for photo in PHOTOS[:2]}
    for method in ("occlusion", "gradcam", "guided-backprop", "lrp-epsilon", "occlusion-skin"):
        for photo in PHOTOS[:2]:
            result = fs.methods.explain(method, gender, faces[photo].image, 0, faces[photo])
            found[f"method {method} {photo.name}"] = digest(result.image_map)
    resnet = fs.models.load("dlib-resnet", backend="torch")
    pair = fs.verification_cis(str(PHOTOS[0]), str(PHOTOS[1]), resnet, 1, 0.5)
    found["verification"] = digest(pair.canonical)
    Path(path).write_text(json.dumps(found, indent=1, sort_keys=True))
    print(f"{len(found)} digests -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
