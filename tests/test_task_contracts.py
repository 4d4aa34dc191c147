"""The extension points of the architecture: registry tasks, loss options, the reader table, task defaults and
the one run opener. Each test adds a throw-away entry the way a contributor would and checks it is picked up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from segwise.config import Config, load_config
from segwise.data.io import write_png
from segwise.data.readers import READERS, Reader, find_split, reader, register_reader
from segwise.engine.run import check_names, open_run
from segwise.errors import CheckpointError, ConfigError, ModelError
from segwise.losses import LOSSES, build_loss, check_loss_options, register_loss
from segwise.models import list_models, model_entry, register_model
from segwise.models.registry import TASKS
from segwise.models.spec import ModelSpec
from segwise.tasks.semantic.data import with_dataset_defaults
from segwise.tasks.trimap.config import TrimapConfig


def test_every_model_has_a_task_and_the_tasks_partition_the_registry():
    by_task = {task: set(list_models(task=task)) for task in TASKS}
    assert set().union(*by_task.values()) == set(list_models())
    assert by_task["sketch"] == {"contextseg", "stroke_classifier"} and by_task["sketch_embed"] == {"contextseg_embed"}
    assert by_task["trimap"] == {"trimap_vit"} and {"unet", "factseg", "segnet"} <= by_task["semantic"]


def test_a_model_of_another_task_is_refused_in_one_line_naming_its_command():
    with pytest.raises(ModelError) as info:
        model_entry("contextseg", ("semantic",))
    message = str(info.value)
    assert "\n" not in message and "'contextseg' is a sketch model" in message and "segwise sketch train" in message
    assert model_entry("unet", ("trimap", "semantic")).task == "semantic"
    with pytest.raises(ModelError, match="task 'nope'"):
        register_model("never_registered", task="nope")


def test_check_names_refuses_sketch_losses_and_other_tasks_models():
    with pytest.raises(ConfigError, match="unknown loss 'focal_bce'"):
        check_names(load_config(overrides=["loss.name=ce + focal_bce"]), ("semantic",))
    with pytest.raises(ModelError, match="stroke_classifier' is a sketch model"):
        check_names(load_config(overrides=["model.name=stroke_classifier"]), ("semantic",))
    check_names(load_config(overrides=["loss.name=ce + 0.5*dice"]), ("semantic",))


@pytest.fixture()
def scaled_loss():
    """A throw-away loss with an option of its own, registered as a contributor would."""

    class Scaled(nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, logits, target):
            return self.scale * logits.mean()

    @register_loss("scaled_test_loss")
    def _scaled(*, scale_test_option: float = 1.0, **_: object) -> nn.Module:
        return Scaled(scale_test_option)

    yield
    del LOSSES["scaled_test_loss"]


def test_a_new_loss_brings_its_option_without_a_config_edit(scaled_loss):
    config = load_config(overrides=["loss.name=ce + scaled_test_loss", "loss.scale_test_option=3"])
    check_names(config, ("semantic",))
    loss = build_loss(config.loss.name, 2, **config.loss.model_dump(exclude={"name"}))
    assert loss.losses["scaled_test_loss"].scale == 3


def test_an_option_no_loss_takes_is_refused_with_the_closest_one():
    with pytest.raises(ConfigError, match="'loss.focal_gama'.*Did you mean 'loss.focal_gamma'"):
        check_loss_options({"focal_gama": 3})


def _folder_split(root: Path, names: list[str]) -> Path:
    for name in names:
        write_png(root / "images" / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
        write_png(root / "masks" / f"{name}.png", np.zeros((8, 8), np.uint8))
    return root


def test_a_new_reader_is_one_registration(tmp_path: Path):
    """A layout whose images sit in pictures/ and masks in labels/ with a `_gt` suffix."""
    from segwise.data.folder import Sample

    def find(split: Path, extras, require_masks: bool) -> list[Sample]:
        return [Sample(p.stem, p, split / "labels" / f"{p.stem}_gt.png", ()) for p in sorted((split / "pictures")
                                                                                            .glob("*.png"))]

    register_reader("pictures_test", Reader(find, class_options={"class_names": ["a", "b"]}))
    try:
        write_png(tmp_path / "pictures" / "x.png", np.zeros((4, 4, 3), np.uint8))
        assert [s.name for s in find_split("pictures_test", tmp_path)] == ["x"]
        data = with_dataset_defaults(load_config(overrides=["data.format=pictures_test"]).data)
        assert data.class_names == ["a", "b"]
    finally:
        del READERS["pictures_test"]


def test_unknown_format_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown layout 'foldr'.*Did you mean 'folder'"):
        reader("foldr")


def test_isaid_format_brings_its_classes_and_the_users_choice_wins():
    data = with_dataset_defaults(load_config(overrides=["data.format=isaid"]).data)
    assert len(data.class_names) == 16 and data.unmapped == "background" and data.palette[1] == (0, 0, 63)
    mine = with_dataset_defaults(load_config(overrides=["data.format=isaid", "data.unmapped=error"]).data)
    assert mine.unmapped == "error"


def test_folder_reader_finds_what_find_samples_finds(tmp_path: Path):
    split = _folder_split(tmp_path / "train", ["a", "b"])
    assert [s.name for s in find_split("folder", split)] == ["a", "b"]


def test_task_defaults_are_one_mechanism_and_the_user_wins():
    trimap = load_config(None, ["optimizer.lr=0.01"], schema=TrimapConfig)
    assert trimap.model.name == "trimap_vit" and trimap.loss.name == "nfl + 0.1*dt"
    assert trimap.optimizer.name == "Adam" and trimap.optimizer.lr == 0.01 and trimap.trainer.max_epochs == 55
    assert Config().model.name == "unet" and not hasattr(Config(), "trimap")


def _spec(num_classes: int = 3) -> ModelSpec:
    return ModelSpec(name="unet", encoder="resnet18", args={}, in_channels=3, num_classes=num_classes,
                     class_names=[str(i) for i in range(num_classes)], palette=[[0, 0, 0]] * num_classes)


def test_open_run_writes_the_config_and_refuses_another_model_on_resume(tmp_path: Path):
    config = load_config(overrides=[f"run.log_dir={tmp_path}", "run.name=r"])
    run = open_run(config, lambda directory: _spec(), "unused")
    assert run.directory == tmp_path / "r" and run.resume_from is None
    assert yaml.safe_load((run.directory / "config.yaml").read_text())["run"]["name"] == "r"
    (run.directory / "model.yaml").write_text(yaml.safe_dump(_spec().to_dict()))
    with pytest.raises(CheckpointError, match="num_classes=3"):
        open_run(config, lambda directory: _spec(5))
    (run.directory / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, run.directory / "checkpoints" / "last.ckpt")
    assert open_run(config, lambda directory: _spec()).resume_from == run.directory / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="--no-resume"):
        open_run(config.model_copy(update={"run": config.run.model_copy(update={"resume": False})}),
                 lambda directory: _spec())


def test_masks_of_sparse_values_are_not_read_as_129_classes(tmp_path: Path):
    """0/128/255 masks with no class options: refused with the values found and the --class-list that maps them."""
    from segwise.errors import SegwiseError
    from segwise.tasks.semantic.data import build_class_map, infer_num_classes

    split = tmp_path / "train"
    for index, values in enumerate(([0, 128], [128, 255])):
        write_png(split / "images" / f"{index}.png", np.zeros((4, 4, 3), np.uint8))
        write_png(split / "masks" / f"{index}.png", np.array([values * 2] * 4, np.uint8))
    samples = find_split("folder", split)
    with pytest.raises(SegwiseError, match=r"values 0, 128 .* 129 classes, 127 of them never seen.*--class-list 0 128"):
        build_class_map(load_config(overrides=[f"data.root={tmp_path}"]).data, samples)
    assert build_class_map(load_config(overrides=["data.class_values=[0, 128]"]).data, samples).num_classes == 2
    write_png(split / "masks" / "1.png", np.array([[0, 1, 3, 255]] * 4, np.uint8))  # class 2 absent: still indices
    write_png(split / "masks" / "0.png", np.zeros((4, 4), np.uint8))
    assert infer_num_classes(find_split("folder", split), 255) == 4


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.image_size=[180, 240]", "data.crop_size=352"], r"crop_size 352x352 is larger than data.image_size 180x240"),
    (["data.image_size=[180, 240]"], r"image_size 180x240 is not a multiple of unet's input stride 32.*192x256"),
    (["data.image_size=[100, 100]", "model.name=enet", "model.encoder=null"], r"enet's input stride 8.*104x104"),
])
def test_sizes_a_model_cannot_take_are_refused_before_any_data_is_read(overrides: list[str], message: str):
    from segwise.tasks.semantic.train import check_sizes

    with pytest.raises(ConfigError, match=message):
        check_sizes(load_config(overrides=overrides))
    check_sizes(load_config(overrides=["data.image_size=[192, 256]", "data.crop_size=128"]))
