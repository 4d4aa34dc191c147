"""The network's runtime: eager torch (optionally `torch.compile`d) or onnxruntime on segwise's own ONNX graph.

`OnnxModel` is a model-like callable (normalised N×C×H×W tensor in, logits out), so every inference mode (whole
image, sliding windows, TTA, streamed rasters, ensembles) runs it through the same code path as a torch module.
The graph is exported on the fly and cached in the run directory under the checksum of the model files and the
export settings (`RUN/.cache/onnx/<sha256>.onnx`); static int8 quantization is calibrated on training images of
the run and refused when its labels disagree with float's. `segwise.export` writes its files with the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from segwise.errors import ConfigError, DataError, ModelError
from segwise.io_utils import atomic_write, atomic_write_text
from segwise.models.spec import ModelSpec, resolve_model_path
from segwise.progress import notice

INPUT, OUTPUT = "input", "logits"
BACKENDS = ("torch", "onnxruntime")
QUANTIZE = ("int8",)
DEFAULT_SIDE = 256  # example side (rounded up to the stride) when the model has no fixed image_size
CALIBRATION_SIDE = 512  # calibration images are cropped to at most this, top-left, before padding to the stride
CACHE_FORMAT = 1  # bump when the cached graphs change meaning, so old cache files are not reused
METADATA_HELP = ("input = (pixels - mean) / std per channel, mean/std in raw pixel units (both null: pixels / dtype "
                 "maximum, e.g. 255), float32 N x C x H x W, H and W multiples of input_stride (pad, then crop the "
                 "logits back); resize to image_size first when it is set. Output: logits N x K x H x W, "
                 "class = argmax over K, names in class_names.")


@dataclass
class Runtime:
    """How the forward pass runs: `--backend`, `--threads`, `--quantize`, `--calibration-images`, `--min-agreement`
    and `--compile` of predict and eval."""

    backend: str = "torch"
    threads: int | None = None  # None: the cores this process may use
    quantize: str | None = None
    calibration_images: int = 16
    min_agreement: float = 0.99
    compile: bool = False

    def check(self) -> None:
        """Option errors, before any model is read."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend}: choose one of {', '.join(BACKENDS)}")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ConfigError(f"--quantize {self.quantize}: choose one of {', '.join(QUANTIZE)}")
        if self.quantize and self.backend != "onnxruntime":
            raise ConfigError(f"--quantize {self.quantize} runs in onnxruntime only; add --backend onnxruntime")
        if self.compile and self.backend != "torch":
            raise ConfigError("--compile applies to the torch backend; drop it or use --backend torch")
        if self.calibration_images < 1:
            raise ConfigError(f"--calibration-images {self.calibration_images}: give at least 1")

    @property
    def cores(self) -> int:
        """Threads for the forward pass: --threads, else the cores this process may run on."""
        return self.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


