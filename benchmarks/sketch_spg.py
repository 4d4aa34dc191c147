"""ContextSeg vs. a per-stroke classifier without context on SPG: P/C per category on the test split, side by side.

One stage-1 embedder is trained on the training sketches of all chosen categories (as in the reference); then, per
category, the context transformer and the baseline (the same frozen embedding + an MLP per stroke) are trained for
the given steps and evaluated on the 100 test sketches. A third column predicts the category's most frequent
training part for every stroke, the floor any learned model must beat.

    PYTHONPATH=src python benchmarks/sketch_spg.py --categories airplane apple face --out runs/bench_sketch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from segwise.config import load_config
from segwise.data.sketch.datasets import load_sketches
from segwise.metrics.sketch import sketch_metrics
from segwise.tasks.sketch.config import SketchConfig
from segwise.tasks.sketch.infer import evaluate
from segwise.tasks.sketch.train import train_embed, train_segment

SPG = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "spg_sketch"


def config(args: argparse.Namespace, name: str, categories: list[str], steps: int, *extra: str) -> SketchConfig:
    overrides = [
        f"data.root={args.spg}", f"data.categories={json.dumps(categories)}", f"data.canvas={args.canvas}",
        "data.num_workers=0", "data.max_val_per_category=25", f"run.log_dir={args.out}", f"run.name={name}",
        f"trainer.max_steps={steps}", f"trainer.val_every_steps={max(steps // 4, 1)}", "trainer.accelerator=cpu",
        "trainer.progress_bar=false", "trainer.log_every_steps=20",
        f"embed.root_features={args.root}", f"embed.depth={args.depth}", f"embed.hidden={args.hidden}",
        f"embed.code_size={args.code}", f"segment.transformer.d_model={args.d_model}",
        f"segment.transformer.num_layers={args.layers}", f"segment.transformer.num_heads={args.heads}",
        f"segment.transformer.d_ff={4 * args.d_model}", f"segment.teacher_forcing_steps={max(steps * 3 // 4, 1)}",
        f"optimizer.lr={args.lr}", *extra]
    return load_config(None, overrides, schema=SketchConfig)


def majority_part(args: argparse.Namespace, category: str) -> dict:
    """Metrics of labelling every test stroke with the category's most frequent training part."""
    train = load_sketches(args.spg, "train", [category])
    part = int(np.bincount(np.concatenate([s.labels for s in train])).argmax())
    test = load_sketches(args.spg, "test", [category])
    return sketch_metrics(test, [np.full(s.num_strokes, part) for s in test])["per_category"][category]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spg", type=Path, default=SPG)
    parser.add_argument("--categories", nargs="+", default=["airplane", "apple", "face"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_sketch"))
    parser.add_argument("--canvas", type=int, default=64)
    parser.add_argument("--root", type=int, default=8, help="stage-1 root features r")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--code", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--embed-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=600, help="stage-2 steps per category and model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings, results = {}, {}

    start = time.perf_counter()
    embed_run = train_embed(config(args, "embed", args.categories, args.embed_steps, "data.batch_size=64"))
    timings["embed"] = time.perf_counter() - start
    for category in args.categories:
        results[category] = {"majority": majority_part(args, category)}
        for model in ("contextseg", "stroke_classifier"):
            start = time.perf_counter()
            run = train_segment(config(args, f"{category}_{model}", [category], args.steps, f"segment.model={model}",
                                       f"data.batch_size={args.batch}"), embed_run)
            timings[f"{category}/{model}"] = time.perf_counter() - start
            results[category][model] = evaluate(run, args.spg, "test", [category])["per_category"][category]

    header = f"{'category':<12}" + "".join(f"{m + ' ' + k:>22}" for m in ("ContextSeg", "per-stroke MLP", "majority")
                                           for k in ("P", "C"))
    print(header)
    for category, by_model in results.items():
        cells = [100 * by_model[m][k] for m in ("contextseg", "stroke_classifier", "majority")
                 for k in ("p_metric", "c_metric")]
        print(f"{category:<12}" + "".join(f"{c:>22.1f}" for c in cells))
    print("seconds:", {k: round(v) for k, v in timings.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sketch_spg.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "results": results, "seconds": timings}, indent=2))


if __name__ == "__main__":
    main()
