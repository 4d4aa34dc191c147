"""Matting data sets as they ship (Composition-1K, P3M-500, AIM-500, AM-200): a miniature of each layout (real folder
and file names, JPEG images, alpha PNGs), read by `segwise trimap eval / train / predict` without rearranging;
training on several sets at once; batched prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segwise.cli import main
from segwise.config import load_config
from segwise.data.io import read_mask, write_png
from segwise.data.matting import (
    MattingDataset,
    find_matting_samples,
    prompt_from_alpha,
    read_rgb,
    trimap_classes,
    trimap_from_alpha,
)
from segwise.data.matting_layouts import detect_layout
from segwise.errors import ConfigError, DataError
from segwise.tasks.trimap.config import TrimapConfig
from segwise.tasks.trimap.infer import load_predictor, predict_probs
from segwise.tasks.trimap.train import training_samples
from tests.helpers import save_untrained_trimap_run

CPU_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "trimap_tiny_cpu.yaml"


# ---- miniature layouts ----------------------------------------------------------------------------------------
def _matte(index: int, size: tuple[int, int] = (24, 32)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its alpha: a disc with a soft (unknown) rim, placed by `index`."""
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[:size[0], :size[1]]
    distance = np.hypot(yy - size[0] / 2, xx - size[1] / 2 - (index % 3) - 2)
    alpha = np.clip((size[0] / 3 - distance) * 80 + 128, 0, 255).astype(np.uint8)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    image[alpha > 128] = (200, 60, 40)
    return image, alpha


def _write_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _write(split: Path, name: str, index: int, image_dir: str, alpha_dir: str = "mask",
           trimap_dir: str | None = "trimap", jpg: bool = True, size: tuple[int, int] = (24, 32)) -> None:
    image, alpha = _matte(index, size)
    if jpg:
        _write_jpg(split / image_dir / f"{name}.jpg", image)
    else:
        write_png(split / image_dir / f"{name}.png", image)
    write_png(split / alpha_dir / f"{name}.png", alpha)
    if trimap_dir:
        write_png(split / trimap_dir / f"{name}.png", trimap_from_alpha(alpha, band=1))


def write_composition1k(root: Path) -> Path:
    """`Composition-1k-testset/`: each foreground over several backgrounds, named `<foreground>_<n>.png` in merged/,
    alpha_copy/ and trimaps/; fg/ and bg/ (what the composites were made from) are not read."""
    split = root / "Composition-1k-testset"
    for index, name in enumerate(["boy-1518482_1920_0", "boy-1518482_1920_1", "sieve-641426_1920_0"]):
        _write(split, name, index, "merged", "alpha_copy", "trimaps", jpg=False)
    write_png(split / "fg" / "boy-1518482_1920.png", _matte(0)[0])
    _write_jpg(split / "bg" / "2008_000009.jpg", _matte(1)[0])
    return split


def write_p3m10k(root: Path) -> Path:
    """`P3M-10k/`: train/{blurred_image, mask} (no trimaps), validation/P3M-500-P/{blurred_image, mask, trimap,
    facemask} and validation/P3M-500-NP/{original_image, mask, trimap}."""
    base = root / "P3M-10k"
    for index, name in enumerate(["p_0a1b2c3d", "p_0a1b2c3e"]):
        _write(base / "train", name, index, "blurred_image", trimap_dir=None)
        _write(base / "validation" / "P3M-500-P", name, index + 3, "blurred_image")
        write_png(base / "validation" / "P3M-500-P" / "facemask" / f"{name}.png", np.zeros((24, 32), np.uint8))
    for index, name in enumerate(["1_0b2ba5a6", "2_1c3cb6b7"]):
        _write(base / "validation" / "P3M-500-NP", name, index + 5, "original_image")
    return base


def write_aim500(root: Path) -> Path:
    """`AIM-500/`: original/*.jpg, mask/*.png, trimap/*.png and usr/ (the unified semantic representation, not read)."""
    split = root / "AIM-500"
    for index, name in enumerate(["o_0a3f2bc1", "o_1b4e3cd2"]):
        _write(split, name, index + 7, "original")
        write_png(split / "usr" / f"{name}.png", np.zeros((24, 32), np.uint8))
    return split


def write_am2k(root: Path) -> Path:
    """`AM-2k/`: train/{original, mask, fg} and validation/{original, mask, trimap}; AM-200 is validation/."""
    base = root / "AM-2k"
    for index, name in enumerate(["m_0a1b2c3d", "m_1b2c3d4e"]):
        _write(base / "train", name, index + 9, "original", trimap_dir=None)
        write_png(base / "train" / "fg" / f"{name}.png", _matte(index + 9)[0])
        _write(base / "validation", name, index + 11, "original")
    return base


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """The split folder a user points at in each shipped layout."""
    root = tmp_path_factory.mktemp("shipped")
    p3m, am2k = write_p3m10k(root), write_am2k(root)
    return {"composition1k": write_composition1k(root), "p3m500": p3m / "validation" / "P3M-500-P",
            "p3m500_np": p3m / "validation" / "P3M-500-NP", "p3m10k_train": p3m / "train",
            "aim500": write_aim500(root), "am200": am2k / "validation", "am2k_train": am2k / "train"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return save_untrained_trimap_run(tmp_path_factory.mktemp("untrained"))


# ---- reading --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "layout", "count", "trimaps"), [
    ("composition1k", "composition1k", 3, "trimaps"), ("p3m500", "p3m500", 2, "trimap"),
    ("p3m500_np", "p3m500", 2, "trimap"), ("p3m10k_train", "p3m500", 2, None), ("aim500", "folder", 2, "trimap"),
    ("am200", "folder", 2, "trimap"), ("am2k_train", "folder", 2, None)])
