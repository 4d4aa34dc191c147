"""The command line's one vocabulary: every flag that more than one subcommand takes is declared here, once.

A flag means the same thing wherever it appears (`--device` is always a torch device, `--save` always takes output
kinds, `--rle-class` always names the run-length encoded class), and flags that set config keys go through one
table, `CONFIG_KEYS`. Nothing here imports torch: config errors come before any heavy import.
"""

from __future__ import annotations

import argparse
import sys
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from segwise.errors import ConfigError

# flag destination → dotted config key; everything else is reachable with --config FILE and --set key=value
CONFIG_KEYS: dict[str, str] = {
    "model": "model.name", "encoder": "model.encoder", "encoder_weights": "model.encoder_weights",
    "vit_size": "model.args.size", "segment_model": "segment.model", "loss": "loss.name",
    "format": "data.format", "image_size": "data.image_size", "crop_size": "data.crop_size",
    "classes": "data.class_names", "num_classes": "data.num_classes", "class_list": "data.class_values",
    "max_mask_val": "data.max_mask_value", "add_dirs": "data.extra_channels", "augment": "data.augment",
    "val_dir": "data.val_split", "add_val_dirs": "data.extra_val_splits", "adv_freq": "data.extra_val_every",
    "use_only_add_val": "data.extra_val_only", "csv_style": "run.csv_style",
    "categories": "data.categories", "max_per_category": "data.max_per_category", "canvas": "data.canvas",
    "batch": "data.batch_size", "workers": "data.num_workers", "lr": "optimizer.lr", "epochs": "trainer.max_epochs",
    "steps": "trainer.max_steps", "max_time": "trainer.max_time", "accelerator": "trainer.accelerator",
    "devices": "trainer.devices", "num_nodes": "trainer.num_nodes",
    "precision": "trainer.precision", "seed": "trainer.seed", "name": "run.name", "log_dir": "run.log_dir",
}
SAVE_KINDS = ("index", "color", "overlay", "probs")
# pytorch-segmentation's inference.py multiscale set, `--scales default`
DEFAULT_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
CSV_STYLES = ("plain", "smp")
DEVICE = re.compile(r"(cpu|mps|cuda(:\d+)?)")
BYTES = {"": 2**30, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def duration(text: str) -> float:
    """`30m`, `2h`, `1h30m`, `90s` or `45` (minutes) → seconds, as an argparse type."""
    from segwise.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def memory_size(text: str) -> int:
    """`8GB`, `8G`, `512MB` or `8` (GiB) → bytes (powers of 1024)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size: give e.g. 8GB, 512MB or 16G")
    return int(float(match[1]) * BYTES[match[2]])


class ListAction(argparse.Action):
    """`--add-dirs nir dsm`, `--add-dirs nir,dsm` and `--add-dirs "nir dsm"` all give ['nir', 'dsm']."""

    def __init__(self, *args: Any, cast: type = str, **kwargs: Any) -> None:
        self.cast = cast
        super().__init__(*args, nargs="+", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        words = [w for value in values for w in value.replace(",", " ").split()]
        try:
            setattr(namespace, self.dest, [self.cast(w) for w in words])
        except ValueError:
            parser.error(f"{option_string}: expected {self.cast.__name__} values, got {' '.join(values)!r}")


class ScalesAction(ListAction):
    """`--scales 0.75 1 1.25`, or `--scales default` for pytorch-segmentation's set (`DEFAULT_SCALES`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, cast=float, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if [v.strip().lower() for v in values] == ["default"]:
            setattr(namespace, self.dest, list(DEFAULT_SCALES))
        else:
            super().__call__(parser, namespace, values, option_string)


class LazyChoices:
    """Choices read from a table only when a value is checked or help is printed, so that building the parser
    imports nothing heavy (the reader table's package imports torch)."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self.load = load

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.load()))

    def __contains__(self, value: object) -> bool:
        return value in set(self.load())


def size(text: str) -> list[int]:
    """`512` → [512, 512]; `384x512` or `384,512` → [384, 512] (height, width); sides are positive whole pixels."""
    words = text.replace("x", " ").replace(",", " ").split()
    if not 1 <= len(words) <= 2 or not all(w.isdigit() and int(w) > 0 for w in words):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give H or HxW in whole pixels of at least 1, "
                                         "e.g. 512 or 384x512")
    values = [int(w) for w in words]
    return values * 2 if len(values) == 1 else values


def positive_int(text: str) -> int:
    """A whole number of at least 1 (counts and limits)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def whole_number(text: str) -> int:
    """A whole number of at least 0 (thread counts, where 0 means none)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return int(text)


def device(text: str) -> str:
    """A torch device string, the one meaning of `--device` in every subcommand."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device: use cpu, cuda, cuda:N or mps (training "
                                         "takes the device kind, e.g. gpu, as --accelerator)")
    return text


