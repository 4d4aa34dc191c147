"""Config values that used to pass validation and fail later (or never): refused at load, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from segwise.cli import main
from segwise.config import load_config
from segwise.errors import ConfigError


@pytest.mark.parametrize(("override", "message"), [
    ("run.name=../../escape", r"run.name '../../escape' must be one folder name under run.log_dir"),
    ("run.name=a/b", r"run.name 'a/b' must be one folder name"),
    ("optimizer.lr=.inf", r"optimizer.lr"),
    ("trainer.seed=-1", r"trainer.seed"),
    ("trainer.seed=99999999999999", r"trainer.seed"),
    ("trainer.max_epochs=null", r"max_epochs and trainer.max_steps are both null"),
    ("data.class_names=[a, b, a]", r"data.class_names names 'a' more than once"),
])
def test_values_that_would_fail_later_are_refused_at_load(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_max_epochs_null_is_fine_with_max_steps():
    assert load_config(overrides=["trainer.max_epochs=null", "trainer.max_steps=10"]).trainer.max_steps == 10


@pytest.mark.parametrize(("content", "message"), [
    (b"data:\n  root: \xff\xfe\n", r"is not UTF-8 text"),
    (b"[" * 5000 + b"]" * 5000, r"nests too deeply|not valid YAML"),
    (b"- a\n- b\n", r"must hold a mapping of sections"),
    (b"data: {root: [\n", r"is not valid YAML"),
])
def test_damaged_yaml_files_are_named(tmp_path: Path, content: bytes, message: str, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.yaml").write_bytes(content)
    assert main(["data", "check", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "dataset.yaml" in err and "Traceback" not in err


def test_data_check_of_a_missing_folder_is_exit_2(tmp_path: Path, capsys):
    assert main(["data", "check", str(tmp_path / "no" / "such" / "dir")]) == 2
    assert "does not exist" in capsys.readouterr().err