def test_each_shipped_layout_is_detected_and_read(layouts, key, layout, count, trimaps) -> None:
    split = layouts[key]
    assert detect_layout(split).name == layout
    samples = find_matting_samples(split)
    assert len(samples) == count and all(s.alpha.suffix == ".png" for s in samples)
    assert {s.trimap.parent.name if s.trimap else None for s in samples} == {trimaps}
    if key in ("aim500", "am200"):  # the folder names of AIM-500 and AM-200 are the folder layout's, also by name
        assert find_matting_samples(split, layout=key) == samples


def test_without_trimaps_target_and_prompt_come_from_the_alpha(layouts) -> None:
    """P3M-10k's training split has alpha mattes only: the one alpha → trimap / prompt derivation applies."""
    samples = find_matting_samples(layouts["p3m10k_train"])
    item = MattingDataset(samples, size=None, train=False, band=2)[0]
    alpha = read_mask(samples[0].alpha)
    assert np.array_equal(item["mask"].numpy(), trimap_classes(trimap_from_alpha(alpha, 2)))
    assert np.array_equal(item["image"][3].numpy(), prompt_from_alpha(alpha))


@pytest.mark.parametrize("key", ["composition1k", "p3m500", "aim500", "am200"])
def test_eval_prints_a_table_on_each_shipped_layout(layouts, run, key, tmp_path, capsys) -> None:
    assert main(["trimap", "eval", str(run), str(layouts[key]), "-o", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    name = layouts[key].name
    assert name in table and "Unknown" in table and "mIoU" in table
    assert json.loads((tmp_path / "trimap_metrics.json").read_text())[name]["images"] == (3 if key == "composition1k"
                                                                                           else 2)


def test_a_wrong_folder_names_the_missing_path(layouts, run, tmp_path, capsys) -> None:
    aim = layouts["aim500"]
    assert main(["trimap", "eval", str(run), str(aim), "--format", "composition1k", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{aim / 'merged'}/ is missing" in err and f"{aim / 'alpha_copy'}/ is missing" in err
    assert "Composition-1K layout" in err
    (tmp_path / "P3M-500-NP" / "original_image").mkdir(parents=True)  # images but no mattes: P3M named
    with pytest.raises(DataError, match=r"P3M-500-NP/mask/ is missing \(P3M-500 layout"):
        find_matting_samples(tmp_path / "P3M-500-NP")
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(DataError, match=r"(?s)unrelated/original/ is missing.*merged/ \+ alpha_copy/ "
                                        r"\(Composition-1K\)"):
        find_matting_samples(tmp_path / "unrelated")
    with pytest.raises(ConfigError, match="Did you mean 'p3m500'"):
        find_matting_samples(aim, layout="p3m5000")
    with pytest.raises(ConfigError, match="trimap.format"):
        load_config(overrides=["trimap.format=adobe"], schema=TrimapConfig)


# ---- several training sets at once ------------------------------------------------------------------------------
def test_train_one_step_on_two_layouts(layouts, tmp_path, one_thread, capsys) -> None:
    comp, p3m = layouts["composition1k"], layouts["p3m10k_train"]
    assert main(["trimap", "train", "--train", str(comp), str(p3m), "--val-dir", str(layouts["aim500"]),
                 "--config", str(CPU_RECIPE), "--cpu", "--steps", "1", "--batch", "2", "--name", "two",
                 "--log-dir", str(tmp_path), "--set", "trainer.progress_bar=false"]) == 0
    run = tmp_path / "two"
    assert (run / "model.safetensors").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trimap"]["train_sets"] == [str(comp), str(p3m)] and saved["data"]["root"] is None
    config = load_config(run / "config.yaml", schema=TrimapConfig)
    assert [s.name for s in training_samples(config)] == ([s.name for s in find_matting_samples(comp)]
                                                          + [s.name for s in find_matting_samples(p3m)])
    capsys.readouterr()
    assert main(["trimap", "train", "--cpu"]) == 2
    assert "needs DATA_DIR" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="more than once"):
        training_samples(load_config(overrides=[f"trimap.train_sets=[{comp}, {comp}]"], schema=TrimapConfig))


# ---- batched prediction -----------------------------------------------------------------------------------------
def test_batched_predict_gives_what_one_image_at_a_time_gives(run, tmp_path) -> None:
    """Mixed sizes and aspect ratios: images of one resized shape share a batch, none is padded for another."""
    split = tmp_path / "AIM-500"
    for index, size in enumerate([(24, 32), (40, 30), (24, 32), (12, 16), (30, 40)]):
        _write(split, f"o_{index:08x}", index, "original", jpg=False, size=size)
    outputs = {}
    for batch in (1, 3, 5):
        assert main(["trimap", "predict", str(run), str(split), "-o", str(tmp_path / f"b{batch}"), "--batch",
                     str(batch)]) == 0
        outputs[batch] = {p.name: read_mask(p) for p in sorted((tmp_path / f"b{batch}").glob("*.png"))}
    assert len(outputs[1]) == 5
    for batch in (3, 5):
        assert outputs[batch].keys() == outputs[1].keys()
        assert all(np.array_equal(outputs[batch][k], outputs[1][k]) for k in outputs[1])
    predictor = load_predictor(run, "cpu")
    samples = find_matting_samples(split)
    images = [read_rgb(s.image) for s in samples]
    prompts = [prompt_from_alpha(read_mask(s.alpha)) for s in samples]
    together = predict_probs(predictor, images, prompts, 32)
    alone = [predict_probs(predictor, [image], [prompt], 32)[0] for image, prompt in zip(images, prompts)]
    assert all(a.shape == (3, *i.shape[:2]) and np.allclose(a, b, atol=1e-5)
               for a, b, i in zip(together, alone, images))
