"""End to end on synthetic mattes through `segwise trimap train / eval / predict`: a tiny ViT beats the trivial
trimap (a band around the prompt mask, its width chosen with hindsight on the evaluation set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segwise.cli import main
from segwise.data.io import read_image, read_mask
from segwise.data.matting import (
    baseline_trimap,
    find_matting_samples,
    make_synthetic_matting,
    prompt_from_alpha,
    trimap_classes,
)
from segwise.metrics.trimap import TrimapMeter

CPU_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "trimap_tiny_cpu.yaml"  # 2-block ViT-Ti, patch 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    root = make_synthetic_matting(tmp_path_factory.mktemp("mattes"), num_train=48, num_val=16, size=64, seed=0)
    runs = tmp_path_factory.mktemp("runs")
    assert main(["trimap", "train", str(root), "--config", str(CPU_RECIPE), "--cpu", "--name", "tiny",
                 "--log-dir", str(runs), "--set", "trainer.progress_bar=false"]) == 0
    return root, runs / "tiny"


def baseline_scores(samples) -> dict[int, dict]:
    scores = {}
    for band in (1, 2, 3, 4, 6):
        meter = TrimapMeter()
        for sample in samples:
            alpha = read_mask(sample.alpha)
            meter.update(torch.from_numpy(baseline_trimap(prompt_from_alpha(alpha), band)).long(),
                         torch.from_numpy(trimap_classes(alpha)).long())
        scores[band] = meter.compute()
    return scores


def test_tiny_vit_beats_the_prompt_band_baseline(trained, tmp_path, capsys) -> None:
    root, run = trained
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    assert main(["trimap", "eval", str(run), str(root / "val"), str(root / "train"), "-o", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "val" in table and "train" in table and "Unknown" in table
    results = json.loads((tmp_path / "trimap_metrics.json").read_text())
    model = results["val"]
    baseline = max(baseline_scores(find_matting_samples(root / "val")).values(), key=lambda r: r["iou_unknown"])
    print(f"unknown IoU: tiny ViT {model['iou_unknown']:.3f}, best prompt band {baseline['iou_unknown']:.3f}; "
          f"mIoU {model['miou']:.3f} vs {baseline['miou']:.3f}")
    assert model["iou_unknown"] > baseline["iou_unknown"] + 0.08
    assert model["miou"] > baseline["miou"] + 0.02  # measured: 0.716 vs 0.675 (160 steps)


def test_predict_writes_trimaps_and_overlays(trained, tmp_path) -> None:
    root, run = trained
    assert main(["trimap", "predict", str(run), str(root / "val"), "-o", str(tmp_path), "--overlay"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == sorted(s.image.name for s in find_matting_samples(root / "val"))
    trimap = read_mask(tmp_path / names[0])
    assert trimap.shape == (64, 64) and set(np.unique(trimap)) <= {0, 128, 255}
    assert read_image(tmp_path / "overlay" / names[0]).shape == (64, 64, 3)


def test_eval_per_row_reference_and_errors(trained, tmp_path, capsys) -> None:
    root, run = trained
    assert main(["trimap", "eval", str(run), str(root / "val"), "--averaging", "per_row_reference",
                 "-o", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "trimap_metrics.json").read_text())["val"]["averaging"] == "per_row_reference"
    capsys.readouterr()
    assert main(["trimap", "eval", str(run), str(tmp_path / "missing")]) == 2
    assert "folder not found" in capsys.readouterr().err
