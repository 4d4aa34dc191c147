"""`segwise train`, `segwise eval` and `segwise predict`: the semantic-segmentation task on image folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags, plan
from segwise.config import AUGMENT_PRESETS

MODEL_ARGUMENT = "run directory, model.yaml/model.safetensors or .ckpt file"
THRESHOLD_HELP = "binary models: foreground if P(class 1) >= threshold"


def register(sub: Any) -> None:
    """Add train, eval, validate and predict to the `segwise` subcommands."""
    _train_parser(sub)
    _eval_parser(sub)
    _validate_parser(sub)
    _predict_parser(sub)


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on DATA_DIR/{train,val}/{images,masks}",
                       description="Train on an image folder. Re-running with the same --name resumes the run.",
                       epilog=SMP_TRAINER_EPILOG)
    p.add_argument("data_dir", type=Path, nargs="?", help="data set root holding train/ and val/")
    p.add_argument("-d", "--dataset", type=Path, help="the same as DATA_DIR (the smp trainer's spelling)")
    flags.add_data_flags(p)
    g = p.add_argument_group("model and loss")
    g.add_argument("-m", "--model",
                   help="architecture (see `segwise models`; deeplabv3+ = deeplabv3plus), default unet")
    g.add_argument("--encoder", help="encoder/backbone, default resnet18; 'tu-<timm name>' for any timm model")
    g.add_argument("--encoder-weights", help="'imagenet' (needs the network) or a local weights file")
    g.add_argument("--loss", help="loss or weighted sum, e.g. 'ce + 0.5*dice'")
    g = p.add_argument_group("data loading")
    g.add_argument("--image-size", type=flags.size, help="resize every sample, e.g. 512 or 384x512 (H x W)")
    g.add_argument("--crop-size", type=flags.size, help="random training crop, e.g. 256")
    g.add_argument("-a", "--augment", "--augmentation", choices=AUGMENT_PRESETS,
                   help="augmentation preset")
    g.add_argument("--val-dir", "-val", help="validation split (name under DATA_DIR or a path), default val")
    g.add_argument("--add-val-dirs", action=flags.ListAction,
                   help="extra validation splits (names, paths, or a .txt file listing one per line), logged under "
                        "their names")
    g.add_argument("--adv-freq", type=int, help="evaluate the extra validation splits every N epochs")
    g.add_argument("--use-only-add-val", action="store_true", default=None,
                   help="skip the val split; select the best model on the mean IoU of the extra splits, weighted by "
                        "their image counts (val_extra/miou)")
    flags.add_csv_style_flag(p, "the per-epoch table RUN/val_per_epoch.csv")
    flags.add_run_flags(p)
    g = p.add_argument_group("self-configuring training (segwise plan)")
    g.add_argument("--auto", action="store_true", help="plan the recipe from the data and the machine, print it, "
                   "train with it (your --config, flags and --set win) and keep it as RUN/plan.yaml")
    plan.add_plan_flags(g, None)
    p.set_defaults(handler=cmd_train)


SMP_TRAINER_EPILOG = ("The smp trainer's train.py command lines work with `python3 train.py` replaced by `segwise "
                      "train`: -d/--dataset, -m deeplabv3+, -lr, -log, -val, -a/--augmentation, --class-list, "
                      "--max-mask-val, --add-dirs, --add-val-dirs FILE.txt, --adv-freq, --use-only-add-val, "
                      "--exp-name, --cpu, --device, --seed, -b, -e, -w.")


def data_root(args: argparse.Namespace) -> Path:
    """DATA_DIR, or the smp trainer's -d/--dataset; one of them, once."""
    from segwise.errors import ConfigError

    given = [path for path in (args.data_dir, args.dataset) if path is not None]
    if not given:
        raise ConfigError("no data set: give DATA_DIR (a folder holding train/ and val/), e.g. `segwise train "
                          "data/`, or -d/--dataset DATA_DIR")
    if len(given) == 2 and Path(given[0]).resolve() != Path(given[1]).resolve():
        raise ConfigError(f"two data sets: DATA_DIR {given[0]} and -d/--dataset {given[1]}; give one of them")
    return given[0]


