"""Sliding-window inference on a large GeoTIFF: segwise (streamed) against MONAI and a naive full-size accumulator.

Every contender runs the same network (smp Unet, random init with one seed, eval mode) with the same windows
(size, overlap, MONAI's placement), batch of windows and blending, from the same GeoTIFF to a class GeoTIFF:

- `segwise`:  `segwise.inference.Predictor(...).predict_raster` (rows read, blended and written band by band; the
              Predictor folds BatchNorm into the convolutions and runs the network in channels_last memory
              format, as it does for every user);
- `segwise-memory`: segwise's in-memory `SlidingWindow` mode on the whole image tensor (optional, --memory-mode);
- `monai`:    the image read whole, `monai.inferers.sliding_window_inference` (softmax per window, output on the
              CPU), argmax, class GeoTIFF written whole;
- `monai-cl`: MONAI as above given the network segwise's Predictor prepares (BatchNorm folded, channels_last),
              which MONAI does not do by default: this separates the network preparation from the engine's own work;
- `naive`:    mmseg's `slide_inference` pattern: full-size float32 probability sum and count map, one window
              per forward, constant weights.

Each contender runs in its own subprocess, one after another, so that peak RSS (ru_maxrss) is its own; the
wall and CPU times cover reading, inference and writing (not Python/torch start-up or building the model); "RSS
over baseline" is the peak minus the RSS after the model is built and has run one window. With
`--device cuda` the peak device memory is reported as well. Ratios are against MONAI. The class maps of segwise
and MONAI are compared pixel by pixel when the image has at most 8192² pixels.

    python benchmarks/sliding.py                                   # 2048² 3-band, 16 classes: minutes on 2 CPUs
    python benchmarks/sliding.py --size 8192                       # the issue's CPU comparison
    python benchmarks/sliding.py --size 30000 --only segwise       # the 30 000² GeoTIFF within 4 GB of RSS
    python benchmarks/sliding.py --size 30000 --only segwise --model conv1x1   # the engine alone, CPU-friendly
    python benchmarks/sliding.py --size 8192 --device cuda --batch 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

CONTENDERS = ("segwise", "segwise-memory", "monai", "monai-cl", "naive")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="square image side in pixels")
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--model", default="unet",
                        help="smp architecture name, or conv1x1: a 1×1 convolution standing in for the network, "
                             "so that what is measured is the inference engine itself (reading, blending, writing)")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--blend", choices=("constant", "gaussian"), default="gaussian")
    parser.add_argument("--batch", type=int, default=4, help="windows per forward (naive always runs 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, help="run only these contenders")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of all contenders, one after another, the order rotating each round; "
                             "median time and largest RSS reported")
    parser.add_argument("--memory-mode", action="store_true", help="also run segwise's in-memory SlidingWindow")
    parser.add_argument("--workdir", type=Path, help="where the input and output GeoTIFFs go (default: a temp dir)")
    parser.add_argument("--run-one", choices=CONTENDERS, help=argparse.SUPPRESS)  # internal: one contender
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- the parent: data, subprocesses, table -------------------------------------------------------------------
def write_input(path: Path, size: int, bands: int, seed: int = 0) -> None:
    """A smooth-ish random uint8 GeoTIFF written in row bands, so even 30 000² never sits in memory."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    rows = 512
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="uint8", crs="EPSG:32633",
                   transform=Affine(0.5, 0, 500000, 0, -0.5, 4100000), tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, rows):
            count = min(rows, size - top)
            coarse = rng.integers(0, 256, (bands, count // 16 + 1, size // 16 + 1), dtype=np.uint8)
            band = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :count, :size]
            noise = rng.integers(0, 32, band.shape, dtype=np.uint8)
            dst.write(band // 8 * 7 + noise, window=Window(0, top, size, count))


def run_contender(name: str, args: argparse.Namespace, src: Path, dst: Path) -> dict:
    command = [sys.executable, __file__, "--run-one", name, "--input", str(src), "--output", str(dst),
               "--bands", str(args.bands), "--classes", str(args.classes), "--model", args.model, "--encoder",
               args.encoder, "--window", str(args.window), "--overlap", str(args.overlap), "--blend", args.blend,
               "--batch", str(args.batch), "--device", args.device, "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"name": name, "error": " | ".join(tail) or f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def combine(runs: list[dict]) -> dict:
    """One row from repeated runs: the median wall time, the largest peaks (the first error, if any)."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    row = dict(runs[0], seconds=float(np.median([r["seconds"] for r in runs])),
               cpu_seconds=float(np.median([r["cpu_seconds"] for r in runs])), runs=len(runs))
    for key in ("peak_rss_mib", "extra_rss_mib", "peak_gpu_mib"):
        if key in row:
            row[key] = max(r[key] for r in runs)
    return row


def agreement(a: Path, b: Path) -> float:
    """Share of pixels with the same class in two class GeoTIFFs, read in row bands."""
    import rasterio
    from rasterio.windows import Window

    same = total = 0
    with rasterio.open(a) as x, rasterio.open(b) as y:
        for top in range(0, x.height, 1024):
            window = Window(0, top, x.width, min(1024, x.height - top))
            same += int((x.read(1, window=window) == y.read(1, window=window)).sum())
            total += window.width * window.height
    return same / total


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f"; {torch.cuda.get_device_name(0)}"
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.run_one:
        print(json.dumps(run_one(args)))
        return
    names = args.only or [n for n in CONTENDERS if n != "segwise-memory" or args.memory_mode]
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        src = work / "input.tif"
        started = time.perf_counter()
        write_input(src, args.size, args.bands)
        print(f"input {args.size}x{args.size}x{args.bands} written in {time.perf_counter() - started:.1f}s; "
              f"running {', '.join(names)} one after another", file=sys.stderr)
        rounds: dict[str, list[dict]] = {name: [] for name in names}
        for round_ in range(args.repeats):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # rotate: no one always last
                result = run_contender(name, args, src, work / f"{name}.tif")
                rounds[name].append(result)
                print(f"  {name}: {result}", file=sys.stderr)
        results = [combine(runs) for runs in rounds.values()]
        check = None
        if {"segwise", "monai"} <= set(names) and args.size <= 8192 and all("error" not in r for r in results):
            check = agreement(work / "segwise.tif", work / "monai.tif")
    print(report(args, results, check))


def report(args: argparse.Namespace, results: list[dict], check: float | None) -> str:
    base = next((r for r in results if r["name"] == "monai" and "error" not in r), None)
    lines = [f"machine: {machine()}",
             f"date: {datetime.date.today()}",
             f"command: python benchmarks/sliding.py {shlex.join(sys.argv[1:])}",
             f"image {args.size}x{args.size}x{args.bands} uint8 GeoTIFF, "
             f"{args.model if args.model == 'conv1x1' else f'{args.model}-{args.encoder}'}, "
             f"{args.classes} classes, window {args.window}, overlap {args.overlap}, {args.blend}, batch "
             f"{args.batch}, device {args.device}, {args.threads} threads, {args.repeats} round(s) (median time, largest "
             "RSS)", "",
             "| contender | windows | wall s | x MONAI | CPU s | x MONAI | peak RSS MiB | x MONAI "
             "| RSS over baseline MiB | x MONAI |" + (" peak GPU MiB |" if args.device == "cuda" else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.device == "cuda" else "")]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} |")
            continue
        ratio = (lambda key: f"{r[key] / base[key]:.2f}" if base and base[key] else "-")
        row = (f"| {r['name']} | {r['windows']} | {r['seconds']:.1f} | {ratio('seconds')} | {r['cpu_seconds']:.1f} "
               f"| {ratio('cpu_seconds')} | {r['peak_rss_mib']:.0f} "
               f"| {ratio('peak_rss_mib')} | {r['extra_rss_mib']:.0f} | {ratio('extra_rss_mib')} |")
        if args.device == "cuda":
            row += f" {r.get('peak_gpu_mib', 0):.0f} |"
        lines.append(row)
    if check is not None:
        lines.append(f"\nsegwise and MONAI class maps agree on {100 * check:.4f} % of the pixels")
    return "\n".join(lines)


# ---- one contender, in its own process --------------------------------------------------------------------------
def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (less sensitive than wall time to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(args: argparse.Namespace) -> dict:
    import rasterio
    import segmentation_models_pytorch as smp
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.model == "conv1x1":
        model = torch.nn.Conv2d(args.bands, args.classes, 1).to(device).eval()
    else:
        model = smp.create_model(args.model, encoder_name=args.encoder, encoder_weights=None,
                                 in_channels=args.bands, classes=args.classes).to(device).eval()
    mean, std = [127.0] * args.bands, [64.0] * args.bands
    from segwise.models.spec import ModelSpec
    from segwise.inference import Predictor, SlidingWindow, plan_windows

    spec = ModelSpec(name=args.model, encoder=args.encoder, args={}, in_channels=args.bands,
                     num_classes=args.classes, class_names=[f"c{i}" for i in range(args.classes)],
                     palette=[[i, i, i] for i in range(args.classes)], mean=mean, std=std)
    mode = SlidingWindow(args.window, overlap=args.overlap, batch_size=args.batch, blend=args.blend)
    if args.run_one in ("segwise", "monai-cl"):
        predictor = Predictor(model, spec, device, mode)  # what `segwise predict` runs (folded, channels_last)
        model = predictor.model
    with rasterio.open(args.input) as src:
        height, width, profile = src.height, src.width, src.profile
    windows = len(plan_windows(height, width, args.window, overlap=args.overlap))
    with torch.inference_mode():  # warm-up: one forward so lazy initialisation is not timed or counted
        model(torch.zeros(1, args.bands, args.window, args.window, device=device))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss_mib()
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    if args.run_one == "segwise":
        predictor.predict_raster(args.input, args.output, overwrite=True, progress=False)
    else:
        with torch.inference_mode():
            labels = whole_image(args, model, device, mode, mean, std)
        out_profile = dict(profile, count=1, dtype="uint8", nodata=None, BIGTIFF="IF_SAFER")
        with rasterio.open(args.output, "w", **out_profile) as dst:
            dst.write(labels[None])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {"name": args.run_one, "windows": windows, "seconds": seconds,
              "cpu_seconds": cpu_seconds() - cpu_started, "peak_rss_mib": peak_rss_mib(),
              "extra_rss_mib": peak_rss_mib() - baseline}
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def whole_image(args, model, device, mode, mean, std) -> np.ndarray:
    """The image read whole and normalised, then MONAI, segwise in memory or the naive loop; H×W uint8 labels."""
    import rasterio
    import torch

    with rasterio.open(args.input) as src:
        pixels = src.read()
    image = torch.from_numpy(pixels).to(device)[None].float()
    del pixels
    image.sub_(mean[0]).div_(std[0])
    if args.run_one in ("monai", "monai-cl"):
        from monai.inferers import sliding_window_inference

        probs = sliding_window_inference(image, args.window, args.batch, lambda x: model(x).softmax(1),
                                         overlap=args.overlap, mode=args.blend, sigma_scale=0.125,
                                         device=torch.device("cpu"))
    elif args.run_one == "segwise-memory":
        probs = mode(model, image, 32)
    else:
        probs = naive(model, image, args.window, args.overlap, args.classes)
    return probs[0].argmax(0).to(torch.uint8).cpu().numpy()


def naive(model, image, window: int, overlap: float, classes: int):
    """mmseg `slide_inference`: full-size sums and count map, one window at a time, constant weights."""
    import torch

    _, _, height, width = image.shape
    stride = max(int(window * (1 - overlap)), 1)
    sums = torch.zeros(1, classes, height, width, device="cpu")
    count = torch.zeros(1, 1, height, width, device="cpu")
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + window, height), min(c * stride + window, width)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            sums[:, :, y1:y2, x1:x2] += model(image[:, :, y1:y2, x1:x2]).softmax(1).cpu()
            count[:, :, y1:y2, x1:x2] += 1
    return sums / count


if __name__ == "__main__":
    main()
