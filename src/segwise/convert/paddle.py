"""PaddlePaddle `.pdparams` files read without PaddlePaddle, and Paddle's parameter layout made torch's.

`paddle.save(layer.state_dict(), path)` pickles (protocol 4 by default, 2–4 allowed) a plain dict of numpy arrays
plus the key `StructuredToParameterName@@` (structured name → Paddle's internal parameter name, e.g.
`conv2d_0.w_0`). A state_dict saved inside another object (`{'model': state_dict, ...}`) stays a
`collections.OrderedDict` whose tensors pickle as `builtins.tuple((internal name, array))`. The unpickler below
admits exactly those globals plus numpy's array/dtype/scalar reconstruction: any other global (`os.system`,
`builtins.eval` of static-graph LoDTensors, a class's `__reduce__`) is refused before anything is called.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segwise.convert.common import unwrap_state_dict
from segwise.errors import CheckpointError

NAME_TABLE = "StructuredToParameterName@@"
_MULTIARRAY = np._core.multiarray
_ALLOWED = {
    **{(module, name): getattr(_MULTIARRAY, name)
       for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "tuple"): tuple,
}
"""(module, name) → object: all a `.pdparams` needs (numpy 1.x pickles name `numpy.core`, 2.x `numpy._core`)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a `.pdparams` by structured name, read without PaddlePaddle and without running pickled code.

    Containers are unwrapped by `state_of_arrays`; this only undoes Paddle's own encoding: the name table is dropped and
    `(internal name, array)` tuples become their array."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = _RestrictedUnpickler(file, encoding="latin1").load()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:  # a refused global, a damaged file, or no pickle at all
        raise CheckpointError(
            f"{path} cannot be read as a PaddlePaddle .pdparams of numpy arrays ({type(exc).__name__}: "
            f"{str(exc)[:200] or 'no detail'}). segwise never runs pickled code: only numpy arrays, dicts, lists and "
            "tuples are read; re-save the weights with paddle.save(model.state_dict(), 'model.pdparams')") from None
    return _decode(raw)


def _decode(raw: Any) -> Any:
    if isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[0], str) and isinstance(raw[1], np.ndarray):
        return raw[1]
    if isinstance(raw, dict):
        return {key: _decode(value) for key, value in raw.items() if key != NAME_TABLE}
    return raw


def state_of_arrays(raw: Any, source: Any) -> dict[str, np.ndarray]:
    """The state_dict of numeric arrays in what `read_pdparams` returned (unwrapping `{'model': ...}` and the
    like); anything else is refused naming the first key that holds no array."""
    state = unwrap_state_dict(raw)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source} holds no state_dict of arrays; pass a .pdparams written by "
                              "paddle.save(model.state_dict())")
    for key, value in state.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            raise CheckpointError(f"{source}: {key!r} holds {type(value).__name__}"
                                  f"{' of ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}, not a "
                                  "numeric array; pass a .pdparams written by paddle.save(model.state_dict())")
    return state


def to_torch_layout(state: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Paddle names and layouts → torch's: BatchNorm `_mean`/`_variance` → `running_mean`/`running_var` (plus the
    `num_batches_tracked` counter Paddle lacks, 0) and Linear weights [in, out] → [out, in]. Every 2-D `weight`
    is taken as a Linear's (Paddle's Embedding, the one 2-D weight kept as torch's, is in no model imported here).
    Conv weights are [out, in, kh, kw] in both."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value.T if value.ndim == 2 and key.endswith(".weight")
                                                       else value))
        if key.endswith("._mean") or key.endswith("._variance"):
            prefix = key.rsplit(".", 1)[0]
            key = f"{prefix}.running_mean" if key.endswith("._mean") else f"{prefix}.running_var"
            out.setdefault(f"{prefix}.num_batches_tracked", torch.zeros((), dtype=torch.int64))
        out[key] = tensor
    return out