def _reader_names() -> Iterable[str]:
    from segwise.data.readers import READERS

    return READERS


# ---- flag groups ------------------------------------------------------------------------------------------------
def add_device_flag(parser: Any, default_text: str = "CUDA when available") -> None:
    parser.add_argument("--device", type=device, help=f"torch device: cpu, cuda, cuda:1, mps (default: {default_text})")


def add_format_flag(parser: Any, default: str | None = None) -> None:
    """`--format`: the data-set layout, a key of `segwise.data.readers.READERS` (config key data.format)."""
    where = f"default {default}" if default else "default: data.format of the config, else folder"
    parser.add_argument("--format", choices=LazyChoices(_reader_names), default=default, metavar="FORMAT",
                        help=f"data-set layout: %(choices)s ({where}); isaid reads iSAID's colour masks")


def add_config_flags(group: Any, sections: str, example: str) -> None:
    group.add_argument("--config", type=Path, help=f"YAML config file ({sections})")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override any config key, e.g. --set {example} (repeatable)")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Layout, classes and channels of a pixel data set, plus the config file: train, data check, data tile."""
    group = parser.add_argument_group("data layout, classes and channels")
    add_format_flag(group)
    group.add_argument("--classes", action=ListAction, help="class names (sets the class count)")
    group.add_argument("--num-classes", type=int, help="number of classes (default: from names, values or masks)")
    group.add_argument("--class-list", action=ListAction, cast=int,
                       help="mask values of the classes, as the smp trainer reads them: background 0 is added when "
                            "not listed and every value not listed is background, e.g. '64' = 0/64 masks, '255' = "
                            "0/255 masks, '1 2 5' = four classes")
    group.add_argument("--max-mask-val", type=int,
                       help="classes are mask values 0..M, other values background (the smp trainer's "
                            "--max-mask-val)")
    add_extra_dirs_flag(group)
    add_config_flags(group, "sections data, model, loss, ...", "loss.name='ce + 0.5*dice'")


def add_csv_style_flag(parser: Any, what: str) -> None:
    """`--csv-style plain|smp`: segwise's CSV (a header, dot decimals) or the smp trainer's (`;`-separated, decimal
    commas, its file names) for tables other tools read."""
    parser.add_argument("--csv-style", choices=CSV_STYLES,
                        help=f"{what}: plain (default; a header, dot decimals) or smp (the smp trainer's ';' and "
                             "decimal-comma file, under its name)")


