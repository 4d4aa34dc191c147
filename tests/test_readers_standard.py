"""The standard data sets read as they ship (`data.format` voc, cityscapes, ade20k, cocostuff, camvid, tianchi, meter,
list), each on a miniature of its real layout (tests/fake_datasets.py): `data check` prints its summary, masks
decode to the expected train ids, a wrong folder and missing list entries are named, and one training step runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from segwise.cli import main
from segwise.config import load_config
from segwise.convert.pytorch_segmentation import READER_TYPES
from segwise.data.folder import read_sample_image, read_sample_mask
from segwise.data.io import read_mask
from segwise.data.readers import READERS, default_split, find_split
from segwise.errors import DataError
from segwise.tasks.semantic.data import build_class_map, with_dataset_defaults
from segwise.tasks.semantic.train import train
from tests.fake_datasets import WRITERS, FakeSet
from tests.helpers import SHARED_DATASETS, quick_config

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = sorted(WRITERS)
TINY = ("model.encoder=tu-test_resnet", "model.args={decoder_channels: [8, 8, 8, 8, 8]}", "data.batch_size=2",
        "trainer.log_images=0", "trainer.log_worst_images=0")
"""A U-Net on timm's test ResNet: a training step takes well under a second."""


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> dict[str, FakeSet]:
    """Every miniature, written once for the module (tests that break one work on a copy)."""
    base = tmp_path_factory.mktemp("standard")
    return {name: write(base / name) for name, (_, write) in WRITERS.items()}


def _copy(fake: FakeSet, tmp_path: Path) -> Path:
    """A private copy of a miniature's folder (the root, or the folder holding it)."""
    return Path(shutil.copytree(fake.root, tmp_path / fake.root.name))


