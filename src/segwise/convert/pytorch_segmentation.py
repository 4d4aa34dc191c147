"""pytorch-segmentation's `config.json` → a segwise config: every key is translated or reported.

The file is JSON with `//` and `/* */` comments (pytorch-segmentation strips them before `json.loads`). Both its
modes are read: `arch` mode (its own model zoo) and `smp` mode (`smp_args`). `translate_config` returns the segwise
config as dotted keys (each with the key it came from) and the notes: one per key that has no effect, naming the
key, its value and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segwise.errors import ConfigError

ARCHS = {"fcn8": "fcn8", "segnet": "segnet", "enet": "enet", "gcn": "gcn", "deeplab_duc_hdc": "duc_hdc",
         "upernet": "upernet", "pspnet": "pspnet_dilated", "pspdensenet": "pspnet", "deeplab": "deeplabv3plus",
         "unetresnet": "unet", "unet": "unet_classic", "segresnet": "segresnet"}
"""Its model zoo (lower-cased `arch.type`) → segwise's nearest registry name."""
ARCH_NOTES = {"deeplab": "DeepLab v3+ becomes smp's deeplabv3plus", "unetresnet": "becomes smp's unet",
              "pspdensenet": "becomes smp's pspnet (give a densenet encoder)", "upernet": "becomes smp's upernet"}
SMP_ARCHS = {"unetplusplus": "unetplusplus", "deeplabv3plus": "deeplabv3plus"}
LOSSES = {"crossentropyloss2d": "ce", "diceloss": "dice", "focalloss": "focal", "ce_diceloss": "ce + dice",
          "lovaszsoftmax": "lovasz"}
SCHEDULERS = {"poly": "poly", "onecycle": "onecycle"}
MONITORS = {"mean_iou": "val/miou", "pixel_accuracy": "val/accuracy", "val_loss": "val/loss", "loss": "val/loss"}
TRAINER_KEYS = {"epochs": "trainer.max_epochs", "save_dir": "run.log_dir",
                "save_period": "trainer.checkpoint_every_epochs", "early_stop": "trainer.early_stopping_patience",
                "log_per_iter": "trainer.log_every_steps", "val_per_epochs": "trainer.val_every_epochs"}
"""Keys of its `trainer` section that map one to one."""
READER_TYPES: dict[str, str] = {"voc": "voc", "cityscapes": "cityscapes", "ade20k": "ade20k", "coco": "cocostuff",
                                "tianchi": "tianchi", "meter": "meter"}
"""Data-set `type`s (lower-cased) with a segwise reader of the same layout, read in place; others read folders."""
LAYOUT_ARGS = {"mode": "the cityscapes reader takes gtFine where a split has it, else gtCoarse",
               "partition": "the cocostuff reader tells the 10k release (imageLists/) from the 164k one"}


@dataclass
class Translation:
    """Segwise keys (dotted) with their values and origins, and the keys that have no effect, with why."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, origin: str) -> None:
        self.values[key] = value
        self.origins[key] = origin

    def note(self, origin: str, value: Any, why: str) -> None:
        self.notes.append(f"{origin} = {json.dumps(value)}: {why}")

    def nested(self) -> dict[str, Any]:
        """The values as a config mapping (sections of keys), for `segwise.config.load_config`."""
        raw: dict[str, Any] = {}
        for dotted, value in self.values.items():
            node = raw
            *sections, key = dotted.split(".")
            for section in sections:
                node = node.setdefault(section, {})
            node[key] = value
        return raw


def strip_comments(text: str) -> str:
    """JSON text without `//` line comments and `/* */` block comments (strings are left as they are)."""
    out, i, quoted = [], 0, False
    while i < len(text):
        char = text[i]
        if quoted:
            out.append(char)
            if char == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
            out.append(char)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def read_config_json(path: Path) -> dict[str, Any]:
    """The config file as a dict; a syntax error names the line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}); pass a pytorch-segmentation config.json")
    try:
        data = json.loads(strip_comments(text))
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"config file {path} is not valid JSON{where}: {exc}; fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object (name, arch, train_loader, ...)")
    return data


