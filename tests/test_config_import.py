"""pytorch-segmentation's config.json: read with its comments, every key translated or reported, trains as it is
with `--config config.json`, and `segwise config import` writes a YAML that resolves to the same config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from segwise.cli import main
from segwise.config import load_config
from segwise.convert.pytorch_segmentation import strip_comments, translate_config
from segwise.data.synthetic import make_synthetic_dataset
from segwise.errors import ConfigError

ARCH_MODE = """{
    "name": "PSPNet",   // the experiment
    "n_gpu": 1,
    "use_synch_bn": false,
    /* the model zoo */
    "arch": {"type": "ENet", "args": {"freeze_bn": false, "freeze_backbone": false}},
    "train_loader": {"type": "DeepScene", "args": {"data_dir": "data/", "batch_size": 4, "base_size": 64,
        "crop_size": 32, "augment": true, "shuffle": true, "scale": true, "flip": true, "rotate": true,
        "blur": false, "split": "train", "num_workers": 0}},
    "val_loader": {"type": "DeepScene", "args": {"data_dir": "data/", "batch_size": 4, "crop_size": 48, "val": true,
        "split": "val", "num_workers": 0}},
    "optimizer": {"type": "SGD", "differential_lr": true, "args": {"lr": 0.01, "weight_decay": 1e-4,
        "momentum": 0.9}},
    "loss": "CE_DiceLoss",
    "ignore_index": 255,
    "lr_scheduler": {"type": "Poly", "args": {}},
    "trainer": {"epochs": 1, "save_dir": "saved/", "save_period": 1, "monitor": "max Mean_IoU", "early_stop": 10,
        "tensorboard": true, "log_dir": "saved/runs", "log_per_iter": 20, "val": true, "val_per_epochs": 1}
}"""

SMP_MODE = {"name": "smp_run", "smp": True, "smp_args": {"type": "DeepLabV3Plus", "backbone": "resnet18",
            "weights": None, "classes": 4, "epochs": 3, "batch_size": 2, "image_size": 64, "device": "cuda"},
            "loss": "LovaszSoftmax"}


def test_comments_are_stripped_outside_strings_only():
    assert json.loads(strip_comments('{"a": "http://x//y", /* b */ "c": 1 // d\n}')) == {"a": "http://x//y", "c": 1}


def test_arch_mode_translates_every_key_or_says_why_not(tmp_path: Path):
    (tmp_path / "config.json").write_text(ARCH_MODE)
    t = translate_config(tmp_path / "config.json")
    v = t.values
    assert (v["model.name"], v["loss.name"], v["optimizer.name"], v["optimizer.backbone_lr_factor"]) == (
        "enet", "ce + dice", "SGD", 0.1)
    assert v["optimizer.args.momentum"] == 0.9 and v["data.scale_range"] == [0.5, 2.0] and v["data.rotate"] == 10.0
    assert (v["trainer.monitor"], v["trainer.monitor_mode"], v["trainer.checkpoint_every_epochs"]) == (
        "val/miou", "max", 1)
    noted = {note.split(" = ")[0] for note in t.notes}
    assert {"train_loader.type", "train_loader.args.base_size", "train_loader.args.shuffle",
            "val_loader.args.crop_size", "trainer.tensorboard", "trainer.log_dir"} <= noted
    assert all(": " in note for note in t.notes)


def test_smp_mode_and_unknown_keys(tmp_path: Path):
    (tmp_path / "c.json").write_text(json.dumps({**SMP_MODE, "colour": "blue"}))
    t = translate_config(tmp_path / "c.json")
    assert (t.values["model.name"], t.values["model.encoder"], t.values["data.num_classes"]) == (
        "deeplabv3plus", "resnet18", 4)
    assert t.values["loss.name"] == "lovasz" and t.values["data.image_size"] == 64
    assert any(n.startswith('colour = "blue": is not a pytorch-segmentation config key') for n in t.notes)
    assert any(n.startswith("smp_args.device") for n in t.notes)


@pytest.mark.parametrize(("text", "message"), [
    ('{"arch": {"type": "HRNet"}}', r'arch.type = "HRNet" has no segwise model'),
    ('{"arch": {"type": "ENet"}, "loss": "Tversky"}', r'loss = "Tversky" has no segwise equivalent'),
    ('{"arch": {"type": "ENet"},\n "loss": }', r"not valid JSON at line 2"),
])
def test_what_cannot_be_translated_is_one_clear_error(tmp_path: Path, text: str, message: str):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        translate_config(tmp_path / "c.json")


def test_the_config_json_trains_and_its_import_resolves_to_the_same_config(tmp_path: Path, capsys):
    data = make_synthetic_dataset(tmp_path / "data", num_train=8, num_val=4, num_test=1, size=64, seed=0)
    (tmp_path / "config.json").write_text(ARCH_MODE)
    common = ["--log-dir", str(tmp_path / "runs"), "--set", "trainer.progress_bar=false", "--accelerator", "cpu"]
    assert main(["train", str(data), "--config", str(tmp_path / "config.json"), *common]) == 0
    err = capsys.readouterr().err
    assert "no effect: train_loader.args.base_size = 64" in err
    run = tmp_path / "runs" / "PSPNet"
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "epoch000.ckpt").is_file()
    assert main(["config", "import", str(tmp_path / "config.json"), "-o", str(tmp_path / "config.yaml")]) == 0
    text = (tmp_path / "config.yaml").read_text()
    assert "  crop_size: 32  # from train_loader.args.crop_size\n" in text and "# no effect: trainer.tensorboard" in text
    flags = {"data.root": str(data)}
    from_json = load_config(tmp_path / "config.json", flags=flags,
                            base=translate_config(tmp_path / "config.json").nested())
    assert load_config(tmp_path / "config.yaml", flags=flags) == from_json
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "enet"
