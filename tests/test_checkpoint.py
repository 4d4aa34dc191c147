"""Model files: save/load round trip, Lightning .ckpt loading without unpickling code, atomic writes."""

import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from segwise.models.spec import (
    FORMAT, SPEC_FILE, WEIGHTS_FILE, ModelSpec, load_model, resolve_model_path, save_model,
)
from segwise.errors import CheckpointError, SegwiseError
from segwise.io_utils import atomic_write, atomic_write_bytes, atomic_write_text, ensure_writable_dir


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    # timm's tiny test ResNet (0.5 M parameters, batch-norm buffers included) keeps the files small and writes fast
    return ModelSpec(name="unet", encoder="tu-test_resnet", args={"decoder_channels": [32, 16, 16, 8, 8]},
                     in_channels=4, num_classes=3, class_names=["bg", "a", "b"],
                     palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]], mean=[1.0, 2.0, 3.0, 4.0], std=[1.0] * 4,
                     extra_channels=["nir"], image_size=[64, 64])


@pytest.fixture(scope="module")
def trained(spec: ModelSpec):
    """A model with non-default weights (so a silently re-initialised load would be noticed) and a fixed input."""
    torch.manual_seed(0)
    model = spec.build().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        expected = model(x)
    return model, x, expected


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_save_and_load_round_trip(tmp_path: Path, spec: ModelSpec, trained):
    model, x, expected = trained
    run = tmp_path / "run"
    save_model(model, spec, run)
    assert (run / WEIGHTS_FILE).is_file() and (run / SPEC_FILE).is_file()
    assert sorted(p.name for p in run.iterdir()) == sorted([SPEC_FILE, WEIGHTS_FILE])  # no temp files left
    text = yaml.safe_load((run / SPEC_FILE).read_text())
    assert text["format"] == FORMAT and text["name"] == "unet" and text["class_names"] == ["bg", "a", "b"]
    for path in (run, run / SPEC_FILE, run / WEIGHTS_FILE):
        loaded, loaded_spec = load_model(path)
        assert loaded_spec == spec
        assert not loaded.training
        torch.testing.assert_close(_outputs(loaded, x), expected)


def _lightning_checkpoint(model) -> dict:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["criterion.weight"] = torch.ones(3)  # other task attributes are ignored
    return {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.6", "state_dict": state,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}],
            "hyper_parameters": {"lr": 0.01, "classes": ["bg", "a", "b"]}, "loops": {"fit_loop": {"epoch": 3}}}


def test_lightning_ckpt_in_checkpoints_dir(tmp_path: Path, spec: ModelSpec, trained):
    model, x, expected = trained
    run = tmp_path / "run"
    save_model(model, spec, run)
    (run / WEIGHTS_FILE).unlink()  # the .ckpt alone must be enough, with model.yaml one level up
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save(_lightning_checkpoint(model), ckpt)
    assert resolve_model_path(ckpt) == (run / SPEC_FILE, None)
    loaded, loaded_spec = load_model(ckpt)
    assert loaded_spec == spec
    torch.testing.assert_close(_outputs(loaded, x), expected)


def test_ckpt_beside_model_yaml(tmp_path: Path, spec: ModelSpec, trained):
    model, x, expected = trained
    save_model(model, spec, tmp_path)
    torch.save(_lightning_checkpoint(model), tmp_path / "best.ckpt")
    torch.testing.assert_close(_outputs(load_model(tmp_path / "best.ckpt")[0], x), expected)


EXECUTED: list[str] = []


class _Payload:
    """Unpickling this would run __setstate__: weights_only loading must refuse before that."""

    def __setstate__(self, state):
        EXECUTED.append("unpickled")
        self.__dict__.update(state)


def test_ckpt_with_pickled_object_is_refused(tmp_path: Path, spec: ModelSpec, trained):
    model, _, _ = trained
    save_model(model, spec, tmp_path)
    checkpoint = _lightning_checkpoint(model)
    payload = _Payload()
    payload.note = "arbitrary code could run here"
    checkpoint["callbacks"] = {"Custom": payload}
    path = tmp_path / "checkpoints" / "evil.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    assert torch.load(path, weights_only=False)["callbacks"]["Custom"].note  # a full unpickle would accept it ...
    EXECUTED.clear()
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint") as info:
        load_model(path)  # ... weights_only=True does not
    assert str(path) in str(info.value) and "weights only load failed" in str(info.value).lower()
    assert EXECUTED == []