class OnnxModel:
    """An onnxruntime session called like the torch network: N×C×H×W float tensor → N×K×H×W logits tensor.

    A graph exported with a fixed input size runs inputs of that size only (one image per run when its batch is
    fixed at 1); any other size stops with an error naming `--backend torch`.
    """

    def __init__(self, path: Path, threads: int, input_stride: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: torch's threads do the softmax and blending in between
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_stride = input_stride
        dims = self.session.get_inputs()[0].shape
        self.fixed = tuple(dims) if all(isinstance(d, int) for d in dims) else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None and tuple(images.shape[1:]) != self.fixed[1:]:
            raise ModelError(f"{self.path.name}: this ONNX graph was exported for {shape_text(self.fixed[1:])} inputs "
                             f"only (the model does not export with dynamic axes), got {shape_text(images.shape[1:])}; "
                             "run this input with --backend torch")
        x = images.detach().float().cpu().contiguous().numpy()
        if self.fixed is not None and self.fixed[0] != x.shape[0]:
            logits = np.concatenate([self.session.run([OUTPUT], {INPUT: x[i:i + 1]})[0] for i in range(len(x))])
        else:
            logits = self.session.run([OUTPUT], {INPUT: x})[0]
        return torch.from_numpy(logits)


# ---- the graph: segwise.export and the onnxruntime backend both write it with these ------------------------------
@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """The exporters log tracebacks of their own recovered failures (e.g. an opset conversion); segwise reports
    the outcome itself."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def to_onnx(model: nn.Module, example: torch.Tensor, stride: int, dynamic: bool,
            opset: int | None) -> tuple[Any, str, str | None]:
    """torch.export-based (dynamo) exporter first; the TorchScript exporter for models torch.export cannot trace.
    Returns (onnx.ModelProto, exporter name, why dynamo failed or None)."""
    import onnx
    from torch.export import Dim

    names = {"input_names": [INPUT], "output_names": [OUTPUT], "opset_version": opset}
    shapes = ({0: Dim("batch"), 2: stride * Dim("h"), 3: stride * Dim("w")},) if dynamic else None
    try:
        with warnings.catch_warnings(), quiet_logging():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, verbose=False, **names)
        return program.model_proto, "dynamo", None
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types for code it cannot trace
        reason = first_line(exc)
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in (INPUT, OUTPUT)} if dynamic else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), quiet_logging():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, dynamic_axes=axes, **names)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"the model cannot be exported to ONNX: dynamo exporter: {reason}; TorchScript exporter: "
                         f"{first_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue()), "torchscript", reason


def metadata(spec: ModelSpec, stride: int) -> dict[str, str]:
    """What a user needs to preprocess and read the output without segwise (JSON values)."""
    values = {"model": spec.name, "encoder": spec.encoder, "mean": spec.mean, "std": spec.std,
              "image_size": spec.image_size, "input_stride": stride, "class_names": spec.class_names,
              "palette": spec.palette, "extra_channels": spec.extra_channels}
    return {"preprocessing": METADATA_HELP, **{key: json.dumps(value) for key, value in values.items()}}


def example_size(spec: ModelSpec, stride: int, height: int | None = None,
                 width: int | None = None) -> tuple[int, int]:
    """The traced input size: a multiple of the input stride, as inference pads every input to one."""
    default = spec.image_size or [math.ceil(DEFAULT_SIDE / stride) * stride] * 2
    size = (height or default[0], width or height or default[1])
    if size[0] % stride or size[1] % stride:
        raise ModelError(f"export size {size[0]}x{size[1]} is not a multiple of the model's input stride {stride}; "
                         f"pass --size with multiples of {stride} (inference pads inputs to them)")
    return size


def parity_shapes(spec: ModelSpec, size: tuple[int, int], stride: int, dynamic: bool) -> list[tuple[int, ...]]:
    """The export size, and for a dynamic graph another batch size and a non-square size (the axes exercised)."""
    shapes = [(1, spec.in_channels, *size)]
    if dynamic:
        shapes.append((2, spec.in_channels, size[0] + stride, size[1] + 2 * stride))
    return shapes


@dataclass
class Parity:
    """onnxruntime against torch on one random input."""

    shape: tuple[int, ...]
    max_abs_diff: float
    label_agreement: float  # fraction of pixels whose argmax class is the same in both


def check_parity(onnx_path: Path, model: nn.Module, shapes: list[tuple[int, ...]], atol: float = 1e-4,
                 dynamic: bool = True) -> list[Parity]:
    """Run the ONNX file (onnxruntime, CPU) and `model` on random inputs of each shape.

    ModelError when max |onnx - torch| exceeds `atol` times max(1, largest |logit|): float32 rounding grows with
    the logits' magnitude, a wrong graph does not stay within it.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"onnxruntime cannot load the exported graph ({first_line(exc)}); export with an opset "
                         "it supports (e.g. --opset 18), or pass --no-check to write the file unchecked") from None
    results = []
    for seed, shape in enumerate(shapes):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
        with torch.inference_mode():
            expected = model(x).float().numpy()
        got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ModelError(f"ONNX output is {got.shape} on input {shape}, torch's is {expected.shape}")
        diff, scale = float(np.abs(got - expected).max()), float(np.abs(expected).max())
        results.append(Parity(tuple(shape), diff, label_agreement(got, expected)))
        if not diff <= atol * max(1.0, scale):  # also catches NaN
            hint = (" The graph holds only near the export size (e.g. adaptive pooling baked in): export with "
                    "--static [--size H[xW]]." if dynamic and seed else "")
            raise ModelError(f"ONNX and torch outputs differ on a {shape_text(shape)} input: max |diff| = {diff:.2e} > "
                             f"atol {atol:g} x max(1, max |logit| = {scale:.3g}).{hint} --no-check writes the file "
                             "anyway.")
    return results


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose class (argmax over axis 1; sign for one channel) is the same in two logit arrays."""
    labels = (lambda x: x.argmax(1)) if a.shape[1] > 1 else (lambda x: x[:, 0] > 0)
    return float((labels(a) == labels(b)).mean())


# ---- the backend: what Predictor runs ----------------------------------------------------------------------------
def runtime_model(network: nn.Module, spec: ModelSpec, stride: int, model_path: Path,
                  runtime: Runtime) -> nn.Module | OnnxModel:
    """The prepared torch `network` as `runtime` runs it: itself (threads set), torch.compile'd, or the cached
    (and optionally int8-quantized) ONNX graph of the model at `model_path` in an onnxruntime session."""
    if runtime.backend == "torch":
        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        return torch.compile(network) if runtime.compile else network
    path = cached_graph(network, spec, stride, model_path)
    if runtime.quantize:
        path = quantized_graph(path, spec, stride, config_beside(resolve_model_path(model_path)[0].parent), runtime)
    return OnnxModel(path, runtime.cores, stride)


def load_onnx(path: Path, runtime: Runtime) -> tuple[OnnxModel, ModelSpec]:
    """An exported `.onnx` file (from `segwise export` or the cache) and the spec its metadata holds."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a .onnx file written by `segwise export`")
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [key for key in ("mean", "std", "class_names", "palette", "input_stride") if key not in props]
    if missing:
        raise ModelError(f"{path}: the ONNX file lacks segwise's metadata ({', '.join(missing)}); export it with "
                         "`segwise export RUN out.onnx`, or pass the run directory instead")
    meta = {key: json.loads(value) for key, value in props.items() if key != "preprocessing"}
    spec = ModelSpec(name=meta.get("model") or "onnx", encoder=meta.get("encoder"), args={},
                     in_channels=proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value,
                     num_classes=len(meta["class_names"]), class_names=meta["class_names"], palette=meta["palette"],
                     mean=meta["mean"], std=meta["std"], image_size=meta.get("image_size"),
                     extra_channels=meta.get("extra_channels") or [])
    if runtime.quantize:
        path = quantized_graph(path, spec, meta["input_stride"], config_beside(path.parent), runtime)
    return OnnxModel(path, runtime.cores, int(meta["input_stride"])), spec


