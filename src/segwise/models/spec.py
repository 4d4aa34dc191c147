"""Portable model files: `model.safetensors` (weights) + `model.yaml` (everything needed to rebuild and run it).

Loading never unpickles: safetensors for weights, `torch.load(weights_only=True)` for Lightning checkpoints.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from segwise.errors import CheckpointError, SegwiseError
from segwise.io_utils import atomic_write, atomic_write_text
from segwise.models.registry import create_model

FORMAT = "segwise-model/1"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.yaml"
MAX_CHANNELS = 4096  # beyond these a model.yaml is damaged, and building its model would exhaust memory
MAX_CLASSES = 65536  # index masks are written as uint16 at most


def _whole(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(item) for item in v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v), "a model name (see `segwise models`)"),
    "encoder": (lambda v: v is None or isinstance(v, str), "an encoder name or null"),
    "args": (lambda v: isinstance(v, dict), "a mapping of constructor arguments"),
    "in_channels": (_whole(1, MAX_CHANNELS), f"a channel count 1 .. {MAX_CHANNELS}"),
    "num_classes": (_whole(1, MAX_CLASSES), f"a class count 1 .. {MAX_CLASSES}"),
    "class_names": (_list_of(lambda v: isinstance(v, str)), "a list of names"),
    "palette": (_list_of(lambda c: isinstance(c, list) and len(c) == 3 and all(map(_whole(0, 255), c))),
                "a list of [r, g, b] colours (0 .. 255)"),
    "ignore_index": (_whole(-2**31, 2**31 - 1), "a whole number"),
    "mean": (lambda v: v is None or _list_of(_number)(v), "a list of numbers or null"),
    "std": (lambda v: v is None or _list_of(_number)(v), "a list of numbers or null"),
    "extra_channels": (_list_of(lambda v: isinstance(v, str)), "a list of folder names"),
    "image_size": (lambda v: v is None or (_list_of(_whole(1, 2**16))(v) and len(v) == 2), "[height, width] or null"),
    "class_values": (lambda v: v is None or _list_of(_whole(-2**31, 2**31 - 1))(v), "a list of mask values or null"),
    "binary": (lambda v: isinstance(v, bool), "true or false"),
    "unmapped": (lambda v: v in ("error", "ignore", "background"), "error, ignore or background"),
}
"""What each model.yaml field must hold: checked on load, so a damaged file is named instead of failing inside a
model constructor or at the first image."""


@dataclass
class ModelSpec:
    """What a trained model is: architecture, its I/O contract and how masks map to its classes."""

    name: str
    encoder: str | None
    args: dict[str, Any]
    in_channels: int
    num_classes: int
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int = 255
    mean: list[float] | None = None
    std: list[float] | None = None
    extra_channels: list[str] = field(default_factory=list)
    image_size: list[int] | None = None
    class_values: list[int] | None = None
    binary: bool = False
    unmapped: str = "error"

    def build(self) -> nn.Module:
        """A freshly initialised model of this architecture (weights are loaded separately)."""
        return create_model(self.name, in_channels=self.in_channels, classes=self.num_classes,
                            encoder=self.encoder, **self.args)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ModelSpec:
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a segwise model description (format {data.get('format')!r})")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        problems = [f"{key} is missing" for key in required if key not in data]
        problems += [f"{key} = {str(data[key])[:60]}: expected {what}" for key, (check, what) in _FIELD_CHECKS.items()
                     if key in data and not check(data[key])]
        if problems:
            raise CheckpointError(f"{source} is damaged ({'; '.join(problems)}); restore it from a copy of the run "
                                  "(training writes it with the weights)")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def save_model(model: nn.Module, spec: ModelSpec, directory: Path) -> None:
    """Write weights and spec atomically (weights first, so a spec never points at missing weights)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(Path(directory) / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(Path(directory) / SPEC_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Lightning checkpoints store the network under the task's `model.` attribute."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def resolve_model_path(path: Path) -> tuple[Path, Path | None]:
    """Run dir / model.yaml / model.safetensors / .ckpt → (spec file, weights file or None for a .ckpt)."""
    path = Path(path)
    if path.is_dir():
        if (path / SPEC_FILE).is_file():
            return path / SPEC_FILE, path / WEIGHTS_FILE
        raise CheckpointError(f"{path} holds no {SPEC_FILE}; pass a run directory made by `segwise train`")
    if path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run_dir / SPEC_FILE, None
    if path.name in (SPEC_FILE, WEIGHTS_FILE):
        return path.parent / SPEC_FILE, path.parent / WEIGHTS_FILE
    raise CheckpointError(f"{path} is not a run directory, model.yaml, model.safetensors or .ckpt file")


def peek_spec(path: Path) -> ModelSpec:
    """The description of the model at `path` (run directory, model.yaml/.safetensors or .ckpt), weights unread."""
    spec_file, _ = resolve_model_path(Path(path))
    if not spec_file.is_file():
        raise CheckpointError(f"{spec_file} is missing; a model needs its {SPEC_FILE} beside its weights")
    try:
        described = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        first_line = (str(exc).splitlines() or [""])[0][:120]
        raise CheckpointError(f"{spec_file} cannot be read ({type(exc).__name__}: {first_line}); the file is damaged: "
                              "restore it from a copy of the run") from None
    return ModelSpec.from_dict(described if isinstance(described, dict) else {}, str(spec_file))


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model from a run directory or checkpoint, in eval mode, without executing pickled code."""
    path = Path(path)
    _, weights_file = resolve_model_path(path)
    spec = peek_spec(path)
    state = _read_checkpoint_state(path) if weights_file is None else _read_weights(weights_file)
    model = _build(spec, path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:  # wrong keys or shapes, or not tensors
        raise CheckpointError(f"weights in {weights_file or path} do not fit {spec.name}: {str(exc)[:400]}"
                              f"{LAYOUT_CHANGES.get(spec.name, '')}") from None
    return model.to(device).eval(), spec


LAYOUT_CHANGES = {
    "trimap_vit": " (trimap models saved before 2026-12-03 have the earlier SimpleFPN neck and head, changed then to "
                  "match the published SegTrimap model layer for layer so that its checkpoints import with `segwise "
                  "convert trimap`; train such a run again)",
}
"""Architectures whose parameter layout changed, and what a file of the earlier layout should do."""


def _read_checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The network's weights from a Lightning `.ckpt`, read with `weights_only=True` (never unpickling code)."""
    try:
        with warnings.catch_warnings():  # torch warns about the odd pickle protocols of damaged files
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for damaged files
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({type(exc).__name__}: "
                              f"{(str(exc).splitlines() or [''])[0][:200]}); the file is damaged or not a checkpoint: "
                              "use the run's model.safetensors, or another checkpoint") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict); pass a run directory")
    return _strip_prefix({k: v for k, v in checkpoint["state_dict"].items() if isinstance(k, str)})


def _read_weights(weights_file: Path) -> dict[str, torch.Tensor]:
    """The weights of a `model.safetensors`, with a damaged or truncated file named."""
    if not weights_file.is_file():
        raise CheckpointError(f"{weights_file} is missing; the run may not have finished an epoch yet")
    try:
        return load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_file} is damaged ({str(exc)[:200]}); restore it, or export it again from "
                              "the run's checkpoints/last.ckpt") from None


def _build(spec: ModelSpec, path: Path) -> nn.Module:
    """The model a model.yaml describes; arguments its constructor refuses mean the file is damaged."""
    try:
        return spec.build()
    except SegwiseError:
        raise
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError, IndexError) as exc:
        raise CheckpointError(f"the model described by {path} cannot be built ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); its {SPEC_FILE} is damaged or from another segwise version"
                              ) from None
