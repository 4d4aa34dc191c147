"""Config: defaults ← YAML file ← flags ← --set, readable errors for unknown keys and bad values, save/load."""

from pathlib import Path

import pytest
import yaml

from segwise.config import Config, load_config, parse_override, read_yaml, save_config, validate_config
from segwise.errors import ConfigError


def _yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_validate():
    config = load_config()
    assert config == Config()
    assert config.model.name == "unet" and config.model.encoder is None and config.model.encoder_weights is None
    assert config.loss.name == "ce" and config.optimizer.name == "AdamW" and config.scheduler.name == "poly"
    assert config.data.batch_size == 8 and config.data.image_size is None and config.trainer.max_epochs == 20
    assert validate_config(Config().to_dict()) == Config()


def test_priority_set_over_flags_over_file_over_defaults(tmp_path: Path):
    path = _yaml(tmp_path / "run.yaml", {
        "trainer": {"max_epochs": 5, "seed": 7},
        "data": {"batch_size": 4, "augment": "hard"},
        "optimizer": {"lr": 0.1},
    })
    flags = {"trainer.max_epochs": 7, "data.batch_size": 2, "model.encoder": None}  # None = flag not given
    config = load_config(path, ["trainer.max_epochs=9"], flags)
    assert config.trainer.max_epochs == 9  # --set beats flag and file
    assert config.data.batch_size == 2  # flag beats file
    assert config.optimizer.lr == 0.1 and config.trainer.seed == 7 and config.data.augment == "hard"  # file
    assert config.model.encoder is None  # an unset flag keeps the default (the architecture picks)
    assert config.optimizer.weight_decay == 1e-4  # default


def test_set_keeps_expressions_and_creates_nested_args():
    config = load_config(overrides=["loss.name=ce + 0.5*dice", "model.args.decoder_attention_type=scse",
                                    "model.args.decoder_channels=[64, 32, 16, 8, 4]", "optimizer.lr=3e-4"])
    assert config.loss.name == "ce + 0.5*dice"
    assert config.model.args == {"decoder_attention_type": "scse", "decoder_channels": [64, 32, 16, 8, 4]}
    assert config.optimizer.lr == pytest.approx(3e-4)
    # the same expression quoted as a shell would pass it when the quotes are kept
    assert load_config(overrides=["loss.name='ce + 0.5*dice'"]).loss.name == "ce + 0.5*dice"


def test_parse_override_values_are_yaml():
    assert parse_override("trainer.max_epochs=5") == (["trainer", "max_epochs"], 5)
    assert parse_override("data.hflip=false") == (["data", "hflip"], False)
    assert parse_override("model.encoder_weights=") == (["model", "encoder_weights"], None)
    assert parse_override("data.mean=[1, 2.5]") == (["data", "mean"], [1, 2.5])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("trainer.max_epochs")


@pytest.mark.parametrize(
    ("override", "unknown", "suggestion", "valid"),
    [
        ("trainer.max_epoch=3", "trainer.max_epoch", "trainer.max_epochs", "max_steps"),
        ("optimiser.lr=0.1", "optimiser", "optimizer", "scheduler"),
        ("data.batchsize=4", "data.batchsize", "data.batch_size", "num_workers"),
    ],
)
def test_unknown_key_suggests_closest_and_lists_valid_keys(override, unknown, suggestion, valid):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert f"unknown key '{unknown}'" in message
    assert f"did you mean '{suggestion}'" in message
    assert "Valid keys here:" in message and valid in message


def test_unknown_key_in_file_names_the_file(tmp_path: Path):
    path = _yaml(tmp_path / "bad.yaml", {"trainer": {"max_epoch": 3}})
    with pytest.raises(ConfigError, match="trainer.max_epochs") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["data.batch_size=abc"])
    assert "data.batch_size" in str(info.value) and "'abc'" in str(info.value)
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config(overrides=["data.batch_size=0"])  # ge=1
    with pytest.raises(ConfigError, match="scheduler.name"):
        load_config(overrides=["scheduler.name=linear"])


def test_image_size_int_becomes_pair():
    assert load_config(overrides=["data.image_size=64"]).data.image_size == (64, 64)
    assert load_config(overrides=["data.crop_size=[32, 48]"]).data.crop_size == (32, 48)
    assert load_config(flags={"data.image_size": [96, 128]}).data.image_size == (96, 128)


def test_mean_and_std_go_together():
    with pytest.raises(ConfigError, match="data.mean and data.std must be given together"):
        load_config(overrides=["data.mean=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="data.std must be positive"):
        load_config(overrides=["data.mean=[1]", "data.std=[0]"])
    with pytest.raises(ConfigError, match="data.mean has 2 values but data.std has 1"):
        load_config(overrides=["data.mean=[1, 2]", "data.std=[1]"])
    ok = load_config(overrides=["data.mean=[1, 2, 3]", "data.std=[4, 5, 6]"])
    assert ok.data.mean == [1, 2, 3] and ok.data.std == [4, 5, 6]


def test_set_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        load_config(overrides=["loss.name=ce", "loss.name.x=1"])


def test_missing_file_names_it(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_names_file(tmp_path: Path):
    path = _yaml(tmp_path / "broken.yaml", "data: [1, 2\nmodel: {")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        read_yaml(path)
    assert str(path) in str(info.value)


def test_non_mapping_yaml_names_file(tmp_path: Path):
    path = _yaml(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_yaml_gives_defaults(tmp_path: Path):
    assert load_config(_yaml(tmp_path / "empty.yaml", "")) == Config()


def test_save_config_round_trip(tmp_path: Path):
    config = load_config(overrides=[
        "data.image_size=[96, 128]", "data.palette=[[0, 0, 0], [255, 0, 0]]", "data.root=/data/x",
        "data.mean=[0.5]", "data.std=[0.25]", "loss.name=ce + 0.5*dice", "model.args.decoder_attention_type=scse",
        "run.log_dir=/tmp/runs", "trainer.max_steps=100",
    ])
    path = tmp_path / "out" / "config.yaml"
    save_config(config, path)
    raw = yaml.safe_load(path.read_text())  # plain YAML: lists and strings, no python tags
    assert raw["data"]["image_size"] == [96, 128] and raw["data"]["root"] == "/data/x"
    assert raw["data"]["palette"] == [[0, 0, 0], [255, 0, 0]] and raw["run"]["log_dir"] == "/tmp/runs"
    assert "!!python" not in path.read_text()
    loaded = load_config(path)
    assert loaded == config
    assert loaded.data.image_size == (96, 128) and loaded.data.root == Path("/data/x")
    assert not [p for p in path.parent.iterdir() if p.name != "config.yaml"]  # no temp file left behind


def test_palette_accepts_hex_colours_and_names_a_bad_one():
    from segwise.config import load_config

    config = load_config(None, ['data.palette=["#ff0000", [0, 255, 0]]'], {})
    assert config.data.palette == [(255, 0, 0), (0, 255, 0)]
    with pytest.raises(ConfigError, match=r"data.palette\[1\].*'#rrggbb'"):
        load_config(None, ['data.palette=[[0, 0, 0], "#12345"]'], {})
