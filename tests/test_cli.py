"""The `segwise` command, run in-process: help texts, `models`, `data synth` + `data check`, error exit codes."""

import re
from pathlib import Path

import pytest

from segwise.cli import build_parser, main


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        ([], ["train", "eval", "predict", "data", "models"]),
        (["train"], ["--class-list", "--max-mask-val", "--add-dirs", "--add-val-dirs", "--adv-freq", "--set",
                     "--config", "--image-size", "--encoder-weights", "--no-resume", "--name"]),
        (["eval"], ["--threshold", "--plots", "--metrics-only", "--save", "--out", "--device"]),
        (["predict"], ["--threshold", "--save", "--out"]),
        (["data"], ["check", "synth"]),
        (["data", "check"], ["--class-list", "--max-mask-val", "--add-dirs", "--set", "--config"]),
        (["data", "synth"], ["--train", "--val", "--test", "--size", "--seed"]),
        (["models"], ["usage: segwise models"]),
    ],
)
def test_help_exits_zero_and_lists_flags(argv, flags, capsys):
    text = _help(argv, capsys)
    assert text.startswith(f"usage: segwise {' '.join(argv)}".rstrip())
    for flag in flags:
        assert flag in text, flag


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_train_flags_map_to_config_keys():
    args = build_parser().parse_args([
        "train", "data", "--class-list", "0,128 255", "--max-mask-val", "3", "--add-dirs", "nir,dsm",
        "--add-val-dirs", "val_a val_b", "--adv-freq", "2", "--image-size", "384x512", "--crop-size", "256",
        "--set", "a.b=1", "--set", "c=2", "--exp-name", "exp", "--device", "cpu",
    ])
    assert args.class_list == [0, 128, 255] and args.max_mask_val == 3 and args.add_dirs == ["nir", "dsm"]
    assert args.add_val_dirs == ["val_a", "val_b"] and args.adv_freq == 2
    assert args.image_size == [384, 512] and args.crop_size == [256, 256]
    assert args.overrides == ["a.b=1", "c=2"] and args.name == "exp" and args.accelerator == "cpu"


def test_models_lists_architectures_and_encoders(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+unet\s+smp\s+\(takes --encoder\)$", out, re.M)
    assert re.search(r"^\s+deeplabv3plus\s", out, re.M)
    assert "resnet18" in out and "tu-<name>" in out


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    assert main(["data", "synth", str(root), "--train", "3", "--val", "2", "--test", "1", "--size", "32"]) == 0
    return root


def test_data_synth_then_check(synth_dir: Path, capsys):
    assert sorted(p.name for p in (synth_dir / "train" / "images").iterdir()) == [
        "train_0000.png", "train_0001.png", "train_0002.png"]
    capsys.readouterr()
    assert main(["data", "check", str(synth_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 split(s) valid." in out and "== train (3 samples) ==" in out
    train = out.split("== train (3 samples) ==")[1].split("\n\n")[0]
    rows = re.finditer(r"^\d+ (\w+)\s+([\d,]+)\s+[\d.]+%$", train, re.M)
    counts = {m[1]: int(m[2].replace(",", "")) for m in rows}
    assert list(counts) == ["background", "disc", "polygon", "line"]  # names from the set's dataset.yaml
    assert sum(counts.values()) == 3 * 32 * 32 and counts["background"] > 0


def test_data_check_one_split_with_flags(synth_dir: Path, capsys):
    assert main(["data", "check", str(synth_dir / "val"), "--classes", "bg,a,b,c"]) == 0
    out = capsys.readouterr().out
    assert "1 split(s) valid." in out and "0 bg" in out and "3 c" in out


def test_data_check_missing_mask_exits_2(synth_dir: Path, tmp_path: Path, capsys):
    broken = tmp_path / "broken"
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            (broken / split / kind).mkdir(parents=True)
            for path in (synth_dir / split / kind).iterdir():
                (broken / split / kind / path.name).write_bytes(path.read_bytes())
    (broken / "train" / "masks" / "train_0001.png").unlink()
    assert main(["data", "check", str(broken), "--num-classes", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("segwise data: error:")
    assert "train_0001.png" in captured.err and "no mask" in captured.err
    assert "Traceback" not in captured.err and "split(s) valid" not in captured.out


def test_train_unknown_set_key_exits_2_with_suggestion(synth_dir: Path, tmp_path: Path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", str(synth_dir), "--log-dir", str(runs), "--set", "trainer.max_epoch=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("segwise train: error:")
    assert "unknown key 'trainer.max_epoch'" in err and "did you mean 'trainer.max_epochs'" in err
    assert not runs.exists()  # nothing was started


def test_train_bad_value_and_missing_config_exit_2(synth_dir: Path, tmp_path: Path, capsys):
    assert main(["train", str(synth_dir), "--set", "data.batch_size=abc"]) == 2
    assert "data.batch_size = 'abc'" in capsys.readouterr().err
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(synth_dir), "--config", str(missing)]) == 2
    assert f"config file {missing} does not exist" in capsys.readouterr().err


def test_list_flags_take_words_or_commas():
    args = build_parser().parse_args(["train", "d", "--add-dirs", "nir", "dsm", "--class-list", "0,100", "200",
                                      "--add-val-dirs", "a,b"])
    assert args.add_dirs == ["nir", "dsm"] and args.class_list == [0, 100, 200] and args.add_val_dirs == ["a", "b"]


def test_misspelt_optimizer_fails_before_any_run_directory(synth_dir: Path, tmp_path: Path, capsys):
    code = main(["train", str(synth_dir), "--log-dir", str(tmp_path), "--name", "x", "--set", "optimizer.name=adamm"])
    assert code == 2
    assert "AdamW" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_no_resume_refuses_an_existing_run(synth_dir: Path, tmp_path: Path, capsys):
    (tmp_path / "x" / "checkpoints").mkdir(parents=True)
    (tmp_path / "x" / "checkpoints" / "last.ckpt").write_bytes(b"")
    code = main(["train", str(synth_dir), "--log-dir", str(tmp_path), "--name", "x", "--no-resume"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
