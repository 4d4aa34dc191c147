"""`segwise trimap train|predict|eval`: trimap segmentation for matting with the mask-prompted ViT."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from segwise.cli import flags
from segwise.errors import ConfigError

TRIMAP_KINDS = ("index", "overlay")  # index: the 0/128/255 trimap PNG


def register(sub: Any) -> None:
    """Add `trimap` and its subcommands to the `segwise` subcommands."""
    p = sub.add_parser("trimap", help="trimap segmentation for matting (the trimap ViT): train, predict, eval")
    tsub = p.add_subparsers(dest="trimap_command", required=True)
    _train_parser(tsub)
    predict = _inference_parser(tsub, "predict", "write 0/128/255 trimap PNGs for INPUT/{original,mask}", None)
    predict.add_argument("-o", "--out", type=Path, required=True, help="output folder for <name>.png")
    flags.add_save_flag(predict, TRIMAP_KINDS, ["index"], "outputs to write; index (OUT/<name>.png) is always "
                        "written, overlay goes to OUT/overlay/<name>.png", aliases={"--overlay": "overlay"})
    predict.set_defaults(handler=cmd_predict)

    evaluate = _inference_parser(tsub, "eval", "BG/Unknown/FG IoU per data set (several data sets in one call)", "+")
    evaluate.add_argument("-o", "--out", type=Path, help="output folder (default RUN/eval)")
    flags.add_save_flag(evaluate, ("index",), (), "also write the predicted trimaps into OUT/<data set>/ "
                        "and the images with them overlaid into OUT/<data set>/overlay/; --save alone: index",
                        bare=["index"])
    evaluate.add_argument("--trimap-dir", help="GT trimap folder in each data set (default: the layout's, trimap/ "
                                               "or Composition-1K's trimaps/, if present, else trimaps generated "
                                               "from the alpha)")
    evaluate.add_argument("--band", type=int, default=0, help="without GT trimaps: widen the unknown band by N px")
    evaluate.add_argument("--averaging", choices=["image", "per_row_reference"], default="image",
                          help="per-image IoU (correct), or the trimap ViT's published per-row averaging (to "
                               "compare numbers)")
    evaluate.add_argument("--matte", nargs="?", const="cf", choices=["cf", "knn", "lkm", "rw", "sm", "lbdm"],
                          help="solve alpha with pymatting (default closed-form) on each predicted trimap and "
                               "report SAD / MSE / gradient error against the GT alpha")
    evaluate.set_defaults(handler=cmd_eval)


def _train_parser(tsub: Any) -> None:
    train = tsub.add_parser("train", help="train a mask-prompted ViT on DATA_DIR/{train,val}/{original,mask[,trimap]}",
                            description="The trimap ViT's recipe by default (trimap_vit, NFL + 0.1*DT, Adam 1e-4, "
                                        "55 epochs); the model input is RGB + the prompt mask (alpha >= 30) as a "
                                        "4th channel. Matting folders are read in the layout they ship in "
                                        "(Composition-1K, P3M-500, AIM-500, AM-200 or original/ + mask/).")
    train.add_argument("data_dir", type=Path, nargs="?",
                       help="data set root holding train/ and val/ matting folders (optional with --train)")
    train.add_argument("--train", dest="train_sets", type=Path, nargs="+", metavar="SET",
                       help="training sets, concatenated (paths, or names under DATA_DIR, which goes first); "
                            "default DATA_DIR/train")
    train.add_argument("--val-dir", help="validation set (name under DATA_DIR or a path); default DATA_DIR/val, "
                                         "none without DATA_DIR")
    train.add_argument("--add-val-dirs", action=flags.ListAction, help="extra validation sets, logged under their "
                                                                       "names")
    _format_flag(train, None)
    flags.add_config_flags(train, "e.g. configs/trimap_vit_base.yaml", "model.args.window_size=16")
    train.add_argument("--vit-size", "--size", dest="vit_size", choices=["tiny", "small", "base", "large", "huge"],
                       help="ViT size (model.args.size)")
    train.add_argument("--encoder-weights", "--weights", dest="encoder_weights",
                       help="local MAE/timm ViT weights (.pth/.safetensors)")
    flags.add_run_flags(train)
    train.set_defaults(handler=cmd_train)


def _inference_parser(tsub: Any, name: str, text: str, nargs: str | None) -> argparse.ArgumentParser:
    """The flags trimap predict and eval share: model, matting folders, input size, prompt, device and mode."""
    q = tsub.add_parser(name, help=text)
    q.add_argument("model", type=Path, help="run directory, model.yaml/model.safetensors or .ckpt file")
    q.add_argument("inputs", type=Path, nargs=nargs,
                   help="matting folder(s): original/ + mask/ prompts, or a data set as it ships "
                        "(Composition-1K, P3M-500, AIM-500, AM-200; see --format)")
    q.add_argument("--input-size", type=int, help="longest side fed to the model (default: its img_size)")
    q.add_argument("--prompt-threshold", type=int, default=30, help="prompt mask = mask/alpha >= this")
    q.add_argument("-b", "--batch", type=flags.positive_int, default=1, metavar="N",
                   help="images per forward pass (images of one resized shape share a batch; same outputs as 1)")
    _format_flag(q, "auto")
    flags.add_device_flag(q)
    flags.add_mode_flags(q)
    return q


def _layout_names() -> tuple[str, ...]:
    from segwise.data.matting_layouts import LAYOUT_NAMES

    return LAYOUT_NAMES


def _format_flag(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--format", dest="layout", choices=flags.LazyChoices(_layout_names), default=default,
                        metavar="LAYOUT", help="matting layout: auto (from the folder names; default), folder, "
                                               "composition1k, p3m500, aim500, am200")


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The trimap keys of the train flags, as overrides placed before --set (which still wins): --format, --train,
    and without DATA_DIR no data root and no validation but --val-dir."""
    if args.data_dir is None and not args.train_sets:
        raise ConfigError("segwise trimap train needs DATA_DIR (holding train/ and val/) or the training sets: "
                          "--train A B ...")
    keys = [f"trimap.format={args.layout}"] if args.layout else []
    if args.train_sets:
        keys.append(f"trimap.train_sets={json.dumps([str(path) for path in args.train_sets])}")
    if args.data_dir is None:
        keys += ["data.root=null"] + ([] if args.val_dir else ["data.val_split=null"])
    return keys