def _section(data: dict, key: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config.json: '{key}' must be an object, got {json.dumps(value)}")
    return value


def _model(data: dict, t: Translation) -> None:
    if data.get("smp"):
        args = _section(data, "smp_args")
        kind = str(args.get("type", "Unet"))
        t.set("model.name", SMP_ARCHS.get(kind.lower(), kind.lower()), "smp_args.type")
        for key, target in (("backbone", "model.encoder"), ("data_dir", "data.root"), ("classes", "data.num_classes"),
                            ("epochs", "trainer.max_epochs"), ("batch_size", "data.batch_size"),
                            ("image_size", "data.image_size")):
            if args.get(key) is not None:
                t.set(target, args[key], f"smp_args.{key}")
        if args.get("weights") not in (None, "None", "none"):
            t.note("smp_args.weights", args["weights"], "segwise never downloads: set model.encoder_weights to "
                                                        "'imagenet' yourself (needs the network) or to a local file")
        if "device" in args:
            t.note("smp_args.device", args["device"], "pick the device with --device on the command line")
        return
    arch = _section(data, "arch")
    kind = str(arch.get("type", ""))
    if kind.lower() not in ARCHS:
        raise ConfigError(f"config.json: arch.type = {json.dumps(kind)} has no segwise model (known: "
                          f"{', '.join(sorted(ARCHS))}, or smp mode); pick one with --model")
    t.set("model.name", ARCHS[kind.lower()], "arch.type")
    if kind.lower() in ARCH_NOTES:
        t.note("arch.type", kind, ARCH_NOTES[kind.lower()])
    for key, value in _section(arch, "args").items():
        origin = f"arch.args.{key}"
        if key == "backbone":
            t.set("model.encoder", value, origin)
        elif key in ("freeze_bn", "freeze_backbone"):
            t.set(f"model.{key}", bool(value), origin)
        elif key == "pretrained":
            if value:
                t.note(origin, value, "segwise never downloads: set model.encoder_weights yourself")
        else:
            t.set(f"model.args.{key}", value, origin)


def _loaders(data: dict, t: Translation) -> None:
    train = _section(data, "train_loader")
    kind = str(train.get("type", ""))
    fmt = READER_TYPES.get(kind.lower())
    if fmt:
        t.set("data.format", fmt, "train_loader.type")
    elif kind:
        t.note("train_loader.type", kind, "no segwise reader for this layout: the data is read as folders "
                                          "(DATA/<split>/images and masks)")
    for key, value in _section(train, "args").items():
        origin = f"train_loader.args.{key}"
        if key == "data_dir":
            t.set("data.root", value, origin)
        elif key in ("batch_size", "num_workers"):
            t.set(f"data.{key}", value, origin)
        elif key == "crop_size":
            t.set("data.crop_size", value, origin)
        elif key == "split":
            t.set("data.train_split", value, origin)
        elif key == "scale":
            if value:
                t.set("data.scale_range", [0.5, 2.0], origin)
        elif key == "flip":
            t.set("data.hflip", bool(value), origin)
        elif key == "rotate":
            t.set("data.rotate", 10.0 if value else 0.0, origin)
        elif key == "blur":
            t.set("data.blur", bool(value), origin)
        elif key == "augment":
            t.set("data.augment", "none", origin)  # its augmentation is the scale/flip/rotate/blur keys
            if not value:
                for flag in ("hflip", "blur"):
                    t.set(f"data.{flag}", False, origin)
                t.set("data.rotate", 0.0, origin)
        elif key == "base_size":
            t.note(origin, value, "segwise rescales each image relative to its own size (data.scale_range)")
        elif key == "shuffle":
            t.note(origin, value, "training data is always shuffled (a resumable, seeded order)")
        elif key in LAYOUT_ARGS and fmt:
            t.note(origin, value, LAYOUT_ARGS[key])
        elif key == "val_split":
            if value:
                t.set("data.val_fraction", value, origin)
        else:
            t.note(origin, value, "has no segwise equivalent")
    for key, value in _section(_section(data, "val_loader"), "args").items():
        origin = f"val_loader.args.{key}"
        if key == "split":
            t.set("data.val_split", value, origin)
        elif key == "batch_size":
            t.set("data.val_batch_size", value, origin)
        elif key == "data_dir" and value != _section(train, "args").get("data_dir"):
            t.note(origin, value, "validation reads DATA/<val split>; give --val-dir PATH for another folder")
        elif key not in ("data_dir", "val", "num_workers"):
            t.note(origin, value, "validation runs on whole images, without crops or augmentation")


def _lookup(table: dict[str, str], value: Any, key: str, fix: str) -> str:
    """The segwise name of a pytorch-segmentation name (case-insensitive), or one error naming key and value."""
    if str(value).lower() not in table:
        raise ConfigError(f"config.json: {key} = {json.dumps(value)} has no segwise equivalent (known: "
                          f"{', '.join(sorted(table))}); choose {fix} yourself")
    return table[str(value).lower()]


def _optimisation(data: dict, t: Translation) -> None:
    optimizer = _section(data, "optimizer")
    if "type" in optimizer:
        t.set("optimizer.name", optimizer["type"], "optimizer.type")
    if optimizer.get("differential_lr"):
        t.set("optimizer.backbone_lr_factor", 0.1, "optimizer.differential_lr")
    for key, value in _section(optimizer, "args").items():
        target = f"optimizer.{key}" if key in ("lr", "weight_decay") else f"optimizer.args.{key}"
        t.set(target, value, f"optimizer.args.{key}")
    if "loss" in data:
        t.set("loss.name", _lookup(LOSSES, data["loss"], "loss", "--loss"), "loss")
    if "ignore_index" in data:
        t.set("data.ignore_index", data["ignore_index"], "ignore_index")
    scheduler = _section(data, "lr_scheduler")
    if "type" in scheduler:
        t.set("scheduler.name", _lookup(SCHEDULERS, scheduler["type"], "lr_scheduler.type", "scheduler.name"),
              "lr_scheduler.type")
    for key, value in _section(scheduler, "args").items():
        t.note(f"lr_scheduler.args.{key}", value, "set scheduler.* (e.g. warmup_steps, in iterations) instead")


def _trainer(data: dict, t: Translation) -> None:
    for key, target in (("name", "run.name"), ("use_synch_bn", "trainer.sync_batchnorm")):
        if key in data:
            t.set(target, data[key], key)
    if data.get("n_gpu", 1) != 1:
        t.set("trainer.devices", data["n_gpu"], "n_gpu")
    for key, value in _section(data, "trainer").items():
        origin = f"trainer.{key}"
        if key in TRAINER_KEYS:
            t.set(TRAINER_KEYS[key], value, origin)
        elif key == "val":
            if not value:
                t.set("data.val_split", None, origin)
        elif key == "monitor":
            mode, _, metric = str(value).partition(" ")
            if mode not in ("max", "min") or metric.lower() not in MONITORS:
                t.note(origin, value, f"not one of 'max|min {'|'.join(MONITORS)}'; segwise monitors val/miou")
            else:
                t.set("trainer.monitor", MONITORS[metric.lower()], origin)
                t.set("trainer.monitor_mode", mode, origin)
        elif key in ("tensorboard", "log_dir"):
            t.note(origin, value, "TensorBoard logs always go into the run directory (RUN/tensorboard)")
        else:
            t.note(origin, value, "has no segwise equivalent")


def translate_config(path: Path) -> Translation:
    """Every key of a pytorch-segmentation config.json, translated or noted (see the module docstring)."""
    data = read_config_json(Path(path))
    t = Translation()
    for part in (_model, _loaders, _optimisation, _trainer):
        part(data, t)
    known = {"name", "n_gpu", "use_synch_bn", "arch", "smp", "smp_args", "train_loader", "val_loader", "optimizer",
             "loss", "ignore_index", "lr_scheduler", "trainer"}
    for key in sorted(set(data) - known):
        t.note(key, data[key], "is not a pytorch-segmentation config key")
    if not data.get("smp") and "smp_args" in data:
        t.note("smp_args", data["smp_args"], "read only when \"smp\": true")
    return t


def to_yaml(t: Translation, source: Path) -> str:
    """A segwise YAML config with the pytorch-segmentation key of every value as a comment, notes on top."""
    lines = [f"# segwise config translated from {source} (pytorch-segmentation)"]
    lines += [f"# no effect: {note}" for note in t.notes]
    for section, values in t.nested().items():
        lines.append(f"{section}:")
        lines += _yaml_lines(values, f"{section}.", t.origins, "  ")
    return "\n".join(lines) + "\n"


def _yaml_lines(values: dict, prefix: str, origins: dict[str, str], indent: str) -> list[str]:
    lines = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines += _yaml_lines(value, f"{dotted}.", origins, indent + "  ")
            continue
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
        lines.append(f"{indent}{key}: {text}  # from {origins[dotted]}")
    return lines