def add_extra_dirs_flag(parser: Any) -> None:
    """`--add-dirs nir dsm`: the extra single-channel plane folders beside images/ (config key data.extra_channels)."""
    parser.add_argument("--add-dirs", action=ListAction,
                        help="extra single-channel folders beside images/, e.g. nir dsm")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Length, batch, LR, loaders, hardware and run name: the flags every training command shares."""
    g = parser.add_argument_group("optimisation, hardware and run")
    g.add_argument("-b", "--batch", type=int, help="batch size")
    g.add_argument("--lr", "-lr", type=float, help="learning rate")
    g.add_argument("-e", "--epochs", type=int, help="number of epochs")
    g.add_argument("--steps", type=int, help="number of iterations (instead of epochs)")
    g.add_argument("--max-time", type=duration, metavar="T",
                   help="stop after this long even if epochs/steps remain, e.g. 20m, 2h, 1h30m (validated and "
                        "checkpointed there)")
    g.add_argument("-w", "--workers", type=int, help="data-loader worker processes")
    hardware = g.add_mutually_exclusive_group()
    hardware.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda", "mps"], help="device kind")
    add_device_flag(hardware, "--accelerator auto")
    hardware.add_argument("--cpu", action="store_true", help="same as --device cpu")
    g.add_argument("--devices", type=int, help="number of devices (DDP when > 1)")
    add_num_nodes_flag(g, None)
    g.add_argument("--precision", choices=["auto", "32-true", "bf16-mixed", "16-mixed"], help="numeric precision")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--name", "--exp-name", dest="name", help="experiment name; the same name resumes")
    g.add_argument("--log-dir", "-log", type=Path, help="where run directories go (default runs/)")
    g.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run of this name")


def add_num_nodes_flag(parser: Any, default: int | None) -> None:
    """`--num-nodes M`: machines taking part, each running --devices processes (MASTER_ADDR, MASTER_PORT and
    NODE_RANK set on each, as for torchrun)."""
    parser.add_argument("--num-nodes", type=positive_int, default=default, metavar="M",
                        help="number of machines, each running --devices processes; set MASTER_ADDR, MASTER_PORT "
                             "and NODE_RANK on each (default 1)")


def add_distributed_predict_flags(parser: argparse.ArgumentParser) -> None:
    """`--devices N --num-nodes M [--vrt]`: predict with N×M processes, each its share of the images and its rows of
    every raster (the same launch as training's DDP)."""
    g = parser.add_argument_group("many devices and machines")
    g.add_argument("--devices", type=positive_int, default=1, metavar="N",
                   help="processes on this machine, one per GPU (or CPU processes with --device cpu); default 1")
    add_num_nodes_flag(g, 1)
    g.add_argument("--vrt", action="store_true",
                   help="rasters: write <name>.vrt over the processes' parts (<name>.partR.tif) instead of merging "
                        "them into <name>.tif")


def add_mode_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("inference mode", "whole image (default) or sliding windows, optionally with "
                                  "test-time augmentation; probabilities are averaged")
    g.add_argument("--mode", choices=["whole", "slide"], default="whole",
                   help="whole: the full image in one pass (padded to the model's stride); slide: windows")
    g.add_argument("--window", type=size, metavar="H[xW]", help="slide: window size, e.g. 512 or 512x768 (default 512)")
    g.add_argument("--stride", type=size, metavar="H[xW]", help="slide: step between windows (instead of --overlap)")
    g.add_argument("--overlap", type=float,
                   help="slide: overlap of neighbouring windows, a fraction in [0, 1) (default 0.25)")
    g.add_argument("--window-batch", type=int, default=4, metavar="N",
                   help="slide: windows per forward pass (default 4)")
    g.add_argument("--blend", choices=["constant", "gaussian"], default="constant",
                   help="slide: weight of each window's pixels: equal, or Gaussian (sigma = window/8) "
                        "favouring centres")
    g.add_argument("--scales", action=ScalesAction, metavar="S",
                   help="test-time augmentation: image scales, e.g. 0.75 1.0 1.25, or 'default' for "
                        f"pytorch-segmentation's {' '.join(map(str, DEFAULT_SCALES))}")
    g.add_argument("--flip", choices=["h", "v", "hv"], help="test-time augmentation: add horizontal/vertical mirrors")


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """`--backend`, `--threads`, `--quantize`, `--compile`: how predict and eval run the network's forward pass."""
    g = parser.add_argument_group("runtime", "what runs the network: the engine around it (modes, windows, TTA, "
                                  "rasters, ensembles) is the same")
    g.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="torch (default) or onnxruntime (CPU): the model exported to ONNX on the fly, cached in "
                        "RUN/.cache/onnx/; an exported .onnx MODEL always runs in onnxruntime")
    g.add_argument("--threads", type=positive_int, metavar="N", help="threads of the forward pass (default: the cores)")
    g.add_argument("--quantize", choices=["int8"],
                   help="onnxruntime: static int8 quantization calibrated on training images of the run")
    g.add_argument("--calibration-images", type=positive_int, default=16, metavar="N",
                   help="--quantize: the first N training images of the run's config (default 16)")
    g.add_argument("--min-agreement", type=float, default=0.99, metavar="F",
                   help="--quantize: refuse int8 when its labels agree with float's on less than this fraction of "
                        "the calibration pixels (default 0.99)")
    g.add_argument("--compile", action="store_true", help="torch backend: torch.compile the network")


