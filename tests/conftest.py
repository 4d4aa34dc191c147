"""Shared fixtures (a small synthetic data set, single-threaded torch); importable helpers are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from segwise.data.synthetic import make_synthetic_dataset

# Under pytest-xdist (`make test` runs one worker per core) each worker takes its share of the cores, so that
# workers do not fight over them with torch's default of one thread per core each.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


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
