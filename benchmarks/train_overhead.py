"""Training throughput of the segwise engine against a bare PyTorch loop on the same model, data and optimizer.

Both loops train the same smp network (random init) on the same synthetic data set, read through the same
`SegmentationDataset` with the same transform, batch size and worker count, with AdamW at the same lr. Only
steady-state steps are timed: the first `--warmup` optimizer steps of every run are excluded, and the clock
covers whole loop iterations (loading, host-to-device copy, forward, loss, backward, optimizer step and, for
segwise, every Lightning hook, callback and logger). The two loops run alternately `--repeats` times each and
the medians are reported.

    python benchmarks/train_overhead.py                       # CPU default, about 3 minutes on 2 cores
    python benchmarks/train_overhead.py --device cuda --size 512 --batch 16 --workers 8 --steps 100
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from segwise.config import Config
from segwise.data.folder import SegmentationDataset
from segwise.data.synthetic import make_synthetic_dataset
from segwise.data.transforms import build_train_transform
from segwise.data.validate import compute_mean_std
from segwise.tasks import semantic


@dataclass(frozen=True)
class Variant:
    """One row of the table: which loop, at which precision and memory format."""

    label: str
    engine: str  # "bare" or "segwise"
    precision: str
    channels_last: bool


@dataclass
class Timing:
    seconds: float
    steps: int
    batch: int

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / self.steps

    @property
    def images_per_s(self) -> float:
        return self.steps * self.batch / self.seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop, alternating; medians reported")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="square image side in pixels (multiple of 32)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes for both loops")
    parser.add_argument("--classes", type=int, default=4, help="classes of the synthetic data set")
    parser.add_argument("--model", default="unet", help="smp architecture name")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                        help="precision of both loops in the overhead comparison")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and input in both loops")
    parser.add_argument("--fast-row", action=argparse.BooleanOptionalAction, default=None,
                        help="also time segwise with bf16-mixed + channels_last against the bare loop "
                             "(default: on for cuda)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    if args.size % 32:
        parser.error("--size must be a multiple of 32 (the encoder's output stride)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.fast_row is None:
        args.fast_row = args.device == "cuda"
    return args


def variants(args: argparse.Namespace) -> list[Variant]:
    """The bare loop and segwise at the same settings; optionally segwise bf16 + channels_last."""
    tag = args.precision + (" + channels_last" if args.channels_last else "")
    rows = [Variant(f"bare PyTorch ({tag})", "bare", args.precision, args.channels_last),
            Variant(f"segwise ({tag})", "segwise", args.precision, args.channels_last)]
    if args.fast_row and (args.precision, args.channels_last) != ("bf16-mixed", True):
        rows.append(Variant("segwise (bf16-mixed + channels_last)", "segwise", "bf16-mixed", True))
    return rows


def make_config(args: argparse.Namespace, data_root: Path, runs: Path, variant: Variant, run_name: str) -> Config:
    """A segwise config for one timed run: no validation, no images, no progress bar, no augmentation."""
    raw = {
        "data": {"root": str(data_root), "val_split": None, "batch_size": args.batch, "num_workers": args.workers,
                 "augment": "none", "hflip": False, "vflip": False},
        "model": {"name": args.model, "encoder": args.encoder, "encoder_weights": None},
        "loss": {"name": "ce"},
        "optimizer": {"name": "AdamW", "lr": args.lr},
        "trainer": {"max_steps": args.warmup + args.steps, "accelerator": "gpu" if args.device == "cuda" else "cpu",
                    "precision": variant.precision, "channels_last": variant.channels_last, "seed": args.seed,
                    "progress_bar": False, "log_images": 0, "log_worst_images": 0},
        "run": {"log_dir": str(runs), "name": run_name, "resume": False},
    }
    return Config.model_validate(raw)


def with_stats(config: Config) -> Config:
    """Fix mean/std in the config once, so both loops normalise identically and no run recomputes them."""
    data = semantic.with_dataset_defaults(config.data)
    mean, std = compute_mean_std(semantic.prepare_data(data).train)
    data = data.model_copy(update={"mean": list(mean), "std": [max(s, 1e-6) for s in std]})
    return config.model_copy(update={"data": data})


def train_dataset(config: Config) -> SegmentationDataset:
    """The training set exactly as `semantic.train` builds it (same samples, class map, transform, mean/std)."""
    data = config.data
    prepared = semantic.prepare_data(data)
    transform = build_train_transform(data.augment, crop_size=data.crop_size, image_size=data.image_size,
                                      scale_range=data.scale_range, hflip=data.hflip, vflip=data.vflip,
                                      rotate=data.rotate, blur=data.blur, ignore_index=data.ignore_index)
    return SegmentationDataset(prepared.train, transform=transform, seed=config.trainer.seed,
                               class_map=prepared.class_map, mean=data.mean, std=data.std)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(L.Callback):
    """Times whole training iterations from the end of step `warmup` to the end of step `warmup + steps`."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.done = 0
        self.start: float | None = None
        self.stop: float | None = None

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, *args: object) -> None:
        self.done += 1
        if self.done == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        elif self.done == self.warmup + self.steps:
            synchronize(self.device)
            self.stop = time.perf_counter()


