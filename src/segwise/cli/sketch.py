"""`segwise sketch prepare|train-embed|train|eval|predict`: sketch part segmentation with ContextSeg."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags

SKETCH_DATA = ("SPG folder (splits.json, or <category>.ndjson files split by data.split_scheme), CreativeSketch "
               "raw_data, `sketch prepare` folder or sketch file")
SPLIT_SCHEME_HELP = ("split of a folder of per-category files: train/valid/test percentages (default 80/10/10) or "
                     "'official' (700 train, the rest test, per category)")
SKETCH_MODEL = "run directory of `sketch train` (or its model.yaml / .ckpt)"


def register(sub: Any) -> None:
    """Add `sketch` and its subcommands to the `segwise` subcommands."""
    p = sub.add_parser("sketch", help="sketch part segmentation (ContextSeg): prepare, train-embed, train, eval, "
                                      "predict", description="Vector sketches (SPG, SketchGNN ndjson, CreativeSketch)"
                                                             " → a part label per stroke.")
    ssub = p.add_subparsers(dest="sketch_command", required=True)
    prep = ssub.add_parser("prepare", help="cache sketch splits as OUT/<split>/<category>.npz (normalised vectors)",
                           description="Read a sketch data set once and write each split as one .npz per category; "
                                       "preparing a category again replaces only its files.")
    prep.add_argument("source", type=Path, nargs="?", help=SKETCH_DATA)
    prep.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    prep.add_argument("--splits", action=flags.ListAction, help="splits to write (default: every split of SOURCE)")
    prep.add_argument("--categories", action=flags.ListAction, help="categories to keep (default: all)")
    prep.add_argument("--synthetic", type=int, metavar="N",
                      help="instead of SOURCE: N procedural training sketches per category (N/5 for other splits)")
    prep.add_argument("--split-scheme", default="80/10/10", metavar="A/B/C|official", help=SPLIT_SCHEME_HELP)
    prep.add_argument("--seed", type=int, default=0, help="seed of that split (same seed, same split), or of the "
                                                          "procedural sketches")
    prep.set_defaults(handler=cmd_prepare)
    _train_parser(ssub, "train-embed", "stage 1: train the stroke autoencoder", cmd_train_embed)
    train = _train_parser(ssub, "train", "stage 2: train the context transformer on a stage-1 run", cmd_train)
    train.add_argument("--embed", type=Path, required=True, metavar="RUN", help="run directory of train-embed")
    train.add_argument("--model", dest="segment_model", choices=["contextseg", "stroke_classifier"],
                       help="contextseg (default) or the per-stroke baseline without context")

    ev = ssub.add_parser("eval", help="P/C/SAcc/CAcc per category of a trained model on a split")
    ev.add_argument("model", type=Path, help=SKETCH_MODEL)
    ev.add_argument("data", type=Path, help=SKETCH_DATA)
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--categories", action=flags.ListAction, help="categories to evaluate (default: the model's)")
    _add_max_per_category(ev, "--limit")
    ev.add_argument("--split-scheme", metavar="A/B/C|official", help=SPLIT_SCHEME_HELP + "; default: the run's")
    ev.add_argument("--split-seed", type=int, metavar="N", help="seed of that split (default: the run's)")
    ev.add_argument("-o", "--out", type=Path, help="output folder (default RUN/eval)")
    ev.add_argument("--plots", type=int, default=0, metavar="N",
                    help="ground truth | prediction drawings of the N sketches with the lowest stroke accuracy")
    flags.add_device_flag(ev)
    ev.set_defaults(handler=cmd_eval)

    pr = ssub.add_parser("predict", help="colour each stroke by its part: OUT/<key>.svg and .png + labels.json")
    pr.add_argument("model", type=Path, help=SKETCH_MODEL)
    pr.add_argument("input", type=Path, help="sketch file in any reader format (SPG JSON, ndjson, CreativeSketch)")
    pr.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    pr.add_argument("--category", help="category of the sketches (default: from the file name / the model's only)")
    flags.add_device_flag(pr)
    pr.set_defaults(handler=cmd_predict)


def _add_max_per_category(parser: argparse.ArgumentParser, *aliases: str) -> None:
    parser.add_argument("--max-per-category", *aliases, dest="max_per_category", type=int, metavar="N",
                        help="first N sketches of each category")


def _train_parser(ssub: Any, name: str, text: str, handler: Any) -> argparse.ArgumentParser:
    t = ssub.add_parser(name, help=text, description=f"{text}. Re-running with the same --name resumes.")
    t.add_argument("data", type=Path, help=SKETCH_DATA)
    t.add_argument("--categories", action=flags.ListAction, help="categories to train on (default: all)")
    _add_max_per_category(t)
    t.add_argument("--canvas", type=int, help="image side of stroke images (stage 1; default 256)")
    flags.add_run_flags(t)
    flags.add_config_flags(t, "sections data, embed, segment, optimizer, ...", "segment.transformer.num_layers=2")
    t.set_defaults(handler=handler)
    return t


def _config(args: argparse.Namespace) -> Any:
    from segwise.tasks.sketch.config import SketchConfig

    config = flags.load_args_config(args, args.data, SketchConfig)
    flags.check_training_start(config)
    return config


def cmd_prepare(args: argparse.Namespace) -> None:
    flags.check_output_dir(args.out)
    from segwise.tasks.sketch.infer import prepare_splits

    written = prepare_splits(args.out, args.splits, args.source, args.categories, args.synthetic, args.seed,
                             args.split_scheme)
    splits = dict.fromkeys(path.parent.name for path in written)
    print(f"prepared {', '.join(splits)} into {args.out}: {len(written)} file(s), <split>/<category>.npz")


def cmd_train_embed(args: argparse.Namespace) -> None:
    config = _config(args)
    from segwise.tasks.sketch.train import train_embed

    flags.print_run_summary(train_embed(config))


def cmd_train(args: argparse.Namespace) -> None:
    config = _config(args)
    from segwise.tasks.sketch.train import train_segment

    flags.print_run_summary(train_segment(config, args.embed))


def cmd_eval(args: argparse.Namespace) -> None:
    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    from segwise.metrics.sketch import format_sketch_table
    from segwise.tasks.sketch.infer import evaluate

    metrics = evaluate(args.model, args.data, args.split, args.categories, args.out, args.max_per_category,
                       args.device, args.split_scheme, args.split_seed, args.plots)
    print(format_sketch_table(metrics))
    print(f"\nmetrics written to {metrics['out_dir']}/metrics.json and metrics.csv")


def cmd_predict(args: argparse.Namespace) -> None:
    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    from segwise.tasks.sketch.infer import predict

    written = predict(args.model, args.input, args.out, args.category, args.device)
    print(f"segmented {len(written)} sketch(es) into {args.out} (.svg, .png, labels.json)")
