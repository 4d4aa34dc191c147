"""`segwise convert factseg --paddle`: the PaddlePaddle reproduction's `.pdparams`, read without PaddlePaddle.

The `.pdparams` files are written here with plain pickle exactly as `paddle.save` lays them out (checked once
against files written by PaddlePaddle 3.3.1, see tests/fixtures/factseg_paddle/README.md), so no binary fixture
is stored and PaddlePaddle is never needed.
"""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from segwise.cli import main
from segwise.convert.factseg import convert_official_checkpoint, load_paddle_checkpoint
from segwise.convert.paddle import NAME_TABLE, to_torch_layout
from segwise.errors import CheckpointError
from segwise.models import create_model
from segwise.models.spec import load_model
from tests.test_factseg import PARITY, SMALL, _official_layout, _rule_weights

pytestmark = pytest.mark.usefixtures("one_thread")


class _PaddleTensor:
    """Pickles as paddle.save pickles a Tensor outside a bare state_dict: builtins.tuple((name, array))."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def __reduce__(self):
        return tuple, ((self.name, self.array),)


def _paddle_layout(official: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Official (torch) FactSeg names → the Paddle reproduction's: no BN step counter, `_mean`/`_variance`."""
    return {key.replace("running_mean", "_mean").replace("running_var", "_variance"): value.numpy()
            for key, value in official.items() if not key.endswith("num_batches_tracked")}


def _save_pdparams(path: Path, arrays: dict[str, np.ndarray], nested: bool = False) -> Path:
    """`paddle.save(layer.state_dict())` (a dict of arrays + the name table, protocol 4), or with `nested`
    `paddle.save({'model': layer.state_dict(), 'iter': ...})` (an OrderedDict of tensors, no name table)."""
    internal = {key: f"param_{i}.w_0" for i, key in enumerate(arrays)}
    if nested:
        obj = {"model": OrderedDict((k, _PaddleTensor(internal[k], v)) for k, v in arrays.items()), "iter": 60000}
    else:
        obj = {**arrays, NAME_TABLE: internal}
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.mark.skipif(not (PARITY / "probs.npy").is_file(), reason="../shared/reference/factseg_parity is absent")
def test_parity_with_the_official_model_through_a_pdparams(tmp_path: Path, capsys):
    """The name-seeded weights in Paddle's names and layout, converted by the CLI (format from the suffix), give
    the official outputs: float64 to 1e-6 (the fixture is float64 rounded to float32)."""
    official = _rule_weights(json.loads((PARITY / "state_dict_keys.json").read_text()))
    path = _save_pdparams(tmp_path / "factseg.pdparams", _paddle_layout(official))
    assert main(["convert", "factseg", str(path), "-o", str(tmp_path / "run")]) == 0
    assert "converted" in capsys.readouterr().out
    model, spec = load_model(tmp_path / "run")
    assert (spec.encoder, spec.num_classes, spec.class_names[1]) == ("resnet50", 16, "ship")
    model = model.double().eval()
    x = torch.from_numpy(np.load(PARITY / "input.npy")).double()
    with torch.no_grad():
        sr, fa = model.branches(x)
        probs = model(x).exp()
    for name, ours in (("sr_logits", sr), ("fa_logits", fa), ("probs", probs)):
        reference = torch.from_numpy(np.load(PARITY / f"{name}.npy")).double()
        assert ours.shape == reference.shape and (ours - reference).abs().max().item() < 1e-6, name


@pytest.mark.parametrize("layout", ["nested", "paddlers"])
def test_nested_files_and_paddlers_names_convert_to_the_same_model(tmp_path: Path, layout: str):
    """`{'model': OrderedDict of (name, array) tuples}` (collections.OrderedDict and builtins.tuple are the two
    non-numpy globals admitted), and PaddleRS's FPN names (`inner_blocks.0` for `fpn_inner1`); `--paddle` reads a
    file of any suffix."""
    torch.manual_seed(4)
    ours = create_model("factseg", classes=3, encoder="resnet18").eval()
    arrays = _paddle_layout(_official_layout(ours.state_dict()))
    if layout == "paddlers":
        arrays = {_paddlers(k): v for k, v in arrays.items()}
    path = _save_pdparams(tmp_path / "weights.bin", arrays, nested=layout == "nested")
    assert main(["convert", "factseg", str(path), "-o", str(tmp_path / "run"), "--paddle"]) == 0
    model, spec = load_model(tmp_path / "run")
    assert spec.encoder == "resnet18" and spec.class_names == ["class_0", "class_1", "class_2"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ours(x))