def cmd_train(args: argparse.Namespace) -> None:
    if args.auto:
        config = plan.auto_config(args, data_root(args))
    elif args.budget is not None or args.memory is not None:
        from segwise.errors import ConfigError

        raise ConfigError("--budget and --memory size the recipe `--auto` plans; add --auto, or drop them")
    else:
        config = flags.load_args_config(args, data_root(args))  # before importing Lightning: config errors come at once
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
    p.add_argument("--report", action="store_true",
                   help="also write OUT/report.html: settings, training curves, metrics, confusion matrix and the "
                        "--plots panels in one self-contained page (`segwise report`)")
    flags.add_device_flag(p)
    flags.add_format_flag(p, "folder")
    p.add_argument("--background-index", type=int, metavar="K",
                   help="also report the mIoU without class K (e.g. 0: iSAID's foreground-only mean)")
    p.add_argument("--absent-classes", choices=["nan", "zero"], default="nan",
                   help="a class in neither prediction nor ground truth: left out of the means (default), or IoU 0 "
                        "as pytorch-segmentation counted it")
    p.add_argument("--per-image", action="store_true",
                   help="also write a per-image table (file, IoU, accuracy, each class's IoU)")
    flags.add_csv_style_flag(p, "the per-image table")
    flags.add_mode_flags(p)
    flags.add_backend_flags(p)
    flags.add_ensemble_flags(p)
    p.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> None:
    flags.check_device(args.device)
    save = set() if args.metrics_only else flags.saved_kinds(args)
    plots = 0 if args.metrics_only else args.plots
    per_image = (args.csv_style or "plain") if args.per_image else None
    if args.report:
        from segwise.report import check_run, run_directory

        check_run(run_directory(args.model))  # before evaluating: a run without training curves stops at once
    out = run_eval(args, args.model, args.data_dir, args.out, save=save, plots=plots, threshold=args.threshold,
                   per_image=per_image, background_index=args.background_index, absent_classes=args.absent_classes)
    if args.report:
        from segwise.report import build_report

        print(f"report written to {build_report(run_directory(args.model), out)}")


def run_eval(args: argparse.Namespace, model: Path, data_dir: Path, out: Path | None, **options: Any) -> Path:
    """Evaluate with the inference mode, ensemble, device and layout flags, print the table and where the outputs
    went (`eval` and the smp trainer's `validate` alike), and return the output folder."""
    from segwise.metrics import format_table
    from segwise.tasks.semantic.evaluate import evaluate

    flags.check_output_dir(out)
    metrics = evaluate(model, data_dir, out, device=args.device, mode=flags.inference_mode(args),
                       runtime=flags.runtime(args),
                       ensemble=args.ensemble, ensemble_method=args.ensemble_method,
                       ensemble_weights=args.ensemble_weights, format=args.format, **options)
    print(format_table(metrics))
    print("\n" + eval_summary(Path(metrics["out_dir"]), options["save"], options["plots"],
                              metrics.get("per_image_table")))
    return Path(metrics["out_dir"])


def eval_summary(out: Path, save: set[str], plots: int, per_image: str | None = None) -> str:
    """The one line `eval` ends with: the metrics files, and the predictions, tables and plots when it wrote them."""
    parts = [f"metrics written to {out}/metrics.json and metrics.csv"]
    if per_image:
        parts.append(f"per-image metrics in {per_image}")
    if save:
        parts.append(f"predictions in {out}/predictions/ ({', '.join(k for k in flags.SAVE_KINDS if k in save)})")
    if plots:
        parts.append(f"plots of {'every image' if plots < 0 else 'the worst images'} in {out}/plots/")
    return "; ".join(parts)