def cache_key(files: Sequence[Path], settings: dict[str, Any]) -> str:
    """sha256 of the files' bytes and the settings (JSON): the name of a cached graph."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached_graph(network: nn.Module, spec: ModelSpec, stride: int, model_path: Path) -> Path:
    """RUN/.cache/onnx/<sha256>.onnx of the model at `model_path`, exported (dynamic axes when the model allows,
    else a fixed size) and parity-checked the first time, reused after."""
    spec_file, weights_file = resolve_model_path(Path(model_path))
    size = example_size(spec, stride)
    settings = {"format": CACHE_FORMAT, "torch": torch.__version__, "size": size}
    key = cache_key([spec_file, weights_file or Path(model_path)], settings)
    path = spec_file.parent / ".cache" / "onnx" / f"{key}.onnx"
    if not path.is_file():
        notice(f"exporting the model to ONNX for onnxruntime (once, cached as {path})")
        export_graph(network.to(memory_format=torch.contiguous_format), spec, stride, size, path)
    return path


def export_graph(network: nn.Module, spec: ModelSpec, stride: int, size: tuple[int, int], path: Path) -> None:
    """Write the parity-checked graph of `network`: dynamic batch and size when it holds at two shapes, else fixed
    at batch 1 and `size`."""
    failure = None
    for dynamic in (True, False):
        try:
            write_graph(network, spec, stride, size, path, dynamic)
            return
        except ModelError as exc:
            failure = exc
    raise ModelError(f"the model does not run in onnxruntime ({failure}); use --backend torch")


def write_graph(network: nn.Module, spec: ModelSpec, stride: int, size: tuple[int, int], path: Path,
                dynamic: bool, opset: int | None = None, check: bool = True, atol: float = 1e-4,
                reference: nn.Module | None = None) -> tuple[Any, str, str | None, list[Parity]]:
    """Export `network` (already BatchNorm-folded) with segwise's metadata to `path`, atomically and only once the
    parity check against `reference` (default: `network`) passes; returns (proto, exporter, why dynamo failed,
    parity results)."""
    import onnx

    example = torch.randn(2 if dynamic else 1, spec.in_channels, *size, generator=torch.Generator().manual_seed(0))
    proto, exporter, reason = to_onnx(network, example, stride, dynamic, opset)
    onnx.helper.set_model_props(proto, metadata(spec, stride))
    written = graph_opset(proto)
    if opset is not None and written != opset:
        raise ModelError(f"--opset {opset}: the {exporter} exporter could not write this model in opset {opset} (it "
                         f"gave opset {written}); use --opset {written} or later, or leave --opset out")
    parity: list[Parity] = []

    def write(tmp: Path) -> None:
        onnx.save(proto, str(tmp))
        if check:
            parity.extend(check_parity(tmp, reference or network, parity_shapes(spec, size, stride, dynamic), atol,
                                       dynamic))

    atomic_write(path, write)
    return proto, exporter, reason, parity


# ---- int8 --------------------------------------------------------------------------------------------------------
def config_beside(run_dir: Path) -> Path:
    """The run's config.yaml (calibration images come from its data.root and train split)."""
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"--quantize int8 calibrates on the run's training images, but {config} is missing; pass "
                          "the run directory made by `segwise train`, or drop --quantize")
    return config