def _paddlers(key: str) -> str:
    for kind in ("inner", "layer"):
        for level in range(1, 5):
            key = key.replace(f"fpn.fpn_{kind}{level}.", f"fpn.{kind}_blocks.{level - 1}.")
    return key


class _Open:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


class _System:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, capsys):
    good = {"fg_cls.bias": np.zeros(3, np.float32)}
    for payload, name in ((_Open, "io.open"), (_System, "system")):
        target = tmp_path / f"pwned_by_{payload.__name__}"
        opened = pickle.loads(pickle.dumps(payload(tmp_path / "probe")))  # plain pickle runs the payload ...
        getattr(opened, "close", lambda: None)()
        assert (tmp_path / "probe").exists()
        (tmp_path / "probe").unlink()
        path = tmp_path / f"{payload.__name__}.pdparams"
        path.write_bytes(pickle.dumps({**good, "bi_cls.bias": payload(target)}, protocol=4))
        with pytest.raises(CheckpointError, match=f"{name} is not allowed.*never runs pickled code"):
            load_paddle_checkpoint(path)
        assert main(["convert", "factseg", str(path), "-o", str(tmp_path / "run")]) == 2
        assert "is not allowed" in capsys.readouterr().err
        assert not target.exists() and not (tmp_path / "run").exists()  # ... but not when segwise reads them
    # Static-graph LoDTensors pickle through builtins.eval: refused too.
    (tmp_path / "eval.pdparams").write_bytes(pickle.dumps({"x": _Eval()}, protocol=4))
    with pytest.raises(CheckpointError, match="builtins.eval is not allowed"):
        load_paddle_checkpoint(tmp_path / "eval.pdparams")


class _Eval:
    def __reduce__(self):
        return eval, ("1",)


def test_other_architectures_and_misfits_name_the_first_unmatched_key(tmp_path: Path):
    other = {"backbone.conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "head.bias": np.zeros(2, np.float32)}
    with pytest.raises(CheckpointError, match=r"2 key\(s\) are not FactSeg keys, the first unmatched is "
                                              r"'backbone.conv1.weight' with shape \(64, 3, 7, 7\)"):
        load_paddle_checkpoint(_save_pdparams(tmp_path / "other.pdparams", other))
    torch.manual_seed(5)
    small = _paddle_layout(_official_layout(create_model("factseg", classes=3, encoder="resnet18",
                                                         **SMALL).state_dict()))
    with pytest.raises(CheckpointError, match=r"does not fit FactSeg/resnet18: \d+ key\(s\) of another shape, first "
                                              r"'sr_fpn.inner_blocks.0.0.weight': \(16, 64, 1, 1\) in the file"):
        convert_official_checkpoint(_save_pdparams(tmp_path / "small.pdparams", small), tmp_path / "a")
    full = _paddle_layout(_official_layout(create_model("factseg", classes=3, encoder="resnet18").state_dict()))
    del full["bi_cls.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\), first 'fa_head.bias' with shape \(1,\)"):
        convert_official_checkpoint(_save_pdparams(tmp_path / "partial.pdparams", full), tmp_path / "b")
    (tmp_path / "text.pdparams").write_bytes(pickle.dumps({"fg_cls.weight": "not an array"}, protocol=4))
    with pytest.raises(CheckpointError, match="'fg_cls.weight' holds str, not a numeric array"):
        load_paddle_checkpoint(tmp_path / "text.pdparams")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main(["convert", "factseg", str(tmp_path / "text.pdparams")]) == 2  # no output folder given
    assert main(["convert", "factseg", str(tmp_path / "text.pdparams"), "c", "-o", "d"]) == 2  # two given


def test_paddle_layouts_become_torch_layouts():
    """Linear weights are [in, out] in Paddle; BN statistics are `_mean`/`_variance` without a step counter."""
    linear = np.arange(6, dtype=np.float32).reshape(2, 3)  # Paddle Linear(2, 3)
    conv = np.ones((4, 2, 3, 3), np.float32)
    torch_state = to_torch_layout({"fc.weight": linear, "conv.weight": conv, "bn._mean": np.zeros(4, np.float32),
                                   "bn._variance": np.ones(4, np.float32)})
    assert torch.equal(torch_state["fc.weight"], torch.from_numpy(linear.T.copy()))
    assert torch_state["conv.weight"].shape == (4, 2, 3, 3)
    assert set(torch_state) == {"fc.weight", "conv.weight", "bn.running_mean", "bn.running_var",
                                "bn.num_batches_tracked"}