@pytest.mark.parametrize("name", NAMES)
def test_data_check_prints_the_summary(fakes, name: str, capsys):
    fmt, fake = WRITERS[name][0], fakes[name]
    assert main(["data", "check", str(fake.root), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert f"{len(fake.expected)} split(s) valid." in out
    for split, samples in fake.expected.items():
        assert f"({len(samples)} samples) ==" in out


@pytest.mark.parametrize("name", NAMES)
def test_masks_decode_to_the_train_ids(fakes, name: str):
    fmt, fake = WRITERS[name][0], fakes[name]
    data = with_dataset_defaults(load_config(overrides=[f"data.format={fmt}", f"data.root={fake.root}"]).data)
    for split, expected in fake.expected.items():
        samples = find_split(fmt, fake.root / split)
        class_map = build_class_map(data, samples)
        assert sorted(s.name for s in samples) == sorted(expected)
        for sample in samples:
            decoded = read_sample_mask(sample, class_map, read_sample_image(sample).shape[:2])
            np.testing.assert_array_equal(decoded, expected[sample.name], err_msg=f"{name} {split} {sample.name}")


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_folder_names_the_missing_path(fakes, name: str, tmp_path: Path, capsys):
    fmt, fake = WRITERS[name][0], fakes[name]
    (tmp_path / "elsewhere").mkdir()
    assert main(["data", "check", str(tmp_path / "elsewhere"), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'elsewhere'}" in err and fake.missing_marker in err and "is missing" in err


@pytest.mark.parametrize("name", [n for n in NAMES if WRITERS[n][0] not in ("cityscapes", "ade20k", "cocostuff")]
                         + ["cocostuff10k"])
def test_a_missing_list_entry_is_named(fakes, name: str, tmp_path: Path, capsys):
    fmt, fake = WRITERS[name][0], fakes[name]
    root = _copy(fake, tmp_path)
    missing = root / fake.list_entry.relative_to(fake.root)
    missing.unlink()
    assert main(["data", "check", str(root), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert missing.name in err and "Traceback" not in err


def test_every_missing_file_is_named_at_once(fakes, tmp_path: Path):
    root = _copy(fakes["voc"], tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass" / "2007_000001.png").unlink()
    unlabelled = find_split("voc", root / "train", require_masks=False)  # prediction needs no masks
    assert [s.mask is None for s in unlabelled] == [False, True]
    (voc / "JPEGImages" / "2007_000000.jpg").unlink()
    with pytest.raises(DataError, match=r"2 problems") as caught:
        find_split("voc", root / "train")
    assert "JPEGImages/2007_000000.jpg is missing" in str(caught.value)
    assert "SegmentationClass/2007_000001.png is missing" in str(caught.value)


def test_roots_are_found_at_any_nesting_and_split_names_alias(fakes):
    voc = fakes["voc"].root
    for root in (voc, voc / "VOCdevkit", voc / "VOCdevkit" / "VOC2012"):
        assert [s.name for s in find_split("voc", root / "val")] == ["2007_000002"]
    ade = fakes["ade20k"].root
    assert find_split("ade20k", ade / "val") == find_split("ade20k", ade / "ADEChallengeData2016" / "validation")
    assert len(find_split("cocostuff", fakes["cocostuff"].root / "train")) == 2  # train → train2017
    assert len(find_split("cocostuff", fakes["cocostuff10k"].root / "val")) == 1  # 10k: val → its test list
    with pytest.raises(DataError, match=r"no split 'trainval'.*it has train, train_aug, val"):
        find_split("voc", voc / "trainval")


def test_eval_and_predict_paths_name_a_split_or_a_root(fakes, tmp_path: Path):
    camvid = fakes["camvid"].root
    assert default_split("camvid", camvid) == camvid / "val"
    assert default_split("camvid", camvid / "test") == camvid / "test"
    assert default_split("voc", fakes["voc"].root / "train_aug") == fakes["voc"].root / "train_aug"
    with pytest.raises(DataError, match="not a camvid data set.*trainannot is missing"):
        default_split("camvid", tmp_path / "nowhere")
    test_a = find_split("tianchi", fakes["tianchi"].root / "test_a", require_masks=False)
    assert [(s.name, s.mask) for s in test_a] == [("TESTA00001", None)]


def test_tianchi_masks_are_decoded_from_the_csv_without_pngs(fakes):
    root = fakes["tianchi"].root
    samples = find_split("tianchi", root / "train")
    assert {s.mask for s in samples} == {root / "train_mask.csv"}
    assert not list(root.rglob("*.png"))


def test_tile_a_standard_split_into_index_masks(fakes, tmp_path: Path, capsys):
    root = fakes["cityscapes"].root
    assert main(["data", "tile", str(root / "train"), str(tmp_path / "tiles"), "--format", "cityscapes", "--size",
                 "16", "--stride", "16"]) == 0
    assert "wrote 8 tile(s) from 2 image(s)" in capsys.readouterr().out
    expected = fakes["cityscapes"].expected["train"]["aachen_000000_000019"]
    np.testing.assert_array_equal(read_mask(tmp_path / "tiles" / "masks" / "aachen_000000_000019_16_0.png"),
                                  expected[16:32, :16])


def test_pytorch_segmentation_loader_types_map_to_readers():
    assert {READER_TYPES[t] for t in ("voc", "cityscapes", "ade20k", "coco", "tianchi", "meter")} == {
        "voc", "cityscapes", "ade20k", "cocostuff", "tianchi", "meter"}
    assert set(READER_TYPES.values()) <= set(READERS)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step(fakes, name: str, tmp_path: Path):
    fmt, fake = WRITERS[name][0], fakes[name]
    no_val = ["data.val_split=null"] if name == "tianchi" else []  # the default splits train/val, aliased if named so
    run = train(quick_config(fake.root, tmp_path, name, f"data.format={fmt}", *no_val, "trainer.max_steps=1", *TINY))
    assert (run / "model.safetensors").is_file()


def test_eval_and_predict_read_the_layout_in_place(fakes, tmp_path: Path, capsys):
    """A VOC run evaluated on the root (its val list) and predicting an SBD list split, palette PNGs as indices."""
    root = fakes["voc"].root
    run = train(quick_config(root, tmp_path, "voc", "data.format=voc", "trainer.max_steps=1", *TINY))
    assert main(["eval", str(run), str(root), "--format", "voc", "-o", str(tmp_path / "eval"), "--device",
                 "cpu"]) == 0
    assert (tmp_path / "eval" / "metrics.csv").is_file() and "tvmonitor" in capsys.readouterr().out
    assert main(["predict", str(run), str(root / "train_aug"), "--format", "voc", "-o", str(tmp_path / "pred"),
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "pred" / "index").iterdir()) == ["2007_000003.png", "2007_000004.png"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATASETS / "camvid" / "train").is_dir(), reason="../shared/datasets/camvid is absent")
def test_camvid_reader_on_the_real_copy_trains_a_few_steps(tmp_path: Path):
    camvid = SHARED_DATASETS / "camvid"
    config = quick_config(camvid, tmp_path, "camvid", "data.format=camvid", "data.val_split=null", "data.crop_size=64",
                          "trainer.max_steps=3", "data.validate_data=false", "data.mean=[100, 100, 100]",
                          "data.std=[60, 60, 60]", *TINY)
    run = train(config)
    spec = load_config(run / "config.yaml").data
    assert spec.format == "camvid" and spec.ignore_index == 11 and spec.class_names[0] == "Sky"
