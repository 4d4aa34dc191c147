"""ONNX export of a trained model, with a parity check of onnxruntime against torch.

The graph takes the *normalised* image batch `input`, float32 N×C×H×W with H and W multiples of the model's input
stride, and returns `logits`, float32 N×K×H×W (class = argmax over K). Preprocessing needs no segwise: the file's
metadata_props hold mean, std, image_size, class names, palette and the input stride (see `METADATA_HELP`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.export import Dim

from segwise.models import model_entry
from segwise.models.spec import ModelSpec, load_model, peek_spec
from segwise.errors import DataError, ModelError
from segwise.inference.predictor import PIXEL_TASKS, fold_batchnorm
from segwise.io_utils import atomic_write
from segwise.models import input_stride

INPUT, OUTPUT = "input", "logits"
DEFAULT_SIDE = 256  # example side (rounded up to the stride) when the model has no fixed image_size
MIN_OPSET = 7  # the oldest opset the TorchScript exporter writes
METADATA_HELP = ("input = (pixels - mean) / std per channel, mean/std in raw pixel units (both null: pixels / dtype "
                 "maximum, e.g. 255), float32 N x C x H x W, H and W multiples of input_stride (pad, then crop the "
                 "logits back); resize to image_size first when it is set. Output: logits N x K x H x W, "
                 "class = argmax over K, names in class_names.")


@dataclass
class Parity:
    """onnxruntime against torch on one random input."""

    shape: tuple[int, ...]
    max_abs_diff: float
    label_agreement: float  # fraction of pixels whose argmax class is the same in both


@dataclass
class ExportReport:
    """What `export_onnx` wrote: exporter, opset, graph I/O shapes and the parity results."""

    path: Path
    exporter: str  # "dynamo" (torch.export) or "torchscript" (the fallback)
    opset: int
    input_shape: list[int | str]
    output_shape: list[int | str]
    batchnorm_folded: bool
    parity: list[Parity] = field(default_factory=list)
    fallback_reason: str | None = None  # why the dynamo exporter was not used

    def summary(self) -> str:
        """The lines `segwise export` prints."""
        lines = [f"wrote        : {self.path}",
                 f"exporter     : {self.exporter} (opset {self.opset})"
                 + (f"; the dynamo exporter failed: {self.fallback_reason}" if self.fallback_reason else ""),
                 f"input        : {INPUT} float32 {_shape(self.input_shape)} (normalised: see the metadata)",
                 f"output       : {OUTPUT} float32 {_shape(self.output_shape)}"]
        lines += [f"parity       : {_shape(p.shape)}: max |onnx - torch| = {p.max_abs_diff:.2e}, labels agree on "
                  f"{100 * p.label_agreement:.2f} % of pixels" for p in self.parity] or ["parity       : not checked"]
        return "\n".join(lines)


def export_onnx(model_path: Path, out: Path, *, opset: int | None = None, height: int | None = None,
                width: int | None = None, dynamic: bool = True, check: bool = True, atol: float = 1e-4,
                overwrite: bool = False) -> ExportReport:
    """Export a run directory / model.yaml / .ckpt to the ONNX file `out`, written only once parity holds.

    `height`/`width` set the example size (default: spec.image_size, else 256 rounded up to the input stride);
    `dynamic=False` fixes batch 1 and that size in the graph.
    """
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out} is a directory; pass a file name such as {out / 'model.onnx'}")
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass --overwrite to replace it")
    check_opset(opset)
    model_entry(peek_spec(model_path).name, PIXEL_TASKS)  # ONNX export covers image-in, logits-out models
    model, spec = load_model(model_path)
    stride = input_stride(model)
    size = _example_size(spec, stride, height, width)
    example = torch.randn(2 if dynamic else 1, spec.in_channels, *size, generator=torch.Generator().manual_seed(0))
    network = fold_batchnorm(model, example)
    proto, exporter, reason = _to_onnx(network, example, stride, dynamic, opset)
    onnx.helper.set_model_props(proto, _metadata(spec, stride))
    written_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written_opset != opset:
        raise ModelError(f"--opset {opset}: the {exporter} exporter could not write this model in opset {opset} (it "
                         f"gave opset {written_opset}); use --opset {written_opset} or later, or leave --opset out")
    report = ExportReport(out, exporter, written_opset, _dims(proto.graph.input[0]), _dims(proto.graph.output[0]),
                          network is not model, fallback_reason=reason)

    def write(tmp: Path) -> None:
        onnx.save(proto, str(tmp))
        if check:
            shapes = [(1, spec.in_channels, *size)]
            if dynamic:  # another batch size and a non-square size, so the dynamic axes are exercised too
                shapes.append((2, spec.in_channels, size[0] + stride, size[1] + 2 * stride))
            report.parity = check_parity(tmp, model, shapes, atol, dynamic)

    atomic_write(out, write)
    return report


def check_opset(opset: int | None) -> None:
    """An opset the exporters can write, refused before the model is loaded."""
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise ModelError(f"--opset {opset} is not an ONNX opset the exporters write ({MIN_OPSET} .. {newest}); pass "
                         "one in that range (18 or later for the default dynamo exporter), or leave --opset out")


@contextlib.contextmanager
def _quiet_logging():
    """The exporters log tracebacks of their own recovered failures (e.g. an opset conversion); segwise reports
    the outcome itself."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def check_parity(onnx_path: Path, model: nn.Module, shapes: list[tuple[int, ...]], atol: float = 1e-4,
                 dynamic: bool = True) -> list[Parity]:
    """Run the ONNX file (onnxruntime, CPU) and `model` on random inputs of each shape.

    ModelError when max |onnx - torch| exceeds `atol` times max(1, largest |logit|): float32 rounding grows with
    the logits' magnitude, a wrong graph does not stay within it.
    """
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"onnxruntime cannot load the exported graph ({_first_line(exc)}); export with an opset "
                         "it supports (e.g. --opset 18), or pass --no-check to write the file unchecked") from None
    results = []
    for seed, shape in enumerate(shapes):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
        with torch.inference_mode():
            expected = model(x).float().numpy()
        got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ModelError(f"ONNX output is {got.shape} on input {shape}, torch's is {expected.shape}")
        labels = (lambda a: a.argmax(1)) if expected.shape[1] > 1 else (lambda a: a[:, 0] > 0)
        diff, scale = float(np.abs(got - expected).max()), float(np.abs(expected).max())
        results.append(Parity(tuple(shape), diff, float((labels(got) == labels(expected)).mean())))
        if not diff <= atol * max(1.0, scale):  # also catches NaN
            hint = (" The graph holds only near the export size (e.g. adaptive pooling baked in): export with "
                    "--static [--size H[xW]]." if dynamic and seed else "")
            raise ModelError(f"ONNX and torch outputs differ on a {_shape(shape)} input: max |diff| = {diff:.2e} > "
                             f"atol {atol:g} x max(1, max |logit| = {scale:.3g}).{hint} --no-check writes the file "
                             "anyway.")
    return results


