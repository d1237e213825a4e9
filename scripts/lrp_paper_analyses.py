"""The LRP paper's (Arbabzadah et al.) happiness analyses on the bundled expression models.

For every photo of a folder (default: the bundled demo faces), with LRP alpha-beta (2, 1) as
in the paper, maps warped onto the canonical face and measured by region shares of the
positive relevance (``align.region_shares``):

1. happiness vs sadness (paper Sec. 3.4, Fig. 4): mouth, eyebrows and cheeks shares of the
   map explaining "happy" against the map explaining "sad" on the same photo;
2. occlusion test (Sec. 3.7, Fig. 7): the mouth, or both eyes, painted over with the face's
   skin colour (``methods.skin_colour``); the happy probability and the mouth's relevance
   share before and after, on the photos the model calls happy;
3. gender vs age heatmaps of the same faces (Sec. 3.2, Fig. 2: the age model picks up more
   facial detail, the gender model the overall shape and the edges of the face): inner
   features (eyes, eyebrows, nose, mouth) against the outline (jaw, chin, forehead) for the
   predicted class of the bundled gender and age models.

``--conservation`` instead measures the paper's eq. 1 on every bundled classifier: the worst
relative relevance change at any layer or from the logit to the pixels, both rules, every
class (``methods.check_conservation``).

Prints Markdown tables (the numbers in docs/results.md).
Usage: ``python scripts/lrp_paper_analyses.py [PHOTOS_DIR] [--rule alpha-beta|epsilon]
[--fig2-only | --conservation]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from facesal_fast import ops
from facesal_fast.align import default_aligner, load_image, region_masks, region_shares
from facesal_fast.methods import check_conservation, explain, lrp_relevance, skin_colour
from facesal_fast.methods.lrp import RULES
from facesal_fast.models import load, load_module

BUNDLED = Path(__file__).resolve().parents[1] / "facesal_fast" / "data" / "demo_faces"
GROUPS = {
    "mouth": ("mouth",),
    "eyebrows": ("left_eyebrow", "right_eyebrow"),
    "cheeks": ("left_cheek", "right_cheek"),
    "eyes": ("left_eye", "right_eye"),
    "inner features": ("left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "nose", "mouth"),
    "outline": ("jaw", "chin", "forehead"),
}


def grouped(shares: dict[str, float]) -> dict[str, float]:
    return {g: sum(shares[r] for r in regions) for g, regions in GROUPS.items()}


def lrp_shares(scorer, image: np.ndarray, face, target: int, rule: str) -> dict[str, float]:
    canonical = explain(f"lrp-{rule}", scorer, image, target, face).canonical_map
    return grouped(region_shares(canonical, mode="positive"))


def occluded(image: np.ndarray, face, regions: tuple[str, ...]) -> np.ndarray:
    """``image`` with ``regions`` (canonical) painted in the face's skin colour, slightly dilated."""
    masks = region_masks(face.canonical_shape)
    canonical = np.zeros(face.canonical_shape, np.float32)
    for r in regions:
        canonical[masks[r]] = 1.0
    on_photo = face.to_image(canonical) > 0.25
    side = max(3, int(0.03 * (face.face_box[2] - face.face_box[0])) | 1)
    on_photo = cv2.dilate(on_photo.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    out = image.copy()
    out[on_photo] = skin_colour(image, face.face_box).astype(np.uint8)
    return out


def happy_probability(scorer, image: np.ndarray, face) -> float:
    return float(scorer.predict(image, face.face_box).probabilities[scorer.classes.index("happy")])


def analyse(model: str, faces: list, rule: str) -> None:
    scorer = load(model, backend="torch")
    happy, sad = scorer.classes.index("happy"), scorer.classes.index("sad")
    rows = []
    for name, image, face in faces:
        rows.append(
            (
                name,
                lrp_shares(scorer, image, face, happy, rule),
                lrp_shares(scorer, image, face, sad, rule),
                scorer.predict(image, face.face_box).label,
            )
        )
    print(f"\n### {model}: happy vs sad ({len(rows)} photos, LRP {rule}, positive relevance shares)\n")
    print("| region | share explaining happy | share explaining sad | photos with happy > sad |")
    print("|---|---:|---:|---:|")
    for g in ("mouth", "eyebrows", "cheeks", "eyes"):
        h, s = np.array([r[1][g] for r in rows]), np.array([r[2][g] for r in rows])
        print(f"| {g} | {h.mean():.3f} | {s.mean():.3f} | {(h > s).sum()}/{len(rows)} |")
    area = grouped(region_shares(np.ones((256, 256), np.float32), mode="positive"))
    print("\nface-area shares (a uniform map): " + ", ".join(f"{g} {v:.3f}" for g, v in area.items()))
    occlusion_test(model, scorer, [(n, i, f) for (n, i, f), r in zip(faces, rows) if r[3] == "happy"], happy, rule)


def occlusion_test(model: str, scorer, faces: list, happy: int, rule: str) -> None:
    print(f"\n{model}: occlusion test on the {len(faces)} photos predicted happy:\n")
    print(
        "| occluded | mean P(happy) | photos where P(happy) fell | mean mouth share | photos where mouth share fell |"
    )
    print("|---|---:|---:|---:|---:|")
    base_p = [happy_probability(scorer, i, f) for _, i, f in faces]
    base_m = [lrp_shares(scorer, i, f, happy, rule)["mouth"] for _, i, f in faces]
    print(f"| nothing | {np.mean(base_p):.3f} | - | {np.mean(base_m):.3f} | - |")
    for label, regions in (("mouth", ("mouth",)), ("both eyes", ("left_eye", "right_eye"))):
        images = [occluded(i, f, regions) for _, i, f in faces]
        p = [happy_probability(scorer, o, f) for o, (_, _, f) in zip(images, faces)]
        m = [lrp_shares(scorer, o, f, happy, rule)["mouth"] for o, (_, _, f) in zip(images, faces)]
        fell_p = sum(a < b for a, b in zip(p, base_p))
        fell_m = sum(a < b for a, b in zip(m, base_m))
        print(f"| {label} | {np.mean(p):.3f} | {fell_p}/{len(faces)} | {np.mean(m):.3f} | {fell_m}/{len(faces)} |")


def gender_vs_age(faces: list, rule: str) -> None:
    """Fig. 2: region shares of the predicted class's map, per model, on the same faces."""
    print(f"\n### gender vs age ({len(faces)} photos, LRP {rule}, predicted class)\n")
    print("| model | inner features | outline | cheeks | photos with inner > outline |")
    print("|---|---:|---:|---:|---:|")
    for model in ("gender", "gender-dlib", "age"):
        scorer = load(model, backend="torch")
        shares = []
        for _, image, face in faces:
            target = scorer.predict(image, face).index
            shares.append(lrp_shares(scorer, image, face, target, rule))
        inner, outline = np.array([s["inner features"] for s in shares]), np.array([s["outline"] for s in shares])
        cheeks = np.mean([s["cheeks"] for s in shares])
        print(
            f"| {model} | {inner.mean():.3f} | {outline.mean():.3f} | {cheeks:.3f} | "
            f"{(inner > outline).sum()}/{len(shares)} |"
        )


def conservation(faces: list) -> None:
    """Worst relative relevance change (any layer, or logit to pixels) per model and rule."""
    print(f"\n### relevance conservation ({len(faces)} photos, every class)\n")
    print("| model | " + " | ".join(f"{rule} (photo, class)" for rule in RULES) + " |")
    print("|---|" + "---:|" * len(RULES))
    for model in ("gender", "expression-fer", "expression-kdef", "gender-dlib", "age"):
        scorer, module = load(model, backend="torch"), load_module(model)
        worst = {rule: (0.0, "") for rule in RULES}
        for name, image, face in faces:
            chip, _ = scorer.prepare(image, face)
            x = torch.from_numpy(ops.unoccluded(chip, scorer.mean, scorer.std, scale=scorer.scale))
            for rule in RULES:
                for target in range(len(scorer.classes)):
                    change = check_conservation(lrp_relevance(module, x, target, rule), rtol=np.inf)
                    worst[rule] = max(worst[rule], (change, f"{name}, {scorer.classes[target]}"))
        print(f"| {model} | " + " | ".join(f"{w:.1e} ({where})" for w, where in worst.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="?", default=str(BUNDLED))
    parser.add_argument("--rule", default="alpha-beta", choices=["alpha-beta", "epsilon"])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--fig2-only", action="store_true", help="only the gender vs age comparison")
    only.add_argument("--conservation", action="store_true", help="only the conservation check (both rules)")
    args = parser.parse_args()
    aligner = default_aligner()
    faces = []
    for path in sorted(Path(args.photos).glob("*.jpg")):
        image = load_image(path)
        faces.append((path.name, image, aligner(image)))
    if args.conservation:
        conservation(faces)
        return
    if not args.fig2_only:
        for model in ("expression-fer", "expression-kdef"):
            analyse(model, faces, args.rule)
    gender_vs_age(faces, args.rule)


if __name__ == "__main__":
    main()