def test_unreadable_ckpt(tmp_path: Path, spec: ModelSpec, trained):
    save_model(trained[0], spec, tmp_path)
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.ckpt cannot be read"):
        load_model(tmp_path / "broken.ckpt")


def test_missing_model_yaml(tmp_path: Path, spec: ModelSpec, trained):
    with pytest.raises(CheckpointError, match=f"holds no {SPEC_FILE}"):
        load_model(tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save(_lightning_checkpoint(trained[0]), ckpt)
    with pytest.raises(CheckpointError, match=f"{SPEC_FILE} is missing"):
        load_model(ckpt)
    with pytest.raises(CheckpointError, match="is not a run directory"):
        load_model(tmp_path / "weights.bin")


def test_missing_weights_file(tmp_path: Path, spec: ModelSpec, trained):
    save_model(trained[0], spec, tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE} is missing"):
        load_model(tmp_path)


def test_wrong_format_string(tmp_path: Path, spec: ModelSpec, trained):
    save_model(trained[0], spec, tmp_path)
    data = yaml.safe_load((tmp_path / SPEC_FILE).read_text())
    data["format"] = "segwise-model/999"
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="not a segwise model description") as info:
        load_model(tmp_path)
    assert "segwise-model/999" in str(info.value) and SPEC_FILE in str(info.value)
    (tmp_path / SPEC_FILE).write_text("name: unet\n")  # no format at all
    with pytest.raises(CheckpointError, match="format None"):
        load_model(tmp_path)


def test_weights_that_do_not_fit(tmp_path: Path, spec: ModelSpec, trained):
    save_model(trained[0], spec, tmp_path)
    data = yaml.safe_load((tmp_path / SPEC_FILE).read_text())
    data["num_classes"] = 5  # a different head
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointError, match="do not fit unet") as info:
        load_model(tmp_path)
    assert WEIGHTS_FILE in str(info.value)


def test_ckpt_without_model_weights_does_not_fit(tmp_path: Path, spec: ModelSpec, trained):
    save_model(trained[0], spec, tmp_path)
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "other.ckpt")


# ---- io_utils -----------------------------------------------------------------------------------------------
def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path: Path):
    target = tmp_path / "model.yaml"
    target.write_text("old content\n")

    def failing(tmp: Path) -> None:
        tmp.write_text("half writ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["model.yaml"]


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path):
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write_text(target, "text")
    assert target.read_text() == "text"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_atomic_write_file_mode_is_not_private(tmp_path: Path):
    """mkstemp makes 0600 files; the written file gets the usual umask mode, or keeps the mode it replaces."""
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    target.chmod(0o640)
    atomic_write_text(target, "{ }")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == "{ }"


def test_atomic_write_to_impossible_dir_is_segwise_error(tmp_path: Path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(SegwiseError, match="cannot write to"):
        atomic_write_text(blocker / "sub" / "x.yaml", "a")


def test_ensure_writable_dir_creates(tmp_path: Path):
    path = tmp_path / "runs" / "exp"
    assert ensure_writable_dir(path) == path and path.is_dir()
    assert list(path.iterdir()) == []  # the probe file is gone


def test_ensure_writable_dir_under_a_file(tmp_path: Path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    target = blocker / "sub"
    with pytest.raises(SegwiseError, match="is not writable") as info:
        ensure_writable_dir(target)
    assert str(target) in str(info.value)


def test_ensure_writable_dir_read_only(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (the under-a-file test covers the error)")
        with pytest.raises(SegwiseError, match="is not writable") as info:
            ensure_writable_dir(locked)
        assert str(locked) in str(info.value)
        with pytest.raises(SegwiseError, match="is not writable"):
            ensure_writable_dir(locked / "new")
    finally:
        locked.chmod(0o755)


def test_a_run_resumes_only_with_the_classes_and_channels_it_was_started_with(trained, spec, tmp_path: Path):
    import dataclasses

    from segwise.engine.run import check_resumable

    model, _, _ = trained
    save_model(model, spec, tmp_path)
    check_resumable(tmp_path, spec)  # the same model: fine
    check_resumable(tmp_path / "new_run", dataclasses.replace(spec, num_classes=7))  # nothing stored yet: fine
    for change in ({"num_classes": 5}, {"in_channels": 3}):
        with pytest.raises(CheckpointError, match=f"was trained with {next(iter(change))}=.*another run.name"):
            check_resumable(tmp_path, dataclasses.replace(spec, **change))
