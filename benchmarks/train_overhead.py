"""Training throughput of the segwise engine against a bare PyTorch loop on the same model, data and optimizer.

Both loops train the same smp network (random init) on the same synthetic data set (`--unique` rendered
images, repeated to fill exactly one epoch of the run, so no epoch ends inside it), read through the same
`SegmentationDataset` with the same transform, batch size and worker count, with AdamW at the same lr and weight
decay. segwise runs as `segwise.tasks.semantic.train(config)` (Lightning Trainer, SegmentationTask, our callbacks,
data module and TensorBoard logger, validation off); the bare loop is DataLoader → forward →
`cross_entropy(ignore_index=255)` → zero_grad/backward/step. The first `--warmup` steps of every run are not
timed; each timed interval is one whole loop iteration (loading, host-to-device copy, forward, loss, backward,
optimizer step and, for segwise, every Lightning hook, callback and logger call).

The loops run alternately, `--repeats` whole runs each; `--interleave` instead runs one bare step after every
segwise step in the same process, which pairs the two under the same load on a machine shared with other work.
On the CPU the ratio comes from the median step (robust to other programs); on CUDA from the mean step, since
the device is synchronised only at the first and last reading so that host syncs cost what they cost.

    python benchmarks/train_overhead.py                       # CPU default, about 3 minutes on an idle 2-core CPU
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
import shutil
import statistics
import sys
import tempfile
import time
import warnings
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
from segwise.tasks.semantic import data as semantic_data
from segwise.tasks.semantic.train import train as semantic_train


@dataclass(frozen=True)
class Variant:
    """One row of the table: which loop, at which precision and memory format."""

    label: str
    engine: str  # "bare" or "segwise"
    precision: str
    channels_last: bool


Step = tuple[float, float]  # (wall-clock seconds, CPU seconds of the main process)


def read_clock() -> Step:
    return time.perf_counter(), time.process_time()


def elapsed(start: Step, stop: Step) -> Step:
    return stop[0] - start[0], stop[1] - start[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each loop (alternating, or interleaved with --interleave)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="square image side in pixels (multiple of 32)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes for both loops")
    parser.add_argument("--classes", type=int, default=4, help="classes of the synthetic data set")
    parser.add_argument("--unique", type=int, default=64,
                        help="distinct synthetic images rendered; they are repeated to fill one epoch of the run")
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
    parser.add_argument("--interleave", action="store_true",
                        help="run one bare step after every segwise step in the same process (paired timing for "
                             "a machine shared with other work) instead of alternating whole runs")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.warmup, args.steps, args.repeats, args.unique) < 1:
        parser.error("--warmup, --steps, --repeats and --unique must be at least 1")
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
    """A segwise config for one timed run: no validation, no images, no progress bar, no augmentation.

    `data.validate_data: false` skips the file check: it runs before training (never timed), the files come from
    our own generator, and at 512 px it made every run much longer.
    """
    raw = {
        "data": {"root": str(data_root), "val_split": None, "batch_size": args.batch, "num_workers": args.workers,
                 "augment": "none", "hflip": False, "vflip": False, "validate_data": False},
        "model": {"name": args.model, "encoder": args.encoder, "encoder_weights": None},
        "loss": {"name": "ce"},
        "optimizer": {"name": "AdamW", "lr": args.lr},
        "trainer": {"max_steps": args.warmup + args.steps, "accelerator": "gpu" if args.device == "cuda" else "cpu",
                    "precision": variant.precision, "channels_last": variant.channels_last, "seed": args.seed,
                    "progress_bar": False, "log_images": 0, "log_worst_images": 0},
        "run": {"log_dir": str(runs), "name": run_name, "resume": False},
    }
    return Config.model_validate(raw)


def make_data(root: Path, args: argparse.Namespace) -> Path:
    """The synthetic set with exactly one epoch of batches: `--unique` rendered samples, then links to them."""
    total = args.batch * (args.warmup + args.steps)
    make_synthetic_dataset(root, num_train=min(args.unique, total), num_val=0, num_test=0, size=args.size,
                           num_classes=args.classes, seed=args.seed)
    for folder in ("images", "masks"):
        files = sorted((root / "train" / folder).iterdir())
        for index in range(len(files), total):
            target = root / "train" / folder / f"copy_{index:06d}{files[0].suffix}"
            try:
                os.link(files[index % len(files)], target)
            except OSError:
                shutil.copyfile(files[index % len(files)], target)
    return root


def with_stats(config: Config) -> Config:
    """Fix mean/std in the config once, so both loops normalise identically and no run recomputes them."""
    data = semantic_data.with_dataset_defaults(config.data)
    mean, std = compute_mean_std(semantic_data.prepare_data(data).train)
    data = data.model_copy(update={"mean": list(mean), "std": [max(s, 1e-6) for s in std]})
    return config.model_copy(update={"data": data})


def train_dataset(config: Config) -> SegmentationDataset:
    """The training set exactly as `semantic.train` builds it (same samples, class map, transform, mean/std)."""
    data = config.data
    prepared = semantic_data.prepare_data(data)
    transform = build_train_transform(data.augment, crop_size=data.crop_size, image_size=data.image_size,
                                      scale_range=data.scale_range, hflip=data.hflip, vflip=data.vflip,
                                      rotate=data.rotate, blur=data.blur, ignore_index=data.ignore_index)
    return SegmentationDataset(prepared.train, transform=transform, seed=config.trainer.seed,
                               class_map=prepared.class_map, mean=data.mean, std=data.std)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareLoop:
    """A plain loop: DataLoader → forward → cross_entropy(ignore_index=255) → zero_grad/backward/step."""

    def __init__(self, config: Config, args: argparse.Namespace, device: torch.device, variant: Variant) -> None:
        torch.manual_seed(args.seed)
        data = config.data
        self.device, self.ignore_index = device, data.ignore_index
        self.bf16 = variant.precision == "bf16-mixed"
        self.memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
        model = smp.create_model(args.model, encoder_name=args.encoder, encoder_weights=None,
                                 in_channels=3, classes=args.classes)
        self.model = model.to(device).to(memory_format=self.memory_format).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.optimizer.lr,
                                           weight_decay=config.optimizer.weight_decay)
        loader = DataLoader(train_dataset(config), batch_size=data.batch_size, shuffle=True,
                            num_workers=data.num_workers, pin_memory=device.type == "cuda",
                            persistent_workers=data.num_workers > 0, generator=torch.Generator().manual_seed(args.seed))
        self.batches = iter(loader)

    def step(self) -> None:
        batch = next(self.batches)
        images = batch["image"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        masks = batch["mask"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=self.ignore_index)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def close(self) -> None:
        """Stop the loader's workers now, before the next run forks its own (they would inherit this iterator)."""
        self.batches = iter(())


