"""Resume promises at the edges: changed settings, a changed checkpoint cadence, Ctrl-C, hostile and damaged
checkpoints, a full disk, and statistics tied to the data they came from."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from segwise.cli import main
from segwise.data.synthetic import make_synthetic_dataset
from segwise.engine import callbacks
from segwise.errors import CheckpointError, Interrupted
from segwise.tasks.semantic.train import train
from tests.helpers import quick_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("resume"), num_train=12, num_val=2, num_test=1, size=32,
                                  seed=0)


def _config(data: Path, runs: Path, name: str, *overrides: str):
    return quick_config(data, runs, name, "model.name=enet", "model.encoder=null", "data.batch_size=3",
                        "data.val_split=null", "trainer.seed=7", *overrides)


def _step(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


@pytest.fixture()
def trained(data: Path, tmp_path: Path) -> Path:
    """A finished 3-step run (one epoch is 4 steps, so it stopped mid-epoch)."""
    run = train(_config(data, tmp_path, "r", "trainer.max_steps=3"))
    assert _step(run) == 3
    return run


@pytest.mark.parametrize(("override", "setting"), [("optimizer.name=SGD", "optimizer.name"),
                                                   ("optimizer.backbone_lr_factor=0.1", "optimizer.backbone_lr_factor"),
                                                   ("scheduler.name=cosine", "scheduler.name")])
def test_resuming_with_another_optimizer_is_refused_naming_the_setting(trained: Path, data: Path, override: str,
                                                                       setting: str):
    config_before = (trained / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=rf"trained with {setting}=.*Restore {setting}, or start a new run"):
        train(_config(data, trained.parent, "r", "trainer.max_steps=5", override))
    assert (trained / "config.yaml").read_text() == config_before  # a refused resume leaves the run as it was


def test_a_changed_checkpoint_cadence_keeps_writing_last_ckpt(trained: Path, data: Path):
    train(_config(data, trained.parent, "r", "trainer.max_steps=5", "trainer.checkpoint_every_steps=1"))
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["last.ckpt"]
    assert _step(trained) == 5


class _CtrlC(L.Callback):
    """Sends the process a real SIGINT in the middle of a batch (inside training_step's forward)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_the_finished_step_and_the_run_resumes_exactly(data: Path, tmp_path: Path):
    straight = train(_config(data, tmp_path, "straight", "trainer.max_epochs=2"))
    with pytest.raises(Interrupted, match=r"stopped by Ctrl-C after step 6; .*last.ckpt holds that step"):
        train(_config(data, tmp_path, "stopped", "trainer.max_epochs=2"), [_CtrlC(5)])
    assert _step(tmp_path / "stopped") == 6  # the batch in flight finished; nothing was cut halfway
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    train(_config(data, tmp_path, "stopped", "trainer.max_epochs=2"))
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SEGWISE_TEST_MARKER']}",))


def test_a_hostile_last_ckpt_is_refused_even_when_torch_is_told_to_unpickle(trained: Path, data: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    marker = trained.parent / "payload_ran"
    monkeypatch.setenv("SEGWISE_TEST_MARKER", str(marker))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    last = trained / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["payload"] = _Payload()
    with open(last, "wb") as handle:
        pickle.dump(checkpoint, handle)  # torch.load reads plain pickles too
    code = main(["train", str(data), "--model", "enet", "--name", "r", "--log-dir", str(trained.parent),
                 "--steps", "5", "-b", "3", "-w", "0", "--cpu", "--set", "data.val_split=null",
                 "--set", "trainer.progress_bar=false"])
    assert code == 2 and not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None], ids=["empty", "garbage", "truncated"])
def test_a_damaged_last_ckpt_is_named_with_what_to_do(trained: Path, data: Path, content: bytes | None,
                                                      capsys: pytest.CaptureFixture):
    last = trained / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2] if content is None else content)
    code = main(["train", str(data), "--model", "enet", "--name", "r", "--log-dir", str(trained.parent),
                 "--steps", "5", "-b", "3", "-w", "0", "--cpu", "--set", "data.val_split=null"])
    err = capsys.readouterr().err
    assert code == 2 and f"{last} is damaged or not a checkpoint" in err and "move it away" in err
    assert "Traceback" not in err


def test_a_full_disk_while_checkpointing_names_the_file_and_keeps_the_previous(trained: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    last = trained / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 448 vs 342")

    monkeypatch.setattr(callbacks.torch, "save", full)
    with pytest.raises(CheckpointError, match=rf"cannot write checkpoint {last}: the disk is full"):
        callbacks.AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, last)
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_statistics_of_a_failed_start_do_not_leak_into_a_run_on_other_data(data: Path, tmp_path: Path):
    """A start that stops before training (here: a bad loss option found after the statistics) leaves
    dataset_stats.yaml; the next run of that name on other data computes its own."""
    other = make_synthetic_dataset(tmp_path / "other", num_train=6, num_val=1, num_test=1, size=32, seed=5)
    run = tmp_path / "runs" / "same"
    run.mkdir(parents=True)
    stale = {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0], "data_fingerprint": "0" * 16}
    (run / "dataset_stats.yaml").write_text(yaml.safe_dump(stale))
    train(_config(other, tmp_path / "runs", "same", "trainer.max_steps=1"))
    stored = yaml.safe_load((run / "dataset_stats.yaml").read_text())
    assert stored["mean"] != stale["mean"] and stored["data_fingerprint"] != stale["data_fingerprint"]
    spec = yaml.safe_load((run / "model.yaml").read_text())
    assert spec["mean"] == stored["mean"]


def test_ctrl_c_in_training_exits_130_with_the_resume_hint(data: Path, tmp_path: Path, monkeypatch, capsys):
    def interrupted(config):
        raise Interrupted("stopped by Ctrl-C after step 2; last.ckpt holds that step: run the same command to resume")

    monkeypatch.setattr("segwise.tasks.semantic.train.train", interrupted)
    assert main(["train", str(data), "--name", "x", "--log-dir", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "run the same command to resume" in err and "error" not in err


def test_a_checkpoint_every_epoch_is_kept_beside_last(data: Path, tmp_path: Path):
    """`trainer.checkpoint_every_epochs: 1` (pytorch-segmentation's `save_period: 1`) used to abort: two checkpoint
    callbacks with the same state key."""
    run = train(_config(data, tmp_path, "periodic", "trainer.max_epochs=2", "trainer.checkpoint_every_epochs=1"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]