@contextlib.contextmanager
def extra_callback(callback: L.Callback) -> Iterator[None]:
    """Append `callback` to the trainer that `semantic.train` builds, without changing segwise itself."""
    original = semantic.build_callbacks
    semantic.build_callbacks = lambda *a, **kw: [*original(*a, **kw), callback]
    try:
        yield
    finally:
        semantic.build_callbacks = original


def time_segwise(config: Config, args: argparse.Namespace, device: torch.device) -> Timing:
    """`segwise.tasks.semantic.train(config)` in-process; only steady-state steps are on the clock."""
    clock = StepClock(args.warmup, args.steps, device)
    with extra_callback(clock):
        semantic.train(config)
    if clock.start is None or clock.stop is None:
        raise RuntimeError(f"segwise ran {clock.done} steps; expected {args.warmup + args.steps}")
    return Timing(clock.stop - clock.start, args.steps, args.batch)


def time_bare(config: Config, args: argparse.Namespace, device: torch.device, variant: Variant) -> Timing:
    """A plain loop: DataLoader → forward → cross_entropy(ignore_index=255) → zero_grad/backward/step."""
    torch.manual_seed(args.seed)
    data = config.data
    dataset = train_dataset(config)
    model = smp.create_model(args.model, encoder_name=args.encoder, encoder_weights=None,
                             in_channels=3, classes=args.classes).to(device)
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                                  weight_decay=config.optimizer.weight_decay)
    loader = DataLoader(dataset, batch_size=data.batch_size, shuffle=True, num_workers=data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=data.num_workers > 0,
                        generator=torch.Generator().manual_seed(args.seed))
    bf16 = variant.precision == "bf16-mixed"
    total = args.warmup + args.steps
    start = stop = None
    for step, batch in enumerate(loader):
        images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        masks = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=data.ignore_index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step + 1 == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        elif step + 1 == total:
            synchronize(device)
            stop = time.perf_counter()
            break
    if start is None or stop is None:
        raise RuntimeError(f"the data set gave fewer than {total} batches")
    return Timing(stop - start, args.steps, args.batch)


def machine_lines(args: argparse.Namespace) -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else platform.processor() or cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [f"CPU: {cpu}, {cores} cores usable, torch threads {torch.get_num_threads()}, load average {load}",
            f"device: {device}",
            f"python {platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}, "
            f"smp {smp.__version__}",
            f"date: {datetime.date.today().isoformat()}",
            f"command: python {shlex.join(sys.argv)}"]


def quiet() -> None:
    """Keep Lightning's banners and advice (e.g. about worker counts) out of the report."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet()
    device = torch.device(args.device)
    rows = variants(args)
    print("\n".join(machine_lines(args)))
    print(f"setup: {args.model}/{args.encoder} random init, {args.classes} classes, {args.size}x{args.size} px, "
          f"batch {args.batch}, {args.workers} workers, AdamW lr {args.lr}, {args.warmup} warm-up + {args.steps} "
          f"timed steps, {args.repeats} alternating repeats", flush=True)
    results: dict[str, list[Timing]] = {row.label: [] for row in rows}
    with tempfile.TemporaryDirectory(prefix="segwise-bench-") as tmp:
        data_root = make_synthetic_dataset(Path(tmp) / "data", num_train=args.batch * (args.warmup + args.steps),
                                           num_val=0, num_test=0, size=args.size, num_classes=args.classes,
                                           seed=args.seed)
        base = with_stats(make_config(args, data_root, Path(tmp) / "runs", rows[0], "stats"))
        for repeat in range(args.repeats):
            for index, row in enumerate(rows):
                config = make_config(args, data_root, Path(tmp) / "runs", row, f"run{repeat}-{index}")
                config = config.model_copy(update={"data": base.data})
                if row.engine == "bare":
                    timing = time_bare(config, args, device, row)
                else:
                    timing = time_segwise(config, args, device)
                results[row.label].append(timing)
                print(f"  repeat {repeat + 1}/{args.repeats}  {row.label:<40} {timing.images_per_s:8.1f} img/s "
                      f"{timing.ms_per_step:8.1f} ms/step", flush=True)
    print_table(rows, results)
    return 0


def print_table(rows: list[Variant], results: dict[str, list[Timing]]) -> None:
    medians = {label: statistics.median(t.images_per_s for t in timings) for label, timings in results.items()}
    steps = {label: statistics.median(t.ms_per_step for t in timings) for label, timings in results.items()}
    bare = medians[rows[0].label]
    print()
    print(f"| {'loop':<40} | {'images/s':>9} | {'ms/step':>8} | {'vs bare':>7} |")
    print(f"|{'-' * 42}|{'-' * 10}:|{'-' * 9}:|{'-' * 8}:|")
    for row in rows:
        print(f"| {row.label:<40} | {medians[row.label]:9.1f} | {steps[row.label]:8.1f} | "
              f"{medians[row.label] / bare:7.3f} |")
    ratio = medians[rows[1].label] / bare
    print(f"\nratio segwise/bare (images/s, medians): {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
