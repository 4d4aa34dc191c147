"""Folder discovery, the dataset (determinism, extra planes) and the padding collate."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from segwise.data.classmap import ClassMap
from segwise.data.folder import SegmentationDataset, collate_pad, find_samples
from segwise.data.io import write_png
from segwise.data.transforms import build_train_transform
from segwise.errors import DataError


def _write_split(root: Path, names, size=(24, 32), extras=(), mask_dir="masks", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        write_png(root / "images" / f"{name}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        write_png(root / mask_dir / f"{name}.png", rng.integers(0, 3, size, dtype=np.uint8))
        for extra in extras:
            write_png(root / extra / f"{name}.png", np.full(size, 200, np.uint8))
    return root


def test_find_samples_matches_by_stem_and_sorts(tmp_path: Path):
    split = _write_split(tmp_path / "train", ["b", "a", "c"], mask_dir="gt", extras=("dem",))
    (split / "images" / "notes.txt").write_text("ignored")
    samples = find_samples(split, extra_channels=["dem"])
    assert [s.name for s in samples] == ["a", "b", "c"]
    assert samples[0].mask == split / "gt" / "a.png"
    assert samples[0].extras == (split / "dem" / "a.png",)


def test_find_samples_lists_every_problem(tmp_path: Path):
    split = _write_split(tmp_path / "train", ["a", "b", "c"], extras=("nir",))
    (split / "masks" / "a.png").unlink()
    write_png(split / "masks" / "orphan.png", np.zeros((4, 4), np.uint8))
    (split / "nir" / "b.png").unlink()
    write_png(split / "images" / "c.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as info:
        find_samples(split, extra_channels=["nir", "dem"])
    message = str(info.value)
    assert "images/a.png has no mask in masks/" in message
    assert "masks/orphan.png has no image in images/" in message
    assert "images/b.png has no extra plane in nir/" in message
    assert "extra channel folder dem/ is missing" in message
    assert "images/c.png and images/c.tif share the name 'c'" in message
    assert "5 problems" in message


def test_find_samples_missing_folders_and_prediction_folders(tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no mask folder(.|\n)*no images"):
        find_samples(empty)
    loose = tmp_path / "loose"
    write_png(loose / "x.png", np.zeros((4, 4, 3), np.uint8))
    samples = find_samples(loose, require_masks=False)
    assert [(s.name, s.mask) for s in samples] == [("x", None)]
    assert find_samples(loose / "x.png", require_masks=False)[0].image == loose / "x.png"
    with pytest.raises(DataError, match="no image folder"):
        find_samples(loose)


def test_dataset_concatenates_extra_planes_and_normalises(tmp_path: Path):
    split = _write_split(tmp_path / "train", ["a"], extras=("nir", "dem"))
    dataset = SegmentationDataset(find_samples(split, ["nir", "dem"]), ClassMap(3))
    item = dataset[0]
    assert item["image"].shape == (5, 24, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (24, 32) and item["mask"].dtype == torch.int64
    assert torch.allclose(item["image"][3:], torch.tensor(200 / 255))
    scaled = SegmentationDataset(dataset.samples, ClassMap(3), mean=[0.0] * 4 + [100.0], std=[255.0] * 4 + [50.0])
    assert torch.allclose(scaled[0]["image"][4], torch.tensor(2.0))


def test_dataset_rejects_bad_extra_plane_and_bad_values(tmp_path: Path):
    split = _write_split(tmp_path / "train", ["a"], extras=("nir",))
    write_png(split / "nir" / "a.png", np.zeros((5, 5), np.uint8))
    write_png(split / "masks" / "a.png", np.full((24, 32), 9, np.uint8))
    samples = find_samples(split, ["nir"])
    with pytest.raises(DataError, match=r"nir/a\.png: extra plane is 5×5"):
        SegmentationDataset(samples, ClassMap(3))[0]
    with pytest.raises(DataError, match=r"masks/a\.png: values \[9\]"):
        SegmentationDataset(find_samples(split), ClassMap(3))[0]


def test_augmentation_depends_only_on_seed_epoch_index(tmp_path: Path):
    split = _write_split(tmp_path / "train", [f"s{i}" for i in range(4)])
    samples = find_samples(split)

    def make(seed=0):
        transform = build_train_transform("medium", crop_size=16, hflip=True, rotate=20)
        return SegmentationDataset(samples, ClassMap(3), transform=transform, seed=seed)

    first, second = make(), make()
    forward = [first[i]["image"] for i in range(4)]
    backward = [second[i]["image"] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    first.set_epoch(1)
    assert not torch.equal(first[0]["image"], forward[0])
    assert torch.equal(first[(0, 0)]["image"], forward[0])
    first.set_epoch(0)
    assert torch.equal(first[0]["image"], forward[0])
    assert torch.equal(first[(1, 0)]["image"], make()[(1, 0)]["image"])
    assert not torch.equal(make(seed=1)[0]["image"], forward[0])


def test_persistent_workers_follow_set_epoch(tmp_path: Path):
    split = _write_split(tmp_path / "train", [f"s{i}" for i in range(4)])
    transform = build_train_transform("hard", crop_size=16)
    dataset = SegmentationDataset(find_samples(split), ClassMap(3), transform=transform)
    expected = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        expected.append(torch.stack([dataset[i]["image"] for i in range(4)]))
    loader = DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=True, collate_fn=collate_pad)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        assert torch.equal(torch.cat([batch["image"] for batch in loader]), expected[epoch])


def test_collate_pad_pads_to_largest_rounded_size():
    batch = [
        {"image": torch.ones(2, 5, 7), "mask": torch.zeros(5, 7, dtype=torch.int64), "name": "a"},
        {"image": torch.ones(2, 9, 4), "mask": torch.ones(9, 4, dtype=torch.int64), "name": "b"},
    ]
    out = collate_pad(batch, ignore_index=255, multiple=8)
    assert out["image"].shape == (2, 2, 16, 8) and out["mask"].shape == (2, 16, 8)
    assert out["names"] == ["a", "b"] and out["sizes"] == [(5, 7), (9, 4)]
    assert out["image"][0, :, :5, :7].eq(1).all() and out["image"][0, :, 5:].eq(0).all()
    assert out["mask"][0, :5, :7].eq(0).all() and out["mask"][0, 5:].eq(255).all()
    assert out["mask"][1, :9, :4].eq(1).all() and out["mask"][1, :, 4:].eq(255).all()
