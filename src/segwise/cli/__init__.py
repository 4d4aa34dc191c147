"""The `segwise` command: train, eval, predict, export, data check/synth/tile, rle, models, convert, trimap, sketch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from segwise.errors import SegwiseError

# CLI flag → dotted config key. Everything else is reachable with --config FILE and --set key=value.
TRAIN_FLAGS: dict[str, str] = {
    "model": "model.name", "encoder": "model.encoder", "encoder_weights": "model.encoder_weights",
    "image_size": "data.image_size", "crop_size": "data.crop_size", "classes": "data.class_names",
    "num_classes": "data.num_classes", "class_list": "data.class_values", "max_mask_val": "data.max_mask_value",
    "batch": "data.batch_size", "lr": "optimizer.lr", "epochs": "trainer.max_epochs", "steps": "trainer.max_steps",
    "augment": "data.augment", "workers": "data.num_workers", "add_dirs": "data.extra_channels",
    "val_dir": "data.val_split", "add_val_dirs": "data.extra_val_splits", "adv_freq": "data.extra_val_every",
    "accelerator": "trainer.accelerator", "devices": "trainer.devices", "precision": "trainer.precision",
    "seed": "trainer.seed", "name": "run.name", "log_dir": "run.log_dir", "loss": "loss.name",
}
DATA_FLAGS = ("classes", "num_classes", "class_list", "max_mask_val", "add_dirs")
RUN_FLAGS = ("batch", "lr", "epochs", "steps", "workers", "accelerator", "devices", "precision", "seed", "name",
             "log_dir")  # every training command (train, trimap train, sketch train-embed/train) has these
SAVE_KINDS = ("index", "color", "overlay", "probs")


class _ListAction(argparse.Action):
    """`--add-dirs nir dsm`, `--add-dirs nir,dsm` and `--add-dirs "nir dsm"` all give ['nir', 'dsm']."""

    def __init__(self, *args: Any, cast: type = str, **kwargs: Any) -> None:
        self.cast = cast
        super().__init__(*args, nargs="+", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        words = [w for value in values for w in value.replace(",", " ").split()]
        try:
            setattr(namespace, self.dest, [self.cast(w) for w in words])
        except ValueError:
            parser.error(f"{option_string}: expected {self.cast.__name__} values, got {' '.join(values)!r}")


def _size(text: str) -> list[int]:
    values = [int(v) for v in text.replace("x", " ").replace(",", " ").split()]
    return values * 2 if len(values) == 1 else values


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("classes and channels")
    group.add_argument("--classes", action=_ListAction, help="class names (sets the class count)")
    group.add_argument("--num-classes", type=int, help="number of classes (default: from names, values or masks)")
    group.add_argument("--class-list", action=_ListAction, cast=int,
                       help="raw mask value of each class, e.g. 0 100 200 (S3 --class-list)")
    group.add_argument("--max-mask-val", type=int, help="classes are mask values 0..M (S3 --max-mask-val)")
    group.add_argument("--add-dirs", action=_ListAction, help="extra single-channel folders beside images/, e.g. nir dsm")
    _add_config_flags(group, "sections data, model, loss, ...", "loss.name='ce + 0.5*dice'")


def _add_config_flags(group: Any, sections: str, example: str) -> None:
    group.add_argument("--config", type=Path, help=f"YAML config file ({sections})")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override any config key, e.g. --set {example} (repeatable)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Length, batch, LR, loaders, hardware and run name: the flags every training command shares."""
    g = parser.add_argument_group("optimisation, hardware and run")
    g.add_argument("-b", "--batch", type=int, help="batch size")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("-e", "--epochs", type=int, help="number of epochs")
    g.add_argument("--steps", type=int, help="number of iterations (instead of epochs)")
    g.add_argument("-w", "--workers", type=int, help="data-loader worker processes")
    g.add_argument("--accelerator", "--device", choices=["auto", "cpu", "gpu", "cuda", "mps"], help="device kind")
    g.add_argument("--cpu", action="store_true", help="same as --accelerator cpu")
    g.add_argument("--devices", type=int, help="number of devices (DDP when > 1)")
    g.add_argument("--precision", choices=["auto", "32-true", "bf16-mixed", "16-mixed"], help="numeric precision")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--name", "--exp-name", dest="name", help="experiment name; the same name resumes")
    g.add_argument("--log-dir", type=Path, help="where run directories go (default runs/)")
    g.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run of this name")


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config keys set by the shared run flags (see `_add_run_flags`)."""
    flags = _flags(args, RUN_FLAGS)
    if args.cpu:
        flags["trainer.accelerator"] = "cpu"
    if args.no_resume:
        flags["run.resume"] = False
    return flags


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on DATA_DIR/{train,val}/{images,masks}",
                       description="Train on an image folder. Re-running with the same --name resumes the run.")
    p.add_argument("data_dir", type=Path, help="data set root holding train/ and val/")
    _add_data_flags(p)
    g = p.add_argument_group("model and loss")
    g.add_argument("-m", "--model", help="architecture (see `segwise models`), default unet")
    g.add_argument("--encoder", help="encoder/backbone, default resnet18; 'tu-<timm name>' for any timm model")
    g.add_argument("--encoder-weights", help="'imagenet' (needs the network) or a local weights file")
    g.add_argument("--loss", help="loss or weighted sum, e.g. 'ce + 0.5*dice'")
    g = p.add_argument_group("data loading")
    g.add_argument("--image-size", type=_size, help="resize every sample, e.g. 512 or 384x512 (H x W)")
    g.add_argument("--crop-size", type=_size, help="random training crop, e.g. 256")
    g.add_argument("-a", "--augment", choices=["none", "safe", "light", "medium", "hard"], help="augmentation preset")
    g.add_argument("--val-dir", help="validation split (name under DATA_DIR or a path), default val")
    g.add_argument("--add-val-dirs", action=_ListAction, help="extra validation splits, logged under their names")
    g.add_argument("--adv-freq", type=int, help="evaluate the extra validation splits every N epochs")
    _add_run_flags(p)


def _add_ensemble_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ensemble (put these after the positional arguments)")
    group.add_argument("--ensemble", nargs="+", type=Path, default=[], metavar="RUN",
                       help="more runs/checkpoints combined with MODEL; they must share its classes and bands")
    group.add_argument("--ensemble-method", choices=["mean", "weighted", "vote", "floor_mean"],
                       help="mean of probabilities (default), weighted mean (default with weights), majority "
                            "vote of labels (ties: lowest class), or S2's floored mean of label maps")
    group.add_argument("--ensemble-weights", action=_ListAction, cast=float, metavar="W",
                       help="one weight per model, MODEL first (weighted mean, or weighted votes)")


def _add_mode_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("inference mode", "whole image (default) or sliding windows, optionally with "
                                  "test-time augmentation; probabilities are averaged")
    g.add_argument("--mode", choices=["whole", "slide"], default="whole",
                   help="whole: the full image in one pass (padded to the model's stride); slide: windows")
    g.add_argument("--window", type=_size, metavar="H[xW]",
                   help="slide: window size, e.g. 512 or 512x768 (default 512)")
    g.add_argument("--stride", type=_size, metavar="H[xW]", help="slide: step between windows (instead of --overlap)")
    g.add_argument("--overlap", type=float, help="slide: overlap of neighbouring windows, a fraction in [0, 1) "
                                                 "(default 0.25)")
    g.add_argument("--window-batch", type=int, default=4, metavar="N",
                   help="slide: windows per forward pass (default 4)")
    g.add_argument("--blend", choices=["constant", "gaussian"], default="constant",
                   help="slide: weight of each window's pixels: equal, or Gaussian (sigma = window/8) "
                        "favouring centres")
    g.add_argument("--scales", action=_ListAction, cast=float, metavar="S",
                   help="test-time augmentation: image scales, e.g. 0.75 1.0 1.25")
    g.add_argument("--flip", choices=["h", "v", "hv"], help="test-time augmentation: add horizontal/vertical mirrors")


def _add_raster_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("large rasters", "TIFF/GeoTIFF inputs, and PNG/JPEG inputs over --max-pixels, are "
                                  "streamed window by window (sliding windows, 1024 px unless --mode slide sets "
                                  "them) into OUT/<name>.tif, a class raster keeping the input's CRS, transform and "
                                  "nodata; memory is bounded by the window rows, not the image")
    g.add_argument("--max-pixels", type=int, metavar="N",
                   help="stream PNG/JPEG inputs with more than N pixels too (default: 100 million)")
    g.add_argument("--probs", choices=["uint8", "float16"],
                   help="also write OUT/<name>_probs.tif, one band per class: uint8 (p x 255) or float16")
    g.add_argument("--confidence", action="store_true",
                   help="also write OUT/<name>_confidence.tif (max p x 255, uint8)")
    g.add_argument("--color", action="store_true", help="also write OUT/<name>_color.tif (RGB, the class palette)")
    g.add_argument("--overwrite", action="store_true", help="replace raster outputs that already exist")


def _mode(args: argparse.Namespace):
    """The inference mode the flags ask for (option errors come before any model or data is read)."""
    from segwise.inference.modes import build_mode

    return build_mode(args.mode, window=args.window, stride=args.stride, overlap=args.overlap,
                      window_batch=args.window_batch, blend=args.blend, scales=args.scales, flip=args.flip)


def _eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="metrics of a trained model on a labelled folder",
                       description="Per-class IoU/Dice/precision/recall and mIoU, fwIoU, accuracy; "
                                   "writes metrics.json and metrics.csv.")
    p.add_argument("model", type=Path, help="run directory, model.yaml/model.safetensors or .ckpt file")
    p.add_argument("data_dir", type=Path, help="split folder with images/ and masks/ (or a root with val/)")
    p.add_argument("-o", "--out", type=Path, help="output folder (default RUN/eval)")
    p.add_argument("-t", "--threshold", type=float, help="binary models: foreground if P(class 1) >= threshold")
    p.add_argument("--save", nargs="*", choices=SAVE_KINDS, default=[], help="also save predictions of these kinds")
    p.add_argument("--plots", type=int, default=0, metavar="N", help="image | GT | prediction plots of the N worst")
    p.add_argument("--metrics-only", action="store_true", help="no predictions or plots, just the metrics")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument("--background-index", type=int, metavar="K",
                   help="also report the mIoU without class K (e.g. 0: iSAID's foreground-only mean)")
    _add_mode_flags(p)
    _add_ensemble_flags(p)


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict masks for an image or a folder",
                       description="Writes index masks, colour masks and overlays; any input size.")
    p.add_argument("model", type=Path, help="run directory, model.yaml/model.safetensors or .ckpt file")
    p.add_argument("input", type=Path, help="image file, folder of images, or split folder with images/")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("-t", "--threshold", type=float, help="binary models: foreground if P(class 1) >= threshold")
    p.add_argument("--save", nargs="*", choices=SAVE_KINDS, default=["index", "color", "overlay"],
                   help="outputs to write for ordinary images (default index color overlay)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    _add_mode_flags(p)
    _add_raster_flags(p)
    p.add_argument("--rle", type=Path, metavar="CSV",
                   help="also write a name<TAB>rle submission file (TianChi/S2 format, name = input file name)")
    p.add_argument("--rle-class", type=int, metavar="K", help="class encoded by --rle (default: every non-zero class)")
    _add_ensemble_flags(p)


def _rle_parser(sub: Any) -> None:
    p = sub.add_parser("rle", help="run-length encoded masks: encode PNG masks into a name<TAB>rle CSV, decode back")
    rsub = p.add_subparsers(dest="rle_command", required=True)
    encode = rsub.add_parser("encode", help="write a name<TAB>rle CSV (TianChi/S2 column-major RLE) of index masks")
    encode.add_argument("masks", type=Path, help="mask file or folder of masks (PNG/TIF)")
    encode.add_argument("-o", "--out", type=Path, required=True, help="CSV file to write")
    encode.add_argument("--class", dest="rle_class", type=int, metavar="K",
                        help="class to encode (default: every non-zero value is foreground)")
    decode = rsub.add_parser("decode", help="write one PNG mask per CSV row (TianChi/S2 column-major RLE)")
    decode.add_argument("csv", type=Path, help="name<TAB>rle file without header")
    decode.add_argument("--shape", type=_size, required=True, help="mask size H x W, e.g. 512x512 or 512")
    decode.add_argument("-o", "--out", type=Path, required=True, help="output folder for <name stem>.png")
    decode.add_argument("--value", type=int, default=255, choices=[1, 255],
                        help="pixel value of the foreground (255, as S2's png2rle reads, or 1)")


def _data_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="data-set tools: check, synth")
    dsub = p.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="validate a data set and print class pixel counts, sizes and channels")
    check.add_argument("data_dir", type=Path, help="data set root (train/, val/, ...) or one split folder")
    _add_data_flags(check)
    synth = dsub.add_parser("synth", help="write the built-in synthetic data set (textured shapes)")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--train", type=int, default=48, help="number of training images")
    synth.add_argument("--val", type=int, default=16, help="number of validation images")
    synth.add_argument("--test", type=int, default=8, help="number of test images")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    _tile_parser(dsub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segwise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _eval_parser(sub)
    _predict_parser(sub)
    _data_parser(sub)
    _rle_parser(sub)
    _trimap_parser(sub)
    _sketch_parser(sub)
    sub.add_parser("models", help="list every architecture and encoder create_model accepts")
    _convert_parser(sub)
    _export_parser(sub)
    return parser


def _flags(args: argparse.Namespace, names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {TRAIN_FLAGS[n]: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_train(args: argparse.Namespace) -> None:
    from segwise.config import load_config

    flags = {**_flags(args, list(TRAIN_FLAGS)), **_run_overrides(args), "data.root": str(args.data_dir)}
    config = load_config(args.config, args.overrides, flags)  # before importing Lightning: config errors come at once

    from segwise.tasks.semantic.train import train

    run_dir = train(config)
    _print_run_summary(run_dir)


def _print_run_summary(run_dir: Path) -> None:
    print(f"\nrun directory : {run_dir}")
    print(f"model         : {run_dir / 'model.safetensors'} (+ model.yaml)")
    print(f"checkpoints   : {run_dir / 'checkpoints'}")
    print(f"tensorboard   : tensorboard --logdir {run_dir / 'tensorboard'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from segwise.metrics import format_table
    from segwise.tasks.semantic.evaluate import evaluate

    save = set() if args.metrics_only else set(args.save)
    plots = 0 if args.metrics_only else args.plots
    metrics = evaluate(args.model, args.data_dir, args.out, threshold=args.threshold, save=save, plots=plots,
                       device=args.device, mode=_mode(args), ensemble=args.ensemble,
                       ensemble_method=args.ensemble_method, ensemble_weights=args.ensemble_weights,
                       background_index=args.background_index)
    print(format_table(metrics))
    print(f"\nmetrics written to {metrics['out_dir']}/metrics.json and metrics.csv")


def cmd_predict(args: argparse.Namespace) -> None:
    mode = _mode(args)
    from segwise.tasks.semantic.predict import RasterOptions, predict

    raster = RasterOptions(probs=args.probs, confidence=args.confidence, color=args.color, overwrite=args.overwrite)
    if args.max_pixels is not None:
        raster.max_pixels = args.max_pixels
    written = predict(args.model, args.input, args.out, threshold=args.threshold, save=set(args.save),
                      device=args.device, mode=mode, raster=raster, ensemble=args.ensemble,
                      ensemble_method=args.ensemble_method, ensemble_weights=args.ensemble_weights, rle=args.rle,
                      rle_class=args.rle_class)
    streamed = sum(p.suffix == ".tif" for p in written)
    print(f"predicted {len(written)} image(s) into {args.out} ({', '.join(args.save)}"
          + (f"; {streamed} streamed to GeoTIFF)" if streamed else ")"))
    if args.rle:
        print(f"run-length encoded masks written to {args.rle}")


def cmd_data(args: argparse.Namespace) -> None:
    if args.data_command == "tile":
        return cmd_tile(args)
    if args.data_command == "synth":
        from segwise.data.synthetic import make_synthetic_dataset

        root = make_synthetic_dataset(args.out, num_train=args.train, num_val=args.val, num_test=args.test,
                                      size=args.size, seed=args.seed)
        print(f"synthetic data set written to {root}")
        return
    from segwise.config import load_config

    flags = _flags(args, DATA_FLAGS)
    flags["data.root"] = str(args.data_dir)
    config = load_config(args.config, args.overrides, flags)

    from segwise.tasks.semantic.data import check_data

    print(check_data(config))


def cmd_rle(args: argparse.Namespace) -> None:
    from segwise.inference.rle import decode_rle_csv, encode_rle_csv

    if args.rle_command == "encode":
        print(f"run-length encoded masks written to {encode_rle_csv(args.masks, args.out, args.rle_class)}")
        return
    if len(args.shape) != 2:
        raise SegwiseError(f"--shape takes H x W (e.g. 512x512), got {args.shape}")
    written = decode_rle_csv(args.csv, args.shape, args.out, value=args.value)
    print(f"decoded {len(written)} mask(s) from {args.csv} into {args.out}")


def cmd_models(args: argparse.Namespace) -> None:
    from segwise.models import list_encoders, list_models, model_entry

    print("architectures (segwise train --model NAME):")
    for name in list_models():
        entry = model_entry(name)
        print(f"  {name:<16} {entry.family}{'  (takes --encoder)' if entry.uses_encoder else ''}")
    encoders = list_encoders()
    print(f"\nencoders ({len(encoders)}; also any timm model as tu-<name>):")
    for start in range(0, len(encoders), 4):
        print("  " + "".join(f"{e:<30}" for e in encoders[start:start + 4]))


# ---- FactSeg / large-image data (issue 4): `data tile` and `convert factseg` ----------------------------------
def _tile_parser(dsub: Any) -> None:
    tile = dsub.add_parser("tile", help="cut a split of large images into fixed windows (index masks, pad 255)",
                           description="Windows of --size pixels every --stride pixels, the last row/column moved "
                                       "back to end on the border; smaller images are padded (image 0, mask "
                                       "ignore). Masks are written as class-index PNGs.")
    tile.add_argument("src", type=Path, help="split folder with images/ and masks/")
    tile.add_argument("out", type=Path, help="output split folder (gets images/ and masks/)")
    tile.add_argument("--size", type=int, default=896, help="window side in pixels (default 896, FactSeg)")
    tile.add_argument("--stride", type=int, default=512, help="step between windows (default 512)")
    tile.add_argument("--whole", action="store_true", help="no tiling: convert the masks of whole images only")
    tile.add_argument("--prefix", default="", help="prepended to every output name (to merge several sources)")
    tile.add_argument("--format", choices=["folder", "isaid"], default="folder",  # the keys of data.readers.READERS
                      help="folder: masks mapped by the class options; isaid: X_instance_color_RGB.png colour "
                           "masks (unmatched colours = background) or 0-15/255 index masks")
    _add_data_flags(tile)


def cmd_tile(args: argparse.Namespace) -> None:
    from segwise.config import load_config
    from segwise.data.readers import find_split
    from segwise.data.tile import class_map_decoder, tile_samples
    from segwise.tasks.semantic.data import build_class_map, with_dataset_defaults

    flags = {**_flags(args, DATA_FLAGS), "data.root": str(args.src), "data.format": args.format}
    data = with_dataset_defaults(load_config(args.config, args.overrides, flags).data)
    samples = find_split(data.format, args.src, data.extra_channels)
    class_map = build_class_map(data, samples)
    count = tile_samples(samples, args.out, class_map_decoder(class_map), None if args.whole else args.size,
                         args.stride, class_map.ignore_index, class_map.num_classes, args.prefix)
    print(f"wrote {count} tile(s) from {len(samples)} image(s) into {args.out}/images and {args.out}/masks")


def _convert_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="import official checkpoints of other code bases as segwise models")
    csub = p.add_subparsers(dest="convert_command", required=True)
    fs = csub.add_parser("factseg", help="official FactSeg .pth (Junjue-Wang/FactSeg) → model.safetensors/model.yaml")
    fs.add_argument("checkpoint", type=Path, help="official FactSeg checkpoint (.pth), read with weights_only")
    fs.add_argument("out", type=Path, help="output folder, usable as MODEL by eval/predict")
    fs.add_argument("--classes", action=_ListAction, help="class names (default: iSAID's 16 for 16 classes)")


def cmd_convert(args: argparse.Namespace) -> None:
    from segwise.convert.factseg import convert_official_checkpoint

    out = convert_official_checkpoint(args.checkpoint, args.out, args.classes)
    print(f"converted {args.checkpoint} into {out}/model.safetensors and model.yaml")


# ---- trimap segmentation (issue 6) ----------------------------------------------------------------------------
def _trimap_parser(sub: Any) -> None:
    p = sub.add_parser("trimap", help="trimap segmentation for matting (S1): train, predict, eval")
    tsub = p.add_subparsers(dest="trimap_command", required=True)
    train = tsub.add_parser("train", help="train a mask-prompted ViT on DATA_DIR/{train,val}/{original,mask[,trimap]}",
                            description="S1 recipe by default (trimap_vit, NFL + 0.1*DT, Adam 1e-4, 55 epochs); "
                                        "the model input is RGB + the prompt mask (alpha >= 30) as a 4th channel.")
    train.add_argument("data_dir", type=Path, help="data set root holding train/ and val/ matting folders")
    _add_config_flags(train, "e.g. configs/trimap_vit_base.yaml", "model.args.window_size=16")
    train.add_argument("--size", dest="vit_size", choices=["tiny", "small", "base", "large", "huge"], help="ViT size")
    train.add_argument("--weights", dest="encoder_weights", help="local MAE/timm ViT weights (.pth/.safetensors)")
    _add_run_flags(train)
    for name, text in (("predict", "write 0/128/255 trimap PNGs for INPUT/{original,mask}"),
                       ("eval", "BG/Unknown/FG IoU per data set (several data sets in one call)")):
        q = tsub.add_parser(name, help=text)
        q.add_argument("model", type=Path, help="run directory, model.yaml/model.safetensors or .ckpt file")
        q.add_argument("inputs", type=Path, nargs="+" if name == "eval" else None,
                       help="matting folder(s) with original/ (or images/) and mask/ (or alpha/) prompts")
        q.add_argument("--input-size", type=int, help="longest side fed to the model (default: its img_size)")
        q.add_argument("--prompt-threshold", type=int, default=30, help="prompt mask = mask/alpha >= this")
        q.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
        _add_mode_flags(q)
    predict = tsub.choices["predict"]
    predict.add_argument("-o", "--out", type=Path, required=True, help="output folder for <name>.png")
    predict.add_argument("--overlay", action="store_true", help="also write colour overlays into OUT/overlay/")
    evaluate = tsub.choices["eval"]
    evaluate.add_argument("-o", "--out", type=Path, help="output folder (default RUN/trimap_eval)")
    evaluate.add_argument("--trimap-dir", help="GT trimap folder in each data set (default trimap/ if present, "
                                               "else trimaps generated from the alpha)")
    evaluate.add_argument("--band", type=int, default=0, help="without GT trimaps: widen the unknown band by N px")
    evaluate.add_argument("--averaging", choices=["image", "per_row_reference"], default="image",
                          help="per-image IoU (correct), or S1's published per-row averaging (to compare numbers)")
    evaluate.add_argument("--matte", nargs="?", const="cf", choices=["cf", "knn", "lkm", "rw", "sm", "lbdm"],
                          help="solve alpha with pymatting (default closed-form) on each predicted trimap and "
                               "report SAD / MSE / gradient error against the GT alpha")
    evaluate.add_argument("--save", action="store_true", help="also write the predicted trimaps into OUT/<data set>/")


def cmd_trimap(args: argparse.Namespace) -> None:
    if args.trimap_command == "train":
        from segwise.config import load_config

        from segwise.tasks.trimap.config import TrimapConfig

        flags = {**_flags(args, ["encoder_weights"]), **_run_overrides(args), "data.root": str(args.data_dir),
                 "model.args.size": args.vit_size}
        config = load_config(args.config, args.overrides, flags, schema=TrimapConfig)

        from segwise.tasks.trimap.train import train

        _print_run_summary(train(config))
        return
    mode = _mode(args)
    from segwise.tasks.trimap import infer as trimap

    if args.trimap_command == "predict":
        written = trimap.predict(args.model, args.inputs, args.out, overlay_images=args.overlay, size=args.input_size,
                                 prompt_threshold=args.prompt_threshold, device=args.device, mode=mode)
        print(f"wrote {len(written)} trimap(s) into {args.out}")
        return
    results = trimap.evaluate(args.model, args.inputs, args.out, size=args.input_size, trimap_dir=args.trimap_dir,
                              band=args.band, prompt_threshold=args.prompt_threshold, averaging=args.averaging,
                              matte=args.matte, save=args.save, device=args.device, mode=mode)
    print(trimap.format_results(results))


# ---- sketch segmentation (ContextSeg) -----------------------------------------------------------------------
SKETCH_FLAGS: dict[str, str] = {  # besides RUN_FLAGS
    "categories": "data.categories", "max_per_category": "data.max_per_category", "canvas": "data.canvas",
    "model": "segment.model",
}


def _sketch_parser(sub: Any) -> None:
    p = sub.add_parser("sketch", help="sketch part segmentation (ContextSeg): prepare, train-embed, train, eval, "
                                      "predict", description="Vector sketches (SPG, SketchGNN ndjson, CreativeSketch)"
                                                             " → a part label per stroke.")
    ssub = p.add_subparsers(dest="sketch_command", required=True)
    prep = ssub.add_parser("prepare", help="cache sketch splits as OUT/<split>.npz (normalised vectors)")
    prep.add_argument("source", type=Path, nargs="?", help="SPG folder (splits.json) or one sketch file")
    prep.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    prep.add_argument("--splits", action=_ListAction, default=["train", "valid", "test"], help="splits to write")
    prep.add_argument("--categories", action=_ListAction, help="categories to keep (default: all)")
    prep.add_argument("--synthetic", type=int, metavar="N",
                      help="instead of SOURCE: N procedural training sketches per category (N/5 for other splits)")
    prep.add_argument("--seed", type=int, default=0, help="seed of the procedural sketches")
    for name, text in (("train-embed", "stage 1: train the stroke autoencoder"),
                       ("train", "stage 2: train the context transformer on a stage-1 run")):
        t = ssub.add_parser(name, help=text, description=f"{text}. Re-running with the same --name resumes.")
        t.add_argument("data", type=Path, help="SPG folder, `sketch prepare` folder or sketch file")
        if name == "train":
            t.add_argument("--embed", type=Path, required=True, metavar="RUN", help="run directory of train-embed")
            t.add_argument("--model", choices=["contextseg", "stroke_classifier"],
                           help="contextseg (default) or the per-stroke baseline without context")
        t.add_argument("--categories", action=_ListAction, help="categories to train on (default: all)")
        t.add_argument("--max-per-category", type=int, metavar="N", help="first N training sketches of each")
        t.add_argument("--canvas", type=int, help="image side of stroke images (stage 1; default 256)")
        _add_run_flags(t)
        _add_config_flags(t, "sections data, embed, segment, optimizer, ...", "segment.transformer.num_layers=2")
    ev = ssub.add_parser("eval", help="P/C/SAcc/CAcc per category of a trained model on a split")
    ev.add_argument("model", type=Path, help="run directory of `sketch train` (or its model.yaml / .ckpt)")
    ev.add_argument("data", type=Path, help="SPG folder, `sketch prepare` folder or sketch file")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--categories", action=_ListAction, help="categories to evaluate (default: the model's)")
    ev.add_argument("--limit", type=int, metavar="N", help="first N sketches of each category")
    ev.add_argument("-o", "--out", type=Path, help="output folder (default RUN/eval)")
    ev.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    pr = ssub.add_parser("predict", help="colour each stroke by its part: OUT/<key>.svg and .png + labels.json")
    pr.add_argument("model", type=Path, help="run directory of `sketch train` (or its model.yaml / .ckpt)")
    pr.add_argument("input", type=Path, help="sketch file in any reader format (SPG JSON, ndjson, CreativeSketch)")
    pr.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    pr.add_argument("--category", help="category of the sketches (default: from the file name / the model's only)")
    pr.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")


def cmd_sketch(args: argparse.Namespace) -> None:
    if args.sketch_command in ("train-embed", "train"):
        from segwise.config import load_config
        from segwise.tasks.sketch import SketchConfig

        sketch_flags = {SKETCH_FLAGS[n]: getattr(args, n) for n in SKETCH_FLAGS if getattr(args, n, None) is not None}
        flags = {**_run_overrides(args), **sketch_flags, "data.root": str(args.data)}
        config = load_config(args.config, args.overrides, flags, schema=SketchConfig)
    from segwise.tasks import sketch

    if args.sketch_command == "prepare":
        written = sketch.prepare_splits(args.out, args.splits, args.source, args.categories, args.synthetic, args.seed)
        print("\n".join(f"prepared {path}" for path in written))
    elif args.sketch_command == "train-embed":
        _print_run_summary(sketch.train_embed(config))
    elif args.sketch_command == "train":
        _print_run_summary(sketch.train_segment(config, args.embed))
    elif args.sketch_command == "eval":
        metrics = sketch.evaluate(args.model, args.data, args.split, args.categories, args.out, args.limit,
                                  args.device)
        from segwise.metrics.sketch import format_sketch_table

        print(format_sketch_table(metrics))
        print(f"\nmetrics written to {metrics['out_dir']}/metrics.json and metrics.csv")
    else:
        written = sketch.predict(args.model, args.input, args.out, args.category, args.device)
        print(f"segmented {len(written)} sketch(es) into {args.out} (.svg, .png, labels.json)")


# ---- ONNX export ----------------------------------------------------------------------------------------------
def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX and check it against torch with onnxruntime",
                       description="The graph takes the normalised float32 N x C x H x W image (H, W multiples of "
                                   "the model's input stride) and returns N x K x H x W logits; the file's "
                                   "metadata holds mean, std, image size, class names and the stride. The file is "
                                   "written only when onnxruntime matches torch on random inputs.")
    p.add_argument("model", type=Path, help="run directory, model.yaml/model.safetensors or .ckpt file")
    p.add_argument("-o", "--out", type=Path, required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's, 20 for the dynamo one)")
    p.add_argument("--size", type=_size, metavar="H[xW]",
                   help="example input size, e.g. 512 or 384x512 (default: the training image size, else 256 "
                        "rounded up to the input stride)")
    p.add_argument("--static", action="store_true", help="fix batch 1 and --size in the graph (default: dynamic "
                                                          "batch, height and width)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch parity check")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="parity tolerance on the logits, times max(1, largest |logit|) (default 1e-4)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def cmd_export(args: argparse.Namespace) -> None:
    if args.size is not None and len(args.size) != 2:
        raise SegwiseError(f"--size takes H or H x W (e.g. 512 or 384x512), got {args.size}")
    from segwise.export import export_onnx

    height, width = args.size or (None, None)
    report = export_onnx(args.model, args.out, opset=args.opset, height=height, width=width,
                         dynamic=not args.static, check=not args.no_check, atol=args.atol, overwrite=args.overwrite)
    print(report.summary())


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "data": cmd_data, "models": cmd_models,
            "rle": cmd_rle, "convert": cmd_convert, "trimap": cmd_trimap, "sketch": cmd_sketch,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except SegwiseError as exc:
        print(f"segwise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
    return 0


if __name__ == "__main__":
    sys.exit(main())
