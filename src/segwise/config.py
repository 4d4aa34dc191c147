"""Typed run configuration: pydantic models hold every default and check every value at the edge.

A config comes from (in increasing priority) the defaults below, a YAML file, CLI flags and `--set key=value`
overrides. Errors name the dotted key, the value and the fix; unknown keys suggest the closest valid one.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segwise.errors import ConfigError

AUGMENT_PRESETS = ("none", "safe", "light", "medium", "hard", "one")
SCHEDULERS = ("poly", "cosine", "onecycle", "step", "plateau", "constant")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true", "auto")
Size = tuple[int, int]
DEVICE_INDICES = re.compile(r"\d+(,\d+)*,?")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "": 60}


def parse_duration(text: str | float) -> float:
    """`30m`, `2h`, `1h30m`, `90s` or `45` (minutes) → seconds; a number that is not text is already seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh]?)", str(text).strip().lower())
    seconds = sum(float(n) * DURATION_UNITS[unit] for n, unit in parts)
    if not parts or re.sub(r"[\d.\s smh]", "", str(text).lower()) or seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: give e.g. 30m, 2h, 1h30m or 90s")
    return seconds


def _as_size(value: Any) -> Any:
    """Accept `512`, `[512, 384]` (height, width) or None for image/crop sizes."""
    if isinstance(value, int):
        return (value, value)
    return value


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict (paths as strings, tuples as lists)."""
        return plain_data(self.model_dump(mode="json"))


class DataConfig(StrictModel):
    """Where the data lies and how masks become class indices (see README § Data)."""

    root: Path | None = None
    format: str = Field("folder", description="layout of the data set: a key of segwise.data.readers.READERS")
    train_split: str = "train"
    val_split: str | None = "val"
    extra_val_splits: list[str] = Field(default_factory=list, description="the smp trainer's --add-val-dirs")
    extra_val_every: int = Field(1, ge=1, description="evaluate the extra val splits every N epochs "
                                 "(the smp trainer's --adv-freq)")
    val_fraction: float | None = Field(None, gt=0, lt=1, description="hold out this share of the training split "
                                       "for validation instead of reading val_split, chosen by file name "
                                       "(pytorch-segmentation's val_split)")
    extra_val_only: bool = Field(False, description="skip val_split and select on the extra splits' mean IoU "
                                 "weighted by image count (the smp trainer's --use-only-add-val)")
    extra_channels: list[str] = Field(default_factory=list, description="sibling folders with one plane each")
    num_classes: int | None = Field(None, ge=2)
    class_names: list[str] | None = None
    class_values: list[int] | None = Field(None, description="raw mask value of each class "
                                           "(the smp trainer's --class-list)")
    max_mask_value: int | None = Field(None, ge=1, description="classes are mask values 0..M "
                                       "(the smp trainer's --max-mask-val)")
    palette: list[tuple[int, int, int]] | None = Field(None, description="RGB colour per class ([r, g, b] or "
                                                       "'#rrggbb'); maps RGB and palette-PNG masks")
    binary: bool = Field(False, description="0 = background, any other value = foreground (0/255 masks)")
    unmapped: Literal["error", "ignore", "background"] = Field("error", description="mask values outside the "
                                                                "classes: an error, ignored, or class 0")
    ignore_index: int = 255
    image_size: Size | None = Field(None, description="resize every sample to this "
                                    "(the smp trainer's --image-size)")
    crop_size: Size | None = Field(None, description="random training crop (pytorch-segmentation's crop_size)")
    rare_class_crops: float = Field(0.0, ge=0, le=1, description="share of training crops placed around a pixel of a "
                                    "rare class (needs crop_size); 0 = plain random crops")
    rare_classes: list[int] | None = Field(None, description="classes rare_class_crops targets; None = those under "
                                           "5 % of the training split's labelled pixels")
    scale_range: tuple[float, float] | None = Field(None, description="random rescale before cropping "
                                                    "(pytorch-segmentation's scale)")
    hflip: bool = True
    vflip: bool = False
    rotate: float = Field(0.0, ge=0, le=180, description="max random rotation in degrees "
                                                         "(pytorch-segmentation's rotate)")
    blur: bool = False
    augment: Literal["none", "safe", "light", "medium", "hard", "one"] = "light"
    mean: list[float] | None = Field(None, description="per channel, raw pixel units; computed if unset")
    std: list[float] | None = None
    batch_size: int = Field(8, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(2, ge=0)
    validate_data: bool = Field(True, description="check every file before training starts")

    _sizes = field_validator("image_size", "crop_size", mode="before")(_as_size)

    @field_validator("palette", mode="before")
    @classmethod
    def _colours(cls, value: Any) -> Any:
        """Colours as [r, g, b] or '#rrggbb', read by the one colour parser the class map uses."""
        from segwise.data.classmap import parse_colour

        if value is None or not isinstance(value, (list, tuple)):
            return value
        return [parse_colour(colour, f"data.palette[{i}]") for i, colour in enumerate(value)]

    @model_validator(mode="after")
    def _check_classes(self) -> DataConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std must be given together (or neither, to compute them)")
        if self.mean is not None and len(self.mean) != len(self.std or []):
            raise ValueError(f"data.mean has {len(self.mean)} values but data.std has {len(self.std or [])}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"data.std must be positive, got {self.std}")
        if self.extra_val_only and not self.extra_val_splits:
            raise ValueError("data.extra_val_only (--use-only-add-val) selects on the extra validation splits, but "
                             "data.extra_val_splits is empty; name them with --add-val-dirs")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            twice = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            raise ValueError(f"data.class_names names {', '.join(map(repr, twice))} more than once; give every class "
                             "its own name")
        return self


class ModelConfig(StrictModel):
    """Which network: any name of `segwise models`; `args` go to its constructor unchanged."""

    name: str = "unet"
    encoder: str | None = Field(None, description="None = the architecture's default (resnet18 for smp models)")
    encoder_weights: str | None = Field(None, description="None = random init; 'imagenet' or a local file")
    args: dict[str, Any] = Field(default_factory=dict)
    freeze_backbone: bool = Field(False, description="encoder parameters frozen, left out of the optimizer "
                                                     "(pytorch-segmentation's arch.args.freeze_backbone)")
    freeze_bn: bool = Field(False, description="BatchNorm layers in eval mode with frozen scale and shift "
                                               "(pytorch-segmentation's arch.args.freeze_bn)")


class LossConfig(StrictModel):
    """A weighted sum of registered losses, e.g. `ce + 0.5*dice`.

    The options below are the common ones; any other key is passed to the loss factories too, and is accepted
    when a registered loss takes it (checked by `segwise.losses.check_loss_options` before training), so a new
    loss brings its options without an edit here.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    name: str = "ce"
    class_weights: list[float] | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    ohem_thresh: float = Field(0.7, gt=0, le=1)
    ohem_min_kept: int = Field(100_000, ge=1)
    som_ratio: float = Field(0.1, gt=0, le=1, description="share of pixels kept by small-object mining (som)")
    aux_weight: float = Field(0.4, ge=0, description="weight of the same loss on an auxiliary head's logits, in "
                              "training, for models that have one (pspnet_dilated; pytorch-segmentation's 0.4)")


