"""The smp trainer's command lines run with only the program name replaced (`python3 train.py` → `segwise train`,
`python3 validate.py` → `segwise validate`): its flag spellings and meanings, its class-list rule, its extra
validation sets (a .txt file, --use-only-add-val) and its CSV files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import yaml

from segwise.cli import main
from segwise.cli.flags import DEFAULT_SCALES, config_flags
from segwise.data.io import read_mask, write_png
from segwise.metrics.tables import format_table

pytestmark = pytest.mark.usefixtures("one_thread")


def write_smp_trainer_set(root: Path, value: int = 255, extra: str | None = None,
                          splits: dict[str, int] | None = None, seed: int = 0) -> Path:
    """The smp trainer's layout: `<split>/{images,gt[,extra]}`, same file names, masks of 0 and `value` (a bright
    square on a dark field, so a few steps learn it)."""
    rng = np.random.default_rng(seed)
    for split, count in (splits or {"train": 6, "val": 4}).items():
        for i in range(count):
            mask = np.zeros((32, 32), np.uint8)
            y, x = rng.integers(0, 16, 2)
            mask[y:y + 14, x:x + 14] = value
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            image[mask > 0] += 150
            write_png(root / split / "images" / f"tile_{i}.png", image)
            write_png(root / split / "gt" / f"tile_{i}.png", mask)
            if extra:
                write_png(root / split / extra / f"tile_{i}.png", (mask // 2).astype(np.uint8))
    return root


def run_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """train.sh's command line (its flags, `=` forms and all) on 0/64 masks, CPU, one short epoch."""
    root = tmp_path_factory.mktemp("smp_trainer")
    data = write_smp_trainer_set(root / "water", value=64)
    assert main(["train", f"--dataset={data}", "--batch=2", "--model=deeplabv3+", "--encoder=resnet18",
                 "--augmentation=hard", "--exp-name=resnet18_bsize_2_hard", "-log", str(root / "logs" / "water"),
                 "--workers=0", "--epochs=1", "--class-list=64", "--image-size=32", "--cpu", "-lr", "0.001",
                 "--seed", "42"]) == 0
    return data, root / "logs" / "water" / "resnet18_bsize_2_hard"


def test_train_sh_command_line_trains_with_the_smp_trainer_meanings(binary_run):
    _, run = binary_run
    config = run_config(run)
    assert config["model"]["name"] == "deeplabv3plus"  # -m deeplabv3+
    assert config["data"]["class_values"] == [0, 64]  # background added to --class-list 64
    assert (config["data"]["unmapped"], config["data"]["ignore_index"]) == ("background", -1)
    assert (config["optimizer"]["lr"], config["data"]["augment"], config["data"]["batch_size"]) == (0.001, "hard", 2)
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    rows = read_rows(run / "val_per_epoch.csv")
    assert [row["epoch"] for row in rows] == ["0"] and 0.0 <= float(rows[0]["val/miou"]) <= 1.0


def test_validate_sh_command_line_writes_the_per_image_table(binary_run):
    data, run = binary_run
    assert main(["validate", "-cd", str(run), "-d", str(data / "val"), "--cpu"]) == 0
    out = run / f"{data.name}_val_thres_0.5"  # the smp trainer's default output folder
    rows = read_rows(out / "per_image_metrics.csv")
    assert [row["file"] for row in rows] == [f"tile_{i}.png" for i in range(4)]
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert row["iou"] == row["iou_class_64"] or float(row["iou"]) == pytest.approx(float(row["iou_class_64"]))
    assert (out / "metrics.json").is_file() and not (out / "plots").exists()