class StepClock(L.Callback):
    """Times every segwise step after `warmup`; with a partner, runs (and times) one bare step after each.

    A reading is taken when Lightning calls this callback, the last one appended: each interval covers one
    whole iteration. On CUDA the device is synchronised only at the first and last reading (so segwise's own
    host syncs still cost what they cost) unless a partner loop shares the device, which needs a sync per step.
    """

    def __init__(self, warmup: int, steps: int, device: torch.device, partner: BareLoop | None = None) -> None:
        self.warmup, self.steps, self.device, self.partner = warmup, steps, device, partner
        self.done = 0
        self.mark: Step | None = None
        self.segwise: list[Step] = []
        self.bare: list[Step] = []

    def on_train_batch_end(self, trainer: L.Trainer, task: L.LightningModule, *args: object) -> None:
        self.done += 1
        if self.partner is not None or self.done in (self.warmup, self.warmup + self.steps):
            synchronize(self.device)
        now = read_clock()
        timed = self.done > self.warmup
        if timed:
            self.segwise.append(elapsed(self.mark, now))
        if self.partner is not None:
            self.partner.step()
            synchronize(self.device)
            after = read_clock()
            if timed:
                self.bare.append(elapsed(now, after))
            now = after
        self.mark = now


def time_segwise(config: Config, args: argparse.Namespace, device: torch.device,
                 partner: BareLoop | None = None) -> StepClock:
    """`segwise.tasks.semantic.train(config)` in-process, with the clock (and a partner loop) as extra callback."""
    clock = StepClock(args.warmup, args.steps, device, partner)
    semantic_train(config, callbacks=[clock])
    if partner is not None:
        partner.close()
    if len(clock.segwise) != args.steps:
        raise RuntimeError(f"segwise ran {clock.done} steps; expected {args.warmup + args.steps}")
    return clock