def runtime(args: argparse.Namespace) -> Any:
    """The `segwise.inference.Runtime` the backend flags ask for, checked before any model is read."""
    from segwise.inference.onnx_backend import Runtime

    chosen = Runtime(getattr(args, "backend", "torch"), getattr(args, "threads", None),
                     getattr(args, "quantize", None), getattr(args, "calibration_images", 16),
                     getattr(args, "min_agreement", 0.99), getattr(args, "compile", False))
    chosen.check()
    return chosen


def add_raster_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("large rasters", "TIFF/GeoTIFF inputs, and PNG/JPEG inputs over --max-pixels, are "
                                  "streamed window by window (sliding windows, 1024 px unless --mode slide sets "
                                  "them) into OUT/<name>.tif, a class raster keeping the input's CRS, transform and "
                                  "nodata; memory is bounded by the window rows, not the image")
    add_max_pixels_flag(g, "stream PNG/JPEG inputs with more than N pixels too; also the bound of an image grown by "
                           "--scales")
    g.add_argument("--probs", choices=["uint8", "float16"],
                   help="also write OUT/<name>_probs.tif, one band per class: uint8 (p x 255) or float16")
    g.add_argument("--confidence", action="store_true",
                   help="also write OUT/<name>_confidence.tif (max p x 255, uint8)")
    g.add_argument("--color", action="store_true", help="also write OUT/<name>_color.tif (RGB, the class palette)")
    g.add_argument("--overwrite", action="store_true", help="replace raster outputs that already exist")


def add_max_pixels_flag(parser: Any, text: str) -> None:
    """`--max-pixels N`: the largest image (or mask) a command builds in memory."""
    parser.add_argument("--max-pixels", type=positive_int, metavar="N", help=f"{text} (default: 100 million)")


def add_ensemble_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ensemble (put these after the positional arguments)")
    group.add_argument("--ensemble", nargs="+", type=Path, default=[], metavar="RUN",
                       help="more runs/checkpoints combined with MODEL; they must share its classes and bands")
    group.add_argument("--ensemble-method", choices=["mean", "weighted", "vote", "floor_mean"],
                       help="mean of probabilities (default), weighted mean (default with weights), majority vote of "
                            "labels (ties: lowest class), or pytorch-segmentation's floored mean of label maps")
    group.add_argument("--ensemble-weights", action=ListAction, cast=float, metavar="W",
                       help="one weight per model, MODEL first (weighted mean, or weighted votes)")


class _SaveAction(argparse.Action):
    """`--save KIND ...`; `--save` alone gives the command's `bare` kinds."""

    def __init__(self, *args: Any, bare: Sequence[str] = (), **kwargs: Any) -> None:
        self.bare = list(bare)
        super().__init__(*args, nargs="*", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, list(values) or self.bare)


def add_save_flag(parser: argparse.ArgumentParser, kinds: Sequence[str], default: Sequence[str], text: str,
                  bare: Sequence[str] = (), aliases: dict[str, str] | None = None) -> None:
    """`--save KIND ...`, the outputs to write, in every command that writes predictions; `aliases` are old
    single-kind flags (e.g. `--overlay` = `--save overlay`) that still work. Read the choice with `saved_kinds`."""
    parser.add_argument("--save", action=_SaveAction, choices=kinds, default=list(default), bare=bare,
                        metavar="KIND", help=f"{text}; kinds: {', '.join(kinds)}")
    for flag, kind in (aliases or {}).items():
        parser.add_argument(flag, dest="save_also", action="append_const", const=kind, default=[],
                            help=f"same as --save {kind} (the older spelling)")


def saved_kinds(args: argparse.Namespace) -> set[str]:
    return set(args.save) | set(getattr(args, "save_also", []))


def add_rle_class_flag(parser: argparse.ArgumentParser, text: str, *aliases: str) -> None:
    parser.add_argument("--rle-class", *aliases, dest="rle_class", type=int, metavar="K", help=text)


# ---- what the flags give ------------------------------------------------------------------------------------------
def config_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys set by the flags a command has (see `CONFIG_KEYS`), with `--cpu`, `--device` and
    `--no-resume` translated into trainer/run keys and the smp trainer's class flags into its meaning."""
    flags = {key: getattr(args, dest) for dest, key in CONFIG_KEYS.items() if getattr(args, dest, None) is not None}
    flags.update(_smp_class_keys(args))
    if flags.get("data.extra_val_splits"):
        flags["data.extra_val_splits"] = _listed_dirs(flags["data.extra_val_splits"])
    if getattr(args, "cpu", False):
        flags["trainer.accelerator"] = "cpu"
    if getattr(args, "device", None):
        flags.update(_device_keys(args.device, getattr(args, "devices", None)))
    if getattr(args, "no_resume", False):
        flags["run.resume"] = False
    return flags