class OptimizerConfig(StrictModel):
    """Any `torch.optim` class by name; `backbone_lr_factor` scales the encoder's LR
    (pytorch-segmentation's differential_lr = 0.1)."""

    name: str = "AdamW"
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(1e-4, ge=0)
    backbone_lr_factor: float = Field(1.0, gt=0)
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise LR decay of a ViT (e.g. 0.75): block i "
                                      "of L gets lr × decay^(L−i), the embeddings the lowest, the head the full lr")
    args: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(StrictModel):
    """LR schedule; poly/cosine/onecycle step every iteration, step/plateau every epoch."""

    name: Literal["poly", "cosine", "onecycle", "step", "plateau", "constant"] = "poly"
    power: float = Field(0.9, gt=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    step_epochs: int = Field(30, ge=1)
    gamma: float = Field(0.1, gt=0)
    plateau_patience: int = Field(5, ge=0)
    onecycle_pct_start: float = Field(0.3, gt=0, lt=1)


class TrainerConfig(StrictModel):
    """Loop length, validation/checkpoint cadence, precision, devices and reproducibility."""

    max_epochs: int | None = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1, description="iterations; overrides max_epochs when set")
    max_time: float | None = Field(None, gt=0, description="seconds (or 20m, 2h, 1h30m): training stops there, "
                                   "validated and checkpointed, even if its epochs or steps are not done")
    val_every_epochs: int = Field(1, ge=1)
    val_every_steps: int | None = Field(None, ge=1)
    checkpoint_every_epochs: int | None = Field(None, ge=1, description="keep a periodic checkpoint")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="refresh last.ckpt every N steps")
    monitor: str = "val/miou"
    monitor_mode: Literal["max", "min"] = "max"
    early_stopping_patience: int | None = Field(None, ge=1, description="validations without improvement")
    grad_clip: float | None = Field(None, gt=0)
    grad_clip_algorithm: Literal["norm", "value"] = "norm"
    accumulate: int = Field(1, ge=1)
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true", "auto"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = Field(1, description="number of devices, -1 or 'auto' (all), or indices such as '0,2'")
    num_nodes: int = Field(1, ge=1)
    sync_batchnorm: bool = False
    channels_last: bool = False
    compile: bool = False
    seed: int = Field(42, ge=0, le=2**32 - 1, description="numpy and Lightning take seeds in 0 .. 2^32 - 1")
    deterministic: bool = False
    log_every_steps: int = Field(10, ge=1)
    log_images: int = Field(4, ge=0, description="validation overlays written to TensorBoard")
    log_worst_images: int = Field(4, ge=0, description="worst validation images written to TensorBoard")
    progress_bar: bool = True

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        """A positive count, -1 or 'auto' (every device), or device indices such as '1,' or '0,2' (Lightning's
        forms); 0, other negatives and words fail here, not deep inside Lightning."""
        text = str(value).strip()
        if text.lstrip("-").isdigit() and (int(text) >= 1 or int(text) == -1):
            return int(text)
        if text == "auto" or DEVICE_INDICES.fullmatch(text) and "," in text:
            return text
        raise ValueError("expected a number of devices (1 or more), -1 or 'auto' for every device, or device "
                         "indices such as '0,2' (one index needs a comma: '1,'); e.g. --devices 1")

    @field_validator("max_time", mode="before")
    @classmethod
    def _max_time_as_seconds(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _has_a_length(self) -> TrainerConfig:
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("trainer.max_epochs and trainer.max_steps are both null: training would have no end; "
                             "set one (e.g. --epochs 20 or --steps 5000)")
        return self


class RunConfig(StrictModel):
    """Where the run directory goes: `<log_dir>/<name>`; the same name resumes, as in the smp trainer."""

    name: str | None = None

    log_dir: Path = Path("runs")
    resume: bool = True
    csv_style: Literal["plain", "smp"] = Field("plain", description="tables of the run (the per-epoch scores): a "
                                               "header and dot decimals, or the smp trainer's ';' and decimal commas")

    @field_validator("name", mode="before")
    @classmethod
    def _name_as_text(cls, value: Any) -> Any:
        """YAML reads `name: 2024` as a number; a run name is always text."""
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("name")
    @classmethod
    def _name_stays_in_log_dir(cls, value: str | None) -> str | None:
        """A run name is one folder under log_dir: no separators, no '..', nothing that leaves --log-dir."""
        if value is not None and (not value.strip() or value in (".", "..") or any(c in value for c in "/\\\0")):
            raise ValueError(f"run.name {value!r} must be one folder name under run.log_dir (no '/', '\\', '..' or "
                             "NUL); choose e.g. --name my_run")
        return value


class TaskConfig(StrictModel):
    """The sections every task's config shares (optimizer, scheduler, trainer, run), and the one way a task states
    its own defaults: `DEFAULTS`, merged under whatever the YAML file, flags and `--set` give."""

    DEFAULTS: ClassVar[dict[str, Any]] = {}

    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        return merge(cls.DEFAULTS, raw) if isinstance(raw, dict) and cls.DEFAULTS else raw


class MetricsConfig(StrictModel):
    """How validation summarises the confusion matrix (`segwise eval --absent-classes` does the same)."""

    absent_classes: Literal["nan", "zero"] = Field("nan", description="a class absent from prediction and ground "
                                                   "truth: left out of the means, or IoU 0 (pytorch-segmentation)")


class PixelConfig(TaskConfig):
    """Tasks whose model maps images to per-pixel classes: data, model, loss and metrics sections."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class Config(PixelConfig):
    """Semantic segmentation on image folders (`segwise train`): the pixel sections with their plain defaults."""

    @model_validator(mode="before")
    @classmethod
    def _select_on_extra_splits(cls, raw: Any) -> Any:
        """With data.extra_val_only the score to select on is the extra splits' weighted mean IoU, and validation
        runs when they are evaluated (every data.extra_val_every epochs), unless the config says otherwise."""
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict) or not data.get("extra_val_only"):
            return raw
        trainer = dict(raw.get("trainer") or {})
        trainer.setdefault("monitor", "val_extra/miou")
        trainer.setdefault("val_every_epochs", data.get("extra_val_every", 1))
        return {**raw, "trainer": trainer}


def plain_data(value: Any) -> Any:
    """Tuples → lists, recursively, so YAML holds plain lists."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def _model_at(path: tuple[Any, ...], root: type[BaseModel] = Config) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at `path` (for suggestions)."""
    model: type[BaseModel] = root
    for part in path[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _describe(error: dict[str, Any], root: type[BaseModel] = Config) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        owner = _model_at(error["loc"], root)
        known = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join(str(p) for p in error['loc'][:-1] + (close[0],))}'?" if close else ""
        return f"unknown key '{key}'{hint} Valid keys here: {', '.join(known)}"
    value, message = error.get("input"), error["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a check of a whole section: its message names the keys, the section is noise
        return f"{key}: {message}" if key else message
    return f"{key} = {value!r}: {message}" if key else message


def validate_config(raw: dict[str, Any], source: str = "config", schema: type[BaseModel] = Config) -> Any:
    """Build a Config (or another task's `schema`) from a nested dict, turning pydantic errors into one
    readable ConfigError."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, schema) for e in exc.errors()]
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(lines)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file on any error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path given to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(exc)}; fix the file there (an "
                          "unclosed bracket or quote, or a tab in the indentation, are the usual causes)") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a config; check its brackets") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (data:, model:, ...)")
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_override(text: str) -> tuple[list[str], Any]:
    """`trainer.max_epochs=5` → (['trainer', 'max_epochs'], 5); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set optimizer.lr=0.01")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def set_dotted(raw: dict[str, Any], keys: list[str], value: Any, source: str = "config") -> None:
    """Set raw[k1][k2]... = value, creating sections as needed."""
    node = raw
    for depth, key in enumerate(keys[:-1]):
        if node.get(key) is None:  # `data:` with nothing under it is an empty section
            node[key] = {}
        child = node[key]
        if not isinstance(child, dict):
            section = ".".join(keys[:depth + 1])
            raise ConfigError(f"{source}: {'.'.join(keys)}: '{key}' is a value, not a section ({section} = "
                              f"{child!r}); write {section} as a mapping of keys (e.g. {key}: {{...}}) or fix the key")
        node = child
    node[keys[-1]] = value


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | None = None, overrides: list[str] = (), flags: dict[str, Any] | None = None,
                schema: type[BaseModel] = Config, base: dict[str, Any] | None = None) -> Any:
    """Defaults ← YAML file (or `base`, a config already read from `path`, e.g. a translated pytorch-segmentation
    config.json) ← CLI flags (dotted keys) ← `--set` overrides, validated once at the end."""
    raw: dict[str, Any] = dict(base) if base is not None else read_yaml(path) if path else {}
    source = str(path) if path else "config"
    for dotted, value in (flags or {}).items():
        if value is not None:
            set_dotted(raw, dotted.split("."), value, source)
    for text in overrides:
        set_dotted(raw, *parse_override(text), source)
    return validate_config(raw, source=source, schema=schema)


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from segwise.io_utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
