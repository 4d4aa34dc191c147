"""Real data: a few CamVid images, void (11) ignored, the shipped config; skipped without ../shared/datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segwise.config import load_config
from segwise.data.io import read_mask
from segwise.tasks.semantic.data import check_data
from segwise.tasks.semantic.evaluate import evaluate
from segwise.tasks.semantic.train import train
from tests.helpers import SHARED_DATASETS

CAMVID = SHARED_DATASETS / "camvid"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "camvid.yaml"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason="../shared/datasets/camvid is absent")]


def _handful(tmp_path: Path, count: int = 8) -> Path:
    """A training split of `count` CamVid images, linked (not copied) from the shared data set."""
    split = tmp_path / "camvid_small" / "train"
    for kind in ("images", "masks"):
        (split / kind).mkdir(parents=True)
        for source in sorted((CAMVID / "train" / kind).glob("*.png"))[:: 367 // count][:count]:
            (split / kind / source.name).symlink_to(source)
    return split.parent


def test_camvid_config_validates_the_real_data() -> None:
    config = load_config(CONFIG, [f"data.root={CAMVID}"])
    report = check_data(config)
    assert "Sky" in report and "Bicyclist" in report and "3 split(s) valid" in report


def test_train_few_steps_and_evaluate_on_camvid_val(tmp_path: Path) -> None:
    root = _handful(tmp_path)
    config = load_config(CONFIG, [f"data.root={root}", "data.val_split=null", "data.crop_size=128",
                                  "data.batch_size=4", "data.num_workers=0", "trainer.max_steps=6",
                                  "trainer.accelerator=cpu", "trainer.progress_bar=false",
                                  "model.encoder=resnet18", f"run.log_dir={tmp_path / 'runs'}", "run.name=camvid"])
    run = train(config)
    metrics = evaluate(run, CAMVID / "val", tmp_path / "eval")
    labelled = sum(int((read_mask(p) != 11).sum()) for p in (CAMVID / "val" / "masks").glob("*.png"))
    assert metrics["num_pixels"] == labelled  # void pixels (11) are excluded, everything else counted
    assert [row["name"] for row in metrics["per_class"]][:2] == ["Sky", "Building"]
    assert len(metrics["per_class"]) == 11
    assert np.isfinite(metrics["miou"]) and 0 < metrics["pixel_accuracy"] <= 1
    assert (tmp_path / "eval" / "metrics.csv").is_file()