def _smp_class_keys(args: argparse.Namespace) -> dict[str, Any]:
    """The smp trainer's `--class-list V ...` / `--max-mask-val M`: one binary target per listed value, background
    (0) the rest. In segwise terms: class values [0, V ...] (0 added when not listed), values not listed are
    background, and no mask value is void (so 255 can be a class, as in its default "255")."""
    values = getattr(args, "class_list", None)
    if values is None and getattr(args, "max_mask_val", None) is None:
        return {}
    keys: dict[str, Any] = {"data.unmapped": "background", "data.ignore_index": -1}
    if values is not None:
        keys["data.class_values"] = values if 0 in values else [0, *values]
    return keys


def _listed_dirs(words: list[str]) -> list[str]:
    """`--add-val-dirs dirs.txt` (the smp trainer's form: a text file, one split folder per line) or the folders
    themselves."""
    if len(words) != 1 or not words[0].lower().endswith(".txt"):
        return words
    path = Path(words[0])
    if not path.is_file():
        raise ConfigError(f"--add-val-dirs {path}: no such file; give a text file with one validation folder per "
                          "line, or the folders themselves")
    dirs = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    dirs = [d for d in dirs if d and not d.startswith("#")]
    if not dirs:
        raise ConfigError(f"--add-val-dirs {path}: the file lists no folders; write one validation folder per line")
    return dirs


def _device_keys(name: str, devices: int | None) -> dict[str, Any]:
    """`--device cuda:1` → accelerator cuda on device index 1 (Lightning's "1,"); cpu, cuda and mps → the kind."""
    kind, _, index = name.partition(":")
    if not index:
        return {"trainer.accelerator": kind}
    if devices is not None:
        raise ConfigError(f"--device {name} names one device; for {devices} devices use --accelerator {kind} "
                          f"--devices {devices} (and CUDA_VISIBLE_DEVICES to choose them)")
    return {"trainer.accelerator": kind, "trainer.devices": f"{index},"}


def load_args_config(args: argparse.Namespace, root: Path, schema: type | None = None) -> Any:
    """Defaults ← --config ← flags ← --set, validated, with `root` as data.root (config errors come before any
    heavy import)."""
    from segwise.config import Config, load_config

    return load_config(args.config, [*length_overrides(args), *args.overrides],
                       {**config_flags(args), "data.root": str(root)}, schema=schema or Config,
                       base=foreign_config(args.config))


def length_overrides(args: argparse.Namespace) -> list[str]:
    """`-e N` without `--steps` trains N epochs even when the config sets trainer.max_steps (which would win over
    any epoch count): the step limit is cleared. `--set trainer.max_steps=...` still wins over `-e`."""
    if getattr(args, "epochs", None) is not None and getattr(args, "steps", None) is None:
        return ["trainer.max_steps=null"]
    return []


def foreign_config(path: Path | None) -> dict[str, Any] | None:
    """A pytorch-segmentation config.json, translated (its untranslatable keys are printed, one line each); None
    for segwise's own YAML."""
    if path is None or Path(path).suffix.lower() != ".json":
        return None
    from segwise.convert.pytorch_segmentation import translate_config

    translation = translate_config(path)
    for note in translation.notes:
        print(f"{path}: no effect: {note}", file=sys.stderr)
    return translation.nested()


def inference_mode(args: argparse.Namespace) -> Any:
    """The inference mode the mode flags ask for (option errors come before any model or data is read); test-time
    scales may not grow an image beyond --max-pixels."""
    from segwise.inference.modes import DEFAULT_MAX_PIXELS, build_mode

    max_pixels = getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS
    return build_mode(args.mode, window=args.window, stride=args.stride, overlap=args.overlap,
                      window_batch=args.window_batch, blend=args.blend, scales=args.scales, flip=args.flip,
                      max_pixels=max_pixels)


