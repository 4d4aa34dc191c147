"""The `segwise` command, run in-process: help texts, one flag vocabulary (aliases included), `models`,
`data synth` + `data check`, error exit codes."""

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from segwise.cli import COMMAND_MODULES, build_parser, main
from segwise.cli.flags import config_flags, saved_kinds
from segwise.data.io import read_mask, write_png
from tests.helpers import save_untrained_trimap_run


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        ([], ["train", "eval", "predict", "data", "trimap", "sketch", "rle", "export", "convert", "models"]),
        (["train"], ["--class-list", "--max-mask-val", "--add-dirs", "--add-val-dirs", "--adv-freq", "--set",
                     "--config", "--image-size", "--encoder-weights", "--no-resume", "--name", "--format", "--device",
                     "--accelerator", "as the smp trainer reads them"]),
        (["eval"], ["--threshold", "--plots", "--metrics-only", "--save", "--out", "--device", "--format",
                    "default RUN/eval"]),
        (["predict"], ["--threshold", "--save", "--out", "--format", "--rle-class", "pytorch-segmentation"]),
        (["data"], ["check", "synth", "tile"]),
        (["data", "check"], ["--class-list", "--max-mask-val", "--add-dirs", "--set", "--config", "--format"]),
        (["data", "synth"], ["--train", "--val", "--test", "--size", "--seed"]),
        (["data", "tile"], ["--format", "folder, isaid", "--size", "--stride"]),
        (["trimap", "train"], ["--vit-size", "--encoder-weights", "--device", "--accelerator"]),
        (["trimap", "predict"], ["--save", "--overlay", "same as --save overlay", "--device"]),
        (["trimap", "eval"], ["--save", "default RUN/eval", "--matte", "per-row averaging"]),
        (["sketch", "eval"], ["--max-per-category", "--limit", "--device"]),
        (["rle", "encode"], ["--rle-class", "--class"]),
        (["models"], ["usage: segwise models", "--filter", "--encoders"]),
    ],
)
def test_help_exits_zero_and_lists_flags(argv, flags, capsys):
    text = _help(argv, capsys)
    assert text.startswith(f"usage: segwise {' '.join(argv)}".rstrip())
    for flag in flags:
        assert flag in " ".join(text.split()), flag


def _all_help_texts() -> list[str]:
    parser = build_parser()
    texts, stack = [], [parser]
    while stack:
        current = stack.pop()
        texts.append(current.format_help())
        for action in current._actions:
            if isinstance(action.choices, dict):
                stack.extend(action.choices.values())
    return texts


def test_help_names_systems_not_codes():
    """Help texts name the systems (the trimap ViT, pytorch-segmentation, the smp trainer), not S1/S2/S3."""
    texts = _all_help_texts()
    assert len(texts) > 20
    assert [t.splitlines()[0] for t in texts if re.search(r"\bS\d\b", t)] == []


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_every_subcommand_has_a_handler():
    parse = build_parser().parse_args
    for argv in (["train", "d"], ["eval", "m", "d"], ["predict", "m", "i", "-o", "o"], ["data", "check", "d"],
                 ["data", "synth", "o"], ["data", "tile", "s", "o"], ["trimap", "train", "d"],
                 ["trimap", "predict", "m", "i", "-o", "o"], ["trimap", "eval", "m", "d"],
                 ["sketch", "prepare", "-o", "o"], ["sketch", "train-embed", "d"],
                 ["sketch", "train", "d", "--embed", "e"],
                 ["sketch", "eval", "m", "d"], ["sketch", "predict", "m", "i", "-o", "o"],
                 ["rle", "encode", "m", "-o", "c"], ["rle", "decode", "c", "--shape", "4", "-o", "o"],
                 ["export", "m", "-o", "x"], ["convert", "factseg", "c", "o"], ["models"]):
        assert callable(parse(argv).handler), argv
    assert len({module.register for module in COMMAND_MODULES}) == len(COMMAND_MODULES)


