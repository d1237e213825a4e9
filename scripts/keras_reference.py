"""Check the PyTorch ports against Keras on a folder of face photos and print predictions.

For every photo in the folder: detect faces (dlib's HOG frontal detector, standing in for
the OpenCV Haar detector of the original training), prepare each face with the bundled
scorer's preprocessing, run Keras (keras 3 on the torch backend, no TensorFlow) and the
PyTorch port, and record the largest per-layer difference. Prints two Markdown tables:
port accuracy per model and predictions per face (used in docs/models.md).

    KERAS_BACKEND=torch python scripts/keras_reference.py DEEPFACE_UNIT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import cv2  # noqa: E402
import dlib  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from facesal_fast.models import KERAS_MODELS, load, load_module, weights_path  # noqa: E402


def detect(folder: Path) -> list[tuple[str, np.ndarray, tuple[int, int, int, int]]]:
    """(file, RGB image, face box) for every face dlib finds, largest first per photo."""
    detector = dlib.get_frontal_face_detector()
    faces = []
    for path in sorted(folder.glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        scale = min(1.0, 800.0 / max(rgb.shape[:2]))  # detect on <= 800 px, box in full resolution
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        for r in sorted(detector(small, 1), key=lambda r: -r.area()):
            box = tuple(int(round(v / scale)) for v in (r.left(), r.top(), r.right(), r.bottom()))
            faces.append((path.name, rgb, box))
    return faces


def main(folder: Path) -> None:
    faces = detect(folder)
    scorers = {name: load(name, backend="torch") for name in KERAS_MODELS}
    inputs = np.stack([scorers["gender"].prepare(rgb, box)[0] for _, rgb, box in faces]).astype(np.float32)
    x = (inputs / 255.0 - 0.5) / 0.5  # N x 64 x 64 x 1, the models' normalisation
    print(f"{len(faces)} faces in {len({f for f, _, _ in faces})} photos\n")
    print("| model | layers compared | max abs diff (any layer) | max abs diff (probabilities) | top-1 agreement |")
    print("|---|---|---|---|---|")
    predictions = {}
    for name in KERAS_MODELS:
        reference = keras.saving.load_model(str(weights_path(name)), compile=False)
        probe = keras.Model(reference.inputs, [layer.output for layer in reference.layers])
        keras_outs = [np.asarray(o) for o in probe.predict(x, verbose=0, batch_size=64)]
        net = load_module(name)
        with torch.no_grad():
            ours = net.layer_outputs(torch.from_numpy(x).permute(0, 3, 1, 2))
        worst = 0.0
        for layer, k in zip(reference.layers, keras_outs):
            t = torch.softmax(ours[net.output_name], 1) if layer.name not in ours else ours[layer.name]
            t = (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()
            worst = max(worst, float(np.abs(t - k).max()))
        probs = torch.softmax(ours[net.output_name], 1).numpy()
        prob_diff = float(np.abs(probs - keras_outs[-1]).max())
        agree = float((probs.argmax(1) == keras_outs[-1].argmax(1)).mean())
        print(f"| {name} | {len(reference.layers)} | {worst:.2e} | {prob_diff:.2e} | {agree:.0%} |")
        predictions[name] = probs
    print("\n| photo | face box (x0, y0, x1, y1) | gender | expression-fer | expression-kdef |")
    print("|---|---|---|---|---|")
    for i, (file, _, box) in enumerate(faces):
        cells = []
        for name in KERAS_MODELS:
            p = predictions[name][i]
            cells.append(f"{KERAS_MODELS[name].classes[int(p.argmax())]} {p.max():.2f}")
        print(f"| {file} | {box} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