def calibration_samples(config: Path, count: int) -> list:
    """The first `count` training images (sorted by name) of the run's config: data.root, data.format and
    data.train_split."""
    from segwise.data.readers import find_split, split_path

    data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}
    root, layout = data.get("root"), data.get("format") or "folder"
    if not root:
        raise ConfigError(f"{config}: data.root is not set, so there are no training images to calibrate int8 on; "
                          "drop --quantize")
    split = split_path(layout, Path(root), data.get("train_split") or "train")
    try:
        samples = find_split(layout, split, data.get("extra_channels") or [], require_masks=False)
    except DataError as exc:
        raise DataError(f"--quantize int8 calibrates on the run's training images: {exc}") from None
    return sorted(samples, key=lambda s: s.name)[:count]


def calibration_inputs(samples: Sequence, spec: ModelSpec, stride: int) -> list[np.ndarray]:
    """Each image as the network sees it: normalised, resized to a fixed-size model's input, else cropped to at most
    CALIBRATION_SIDE² (top-left) and padded to the stride; 1×C×H×W float32."""
    from segwise.data.folder import read_sample_image
    from segwise.data.transforms import normalize
    from segwise.inference.whole import pad_to_multiple

    inputs = []
    for sample in samples:
        image = read_sample_image(sample)
        image = image[..., None] if image.ndim == 2 else image
        x = torch.from_numpy(np.ascontiguousarray(normalize(image, spec.mean, spec.std).transpose(2, 0, 1)))[None]
        if spec.image_size:
            x = F.interpolate(x, size=tuple(spec.image_size), mode="bilinear", align_corners=False)
        else:
            x = pad_to_multiple(x[..., :CALIBRATION_SIDE, :CALIBRATION_SIDE], stride)
        inputs.append(x.float().numpy())
    return inputs


def quantize_int8(float_path: Path, out: Path, inputs: Sequence[np.ndarray]) -> None:
    """onnxruntime's static quantization (QDQ, per-channel int8 weights, uint8 activations, min-max calibration
    on `inputs`), written atomically."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {INPUT: x}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), quiet_logging():
            warnings.simplefilter("ignore")
            quantize_static(str(float_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    atomic_write(out, write)


def quantized_graph(float_path: Path, spec: ModelSpec, stride: int, config: Path, runtime: Runtime) -> Path:
    """The int8 graph of `float_path` calibrated on the run's training images, cached beside the float graph with a
    record of the images and the agreement (<key>.json); refused below `runtime.min_agreement`."""
    samples = calibration_samples(config, runtime.calibration_images)
    if not samples:
        raise DataError(f"--quantize int8: no training images found for {config}; drop --quantize")
    names = [str(s.image) for s in samples]
    key = cache_key([float_path], {"format": CACHE_FORMAT, "quantize": runtime.quantize, "images": names})
    cache = config.parent / ".cache" / "onnx"
    path, record = cache / f"{key}.int8.onnx", cache / f"{key}.int8.json"
    if path.is_file() and record.is_file():
        agreement = json.loads(record.read_text(encoding="utf-8"))["label_agreement"]
    else:
        inputs = calibration_inputs(samples, spec, stride)
        quantize_int8(float_path, path, inputs)
        agreement = graph_agreement(float_path, path, inputs, runtime.cores)
        atomic_write_text(record, json.dumps({"float_graph": float_path.name, "calibration_images": names,
                                              "label_agreement": agreement}, indent=1) + "\n")
    print(f"int8: labels agree with float on {100 * agreement:.2f} % of the pixels of {len(samples)} calibration "
          f"image(s) (recorded in {record})")
    if agreement < runtime.min_agreement:
        raise ModelError(f"--quantize int8 refused: labels agree with float on {100 * agreement:.2f} % of the "
                         f"calibration pixels, below --min-agreement {runtime.min_agreement:g}; run in float (drop "
                         "--quantize), or lower --min-agreement if that agreement is good enough")
    return path


def graph_agreement(float_path: Path, int8_path: Path, inputs: Sequence[np.ndarray], threads: int) -> float:
    """Pixel-weighted label agreement of two graphs over `inputs`."""
    float_model, int8_model = OnnxModel(float_path, threads, 1), OnnxModel(int8_path, threads, 1)
    agree = total = 0.0
    for x in inputs:
        a, b = float_model(torch.from_numpy(x)).numpy(), int8_model(torch.from_numpy(x)).numpy()
        pixels = a.shape[0] * a.shape[2] * a.shape[3]
        agree += label_agreement(a, b) * pixels
        total += pixels
    return agree / total


def graph_opset(proto: Any) -> int:
    """The ai.onnx opset an onnx.ModelProto is written in."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def shape_text(dims: Sequence[int | str]) -> str:
    return " x ".join(str(d) for d in dims)
