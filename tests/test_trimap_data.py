"""Matting data: the trimap ViT's alpha → prompt / trimap rules, trimap generation, prompt corruptions, folders,
dataset."""

from __future__ import annotations

import numpy as np
import pytest

from segwise.data.io import read_mask, write_png
from segwise.data.matting import (
    MattingDataset,
    PromptCorruption,
    baseline_trimap,
    edge_noise,
    find_matting_samples,
    hole_drop,
    jitter_contour,
    make_synthetic_matting,
    prompt_from_alpha,
    trimap_classes,
    trimap_from_alpha,
    trimap_png,
)
from segwise.errors import ConfigError, DataError


def test_prompt_and_class_rules_at_the_thresholds() -> None:
    alpha = np.array([0, 15, 16, 29, 30, 229, 230, 255], np.uint8)
    assert prompt_from_alpha(alpha).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert trimap_classes(alpha).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert trimap_png(trimap_classes(alpha)).tolist() == [0, 0, 128, 128, 128, 128, 255, 255]
    assert trimap_classes(np.array([0, 128, 255])).tolist() == [0, 1, 2]  # a 0/128/255 trimap maps to itself


def test_trimap_generation_widens_the_unknown_band() -> None:
    alpha = np.zeros((9, 20), np.uint8)
    alpha[:, 10:] = 255
    alpha[:, 10] = 128  # one soft column
    plain = trimap_from_alpha(alpha, band=0)
    assert (plain == 128).sum(1).tolist() == [1] * 9
    wide = trimap_from_alpha(alpha, band=3)
    assert (wide[4] == 128).nonzero()[0].tolist() == list(range(7, 14))  # 3 px each side of column 10
    assert (wide[4, :7] == 0).all() and (wide[4, 14:] == 255).all()
    with pytest.raises(ConfigError, match="unknown_band"):
        trimap_from_alpha(alpha, band=-1)


def test_baseline_band_around_the_prompt() -> None:
    prompt = np.zeros((20, 20), np.uint8)
    prompt[5:15, 5:15] = 1
    classes = baseline_trimap(prompt, band=2)
    assert classes[10, 10] == 2 and classes[0, 0] == 0
    assert classes[10, 4] == 1 and classes[10, 6] == 1 and classes[10, 2] == 0 and classes[10, 8] == 2


def _disc(size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    mask[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = 1
    return mask


def test_prompt_corruptions_stay_binary_and_near_the_mask() -> None:
    mask = _disc()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        for corrupt in (edge_noise, jitter_contour, hole_drop):
            out = corrupt(mask, rng)
            assert out.shape == mask.shape and set(np.unique(out)) <= {0, 1}
            changed = out != mask
            assert changed.any(), corrupt.__name__
            assert changed.sum() < 0.5 * mask.sum()  # a corrupted prompt, not a different object
    hole = hole_drop(mask, np.random.default_rng(0))
    assert (hole <= mask).all() and (mask.sum() - hole.sum()) <= 0.05 * mask.sum() + 1
    assert np.array_equal(PromptCorruption(0, 0, 0)(mask, np.random.default_rng(0)), mask)


def _write_split(split, names, size=(24, 32), trimap=False) -> None:
    for index, name in enumerate(names):
        image = np.full((*size, 3), 40 * index, np.uint8)
        alpha = np.zeros(size, np.uint8)
        alpha[:, size[1] // 2:] = 255
        alpha[:, size[1] // 2] = 100
        write_png(split / "original" / f"{name}.png", image)
        write_png(split / "mask" / f"{name}.png", alpha)
        if trimap:
            write_png(split / "trimap" / f"{name}.png", trimap_from_alpha(alpha, band=2))


def test_find_samples_layouts_and_errors(tmp_path) -> None:
    _write_split(tmp_path / "a", ["x", "y"], trimap=True)
    samples = find_matting_samples(tmp_path / "a")
    assert [s.name for s in samples] == ["x", "y"] and samples[0].trimap.parent.name == "trimap"
    (tmp_path / "a" / "mask" / "y.png").unlink()
    with pytest.raises(DataError, match="y.png has no alpha/mask in mask/"):
        find_matting_samples(tmp_path / "a")
    with pytest.raises(DataError, match="trimap folder trimap1/ is missing"):
        find_matting_samples(tmp_path / "a", trimap_dir="trimap1")
    with pytest.raises(DataError, match="folder not found"):
        find_matting_samples(tmp_path / "nowhere")


def test_dataset_items_follow_the_rules_and_the_key(tmp_path) -> None:
    _write_split(tmp_path / "train", ["x", "y", "z"], trimap=True)
    samples = find_matting_samples(tmp_path / "train")
    train = MattingDataset(samples, size=16, train=True, seed=1, corruption=PromptCorruption(0, 0, 0))
    item = train[(0, 1)]
    assert item["image"].shape == (4, 12, 16) and item["mask"].shape == (12, 16)  # longest side 32 → 16
    assert set(item["image"][3].unique().tolist()) == {0.0, 1.0}
    fg = item["mask"] == 2
    assert (item["image"][3][fg] == 1).all()  # prompt and target share the same flip/resize
    assert set(item["mask"].unique().tolist()) == {0, 1, 2}
    again = train[(0, 1)]
    assert all(np.array_equal(item[k], again[k]) for k in ("image", "mask"))  # same key, same augmentation
    val = MattingDataset(samples, size=None, train=False, band=0)
    target = val[0]["mask"].numpy()
    assert np.array_equal(target, trimap_classes(read_mask(samples[0].trimap)))  # GT trimap file wins


def test_synthetic_mattes_have_soft_edges_and_repeat(tmp_path) -> None:
    root = make_synthetic_matting(tmp_path / "a", num_train=3, num_val=1, size=48, seed=5)
    again = make_synthetic_matting(tmp_path / "b", num_train=3, num_val=1, size=48, seed=5)
    samples = find_matting_samples(root / "train")
    assert len(samples) == 3 and len(find_matting_samples(root / "val")) == 1
    for sample in samples:
        alpha = read_mask(sample.alpha)
        assert alpha.shape == (48, 48) and alpha.max() == 255
        assert ((alpha > 15) & (alpha < 230)).any()  # an unknown band to predict
        assert np.array_equal(alpha, read_mask(again / "train" / "mask" / sample.alpha.name))
    with pytest.raises(ConfigError, match="at least 32"):
        make_synthetic_matting(tmp_path / "c", size=16)