def _validate_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="the smp trainer's validate.py: per-image IoU/accuracy of a checkpoint",
                       description="`python3 validate.py ...` of the smp trainer with its flags: the metrics of "
                                   "`segwise eval` plus a per-image table (file, IoU, accuracy), optionally plots, "
                                   "binary masks and raw probabilities of every image.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-c", "--check-path", type=Path, help=f"the model: {MODEL_ARGUMENT}")
    which.add_argument("-cd", "--check-dir", type=Path, help="a run directory (or a folder with one model file)")
    p.add_argument("-d", "--dataset-dir", type=Path, required=True,
                   help="split folder with images/ and gt/ (or masks/), or a root with val/")
    p.add_argument("-o", "--output-dir", type=Path,
                   help="output folder (default: <model folder>/<parent>_<dataset>_thres_<t>, as the smp trainer)")
    p.add_argument("-t", "--thres", type=float, default=0.5,
                   help="two-class models: foreground if P(class 1) >= thres (default 0.5); others take the argmax")
    p.add_argument("--plots", action="store_true", help="image | ground truth | prediction panel of every image")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="no panels (the default)")
    p.add_argument("--only-plots", action="store_true", help="panels only: no per-image table or predictions")
    p.add_argument("--vis", action="store_true", help="segwise opens no window: the panels are written (as --plots)")
    p.add_argument("--binary", action="store_true", help="save the thresholded masks (class-index PNGs)")
    p.add_argument("--raw", action="store_true", help="save the probabilities before thresholding (.npy)")
    p.add_argument("--com", "--calc-only-metrics", dest="metrics_only", action="store_true",
                   help="metrics only: nothing else is written")
    p.add_argument("--tile-size", type=flags.size, metavar="H[xW]",
                   help="resize every image to this for the model (default: the size it was trained at)")
    hardware = p.add_mutually_exclusive_group()
    flags.add_device_flag(hardware)
    hardware.add_argument("--cpu", action="store_true", help="same as --device cpu")
    flags.add_csv_style_flag(p, "the per-image table")
    flags.add_format_flag(p, "folder")
    flags.add_mode_flags(p)
    flags.add_ensemble_flags(p)
    p.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> None:
    from segwise.errors import ConfigError

    if args.metrics_only and (args.plots or args.vis or args.only_plots or args.binary or args.raw):
        raise ConfigError("--com (metrics only) writes no plots or masks; drop it or drop --plots/--binary/--raw")
    if args.vis:
        from segwise.progress import notice

        notice("--vis: segwise opens no window; the panels of every image are written to OUT/plots/")
    args.device = "cpu" if args.cpu else args.device
    flags.check_device(args.device)
    model = args.check_path or validated_model(args.check_dir)
    out = args.output_dir or default_validate_dir(model, args.dataset_dir, args.thres)
    model = imported_model(model, out)
    wanted = {"index": args.binary, "probs": args.raw}
    save = set() if args.metrics_only or args.only_plots else {kind for kind, asked in wanted.items() if asked}
    plots = -1 if (args.plots or args.vis or args.only_plots) else 0
    per_image = None if args.only_plots else args.csv_style or "plain"
    run_eval(args, model, args.dataset_dir, out, save=save, plots=plots, per_image=per_image,
             threshold=two_class_threshold(model, args.thres), input_size=args.tile_size)