def _example_size(spec: ModelSpec, stride: int, height: int | None, width: int | None) -> tuple[int, int]:
    """The traced input size: a multiple of the input stride, as inference pads every input to one."""
    default = spec.image_size or [math.ceil(DEFAULT_SIDE / stride) * stride] * 2
    size = (height or default[0], width or height or default[1])
    if size[0] % stride or size[1] % stride:
        raise ModelError(f"export size {size[0]}x{size[1]} is not a multiple of the model's input stride {stride}; "
                         f"pass --size with multiples of {stride} (inference pads inputs to them)")
    return size


def _to_onnx(model: nn.Module, example: torch.Tensor, stride: int, dynamic: bool,
             opset: int | None) -> tuple[onnx.ModelProto, str, str | None]:
    """torch.export-based (dynamo) exporter first; the TorchScript exporter for models torch.export cannot trace."""
    names = {"input_names": [INPUT], "output_names": [OUTPUT], "opset_version": opset}
    shapes = ({0: Dim("batch"), 2: stride * Dim("h"), 3: stride * Dim("w")},) if dynamic else None
    try:
        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, verbose=False, **names)
        return program.model_proto, "dynamo", None
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types for code it cannot trace
        reason = _first_line(exc)
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in (INPUT, OUTPUT)} if dynamic else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, dynamic_axes=axes, **names)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"the model cannot be exported to ONNX: dynamo exporter: {reason}; TorchScript exporter: "
                         f"{_first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue()), "torchscript", reason


def _metadata(spec: ModelSpec, stride: int) -> dict[str, str]:
    """What a user needs to preprocess and read the output without segwise (JSON values)."""
    values = {"model": spec.name, "encoder": spec.encoder, "mean": spec.mean, "std": spec.std,
              "image_size": spec.image_size, "input_stride": stride, "class_names": spec.class_names,
              "palette": spec.palette}
    return {"preprocessing": METADATA_HELP, **{key: json.dumps(value) for key, value in values.items()}}


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def _shape(dims: Sequence[int | str]) -> str:
    return " x ".join(str(d) for d in dims)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
