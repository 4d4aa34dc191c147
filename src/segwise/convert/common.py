"""What every importer of other systems' weights shares: unwrapping the usual checkpoint containers and naming
the keys that do not fit the model, so a file of another architecture fails with its first unmatched key."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segwise.errors import CheckpointError
from segwise.models.spec import ModelSpec, save_model

_RECONSTRUCT = np._core.multiarray._reconstruct
_NUMPY_GLOBALS = [np.ndarray, np.dtype, _RECONSTRUCT, (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
                  *(type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8"))]
"""What a pickled numpy array needs (numpy 1.x pickles name `numpy.core`, 2.x `numpy._core`); nothing else."""
WRAPPERS = ("model", "state_dict", "model_state_dict")
"""Keys under which training loops store the state_dict beside optimizer state, step counters and config."""


def unwrap_state_dict(raw: Any) -> Any:
    """The state_dict inside `{'model': ...}` / `{'state_dict': ...}` / `{'model_state_dict': ...}` (nested
    wrappers too), without DDP's `module.` prefixes; anything that is no mapping comes back unchanged for the caller
    to refuse."""
    while isinstance(raw, Mapping):
        inner = next((raw[key] for key in WRAPPERS if isinstance(raw.get(key), Mapping)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, Mapping):
        return raw
    return {key.removeprefix("module.") if isinstance(key, str) else key: value for key, value in raw.items()}


def shape_of(value: Any) -> tuple[int, ...] | None:
    """A tensor's or array's shape as a tuple, None for anything without one."""
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(n) for n in shape)


def unmatched_key_error(source: Any, key: str, value: Any, expected: str, count: int = 1) -> CheckpointError:
    """The error for a file whose key `key` (and `count` keys in all) has no place in `expected` (e.g. 'FactSeg'):
    the first such key with its shape."""
    return CheckpointError(f"{source}: {count} key(s) are not {expected} keys, the first unmatched is {key!r} with "
                           f"shape {shape_of(value)}; pass a {expected} checkpoint, or use the importer of the "
                           "architecture it holds")


def check_state_dict(state: Mapping[str, Any], expected: Mapping[str, Any], source: Any, architecture: str) -> None:
    """Raise a CheckpointError listing the keys of `state` missing from / unexpected in / of another shape than
    `expected` (a model's state_dict), the first of them named with its shape; silent when all fit."""
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    reshaped = [k for k in state if k in expected and shape_of(state[k]) != shape_of(expected[k])]
    if not (unexpected or missing or reshaped):
        return
    parts = []
    if reshaped:
        key = reshaped[0]
        parts.append(f"{len(reshaped)} key(s) of another shape, first {key!r}: {shape_of(state[key])} in the file, "
                     f"{shape_of(expected[key])} in {architecture}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r} with shape "
                     f"{shape_of(state[unexpected[0]])}: {', '.join(unexpected[:8])}")
    if missing:
        parts.append(f"{len(missing)} missing key(s), first {missing[0]!r} with shape {shape_of(expected[missing[0]])}"
                     f": {', '.join(missing[:8])}")
    raise CheckpointError(f"{source} does not fit {architecture}: {'; '.join(parts)}")


def read_trainer_checkpoint(path: Path) -> Any:
    """The checkpoint object, read without running pickled code; a file that needs more is refused with the fix."""
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        raise CheckpointError(
            f"{path} cannot be read as plain tensors and numbers ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}). It may be damaged, or hold a whole "
            "pickled model, which segwise never unpickles: in the original environment re-save it with "
            "torch.save(model.state_dict(), 'weights.pth') and convert that file") from None


def write_imported(spec: ModelSpec, state: Mapping[str, Any], source: Any, architecture: str, out_dir: Path) -> Path:
    """Build `spec`'s model, check that `state` fits it key for key (`check_state_dict`), load it and write the
    model folder `out_dir` (model.safetensors + model.yaml): the last step of every importer."""
    model = spec.build()
    check_state_dict(state, model.state_dict(), source, architecture)
    model.load_state_dict(state)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, spec, out_dir)
    return out_dir
