"""Runtimes of the forward pass on the CPU: torch eager, onnxruntime fp32, onnxruntime int8 and torch.compile,
side by side in one run, through segwise's own `Predictor` (`--backend`, `--quantize`, `--compile` of predict/eval).

One model (smp Unet-resnet34, encoder_weights None, random init with seed 0, 16 classes) saved as a run directory
whose config.yaml points at a synthetic training set (shapes on textured backgrounds, 512²) for int8 calibration.
Each runtime is a `Predictor.from_path(RUN, runtime=...)`:

- `eager`:        as segwise prepares every model (BatchNorm folded into the convolutions, channels_last);
- `ort-fp32`:     the ONNX graph segwise exports (dynamic axes), in onnxruntime with --threads intra-op threads;
- `ort-int8`:     that graph statically quantized (QDQ, per-channel int8 weights, uint8 activations) calibrated
                  on `--calibration-images` training images (agreement threshold off, so it always runs here);
- `torch.compile`: the eager network through torch.compile (inductor, CPU).

Cases: 512² images one per call (batch 1), 512² batches of 4 (`predict_proba_batch`), and a 4096² image in
sliding windows of 512 (overlap 0.25, 4 windows per forward). Setup (export, quantization, compilation) and a
warm-up call per 512² case are timed apart; then each case runs `--repeats` times (the 4096² case
`--slide-repeats` times), the runtimes taking turns within each repeat (a shared machine's load then reaches
them alike), and the median time per image is reported, with images/s relative to eager and the label agreement
with eager's argmax on the same inputs.

    python benchmarks/runtimes.py                        # ~8 minutes on 2 cores
    python benchmarks/runtimes.py --skip compile --slide-size 2048
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RUNTIMES = ("eager", "ort-fp32", "ort-int8", "compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--size", type=int, default=512, help="side of the whole-image cases")
    p.add_argument("--slide-size", type=int, default=4096, help="side of the sliding case (0: skip it)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per 512² case")
    p.add_argument("--slide-repeats", type=int, default=1)
    p.add_argument("--calibration-images", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="default: the cores")
    p.add_argument("--skip", nargs="*", default=[], choices=RUNTIMES)
    return p.parse_args(argv)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
            f"load average {os.getloadavg()[0]:.1f}")


def make_run(directory: Path, args: argparse.Namespace) -> Path:
    """The run directory: model files and a config.yaml whose data.root holds the calibration images."""
    from segwise.data.synthetic import make_synthetic_dataset
    from segwise.models.spec import ModelSpec, save_model

    root = directory / "data"
    make_synthetic_dataset(root, num_train=args.calibration_images, num_val=0, num_test=0, size=args.size, seed=0)
    torch.manual_seed(0)
    spec = ModelSpec(name="unet", encoder=args.encoder, args={"encoder_weights": None}, in_channels=3,
                     num_classes=args.classes, class_names=[f"class{k}" for k in range(args.classes)],
                     palette=[[(37 * k) % 256, (91 * k) % 256, (151 * k) % 256] for k in range(args.classes)],
                     mean=[128.0] * 3, std=[64.0] * 3)
    run = directory / "run"
    save_model(spec.build().eval(), spec, run)
    (run / "config.yaml").write_text(f"data:\n  root: {root}\n  format: folder\n")
    return run


def runtime_of(name: str, args: argparse.Namespace):
    from segwise.inference.onnx_backend import Runtime

    threads = args.threads
    return {"eager": Runtime(threads=threads), "ort-fp32": Runtime("onnxruntime", threads),
            "ort-int8": Runtime("onnxruntime", threads, "int8", args.calibration_images, min_agreement=0.0),
            "compile": Runtime(threads=threads, compile=True)}[name]


def build(names: list[str], run: Path, args: argparse.Namespace, inputs: dict) -> dict:
    """One Predictor per runtime; setup = loading, export/quantization/compilation and a warm-up call per case."""
    from segwise.inference import Predictor

    predictors = {}
    for name in names:
        start = time.perf_counter()
        try:
            predictor = Predictor.from_path(run, "cpu", runtime=runtime_of(name, args))
            predictor.predict_proba_batch(inputs["one"])  # warm-up (compiles, allocates)
            predictor.predict_proba_batch(inputs["four"])
        except Exception as exc:  # noqa: BLE001 - a runtime that fails here is reported, not fatal
            print(f"{name}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            continue
        predictors[name] = (predictor, time.perf_counter() - start)
        print(f"{name}: setup {predictors[name][1]:.1f} s", flush=True)
    return predictors


def measure(predictors: dict, args: argparse.Namespace, inputs: dict) -> dict:
    """Seconds per image (median over repeats) and the last labels, per case and runtime. The runtimes take turns
    within each repeat, so a change in the machine's load reaches all of them alike."""
    from segwise.inference import SlidingWindow, WholeImage

    cases = {"b1": (inputs["one"], args.repeats), "b4": (inputs["four"], args.repeats)}
    if args.slide_size:
        cases["slide"] = ([inputs["big"]], args.slide_repeats)
    results: dict = {name: {} for name in predictors}
    for case, (images, repeats) in cases.items():
        times: dict = {name: [] for name in predictors}
        for _ in range(repeats):
            for name, (predictor, _) in predictors.items():
                predictor.mode = SlidingWindow(args.window, None, 0.25, 4) if case == "slide" else WholeImage()
                start = time.perf_counter()
                probs = predictor.predict_proba_batch(images)
                times[name].append((time.perf_counter() - start) / len(images))
                results[name][case] = (statistics.median(times[name]), probs.argmax(1).astype(np.uint8))
                print(f"  {case} {name}: {times[name][-1]:.3f} s/image", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    inputs = {"one": [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)],
              "four": [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(4)]}
    if args.slide_size:
        inputs["big"] = rng.integers(0, 256, (args.slide_size, args.slide_size, 3), dtype=np.uint8)
    print(f"# {machine()}\n# {datetime.date.today()}  python {' '.join(shlex.quote(a) for a in sys.argv)}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), args)
        predictors = build([n for n in RUNTIMES if n not in args.skip], run, args, inputs)
        results = measure(predictors, args, inputs)
    print(report(results, {name: setup for name, (_, setup) in predictors.items()}, args))


def report(results: dict, setups: dict, args: argparse.Namespace) -> str:
    cases = [("b1", f"{args.size}² batch 1"), ("b4", f"{args.size}² batch 4")]
    if args.slide_size:
        cases.append(("slide", f"{args.slide_size}² sliding {args.window}"))
    eager = results.get("eager")
    lines = ["| case | runtime | s / image | images/s | × eager | labels = eager | setup s |",
             "|---|---|---|---|---|---|---|"]
    for key, label in cases:
        for name, result in results.items():
            seconds, labels = result[key]
            ratio = eager[key][0] / seconds if eager else float("nan")
            agree = float((labels == eager[key][1]).mean()) if eager else float("nan")
            lines.append(f"| {label} | {name} | {seconds:.3f} | {1 / seconds:.2f} | {ratio:.2f}× | "
                         f"{100 * agree:.2f} % | {setups[name]:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
