"""ONNX export of a trained model, with a parity check of onnxruntime against torch.

The graph takes the *normalised* image batch `input`, float32 N×C×H×W with H and W multiples of the model's input
stride, and returns `logits`, float32 N×K×H×W (class = argmax over K). Preprocessing needs no segwise: the file's
metadata_props hold mean, std, image_size, class names, palette and the input stride (see
`segwise.inference.onnx_backend.METADATA_HELP`). The graph is written by `onnx_backend.write_graph`, the code that
`predict --backend onnxruntime` exports its cached graphs with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from segwise.models import model_entry
from segwise.models.spec import load_model, peek_spec
from segwise.errors import DataError, ModelError
from segwise.inference.onnx_backend import (
    INPUT, OUTPUT, Parity, check_parity, example_size, graph_opset, shape_text, write_graph,
)
from segwise.inference.predictor import PIXEL_TASKS, fold_batchnorm
from segwise.models import input_stride

__all__ = ["ExportReport", "Parity", "check_opset", "check_parity", "export_onnx"]
MIN_OPSET = 7  # the oldest opset the TorchScript exporter writes


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
                 f"input        : {INPUT} float32 {shape_text(self.input_shape)} (normalised: see the metadata)",
                 f"output       : {OUTPUT} float32 {shape_text(self.output_shape)}"]
        lines += [f"parity       : {shape_text(p.shape)}: max |onnx - torch| = {p.max_abs_diff:.2e}, labels agree on "
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
    size = example_size(spec, stride, height, width)
    example = torch.randn(2 if dynamic else 1, spec.in_channels, *size, generator=torch.Generator().manual_seed(0))
    network = fold_batchnorm(model, example)
    proto, exporter, reason, parity = write_graph(network, spec, stride, size, out, dynamic, opset, check, atol,
                                                  reference=model)
    return ExportReport(out, exporter, graph_opset(proto), _dims(proto.graph.input[0]), _dims(proto.graph.output[0]),
                        network is not model, parity, fallback_reason=reason)


def check_opset(opset: int | None) -> None:
    """An opset the exporters can write, refused before the model is loaded."""
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise ModelError(f"--opset {opset} is not an ONNX opset the exporters write ({MIN_OPSET} .. {newest}); pass "
                         "one in that range (18 or later for the default dynamo exporter), or leave --opset out")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
