"""Which samples train and which validate: one rule (engine/splits.py) for the semantic and the trimap task."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from segwise.config import DataConfig, load_config
from segwise.data.matting import make_synthetic_matting
from segwise.engine.splits import validation_sets
from segwise.tasks.trimap import train as trimap_train
from segwise.tasks.trimap.config import TrimapConfig


@dataclass
class Named:
    name: str


def finder(split: str) -> list[Named]:
    return [Named(f"{split}_{i}") for i in range(3)]


TRAIN = [Named(f"img_{i:02d}") for i in range(20)]


def test_val_split_then_extra_splits_in_order():
    train, vals = validation_sets(DataConfig(val_split="val", extra_val_splits=["b", "a"]), TRAIN, finder)
    assert train == TRAIN and list(vals) == ["val", "b", "a"]
    assert [s.name for s in vals["a"]] == ["a_0", "a_1", "a_2"]


def test_extra_val_only_skips_val_split_and_the_held_out_share():
    data = DataConfig(val_split="val", extra_val_splits=["x"], extra_val_only=True, val_fraction=0.2)
    train, vals = validation_sets(data, TRAIN, finder)
    assert train == TRAIN and list(vals) == ["x"]


def test_val_fraction_holds_out_by_name_in_place_of_the_val_folder():
    def no_val_folder(split: str) -> list[Named]:
        assert split != "val", "val_fraction replaces the val folder; it must not be read"
        return finder(split)

    train, vals = validation_sets(DataConfig(val_fraction=0.25, extra_val_splits=["x"]), TRAIN, no_val_folder)
    assert list(vals) == ["val", "x"]
    held = {s.name for s in vals["val"]}
    assert 0 < len(held) < len(TRAIN) and held.isdisjoint(s.name for s in train)
    assert len(train) + len(held) == len(TRAIN)
    again, vals_again = validation_sets(DataConfig(val_fraction=0.25), list(reversed(TRAIN)), finder)
    assert {s.name for s in vals_again["val"]} == held  # by name, not by position


@pytest.fixture(scope="module")
def mattes(tmp_path_factory):
    root = make_synthetic_matting(tmp_path_factory.mktemp("mattes"), num_train=6, num_val=3, num_test=2, size=32)
    return root


def trimap_sets(mattes, tmp_path, monkeypatch, *overrides: str) -> tuple[list[str], dict[str, list[str]]]:
    """The training and validation sample names `segwise trimap train` would fit on (the fit itself replaced)."""
    seen = {}

    def capture(config, run, train_set, val_sets, callbacks):
        seen["train"] = [s.name for s in train_set.samples]
        seen["vals"] = {name: [s.name for s in dataset.samples] for name, dataset in val_sets.items()}
        return run.directory

    monkeypatch.setattr(trimap_train, "fit_segmentation", capture)
    config = load_config(overrides=[f"data.root={mattes}", f"run.log_dir={tmp_path}", "run.name=r", *overrides],
                         schema=TrimapConfig)
    trimap_train.train(config)
    return seen["train"], seen["vals"]


def test_trimap_train_takes_extra_val_only(mattes, tmp_path, monkeypatch):
    train, vals = trimap_sets(mattes, tmp_path, monkeypatch, "data.extra_val_splits=[test]", "data.extra_val_only=true")
    assert list(vals) == ["test"] and len(vals["test"]) == 2 and len(train) == 6


def test_trimap_train_takes_val_fraction(mattes, tmp_path, monkeypatch):
    train, vals = trimap_sets(mattes, tmp_path, monkeypatch, "data.val_fraction=0.34")
    assert list(vals) == ["val"] and vals["val"] and set(vals["val"]).isdisjoint(train)
    assert len(train) + len(vals["val"]) == 6  # held out of train/, not read from val/
