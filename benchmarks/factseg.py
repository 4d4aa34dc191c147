"""FactSeg training throughput (images/s) and peak GPU memory with the iSAID recipe, through the real engine.

Trains `configs/isaid_factseg.yaml` (ResNet-50, SGD, grad-norm clip 35, `som` loss, flips/rot90, fp16 AMP on
CUDA) with `segwise.tasks.semantic.train` on synthetic `--size`² images (16 classes), validation off. The first
`--warmup` optimizer steps are not timed; the device is synchronised only at the start and end of the timed
steps, so host syncs inside a step cost what they cost. Peak memory is `torch.cuda.max_memory_allocated` over
the timed steps.

    python benchmarks/factseg.py --device cuda                 # the official shape: batch 8 at 896², 16-mixed
    python benchmarks/factseg.py --device cpu --size 256 --batch 2 --steps 4 --warmup 2 --workers 0
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from segwise.config import load_config
from segwise.data.synthetic import make_synthetic_dataset
from segwise.tasks.semantic.train import train as semantic_train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "isaid_factseg.yaml"


class StepTimer(L.Callback):
    """Wall time of the optimizer steps after `warmup`, with device syncs only at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        if trainer.global_step == self.warmup:
            self._sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()
        elif trainer.global_step == trainer.max_steps:
            self._sync()
            self.end = time.perf_counter()
            self.steps = trainer.global_step - self.warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--size", type=int, default=896)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--precision", default=None, help="default: 16-mixed on CUDA (the config), 32-true on CPU")
    args = parser.parse_args()
    precision = args.precision or ("16-mixed" if args.device == "cuda" else "32-true")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(Path(tmp) / "data", num_train=4 * args.batch, num_val=0, num_test=0,
                                      size=args.size, num_classes=16)
        config = load_config(CONFIG, [f"data.root={root}", f"run.log_dir={tmp}/runs", "run.name=bench",
                                      f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
                                      f"model.encoder={args.encoder}", f"trainer.max_steps={args.warmup + args.steps}",
                                      f"trainer.accelerator={args.device}", f"trainer.precision={precision}",
                                      "trainer.progress_bar=false", "trainer.checkpoint_every_steps=null",
                                      "trainer.sync_batchnorm=false"])
        timer = StepTimer(args.warmup)
        semantic_train(config, callbacks=[timer])
    seconds = timer.end - timer.start
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    memory = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if args.device == "cuda" else "n/a"
    print(f"{datetime.date.today()} {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"factseg/{args.encoder} batch {args.batch} at {args.size}², {precision}: {timer.steps} steps in "
          f"{seconds:.1f} s = {timer.steps * args.batch / seconds:.2f} images/s "
          f"({1000 * seconds / timer.steps:.0f} ms/step), peak memory {memory}")


if __name__ == "__main__":
    main()