def time_bare(loop: BareLoop, args: argparse.Namespace, device: torch.device) -> list[Step]:
    """The bare loop on its own, read at the same points as StepClock reads segwise."""
    durations: list[Step] = []
    mark = None
    for done in range(1, args.warmup + args.steps + 1):
        loop.step()
        if done in (args.warmup, args.warmup + args.steps):
            synchronize(device)
        now = read_clock()
        if done > args.warmup:
            durations.append(elapsed(mark, now))
        mark = now
    loop.close()
    return durations


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
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = variants(args)
    print("\n".join(machine_lines(args)))
    print(f"setup: {args.model}/{args.encoder} random init, {args.classes} classes, {args.size}x{args.size} px, "
          f"batch {args.batch}, {args.workers} workers, AdamW lr {args.lr}, {args.warmup} warm-up + {args.steps} "
          f"timed steps, {args.repeats} repeats, {'interleaved steps' if args.interleave else 'alternating runs'}",
          flush=True)
    results: dict[str, list[Step]] = {row.label: [] for row in rows}
    primary = "median" if device.type == "cpu" or args.interleave else "mean"
    center = statistics.median if primary == "median" else statistics.mean
    paired: list[float] = []  # per repeat: bare step / segwise step at the same precision
    with tempfile.TemporaryDirectory(prefix="segwise-bench-") as tmp:
        data_root = make_data(Path(tmp) / "data", args)
        base = with_stats(make_config(args, data_root, Path(tmp) / "runs", rows[0], "stats"))
        for repeat in range(args.repeats):
            for index, row in enumerate(rows if repeat % 2 == 0 else rows[::-1]):  # ABBA: no loop always goes first
                if args.interleave and row.engine == "bare":
                    continue
                config = make_config(args, data_root, Path(tmp) / "runs", row, f"run{repeat}-{index}")
                config = config.model_copy(update={"data": base.data})
                if row.engine == "bare":
                    durations = time_bare(BareLoop(config, args, device, row), args, device)
                    bare_step = center([wall for wall, _ in durations])
                elif args.interleave:
                    clock = time_segwise(config, args, device, BareLoop(config, args, device, rows[0]))
                    durations = clock.segwise
                    results[rows[0].label] += clock.bare
                    report(repeat, args.repeats, rows[0].label, clock.bare)
                    if row is rows[1]:
                        bare_step = center([wall for wall, _ in clock.bare])
                else:
                    durations = time_segwise(config, args, device).segwise
                results[row.label] += durations
                report(repeat, args.repeats, row.label, durations)
                if row is rows[1]:
                    ours_step = center([wall for wall, _ in durations])
            paired.append(bare_step / ours_step)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print_table(rows, results, args.batch, primary)
    print(f"per-repeat ratios segwise/bare ({primary} step of the bare run / of the segwise run): "
          f"{', '.join(f'{r:.3f}' for r in paired)}; median {statistics.median(paired):.3f}")
    return 0


def report(repeat: int, repeats: int, label: str, durations: list[Step]) -> None:
    walls = [wall for wall, _ in durations]
    print(f"  repeat {repeat + 1}/{repeats}  {label:<40} median {1000 * statistics.median(walls):8.1f} ms/step, "
          f"mean {1000 * statistics.mean(walls):8.1f} ms/step", flush=True)


def print_table(rows: list[Variant], results: dict[str, list[Step]], batch: int, primary: str) -> None:
    """Markdown table over all timed steps of all repeats; images/s and the ratio come from the `primary` statistic.

    The median step is robust to other programs on the machine but needs a synchronous device (the CPU, or CUDA
    with --interleave); otherwise the mean (total time / steps) is used. Main-process CPU time per step is a
    cross-check that leaves out the data-loading workers.
    """
    wall = {label: [w for w, _ in steps] for label, steps in results.items()}
    cpu = {label: statistics.median(c for _, c in steps) for label, steps in results.items()}
    median = {label: statistics.median(values) for label, values in wall.items()}
    mean = {label: statistics.mean(values) for label, values in wall.items()}
    step = median if primary == "median" else mean
    bare, ours = rows[0].label, rows[1].label
    print()
    print(f"| {'loop':<40} | images/s | ms/step (median) | ms/step (mean) | CPU ms/step (median) | vs bare |")
    print(f"|{'-' * 42}|---------:|-----------------:|---------------:|---------------------:|--------:|")
    for row in rows:
        label = row.label
        print(f"| {label:<40} | {batch / step[label]:8.2f} | {1000 * median[label]:16.1f} | "
              f"{1000 * mean[label]:14.1f} | {1000 * cpu[label]:20.1f} | {step[bare] / step[label]:7.3f} |")
    ratio = step[bare] / step[ours]
    print(f"\nratio segwise/bare images/s: {ratio:.3f} from {primary} step times (goal >= 0.95: "
          f"{'met' if ratio >= 0.95 else 'NOT met'}); cross-checks: median {median[bare] / median[ours]:.3f}, "
          f"mean {mean[bare] / mean[ours]:.3f}, main-process CPU time {cpu[bare] / cpu[ours]:.3f}")


if __name__ == "__main__":
    sys.exit(main())