def test_validate_flags_plots_binary_raw_tile_size_and_the_smp_csv(binary_run, tmp_path: Path):
    data, run = binary_run
    out = tmp_path / "out"
    assert main(["validate", "-c", str(run / "model.yaml"), "-d", str(data / "val"), "-o", str(out), "-t", "0.3",
                 "--plots", "--binary", "--raw", "--tile-size", "64", "--csv-style", "smp", "--cpu"]) == 0
    text = (out / "_metrics.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "file; iou; accuracy"
    name, iou, accuracy = lines[1].split("; ")
    assert name == "tile_0.png" and "," in iou and "." not in iou and 0 <= float(accuracy.replace(",", ".")) <= 1
    assert len(list((out / "plots").glob("*.png"))) == 4  # every image, not only the worst
    masks = sorted((out / "predictions" / "index").glob("*.png"))
    assert len(masks) == 4 and set(np.unique(read_mask(masks[0]))) <= {0, 1}
    probs = np.load(next((out / "predictions" / "probs").glob("*.npy")))
    assert probs.shape == (2, 32, 32)  # --tile-size changes what the model sees, not the output's size


def test_validate_com_writes_metrics_only_and_refuses_output_flags(binary_run, tmp_path: Path, capsys):
    data, run = binary_run
    assert main(["validate", "-cd", str(run), "-d", str(data / "val"), "-o", str(tmp_path / "m"), "--com",
                 "--cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metrics.csv", "metrics.json",
                                                                 "per_image_metrics.csv"]
    assert main(["validate", "-cd", str(run), "-d", str(data / "val"), "--com", "--plots"]) == 2
    assert "--com" in capsys.readouterr().err


def test_validate_takes_an_smp_trainer_checkpoint_directory(tmp_path: Path):
    """`-cd` on the smp trainer's experiment folder: its `<exp-name>.pth` is converted (no pickled code runs) and
    validated; the single sigmoid logit becomes P(class 1)."""
    data = write_smp_trainer_set(tmp_path / "data", splits={"val": 2})
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=1)
    exp = tmp_path / "logs" / "exp"
    exp.mkdir(parents=True)
    torch.save({"epoch": 3, "model_state_dict": model.state_dict(), "model_name": "unet", "encoder_name": "resnet18",
                "activation": "sigmoid", "class_list": [255], "add_dirs": [],
                "mean_var": [np.full(3, 60.0), np.full(3, 40.0)], "device": "cpu"}, exp / "exp.pth")
    assert main(["validate", "-cd", str(exp), "-d", str(data / "val"), "--cpu"]) == 0
    out = exp / "data_val_thres_0.5"
    assert (out / "model" / "model.yaml").is_file()
    assert len(read_rows(out / "per_image_metrics.csv")) == 2


def test_extra_channel_default_class_list_add_val_txt_and_use_only_add_val(tmp_path: Path):
    """0/255 masks with no --class-list (the smp trainer's default "255"), an extra channel folder, extra validation
    sets from a .txt file and selection on their size-weighted mean IoU."""
    data = write_smp_trainer_set(tmp_path / "ds", extra="nir", splits={"train": 6, "val": 2, "a": 2, "b": 4})
    listing = tmp_path / "add_val.txt"
    listing.write_text(f"{data / 'a'}\n\n{data / 'b'}\n")
    assert main(["train", "-d", str(data), "-b", "2", "-m", "unet", "--encoder", "resnet18", "-a", "light",
                 "--add-dirs", "nir", "--add-val-dirs", str(listing), "--use-only-add-val", "--exp-name", "nir",
                 "-log", str(tmp_path / "logs"), "-w", "0", "-e", "2", "--cpu"]) == 0
    run = tmp_path / "logs" / "nir"
    config, spec = run_config(run), yaml.safe_load((run / "model.yaml").read_text())
    assert (spec["in_channels"], spec["binary"], spec["class_names"]) == (4, True, ["background", "foreground"])
    assert config["trainer"]["monitor"] == "val_extra/miou"
    rows = read_rows(run / "val_per_epoch.csv")
    assert [row["epoch"] for row in rows] == ["0", "1"] and "val/miou" not in rows[0]  # val/ was never read
    for row in rows:
        weighted = (2 * float(row["val_a/miou"]) + 4 * float(row["val_b/miou"])) / 6
        assert float(row["val_extra/miou"]) == pytest.approx(weighted, abs=1e-5)
    # resuming for one more epoch keeps the table's rows, without repeating any
    assert main(["train", str(data), "--encoder", "resnet18", "--add-dirs", "nir", "--add-val-dirs", str(listing),
                 "--use-only-add-val", "--name", "nir", "--log-dir", str(tmp_path / "logs"), "-b", "2", "-w", "0", "-e", "3", "--cpu",
                 "-a", "light"]) == 0
    assert [row["epoch"] for row in read_rows(run / "val_per_epoch.csv")] == ["0", "1", "2"]


# ---- flags alone (no training) ----------------------------------------------------------------------------------
def _flags(*argv: str) -> dict:
    from segwise.cli import build_parser

    return config_flags(build_parser().parse_args(["train", "data", *argv]))


@pytest.mark.parametrize(("given", "values"), [("64", [0, 64]), ("255", [0, 255]), ("1 2 5", [0, 1, 2, 5]),
                                               ("0,100,200", [0, 100, 200])])
def test_class_list_adds_background_and_makes_other_values_background(given: str, values: list[int]):
    keys = _flags("--class-list", given)
    assert keys["data.class_values"] == values
    assert (keys["data.unmapped"], keys["data.ignore_index"]) == ("background", -1)


def test_max_mask_val_reads_like_the_smp_trainer():
    keys = _flags("--max-mask-val", "3")
    assert keys["data.max_mask_value"] == 3 and keys["data.unmapped"] == "background"


def test_set_still_wins_over_the_class_list_meaning(tmp_path: Path):
    from segwise.cli import build_parser
    from segwise.cli.flags import load_args_config

    args = build_parser().parse_args(["train", str(tmp_path), "--class-list", "0", "1", "--set",
                                      "data.ignore_index=255", "--set", "data.unmapped=error"])
    data = load_args_config(args, tmp_path).data
    assert (data.class_values, data.ignore_index, data.unmapped) == ([0, 1], 255, "error")


def test_add_val_dirs_reads_a_txt_file_and_names_a_missing_one(tmp_path: Path):
    listing = tmp_path / "dirs.txt"
    listing.write_text("# extra sets\n/data/rg3/val\n\nother/val\n")
    assert _flags("--add-val-dirs", str(listing))["data.extra_val_splits"] == ["/data/rg3/val", "other/val"]
    assert _flags("--add-val-dirs", "a", "b")["data.extra_val_splits"] == ["a", "b"]
    with pytest.raises(Exception, match="no such file"):
        _flags("--add-val-dirs", str(tmp_path / "missing.txt"))


def test_use_only_add_val_needs_extra_sets(tmp_path: Path, capsys):
    assert main(["train", str(tmp_path), "--use-only-add-val"]) == 2
    assert "--add-val-dirs" in capsys.readouterr().err


def test_dataset_flag_and_positional(tmp_path: Path, capsys):
    assert main(["train", "--cpu"]) == 2
    assert "-d/--dataset" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "a"), "-d", str(tmp_path / "b")]) == 2
    assert "two data sets" in capsys.readouterr().err