def test_train_flags_map_to_config_keys():
    args = build_parser().parse_args([
        "train", "data", "--class-list", "0,128 255", "--max-mask-val", "3", "--add-dirs", "nir,dsm",
        "--add-val-dirs", "val_a val_b", "--adv-freq", "2", "--image-size", "384x512", "--crop-size", "256",
        "--set", "a.b=1", "--set", "c=2", "--exp-name", "exp", "--device", "cpu", "--format", "isaid",
    ])
    assert args.overrides == ["a.b=1", "c=2"]
    assert config_flags(args) == {
        "data.class_values": [0, 128, 255], "data.max_mask_value": 3, "data.extra_channels": ["nir", "dsm"],
        "data.extra_val_splits": ["val_a", "val_b"], "data.extra_val_every": 2, "data.image_size": [384, 512],
        "data.crop_size": [256, 256], "run.name": "exp", "trainer.accelerator": "cpu", "data.format": "isaid",
        "data.unmapped": "background", "data.ignore_index": -1}  # the smp trainer's class-list meaning


@pytest.mark.parametrize(
    ("argv", "keys"),
    [
        (["--device", "cpu"], {"trainer.accelerator": "cpu"}),
        (["--device", "cuda"], {"trainer.accelerator": "cuda"}),
        (["--device", "cuda:1"], {"trainer.accelerator": "cuda", "trainer.devices": "1,"}),
        (["--device", "mps"], {"trainer.accelerator": "mps"}),
        (["--accelerator", "gpu", "--devices", "2"], {"trainer.accelerator": "gpu", "trainer.devices": 2}),
        (["--cpu"], {"trainer.accelerator": "cpu"}),
    ],
)
def test_device_means_a_torch_device_everywhere(argv, keys):
    """`--device` is a torch device in every command; training turns it into trainer.accelerator/devices."""
    parse = build_parser().parse_args
    for command in (["train", "d"], ["trimap", "train", "d"], ["sketch", "train-embed", "d"]):
        assert config_flags(parse([*command, *argv])) == keys
    if argv[0] == "--device":
        for command in (["eval", "m", "d"], ["predict", "m", "i", "-o", "o"], ["trimap", "eval", "m", "d"],
                        ["sketch", "predict", "m", "i", "-o", "o"]):
            assert parse([*command, *argv]).device == argv[1]


@pytest.mark.parametrize("argv", [["--device", "gpu"], ["--device", "auto"],
                                  ["--device", "cpu", "--accelerator", "gpu"], ["--cpu", "--device", "cpu"]])
def test_device_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "d", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--accelerator" in err and "Traceback" not in err


