"""`segwise train`, `segwise eval` and `segwise predict`: the semantic-segmentation task on image folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags

MODEL_ARGUMENT = "run directory, model.yaml/model.safetensors or .ckpt file"
THRESHOLD_HELP = "binary models: foreground if P(class 1) >= threshold"


def register(sub: Any) -> None:
    """Add train, eval and predict to the `segwise` subcommands."""
    _train_parser(sub)
    _eval_parser(sub)
    _predict_parser(sub)


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on DATA_DIR/{train,val}/{images,masks}",
                       description="Train on an image folder. Re-running with the same --name resumes the run.")
    p.add_argument("data_dir", type=Path, help="data set root holding train/ and val/")
    flags.add_data_flags(p)
    g = p.add_argument_group("model and loss")
    g.add_argument("-m", "--model", help="architecture (see `segwise models`), default unet")
    g.add_argument("--encoder", help="encoder/backbone, default resnet18; 'tu-<timm name>' for any timm model")
    g.add_argument("--encoder-weights", help="'imagenet' (needs the network) or a local weights file")
    g.add_argument("--loss", help="loss or weighted sum, e.g. 'ce + 0.5*dice'")
    g = p.add_argument_group("data loading")
    g.add_argument("--image-size", type=flags.size, help="resize every sample, e.g. 512 or 384x512 (H x W)")
    g.add_argument("--crop-size", type=flags.size, help="random training crop, e.g. 256")
    g.add_argument("-a", "--augment", choices=["none", "safe", "light", "medium", "hard"], help="augmentation preset")
    g.add_argument("--val-dir", help="validation split (name under DATA_DIR or a path), default val")
    g.add_argument("--add-val-dirs", action=flags.ListAction, help="extra validation splits, logged under their names")
    g.add_argument("--adv-freq", type=int, help="evaluate the extra validation splits every N epochs")
    flags.add_run_flags(p)
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    config = flags.load_args_config(args, args.data_dir)  # before importing Lightning: config errors come at once
    flags.check_training_start(config)

    from segwise.tasks.semantic.train import train

    flags.print_run_summary(train(config))


def _eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="metrics of a trained model on a labelled folder",
                       description="Per-class IoU/Dice/precision/recall and mIoU, fwIoU, accuracy; "
                                   "writes metrics.json and metrics.csv.")
    p.add_argument("model", type=Path, help=MODEL_ARGUMENT)
    p.add_argument("data_dir", type=Path, help="split folder with images/ and masks/ (or a root with val/)")
    p.add_argument("-o", "--out", type=Path, help="output folder (default RUN/eval)")
    p.add_argument("-t", "--threshold", type=float, help=THRESHOLD_HELP)
    flags.add_save_flag(p, flags.SAVE_KINDS, (), "also save predictions of these kinds into OUT/predictions/<kind>/; "
                        "--save alone: index", bare=["index"])
    p.add_argument("--plots", type=int, default=0, metavar="N", help="image | GT | prediction plots of the N worst")
    p.add_argument("--metrics-only", action="store_true", help="no predictions or plots, just the metrics")
    flags.add_device_flag(p)
    flags.add_format_flag(p, "folder")
    p.add_argument("--background-index", type=int, metavar="K",
                   help="also report the mIoU without class K (e.g. 0: iSAID's foreground-only mean)")
    p.add_argument("--absent-classes", choices=["nan", "zero"], default="nan",
                   help="a class in neither prediction nor ground truth: left out of the means (default), or IoU 0 "
                        "as pytorch-segmentation counted it")
    flags.add_mode_flags(p)
    flags.add_ensemble_flags(p)
    p.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> None:
    from segwise.metrics import format_table
    from segwise.tasks.semantic.evaluate import evaluate

    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    save = set() if args.metrics_only else flags.saved_kinds(args)
    plots = 0 if args.metrics_only else args.plots
    metrics = evaluate(args.model, args.data_dir, args.out, threshold=args.threshold, save=save, plots=plots,
                       device=args.device, mode=flags.inference_mode(args), ensemble=args.ensemble,
                       ensemble_method=args.ensemble_method, ensemble_weights=args.ensemble_weights,
                       background_index=args.background_index, format=args.format,
                       absent_classes=args.absent_classes)
    print(format_table(metrics))
    print("\n" + eval_summary(Path(metrics["out_dir"]), save, plots))


def eval_summary(out: Path, save: set[str], plots: int) -> str:
    """The one line `eval` ends with: the metrics files, and the predictions and plots when it wrote them."""
    parts = [f"metrics written to {out}/metrics.json and metrics.csv"]
    if save:
        parts.append(f"predictions in {out}/predictions/ ({', '.join(k for k in flags.SAVE_KINDS if k in save)})")
    if plots:
        parts.append(f"plots of the worst images in {out}/plots/")
    return "; ".join(parts)


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict masks for an image or a folder",
                       description="Writes index masks, colour masks and overlays; any input size.")
    p.add_argument("model", type=Path, help=MODEL_ARGUMENT)
    p.add_argument("input", type=Path, help="image file, folder of images, or split folder with images/")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("-t", "--threshold", type=float, help=THRESHOLD_HELP)
    flags.add_save_flag(p, flags.SAVE_KINDS, ("index", "color", "overlay"), "outputs to write for ordinary images "
                        "(default index color overlay; --save alone: none, e.g. only the --rle file)")
    flags.add_device_flag(p)
    flags.add_format_flag(p, "folder")
    flags.add_mode_flags(p)
    flags.add_raster_flags(p)
    p.add_argument("--rle", type=Path, metavar="CSV", help="also write a name<TAB>rle submission file (TianChi / "
                                                           "pytorch-segmentation format, name = input file name)")
    flags.add_rle_class_flag(p, "class encoded by --rle (default: every non-zero class)")
    flags.add_ensemble_flags(p)
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> None:
    mode = flags.inference_mode(args)
    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    flags.check_output_file(args.rle, "--rle", "submission.csv")
    from segwise.tasks.semantic.predict import RasterOptions, predict

    raster = RasterOptions(probs=args.probs, confidence=args.confidence, color=args.color, overwrite=args.overwrite)
    if args.max_pixels is not None:
        raster.max_pixels = args.max_pixels
    save = flags.saved_kinds(args)
    written = predict(args.model, args.input, args.out, threshold=args.threshold, save=save, device=args.device,
                      mode=mode, raster=raster, ensemble=args.ensemble, ensemble_method=args.ensemble_method,
                      ensemble_weights=args.ensemble_weights, rle=args.rle, rle_class=args.rle_class,
                      format=args.format)
    print(predict_summary(args, save, written))


def predict_summary(args: argparse.Namespace, save: set[str], written: list[Path]) -> str:
    """The one line `predict` ends with, naming what was written: the PNG/.npy kinds of ordinary images, the
    GeoTIFFs of streamed ones (`<out>/<name>.tif`, the only outputs a streamed image gets) and the RLE file."""
    streamed = sum(p.suffix == ".tif" for p in written)
    ordinary = len(written) - streamed
    parts = []
    if ordinary:
        kinds = [f"{kind}/" for kind in flags.SAVE_KINDS if kind in save]
        parts.append(f"{ordinary} into {', '.join(kinds)}" if kinds else f"{ordinary} without image files (--save "
                                                                        "gave no kinds)")
    if streamed:
        extras = [f"<name>_{kind}.tif" for kind in ("color", "probs", "confidence") if getattr(args, kind)]
        parts.append(f"{streamed} streamed to GeoTIFF ({', '.join(['<name>.tif', *extras])})")
    if args.rle:
        parts.append(f"run-length encoded masks written to {args.rle}")
    return f"predicted {len(written)} image(s) into {args.out}: {'; '.join(parts)}"
