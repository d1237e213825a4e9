"""Audit.feed on torch Datasets and DataLoaders: keys from the items (or their pixels) that do
not depend on batch size or order, so a run resumes; groups from the items."""

import cv2
import numpy as np
import pytest
import torch
from photos import BUNDLED
from torch import nn
from torch.utils.data import DataLoader, Dataset

from facesal_fast import Audit
from facesal_fast.align import load_image
from facesal_fast.audit.inputs import content_key
from facesal_fast.scoring import Scorer

NAMES = ("img1.jpg", "img2.jpg", "img5.jpg", "img20.jpg")
GROUPS = {"img1.jpg": "a", "img2.jpg": "b", "img5.jpg": "a", "img20.jpg": "b"}


class Photos(Dataset):
    """Bundled photos as 3 x 256 x 256 float tensors in [0, 1], as dicts or bare tensors."""

    def __init__(self, as_dict: bool = True):
        self.as_dict = as_dict
        self.images = [
            torch.from_numpy(cv2.resize(load_image(BUNDLED / n), (256, 256))).permute(2, 0, 1).float() / 255
            for n in NAMES
        ]

    def __len__(self) -> int:
        return len(NAMES)

    def __getitem__(self, i: int):
        if not self.as_dict:
            return self.images[i]
        return {"image": self.images[i], "key": NAMES[i], "group": GROUPS[NAMES[i]]}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    return Scorer.from_torch(net, 32, backend="torch", crop="face")


def _audit(scorer, out, **options):
    return Audit(scorer, out, stride=16, **options)


def test_dataloader_resume_with_two_batch_sizes_and_orders(scorer, tmp_path):
    dataset = Photos()
    first = _audit(scorer, tmp_path / "run", photos_per_round=2)
    for n, _ in enumerate(first.feed(DataLoader(dataset, batch_size=3), progress=False)):
        if n == 1:
            break  # killed after two images (one round of two photos explained together)
    first.store.close()  # the run folder's lock goes with it
    shuffled = DataLoader(dataset, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3))
    second = _audit(scorer, tmp_path / "run")
    resumed = {item.key: item for item in second.feed(shuffled, progress=False)}
    assert sorted(resumed) == sorted(NAMES)  # the file names, not batch positions
    assert {k for k, item in resumed.items() if item.status == "skipped"} == set(NAMES[:2])
    assert {k for k, item in resumed.items() if item.status == "done"} == set(NAMES[2:])
    whole = _audit(scorer, tmp_path / "whole")
    whole.run(DataLoader(dataset, batch_size=4), progress=False)
    resumed_cms, whole_cms = second.cms(), whole.cms()
    np.testing.assert_array_equal(resumed_cms.cms, whole_cms.cms)
    assert set(whole_cms.groups) == {"a", "b"}  # groups from the items
    assert {row.key: row.group for row in whole.store.rows("done")} == GROUPS


def test_dataset_without_keys_resumes_by_content(scorer, tmp_path):
    dataset = Photos(as_dict=False)
    keys = [content_key(image) for image in dataset.images]
    assert len(set(keys)) == len(NAMES) and content_key(dataset.images[0].clone()) == keys[0]
    first = _audit(scorer, tmp_path / "run")
    list(first.feed(DataLoader(dataset, batch_size=1), progress=False))
    first.store.close()
    again = list(_audit(scorer, tmp_path / "run").feed(DataLoader(dataset, batch_size=4), progress=False))
    assert [item.key for item in again] == keys and {item.status for item in again} == {"skipped"}
    items = list(_audit(scorer, None).feed(dataset, progress=False))  # a Dataset itself, item by item
    assert [item.key for item in items] == keys and all(item.status == "done" for item in items)


def test_explicit_groups_win_and_bad_items_are_clear(scorer, tmp_path):
    dataset = Photos()
    override = {n: "x" for n in NAMES}
    audit = _audit(scorer, None)
    list(audit.feed(DataLoader(dataset, batch_size=2), groups=override, progress=False))
    assert set(audit.cms().groups) == {"x"}
    with pytest.raises(ValueError, match="'image' entry"):
        list(_audit(scorer, None).feed([{"picture": dataset.images[0]}], progress=False))
    bad = [dict(image=torch.stack(dataset.images[:2]), key="one.jpg")]
    with pytest.raises(ValueError, match="one per image"):
        list(_audit(scorer, None).feed(bad, progress=False))