def test_one_gpu_with_several_devices_is_one_line_error(capsys):
    assert main(["train", "d", "--device", "cuda:1", "--devices", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segwise train: error: --device cuda:1 names one device") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "kinds"),
    [
        (["predict", "m", "i", "-o", "o"], {"index", "color", "overlay"}),
        (["predict", "m", "i", "-o", "o", "--save"], set()),
        (["predict", "m", "i", "-o", "o", "--save", "probs", "index"], {"probs", "index"}),
        (["eval", "m", "d"], set()),
        (["eval", "m", "d", "--save"], {"index"}),
        (["eval", "m", "d", "--save", "color"], {"color"}),
        (["trimap", "predict", "m", "i", "-o", "o"], {"index"}),
        (["trimap", "predict", "m", "i", "-o", "o", "--save", "overlay"], {"overlay"}),
        (["trimap", "predict", "m", "i", "-o", "o", "--overlay"], {"index", "overlay"}),
        (["trimap", "eval", "m", "d"], set()),
        (["trimap", "eval", "m", "d", "--save"], {"index"}),
        (["trimap", "eval", "m", "d", "--save", "index"], {"index"}),
    ],
)
def test_save_takes_output_kinds_everywhere(argv, kinds):
    assert saved_kinds(build_parser().parse_args(argv)) == kinds


@pytest.fixture(scope="module")
def trimap_run(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained one-block trimap ViT saved as a run directory, and two synthetic mattes to run it on."""
    from segwise.data.matting import make_synthetic_matting

    root = make_synthetic_matting(tmp_path_factory.mktemp("mattes"), num_train=0, num_val=2, size=32, seed=0)
    return save_untrained_trimap_run(tmp_path_factory.mktemp("runs")), root / "val"


def test_trimap_predict_overlay_alias_does_what_save_overlay_does(trimap_run, tmp_path):
    run, val = trimap_run
    for name, flags in (("alias", ["--overlay"]), ("save", ["--save", "overlay"])):
        assert main(["trimap", "predict", str(run), str(val), "-o", str(tmp_path / name), "--device", "cpu",
                     *flags]) == 0
    written = {name: sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*.png"))
               for name in ("alias", "save")}
    assert written["alias"] == written["save"] and len(written["save"]) == 4
    assert sum(p.parts[0] == "overlay" for p in written["save"]) == 2
    for path in written["save"]:
        assert (tmp_path / "alias" / path).read_bytes() == (tmp_path / "save" / path).read_bytes()


def test_trimap_eval_writes_into_run_eval(trimap_run, capsys):
    run, val = trimap_run
    assert main(["trimap", "eval", str(run), str(val), "--save", "--device", "cpu"]) == 0
    assert "Unknown" in capsys.readouterr().out
    assert (run / "eval" / "trimap_metrics.json").is_file()  # RUN/eval, as for `segwise eval` and `sketch eval`
    assert len(list((run / "eval" / "val").glob("*.png"))) == 2


def test_rle_class_is_one_flag_with_class_as_alias(tmp_path):
    masks = tmp_path / "masks"
    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(masks / f"m{i}.png", rng.integers(0, 3, (9, 7), dtype=np.uint8))
    for flag in ("--class", "--rle-class"):
        assert main(["rle", "encode", str(masks), "-o", str(tmp_path / f"{flag}.csv"), flag, "2"]) == 0
    assert (tmp_path / "--class.csv").read_text() == (tmp_path / "--rle-class.csv").read_text()
    assert len((tmp_path / "--class.csv").read_text().splitlines()) == 2
    assert build_parser().parse_args(["predict", "m", "i", "-o", "o", "--rle-class", "2"]).rle_class == 2


def test_sketch_limit_is_max_per_category():
    parse = build_parser().parse_args
    assert parse(["sketch", "eval", "m", "d", "--limit", "3"]).max_per_category == 3
    assert parse(["sketch", "eval", "m", "d", "--max-per-category", "3"]).max_per_category == 3
    args = parse(["sketch", "train", "d", "--embed", "e", "--model", "stroke_classifier", "--max-per-category", "4"])
    assert config_flags(args) == {"segment.model": "stroke_classifier", "data.max_per_category": 4}


def test_trimap_train_old_flag_spellings():
    args = build_parser().parse_args(["trimap", "train", "d", "--size", "tiny", "--weights", "w.pth"])
    assert config_flags(args) == {"model.args.size": "tiny", "model.encoder_weights": "w.pth"}


@pytest.mark.parametrize("argv", [["train", "d"], ["eval", "m", "d"], ["predict", "m", "i", "-o", "o"],
                                  ["data", "check", "d"], ["data", "tile", "s", "o"]])
def test_format_choices_are_the_reader_table(argv, capsys):
    from segwise.data.readers import READERS

    parse = build_parser().parse_args
    for name in READERS:
        assert parse([*argv, "--format", name]).format == name
    with pytest.raises(SystemExit):
        parse([*argv, "--format", "voc2"])
    error = capsys.readouterr().err
    assert "invalid choice: 'voc2' (choose from 'ade20k', 'camvid'" in error and "'folder', 'isaid'" in error


def test_models_groups_by_task_with_counts_and_encoders(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    headings = re.findall(r"^(\w+) models, trained by `(segwise [\w -]+)`:$", out, re.M)
    assert headings == [("semantic", "segwise train"), ("trimap", "segwise trimap train"),
                        ("sketch_embed", "segwise sketch train-embed"), ("sketch", "segwise sketch train")]
    blocks = dict(zip([task for task, _ in headings], re.split(r"^\w+ models, trained by .*$", out, flags=re.M)[1:]))
    assert re.search(r"^\s+unet\s+smp\s+14\.3 M\s+any$", blocks["semantic"], re.M)
    assert re.search(r"^\s+dpt\s+smp\s+[\d.]+ M\s+tu-<timm> only", blocks["semantic"], re.M)
    assert re.search(r"^\s+enet\s+classic\s+0\.36 M\s+none", blocks["semantic"], re.M)
    assert re.search(r"^\s+trimap_vit\s+segwise\s+[\d.]+ M\s+none", blocks["trimap"], re.M)
    assert "contextseg " in blocks["sketch"] and "contextseg" not in blocks["semantic"]


def test_models_filter_and_encoders(capsys):
    assert main(["models", "--filter", "UNET"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^  (\w+) ", out, re.M) == ["name", "unet", "unet_classic", "unetplusplus"]
    assert main(["models", "--encoders", "--filter", "resnet1"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "resnet101" in out and "efficientnet" not in out and "tu-<name>" in out
    assert main(["models", "--filter", "nothing_like_this"]) == 2
    assert "no model name contains 'nothing_like_this'" in capsys.readouterr().err


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


def test_train_refuses_a_model_of_another_task(synth_dir: Path, tmp_path: Path, capsys):
    assert main(["train", str(synth_dir), "--model", "contextseg", "--log-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("segwise train: error:") and "Traceback" not in err
    assert "'contextseg' is a sketch model" in err and "`segwise sketch train`" in err
    assert not list(tmp_path.iterdir())


def test_train_unknown_loss_term_is_one_line(synth_dir: Path, tmp_path: Path, capsys):
    assert main(["train", str(synth_dir), "--loss", "ce + focal_bce", "--log-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown loss 'focal_bce'" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_train_on_device_cpu(synth_dir: Path, tmp_path: Path, capsys, one_thread):
    """`--device cpu` trains on the CPU (one step) and the run's config says trainer.accelerator: cpu."""
    assert main(["train", str(synth_dir), "--device", "cpu", "--steps", "1", "-b", "2", "-w", "0", "--name", "cpu",
                 "--log-dir", str(tmp_path), "--set", "trainer.progress_bar=false", "--set", "trainer.log_images=0",
                 "--set", "trainer.log_worst_images=0"]) == 0
    assert "run directory" in capsys.readouterr().out
    trainer = yaml.safe_load((tmp_path / "cpu" / "config.yaml").read_text())["trainer"]
    assert trainer["accelerator"] == "cpu" and trainer["devices"] == 1
    assert (tmp_path / "cpu" / "model.safetensors").is_file()


@pytest.mark.parametrize(("model", "flags"), [
    ("segresnet", ["--encoder", "tu-test_resnet"]),
    ("unet_classic", ["--set", "model.args.base_channels=4"]),
    ("pspnet_dilated", ["--encoder", "tu-test_resnet"]),  # trained with its auxiliary loss, exported without it
])
def test_classic_model_trains_predicts_and_exports(model: str, flags: list[str], synth_dir: Path, tmp_path: Path,
                                                    capsys, one_thread):
    """`segwise train --model NAME` → `predict` → `export`: one step on the 32×32 synthetic set, labels at the
    image size, an ONNX graph that matches torch."""
    assert main(["train", str(synth_dir), "--model", model, *flags, "--device", "cpu", "--steps", "1", "-b", "2",
                 "-w", "0", "--name", model, "--log-dir", str(tmp_path), "--set", "trainer.progress_bar=false",
                 "--set", "trainer.log_images=0", "--set", "trainer.log_worst_images=0"]) == 0
    run = tmp_path / model
    assert main(["predict", str(run), str(synth_dir / "test"), "-o", str(tmp_path / "pred"), "--device", "cpu",
                 "--save", "index"]) == 0
    assert read_mask(tmp_path / "pred" / "index" / "test_0000.png").shape == (32, 32)
    # Static (fast; dynamic axes are checked by the contract's slow ONNX rows) at 64, not the images' 32: at one
    # input stride the deepest maps are 1×1, which torch.export specialises
    assert main(["export", str(run), "-o", str(tmp_path / "model.onnx"), "--size", "64", "--static"]) == 0
    assert "100.00 % of pixels" in capsys.readouterr().out and (tmp_path / "model.onnx").is_file()
