"""Human box annotations: loading, heatmaps, balanced histograms, canonical maps."""

import numpy as np
import pytest
from photos import FACES, requires_full_photos

from facesal_fast.methods.annotations import (
    LABELS,
    Box,
    box_heatmap,
    canonical_box_heatmaps,
    example_annotations_path,
    highlight,
    image_heatmaps,
    label_histogram,
    load_annotations,
    person_canonical_heatmaps,
    person_heatmaps,
)
from facesal_fast.methods.masks import relative_saliency


def write(tmp_path, text):
    path = tmp_path / "boxes.csv"
    path.write_text(text)
    return path


def test_load_normalises_labels_and_rejects_bad_rows(tmp_path):
    boxes = load_annotations(
        write(tmp_path, "image,label,x0,y0,x1,y1\na.jpg,Eye Brows,1,2,3,4\na.jpg,mustache,0,0,1,1\n")
    )
    assert [b.label for b in boxes] == ["eyebrows", "moustache"] and boxes[0].x1 == 3 and boxes[0].person is None
    with pytest.raises(ValueError, match=r":2: label 'forehead'"):
        load_annotations(write(tmp_path, "image,label,x0,y0,x1,y1\na.jpg,forehead,1,2,3,4\n"))
    assert load_annotations(
        write(tmp_path, "image,label,x0,y0,x1,y1\na.jpg,forehead,1,2,3,4\n"), allow_other_labels=True
    )
    with pytest.raises(ValueError, match="x1 >= x0"):
        load_annotations(write(tmp_path, "image,label,x0,y0,x1,y1\na.jpg,nose,5,2,3,4\n"))
    with pytest.raises(ValueError, match="missing column"):
        load_annotations(write(tmp_path, "image,label,x0,y0\na.jpg,nose,5,2\n"))


def test_box_heatmap_is_the_fraction_of_boxes_covering_each_pixel():
    boxes = [Box("a", "eyes", 1, 1, 3, 2), Box("a", "nose", 2, 0, 2.5, 4), Box("a", "chin", -5, 3, 0.2, 10)]
    ref = np.zeros((5, 6))
    ref[1:3, 1:4] += 1
    ref[0:5, 2:3] += 1
    ref[3:5, 0:1] += 1
    np.testing.assert_allclose(box_heatmap(boxes, (5, 6)), ref / 3)
    heat = box_heatmap(boxes, (5, 6))
    top = highlight(heat, 90)  # the 90th percentile is 1/3, shared by 9 pixels: '>=' keeps them with the 2 overlaps
    assert np.percentile(heat, 90) == pytest.approx(1 / 3)
    np.testing.assert_array_equal(top, heat > 0)


def test_highlight_keeps_a_box_covering_more_than_the_top_decile():
    big = box_heatmap([Box("a", "nose", 0, 0, 4, 4)], (10, 10))  # 25 of 100 pixels in the box
    np.testing.assert_array_equal(highlight(big, 90), big > 0)  # '>' at the 90th percentile kept nothing
    small = box_heatmap([Box("a", "nose", 0, 0, 1, 1)], (10, 10))  # 4 pixels: the percentile is 0
    np.testing.assert_array_equal(highlight(small, 90), small > 0)  # the empty background stays out
    assert not highlight(np.ones((4, 4)), 90).any()
    two = box_heatmap([Box("a", "nose", 0, 0, 4, 4), Box("a", "eyes", 0, 0, 1, 1)], (10, 10))
    np.testing.assert_array_equal(highlight(two, 90), two > 0)  # 25 % >= the 90th percentile (0.5)
    np.testing.assert_array_equal(highlight(two, 97), two == 1.0)


def test_per_person_maps_and_balanced_histogram():
    boxes = [Box("a1", "eyes", 0, 0, 1, 1, "ann")] * 3 + [
        Box("a2", "nose", 2, 2, 3, 3, "ann"),
        Box("b1", "lips", 0, 0, 3, 3, "bob"),
    ]
    heat = person_heatmaps(boxes, (4, 4))
    assert heat["ann"][0, 0] == 0.75 and heat["bob"].min() == 1.0
    relative = relative_saliency(heat)
    np.testing.assert_allclose(relative["ann"], heat["ann"] - (heat["ann"] + heat["bob"]) / 2)
    hist = label_histogram(boxes)
    assert (
        hist["lips"] == pytest.approx(0.5)
        and hist["eyes"] == pytest.approx(0.375)
        and hist["nose"] == pytest.approx(0.125)
    )
    assert sum(hist.values()) == pytest.approx(1.0) and set(hist) == set(LABELS)
    assert label_histogram(boxes, {"a1": 1, "a2": 2, "b1": 2})["eyes"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no person"):
        label_histogram([Box("x", "eyes", 0, 0, 1, 1)])


def test_canonical_maps_through_the_aligner():
    from facesal_fast.align import AlignedFace

    image = np.zeros((32, 32, 3), np.uint8)
    ys, xs = np.mgrid[0:32:2, 0:32:2]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    faces = {"a": AlignedFace.from_arrays(image, pts, pts, (32, 32), mode="points", face_box=(0, 0, 31, 31))}
    boxes = [Box("a", "eyes", 4, 4, 12, 8, "p"), Box("a", "nose", 10, 6, 14, 20, "p")]
    canonical = canonical_box_heatmaps(boxes, faces)["a"]
    image_map = image_heatmaps(boxes, {"a": (32, 32)})["a"]
    np.testing.assert_allclose(canonical[ys, xs], image_map[ys, xs], atol=1e-6)
    np.testing.assert_allclose(person_canonical_heatmaps(boxes, faces)["p"], canonical, atol=1e-6)


@requires_full_photos
def test_shipped_annotations_describe_real_photos():
    import cv2

    boxes = load_annotations(example_annotations_path())
    images = {b.image for b in boxes}
    assert len(images) >= 4 and len({b.person for b in boxes}) >= 2
    for b in boxes:
        h, w = cv2.imread(f"{FACES}/{b.image}").shape[:2]
        assert 0 <= b.x0 < b.x1 < w and 0 <= b.y0 < b.y1 < h, b
    for image in images:
        mine = {b.label: b for b in boxes if b.image == image}
        assert {"eyes", "eyebrows", "nose", "lips", "chin"} <= set(mine)
        # anatomical order from top to bottom, and the nose between the eyes' outer ends
        assert mine["eyebrows"].y0 < mine["eyes"].y0 < mine["nose"].y1 < mine["lips"].y1 < mine["chin"].y1
        assert mine["eyes"].x0 < (mine["nose"].x0 + mine["nose"].x1) / 2 < mine["eyes"].x1
    hist = label_histogram(boxes)
    assert hist["eyes"] > 0 and sum(hist.values()) == pytest.approx(1.0)
