"""Shared fixtures: small synthetic data sets and a quick config builder for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segwise.config import Config, load_config
from segwise.data.synthetic import make_synthetic_dataset

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def quick_config(root: Path, log_dir: Path, name: str, *overrides: str) -> Config:
    """A CPU config small enough for tests; extra `key=value` overrides win."""
    base = [f"data.root={root}", f"run.log_dir={log_dir}", f"run.name={name}", "trainer.accelerator=cpu",
            "trainer.progress_bar=false", "data.num_workers=0", "data.batch_size=4", "model.encoder=resnet18",
            "trainer.log_every_steps=1"]
    return load_config(None, [*base, *overrides])


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64-pixel synthetic set: 24 train, 8 val, 4 test images, 4 classes."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=24, num_val=8, num_test=4,
                                  size=64, seed=3)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny CPU forwards are fastest single-threaded (no OpenMP spin-up or oversubscription on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
