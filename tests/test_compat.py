"""Run directories written before the architecture step still load, predict the same labels and resume.

`fixtures/run_written_by_v1/` is an ENet run trained for 3 steps by segwise at commit a0ed086 (before the model file
moved to `segwise.models.spec` and the tasks became packages), with its predictions of two synthetic test images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segwise.cli import main
from segwise.data.io import read_mask
from segwise.data.synthetic import make_synthetic_dataset

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN = FIXTURES / "run_written_by_v1"
INPUTS = FIXTURES / "run_written_by_v1_inputs"
NAMES = ("test_0000", "test_0001")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(INPUTS / f"{name}.png", folder / f"{name}.png")
    return folder


@pytest.mark.parametrize(("model", "expected"), [(RUN, "expected"), (RUN / "model.yaml", "expected"),
                                               (RUN / "checkpoints" / "last.ckpt", "expected_from_last_ckpt")],
                         ids=["run directory", "model.yaml", "last.ckpt"])
def test_an_old_run_predicts_the_labels_it_predicted_then(model: Path, expected: str, inputs: Path, tmp_path: Path):
    """model.safetensors is the best validation state and last.ckpt the last step: each has its own labels."""
    assert main(["predict", str(model), str(inputs), "-o", str(tmp_path / "out"), "--save", "index"]) == 0
    for name in NAMES:
        expected_labels = read_mask(INPUTS / f"{name}_{expected}.png")
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / "index" / f"{name}.png"), expected_labels)


def test_an_old_run_resumes_where_it_stopped(tmp_path: Path):
    """Same data (the synthetic set is a pure function of its seed), same name: training continues from step 3."""
    data = make_synthetic_dataset(tmp_path / "data", num_train=8, num_val=2, num_test=2, size=32, seed=1)
    shutil.copytree(RUN, tmp_path / "runs" / "enet_v1")
    assert main(["train", str(data), "--model", "enet", "--name", "enet_v1", "--log-dir", str(tmp_path / "runs"),
                 "--steps", "5", "--batch", "4", "--workers", "0", "--accelerator", "cpu",
                 "--set", "trainer.progress_bar=false"]) == 0
    checkpoint = torch.load(tmp_path / "runs" / "enet_v1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 5