# ---- checks before the work: the machine has the devices, the outputs can be written -----------------------------
def check_device(name: str | None, flag: str = "--device") -> None:
    """Fail at once, before any model or data is read, on a torch device this machine does not have."""
    if name is None or name == "cpu":
        return
    kind, _, index = name.partition(":")
    count = _device_count(kind)
    if count == 0:
        raise ConfigError(f"{flag} {name}: torch sees no {_KIND_NAMES[kind]} on this machine; use --device cpu (or "
                          "leave --device out to take CUDA when available), or install a torch build for it")
    if index and int(index) >= count:
        raise ConfigError(f"{flag} {name}: this machine has {count} {kind} device(s), {kind}:0 .. {kind}:{count - 1}; "
                          "pick one of them (CUDA_VISIBLE_DEVICES may hide the others)")


_KIND_NAMES = {"cuda": "CUDA GPU (torch.cuda.is_available() is False)", "mps": "Apple MPS device"}


def _device_count(kind: str) -> int:
    """How many devices of a torch device kind (cuda, mps) this machine has."""
    import torch

    if kind == "mps":
        return int(torch.backends.mps.is_available())
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_hardware(trainer: Any) -> None:
    """`trainer.accelerator`/`trainer.devices` against this machine, before any data is read (Lightning would
    fail only after the data are validated and the run directory is made)."""
    kind = {"gpu": "cuda"}.get(trainer.accelerator, trainer.accelerator)
    if kind == "auto":
        kind = next((k for k in ("cuda", "mps") if _device_count(k)), "cpu")
    devices = trainer.devices
    if kind == "cpu":
        if devices != "auto" and (not isinstance(devices, int) or devices < 1):
            raise ConfigError(f"trainer.devices = {devices!r} selects GPUs, but training runs on the CPU here "
                              f"(trainer.accelerator = {trainer.accelerator}); give a number of CPU processes, "
                              "e.g. --devices 1")
        return
    count = _device_count(kind)
    if count == 0:
        raise ConfigError(f"trainer.accelerator = {trainer.accelerator}, but torch sees no {_KIND_NAMES[kind]} on "
                          "this machine; use --accelerator cpu (or auto), or install a torch build for it")
    wanted = [int(i) for i in devices.split(",") if i] if isinstance(devices, str) and devices != "auto" else []
    if (isinstance(devices, int) and devices > count) or any(i >= count for i in wanted):
        raise ConfigError(f"trainer.devices = {devices!r}, but this machine has {count} {kind} device(s) "
                          f"(indices 0 .. {count - 1}); use --devices {count} or fewer, or -1 for all of them")


def check_optimizer(optimizer: Any) -> None:
    """Build the optimizer on one parameter, so that `optimizer.args` torch refuses (e.g. betas=[2, 3]) fail
    before any data is read rather than after the run has started (layer decay needs the real model's layers:
    it is checked when the model is built)."""
    import torch

    from segwise.engine.optim import build_optimizer

    build_optimizer(torch.nn.Linear(1, 1), optimizer.model_copy(update={"layer_decay": None}))


def check_training_start(config: Any) -> None:
    """What a training command checks once its config is valid, before any data is read."""
    check_hardware(config.trainer)
    check_optimizer(config.optimizer)


def check_output_dir(path: Path | None) -> None:
    """An output folder must be creatable and writable before the work starts, not after it."""
    if path is not None:
        from segwise.io_utils import ensure_writable_dir

        if Path(path).exists() and not Path(path).is_dir():
            raise ConfigError(f"output folder {path} is a file; pass a folder to write into")
        ensure_writable_dir(path)


def check_output_file(path: Path | None, flag: str, example: str) -> None:
    """An output file must not be a folder and its folder must be writable, checked before the work."""
    if path is None:
        return
    if Path(path).is_dir():
        raise ConfigError(f"{flag} {path} is a folder; name the file to write, e.g. {Path(path) / example}")
    check_output_dir(Path(path).resolve().parent)


def print_run_summary(run_dir: Path) -> None:
    """Where a training command left its run (every training command ends with these lines, printed once: by
    rank 0 of a multi-device run)."""
    from segwise.engine.trainer import is_global_zero  # already loaded by the training that just ended

    if not is_global_zero():
        return
    print(f"\nrun directory : {run_dir}")
    print(f"model         : {run_dir / 'model.safetensors'} (+ model.yaml)")
    print(f"checkpoints   : {run_dir / 'checkpoints'}")
    print(f"tensorboard   : tensorboard --logdir {run_dir / 'tensorboard'}")
