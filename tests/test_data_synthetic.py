"""The synthetic data set is deterministic, well formed and contains every class."""

import hashlib
from pathlib import Path

import numpy as np
import yaml

from segwise.data.classmap import ClassMap
from segwise.data.folder import find_samples
from segwise.data.io import read_image, read_mask
from segwise.data.synthetic import make_synthetic_dataset
from segwise.data.validate import validate_samples


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_files_other_seed_differs(tmp_path: Path):
    kwargs = {"num_train": 4, "num_val": 2, "num_test": 1, "size": 48}
    a = make_synthetic_dataset(tmp_path / "a", seed=3, **kwargs)
    b = make_synthetic_dataset(tmp_path / "b", seed=3, **kwargs)
    c = make_synthetic_dataset(tmp_path / "c", seed=4, **kwargs)
    assert _digest(a) == _digest(b) != _digest(c)
    assert [len(find_samples(a / split)) for split in ("train", "val", "test")] == [4, 2, 1]


def test_every_class_present_and_valid(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path, num_train=12, num_val=2, num_test=0)
    report = validate_samples(find_samples(root / "train"), ClassMap(4))
    assert report.sizes == {(128, 128): 12} and report.channels == 3
    shares = report.class_pixel_counts / report.class_pixel_counts.sum()
    assert (shares > 0.005).all() and shares[0] < 0.95
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    assert meta["class_names"] == ["background", "disc", "polygon", "line"]
    assert len(meta["palette"]) == 4 and not (root / "test").exists()


def test_classes_differ_in_colour(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path, num_train=6, num_val=0, num_test=0, size=64)
    pixels = {k: [] for k in range(4)}
    for sample in find_samples(root / "train"):
        image, mask = read_image(sample.image), read_mask(sample.mask)
        for k in pixels:
            pixels[k].append(image[mask == k].reshape(-1, 3))
    means = np.array([np.concatenate(pixels[k]).mean(axis=0) for k in range(4)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[np.triu_indices(4, 1)].min() > 40


def test_odd_size_and_more_classes(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path, num_train=3, num_val=1, num_test=1, size=(97, 131), num_classes=7)
    samples = find_samples(root / "val")
    assert read_image(samples[0].image).shape == (97, 131, 3)
    report = validate_samples(find_samples(root / "train"), ClassMap(7))
    assert (report.class_pixel_counts > 0).all()