def test_train_help_shows_the_smp_trainer_spellings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for spelling in ("-lr", "-log", "-val", "--augmentation", "-d DATASET", "--use-only-add-val", "--add-val-dirs",
                     "--class-list", "--max-mask-val", "--exp-name", "--adv-freq", "--csv-style"):
        assert spelling in text, spelling


def test_scales_default_is_pytorch_segmentations_set():
    from segwise.cli import build_parser

    args = build_parser().parse_args(["predict", "run", "img.png", "-o", "out", "--scales", "default"])
    assert args.scales == list(DEFAULT_SCALES) == [0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


def test_table_styles():
    rows = [["a.png", 0.5, float("nan")], ["b.png", 0.25, 1.0]]
    assert format_table(["file", "iou", "accuracy"], rows) == "file,iou,accuracy\na.png,0.5,\nb.png,0.25,1.0\n"
    assert format_table(None, [[3, 0.12345]], "smp") == "3; 0,1235\n"


# ---- pytorch-segmentation's held-out validation share ---------------------------------------------------------
def test_val_fraction_holds_out_the_same_files_and_keeps_them_when_files_are_added():
    from segwise.data.folder import Sample
    from segwise.engine.splits import hold_out

    samples = [Sample(f"img_{i:03d}", Path(f"{i}.png"), Path(f"{i}_m.png")) for i in range(200)]
    kept, held = hold_out(samples, 0.2)
    assert len(kept) + len(held) == 200 and not {s.name for s in kept} & {s.name for s in held}
    assert 20 <= len(held) <= 60
    more = samples + [Sample(f"new_{i}", Path(f"n{i}.png"), Path(f"n{i}_m.png")) for i in range(50)]
    assert {s.name for s in held} <= {s.name for s in hold_out(more, 0.2)[1]}
    assert [len(side) for side in hold_out(samples[:2], 0.01)] == [1, 1]  # both sides keep one


def test_config_json_val_split_becomes_val_fraction(tmp_path: Path):
    from segwise.convert.pytorch_segmentation import translate_config

    path = tmp_path / "config.json"
    path.write_text('{"name": "x", "arch": {"type": "FCN8"}, "train_loader": {"type": "VOC", "args": {'
                    '"data_dir": "d", "batch_size": 2, "val_split": 0.1}}}')
    assert translate_config(path).nested()["data"]["val_fraction"] == 0.1


def test_prepare_data_validates_on_the_held_out_share(synthetic_root: Path):
    from segwise.config import DataConfig
    from segwise.tasks.semantic.data import prepare_data

    prepared = prepare_data(DataConfig(root=synthetic_root, val_fraction=0.25, num_classes=4))
    held = prepared.vals["val"]
    assert len(prepared.train) + len(held) == 24 and all(s.image.parent.parent.name == "train" for s in held)


def test_eval_per_image_writes_the_same_table(binary_run, tmp_path: Path):
    data, run = binary_run
    assert main(["eval", str(run), str(data / "val"), "-o", str(tmp_path / "e"), "--per-image", "--metrics-only",
                 "--device", "cpu"]) == 0
    rows = read_rows(tmp_path / "e" / "per_image_metrics.csv")
    assert list(rows[0]) == ["file", "iou", "accuracy", "iou_class_0", "iou_class_64"] and len(rows) == 4


@pytest.mark.parametrize(("argv", "key", "value"), [
    (["-m", "deeplabv3+"], "model.name", "deeplabv3+"),  # the registry reads this spelling (check_names)
    (["--encoder", "efficientnet-b0"], "model.encoder", "efficientnet-b0"),
    (["--image-size", "512"], "data.image_size", [512, 512]),
    (["--exp-name", "water"], "run.name", "water"),
    (["-b", "6"], "data.batch_size", 6), (["--batch", "6"], "data.batch_size", 6),
    (["-lr", "0.01"], "optimizer.lr", 0.01),
    (["-e", "50"], "trainer.max_epochs", 50), (["--epochs", "50"], "trainer.max_epochs", 50),
    (["-a", "medium"], "data.augment", "medium"), (["--augmentation", "one"], "data.augment", "one"),
    (["-w", "1"], "data.num_workers", 1), (["--workers", "1"], "data.num_workers", 1),
    (["--add-dirs", "nir kv"], "data.extra_channels", ["nir", "kv"]),
    (["-log", "./logs/"], "run.log_dir", Path("./logs/")), (["--log-dir", "l"], "run.log_dir", Path("l")),
    (["-val", "/data/val"], "data.val_split", "/data/val"), (["--val-dir", "v"], "data.val_split", "v"),
    (["--add-val-dirs", "a"], "data.extra_val_splits", ["a"]), (["--adv-freq", "3"], "data.extra_val_every", 3),
    (["--use-only-add-val"], "data.extra_val_only", True), (["--cpu"], "trainer.accelerator", "cpu"),
    (["--device", "cuda"], "trainer.accelerator", "cuda"), (["--seed", "42"], "trainer.seed", 42),
    (["--csv-style", "smp"], "run.csv_style", "smp"),
])
def test_every_smp_trainer_train_flag_sets_its_key(argv: list[str], key: str, value):
    assert _flags(*argv)[key] == value


def test_the_smp_trainer_model_spelling_is_stored_as_segwises_name():
    from segwise.config import Config
    from segwise.engine.run import check_names

    config = Config.model_validate({"model": {"name": "deeplabv3+", "encoder": "resnet18"}})
    check_names(config, ("semantic",))
    assert config.model.name == "deeplabv3plus"