def validated_model(folder: Path) -> Path:
    """-cd: a run directory (model.yaml), else the one model file in the folder (the smp trainer's .pth too)."""
    from segwise.errors import ConfigError

    folder = Path(folder)
    if (folder / "model.yaml").is_file() or not folder.is_dir():
        return folder
    for pattern in ("*.ckpt", "*.safetensors", "*.pth"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise ConfigError(f"-cd {folder}: no model.yaml, .ckpt, .safetensors or .pth model in it; give the run directory "
                      "or the model file with -c")


def imported_model(model: Path, out: Path) -> Path:
    """A checkpoint of the smp trainer or another smp tool (.pth) is converted into OUT/model first, as `segwise
    convert smp` does (read without running pickled code); segwise's own files are used as they are."""
    if Path(model).suffix.lower() not in (".pth", ".pt"):
        return model
    from segwise.convert.smp import convert_smp_checkpoint
    from segwise.progress import notice

    notice(f"{model}: an smp checkpoint; converted into {Path(out) / 'model'} (segwise convert smp)")
    convert_smp_checkpoint(Path(model), Path(out) / "model")
    return Path(out) / "model"


def default_validate_dir(model: Path, dataset: Path, threshold: float) -> Path:
    """The smp trainer's output folder: beside the model, named <dataset parent>_<dataset>_thres_<t>."""
    model = Path(model)
    folder = model if model.is_dir() else model.parent
    dataset = Path(dataset).resolve()
    return folder / f"{dataset.parent.name}_{dataset.name}_thres_{threshold}"


def two_class_threshold(model: Path, threshold: float) -> float | None:
    """--thres applies to two-class models (the smp trainer's only kind); models with more classes take the argmax."""
    from segwise.models.spec import peek_spec

    return threshold if peek_spec(model).num_classes == 2 else None


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
    flags.add_backend_flags(p)
    flags.add_raster_flags(p)
    p.add_argument("--rle", type=Path, metavar="CSV", help="also write a name<TAB>rle submission file (TianChi / "
                                                           "pytorch-segmentation format, name = input file name)")
    flags.add_rle_class_flag(p, "class encoded by --rle (default: every non-zero class)")
    flags.add_ensemble_flags(p)
    p.add_argument("--batch", type=flags.positive_int, default=8, metavar="N",
                   help="images of one size per forward pass (default 8; streamed rasters are not batched)")
    p.add_argument("--workers", type=flags.whole_number, metavar="N",
                   help="threads reading images, and threads writing outputs, while the network runs (default: the "
                        "cores, at most 4; 0: one image after another)")
    flags.add_distributed_predict_flags(p)
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> None:
    mode = flags.inference_mode(args)
    runtime = flags.runtime(args)
    check_predict_processes(args)
    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    flags.check_output_file(args.rle, "--rle", "submission.csv")
    from segwise.tasks.semantic.predict import RasterOptions, predict

    raster = RasterOptions(probs=args.probs, confidence=args.confidence, color=args.color, overwrite=args.overwrite)
    if args.max_pixels is not None:
        raster.max_pixels = args.max_pixels
    save = flags.saved_kinds(args)

    def run(shard: Any = None) -> list[Path]:
        return predict(args.model, args.input, args.out, threshold=args.threshold, save=save,
                       device=shard.device if shard else args.device, mode=mode, raster=raster,
                       ensemble=args.ensemble, ensemble_method=args.ensemble_method,
                       ensemble_weights=args.ensemble_weights, rle=args.rle, rle_class=args.rle_class,
                       format=args.format, runtime=runtime, batch=args.batch, workers=args.workers, shard=shard,
                       vrt=args.vrt)

    if args.devices * args.num_nodes == 1:
        print(predict_summary(args, save, run()))
        return
    from segwise.inference.distributed import launch

    shard_written = launch(lambda shard: (shard.rank, run(shard)), devices=args.devices, num_nodes=args.num_nodes,
                           device=args.device)
    if shard_written[0] == 0:  # one summary, from rank 0, once every process has written its share
        print(predict_summary(args, save, shard_written[1]))


def check_predict_processes(args: argparse.Namespace) -> None:
    """--devices/--num-nodes/--vrt combinations that cannot work, refused before any model or data is read."""
    from segwise.errors import ConfigError

    processes = args.devices * args.num_nodes
    if args.vrt and processes == 1:
        raise ConfigError("--vrt writes a VRT over the parts several processes predict; add --devices N (N > 1) "
                          "or drop --vrt")
    if processes == 1:
        return
    kind, _, index = (args.device or "").partition(":")
    if index:
        raise ConfigError(f"--device {args.device} names one device; for --devices {args.devices} give the kind, "
                          f"--device {kind} (and CUDA_VISIBLE_DEVICES to choose the devices)")
    if kind == "mps":
        raise ConfigError("--devices: MPS runs one process; use --devices 1 with --device mps")
    import torch

    gpus = torch.cuda.device_count() if kind != "cpu" and torch.cuda.is_available() else 0
    if gpus and args.devices > gpus:
        raise ConfigError(f"--devices {args.devices}: this machine has {gpus} CUDA GPU(s); use --devices {gpus} or "
                          "fewer, or --device cpu for CPU processes")


def predict_summary(args: argparse.Namespace, save: set[str], written: list[Path]) -> str:
    """The one line `predict` ends with, naming what was written: the PNG/.npy kinds of ordinary images, the
    GeoTIFFs of streamed ones (`<out>/<name>.tif`, the only outputs a streamed image gets) and the RLE file."""
    streamed = sum(p.suffix in (".tif", ".vrt") for p in written)
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