def cmd_train(args: argparse.Namespace) -> None:
    from segwise.tasks.trimap.config import TrimapConfig

    args.overrides = [*train_overrides(args), *args.overrides]
    config = flags.load_args_config(args, args.data_dir, TrimapConfig)
    flags.check_training_start(config)

    from segwise.tasks.trimap.train import train

    flags.print_run_summary(train(config))


def cmd_predict(args: argparse.Namespace) -> None:
    mode = flags.inference_mode(args)
    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    from segwise.tasks.trimap.infer import predict

    written = predict(args.model, args.inputs, args.out, overlay_images="overlay" in flags.saved_kinds(args),
                      size=args.input_size, prompt_threshold=args.prompt_threshold, layout=args.layout,
                      batch=args.batch, device=args.device, mode=mode)
    overlays = f"; overlays in {args.out}/overlay/" if "overlay" in flags.saved_kinds(args) else ""
    print(f"wrote {len(written)} trimap(s) into {args.out}{overlays}")


def cmd_eval(args: argparse.Namespace) -> None:
    mode = flags.inference_mode(args)
    flags.check_device(args.device)
    flags.check_output_dir(args.out)
    from segwise.tasks.trimap.infer import default_eval_dir, evaluate, format_results

    results = evaluate(args.model, args.inputs, args.out, size=args.input_size, trimap_dir=args.trimap_dir,
                       band=args.band, prompt_threshold=args.prompt_threshold, averaging=args.averaging,
                       matte=args.matte, save="index" in flags.saved_kinds(args), layout=args.layout,
                       batch=args.batch, device=args.device, mode=mode)
    print(format_results(results))
    out = args.out or default_eval_dir(args.model)
    trimaps = f"; predicted trimaps in {out}/<data set>/" if "index" in flags.saved_kinds(args) else ""
    print(f"\nmetrics written to {out}/trimap_metrics.json{trimaps}")
