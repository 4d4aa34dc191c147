"""Portable model files: `model.safetensors` (weights) + `model.yaml` (everything needed to rebuild and run it).

Loading never unpickles: safetensors for weights, `torch.load(weights_only=True)` for Lightning checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from segwise.errors import CheckpointError
from segwise.io_utils import atomic_write, atomic_write_text
from segwise.models.registry import create_model

FORMAT = "segwise-model/1"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.yaml"


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
    described = yaml.safe_load(spec_file.read_text())
    return ModelSpec.from_dict(described if isinstance(described, dict) else {}, str(spec_file))


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model from a run directory or checkpoint, in eval mode, without executing pickled code."""
    path = Path(path)
    _, weights_file = resolve_model_path(path)
    spec = peek_spec(path)
    if weights_file is None:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path} cannot be read as a checkpoint ({exc})") from None
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict); pass a run directory")
        state = _strip_prefix(checkpoint["state_dict"])
    else:
        if not weights_file.is_file():
            raise CheckpointError(f"{weights_file} is missing; the run may not have finished an epoch yet")
        state = load_file(str(weights_file))
    model = spec.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {weights_file or path} do not fit {spec.name}: {str(exc)[:400]}") from None
    return model.to(device).eval(), spec
