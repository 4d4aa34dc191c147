"""Real aerial data end to end: Dubai colour masks → tiles → brief FactSeg training → slide eval → prediction.

Skipped without ../shared/datasets/dubai_aerial. Split by tile (SOURCE.md): train on tiles 1 and 3, validate on 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segwise.cli import main
from segwise.data.io import read_image, read_mask
from tests.helpers import SHARED_DATASETS

DUBAI = SHARED_DATASETS / "dubai_aerial"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dubai_factseg.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (DUBAI / "tile_2" / "masks").is_dir(), reason="dubai_aerial is absent")]


def _subset(tile: str, dst: Path, count: int) -> Path:
    """The first `count` image/mask pairs of a Dubai tile, linked (not copied)."""
    for kind in ("images", "masks"):
        (dst / kind).mkdir(parents=True)
        for source in sorted((DUBAI / tile / kind).iterdir())[:count]:
            (dst / kind / source.name).symlink_to(source)
    return dst


def test_dubai_colour_masks_tile_train_slide_eval_and_predict(tmp_path: Path, capsys):
    data, config = tmp_path / "dubai", ["--config", str(CONFIG)]
    for tile, prefix in (("tile_1", "t1_"), ("tile_3", "t3_")):
        src = _subset(tile, tmp_path / tile, 2)
        assert main(["data", "tile", str(src), str(data / "train"), "--size", "256", "--stride", "256",
                     "--prefix", prefix, *config]) == 0
    val = _subset("tile_2", tmp_path / "tile_2", 2)  # palette-mode PNG masks
    assert main(["data", "tile", str(val), str(data / "val"), "--whole", *config]) == 0
    assert len(list((data / "train" / "masks").iterdir())) == 2 * 12 + 2 * 9
    # Class ids must follow SOURCE.md's colours, decoded from the displayed RGB (tile 2 masks are palette PNGs).
    first = sorted((val / "masks").iterdir())[0]
    rgb = np.asarray(Image.open(first).convert("RGB")).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    expected = np.full(codes.shape, 255)
    for index, colour in enumerate((0x8429F6, 0x3C1098, 0x6EC1E4, 0xFEDD3A, 0xE2A929)):
        expected[codes == colour] = index
    np.testing.assert_array_equal(read_mask(data / "val" / "masks" / first.name), expected)
    val_masks = np.concatenate([read_mask(p).ravel() for p in sorted((data / "val" / "masks").iterdir())])
    assert set(np.unique(val_masks)) <= {0, 1, 2, 3, 4, 255} and (val_masks == 0).mean() > 0.3

    run_dir = tmp_path / "runs" / "dubai"
    assert main(["train", str(data), *config, "--log-dir", str(tmp_path / "runs"), "--name", "dubai", "--cpu",
                 "--set", "model.encoder=resnet18", "--set", "model.args={fpn_channels: 64, decoder_channels: 32}",
                 "--set", "trainer.max_steps=10", "--set", "trainer.val_every_steps=null",
                 "--set", "data.val_split=null", "--set", "data.num_workers=0", "--set", "optimizer.lr=0.01",
                 "--set", "trainer.progress_bar=false", "--set", "data.batch_size=4"]) == 0
    assert (run_dir / "model.safetensors").is_file()

    out = tmp_path / "eval"
    assert main(["eval", str(run_dir), str(data / "val"), "-o", str(out), "--metrics-only", "--mode", "slide",
                 "--window", "256", "--stride", "192", "--background-index", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["name"] for row in metrics["per_class"]] == ["land", "building", "road", "vegetation", "water"]
    assert metrics["num_pixels"] == int((val_masks != 255).sum())
    assert 0.0 <= metrics["miou_foreground"] <= metrics["pixel_accuracy"] <= 1.0
    assert "mIoU without the background class" in capsys.readouterr().out

    image = sorted((DUBAI / "tile_2" / "images").iterdir())[0]
    assert main(["predict", str(run_dir), str(image), "-o", str(tmp_path / "pred"), "--mode", "slide",
                 "--window", "256", "--stride", "192"]) == 0
    pred = read_mask(tmp_path / "pred" / "index" / f"{image.stem}.png")
    assert pred.shape == read_image(image).shape[:2] and pred.max() < 5
