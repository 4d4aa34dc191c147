"""`segwise predict` over a folder of tiles against the loop a user would write, side by side in one run.

Tiles: `--tiles` RGB PNGs of `--size`² (smooth random fields plus noise, seed 0). Model: smp Unet-resnet18,
encoder_weights None, random init with seed 0, 16 classes, saved as a run directory. Both sides write one index PNG
per tile and are timed from the model file on disk to the last PNG written:

- `segwise`: `segwise predict RUN TILES -o OUT --save index --device cpu` (in this process, so no import time),
  with its defaults (reader and writer threads, batches of 8 images of one size);
- `segwise-serial`: the same with `--workers 0` (read, forward, write one after another): what the overlap adds;
- `bare loop`: `cv2.imread`, `(x - mean) / std`, the model as `load_model` returns it in eval mode, forward in
  batches of `--batch` under `torch.inference_mode()`, argmax, `cv2.imwrite` PNG, one step after another.

The sides alternate over `--rounds`; the median images/s of each is reported, with the ratio and the share of
pixels whose labels agree (float rounding only: segwise folds BatchNorm into the convolutions).

    python benchmarks/predict_folder.py                      # 500 tiles, ~30 minutes on 2 busy cores
    python benchmarks/predict_folder.py --tiles 100 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from sliding import machine  # this folder is on sys.path when a benchmark runs as a script

SIDES = {"segwise": "segwise predict (defaults)", "segwise-serial": "segwise predict --workers 0",
         "bare": "bare loop"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", type=int, default=500)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch", type=int, default=8, help="images per forward in the bare loop")
    p.add_argument("--rounds", type=int, default=1)
    return p.parse_args(argv)


def make_tiles(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random colour fields with mild noise: PNGs of realistic size, not incompressible noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
        field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        tile = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"tile_{index:04d}.png")
        cv2.imwrite(str(paths[-1]), tile)
    return paths


def make_run(directory: Path, args: argparse.Namespace) -> Path:
    from segwise.models.spec import ModelSpec, save_model

    torch.manual_seed(0)
    spec = ModelSpec(name="unet", encoder=args.encoder, args={"encoder_weights": None}, in_channels=3,
                     num_classes=args.classes, class_names=[f"class{k}" for k in range(args.classes)],
                     palette=[[(37 * k) % 256, (91 * k) % 256, (151 * k) % 256] for k in range(args.classes)],
                     mean=[128.0] * 3, std=[64.0] * 3)
    save_model(spec.build().eval(), spec, directory)
    return directory


def run_segwise(run: Path, tiles: Path, out: Path, *flags: str) -> None:
    from segwise.cli import main as segwise

    argv = ["predict", str(run), str(tiles), "-o", str(out), "--save", "index", "--device", "cpu", *flags]
    assert segwise(argv) == 0


def run_bare(run: Path, paths: list[Path], out: Path, batch: int) -> None:
    """What a user writes: read, normalise, forward a batch, argmax, write PNG, in one thread."""
    from segwise.models.spec import load_model

    model, spec = load_model(run)
    model.eval()
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    out.mkdir(parents=True)
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in chunk]
            x = torch.from_numpy(np.stack([(im.astype(np.float32) - mean) / std for im in images]))
            labels = model(x.permute(0, 3, 1, 2).contiguous()).argmax(1).to(torch.uint8).numpy()
            for path, mask in zip(chunk, labels):
                cv2.imwrite(str(out / f"{path.stem}.png"), mask)


def agreement(paths: list[Path], segwise_out: Path, bare_out: Path) -> float:
    same = total = 0
    for path in paths:
        a = cv2.imread(str(segwise_out / "index" / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(bare_out / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        same, total = same + int((a == b).sum()), total + a.size
    return same / total


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"# {machine()}; {torch.get_num_threads()} threads, opencv {cv2.__version__}, load average "
          f"{os.getloadavg()[0]:.1f}\n# {datetime.date.today()}  python {' '.join(shlex.quote(a) for a in sys.argv)}",
          flush=True)
    rates: dict[str, list[float]] = {name: [] for name in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_tiles(root / "tiles", args.tiles, args.size)
        run = make_run(root / "run", args)
        for round_ in range(args.rounds):
            for name in list(SIDES) if round_ % 2 == 0 else list(SIDES)[::-1]:
                out = root / f"{name}_{round_}"
                start = time.perf_counter()
                if name == "bare":
                    run_bare(run, paths, out, args.batch)
                else:
                    run_segwise(run, root / "tiles", out, *(["--workers", "0"] if name == "segwise-serial" else []))
                rates[name].append(args.tiles / (time.perf_counter() - start))
                print(f"round {round_ + 1}: {name}: {rates[name][-1]:.2f} images/s", flush=True)
        agree = agreement(paths, root / "segwise_0", root / "bare_0")
    bare = statistics.median(rates["bare"])
    print("| side | images/s (median) | × bare loop | rounds |\n|---|---|---|---|")
    for name in SIDES:
        median = statistics.median(rates[name])
        rounds = ", ".join(f"{r:.2f}" for r in rates[name])
        print(f"| {SIDES[name]} | {median:.2f} | {median / bare:.2f}× | {rounds} |")
    print(f"labels of segwise and the bare loop agree on {100 * agree:.3f} % of pixels")


if __name__ == "__main__":
    main()
