"""`segwise rle|export|convert`: format tools shared by the tasks: run-length masks, ONNX export, and checkpoints
of other code bases."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags


def register(sub: Any) -> None:
    """Add rle, export, convert and config to the `segwise` subcommands."""
    _rle_parser(sub)
    _export_parser(sub)
    _convert_parser(sub)
    _config_parser(sub)


def _rle_parser(sub: Any) -> None:
    p = sub.add_parser("rle", help="run-length encoded masks: encode PNG masks into a name<TAB>rle CSV, decode back")
    rsub = p.add_subparsers(dest="rle_command", required=True)
    encode = rsub.add_parser("encode", help="write a name<TAB>rle CSV (TianChi / pytorch-segmentation column-major "
                                            "RLE) of index masks")
    encode.add_argument("masks", type=Path, help="mask file or folder of masks (PNG/TIF)")
    encode.add_argument("-o", "--out", type=Path, required=True, help="CSV file to write")
    flags.add_rle_class_flag(encode, "class to encode (default: every non-zero value is foreground)", "--class")
    encode.set_defaults(handler=cmd_rle_encode)
    decode = rsub.add_parser("decode", help="write one PNG mask per CSV row (TianChi / pytorch-segmentation "
                                            "column-major RLE)")
    decode.add_argument("csv", type=Path, help="name<TAB>rle file without header")
    decode.add_argument("--shape", type=flags.size, required=True, help="mask size H x W, e.g. 512x512 or 512")
    decode.add_argument("-o", "--out", type=Path, required=True, help="output folder for <name stem>.png")
    decode.add_argument("--value", type=int, default=255, choices=[1, 255],
                        help="pixel value of the foreground (255, as pytorch-segmentation's png2rle reads, or 1)")
    flags.add_max_pixels_flag(decode, "refuse a --shape of more than N pixels")
    decode.set_defaults(handler=cmd_rle_decode)


def cmd_rle_encode(args: argparse.Namespace) -> None:
    flags.check_output_file(args.out, "-o/--out", "masks.csv")
    from segwise.inference.rle import encode_rle_csv

    print(f"run-length encoded masks written to {encode_rle_csv(args.masks, args.out, args.rle_class)}")


def cmd_rle_decode(args: argparse.Namespace) -> None:
    from segwise.inference.modes import DEFAULT_MAX_PIXELS
    from segwise.inference.rle import check_mask_shape, decode_rle_csv

    check_mask_shape(args.shape, args.max_pixels or DEFAULT_MAX_PIXELS)
    flags.check_output_dir(args.out)
    written = decode_rle_csv(args.csv, args.shape, args.out, value=args.value)
    print(f"decoded {len(written)} mask(s) from {args.csv} into {args.out}")


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX and check it against torch with onnxruntime",
                       description="The graph takes the normalised float32 N x C x H x W image (H, W multiples of "
                                   "the model's input stride) and returns N x K x H x W logits; the file's "
                                   "metadata holds mean, std, image size, class names and the stride. The file is "
                                   "written only when onnxruntime matches torch on random inputs.")
    p.add_argument("model", type=Path, help="run directory, model.yaml/model.safetensors or .ckpt file")
    p.add_argument("-o", "--out", type=Path, required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's, 20 for the dynamo one)")
    p.add_argument("--size", type=flags.size, metavar="H[xW]",
                   help="example input size, e.g. 512 or 384x512 (default: the training image size, else 256 "
                        "rounded up to the input stride)")
    p.add_argument("--static", action="store_true", help="fix batch 1 and --size in the graph (default: dynamic "
                                                          "batch, height and width)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch parity check")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="parity tolerance on the logits, times max(1, largest |logit|) (default 1e-4)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> None:
    flags.check_output_file(args.out, "-o/--out", "model.onnx")
    from segwise.export import export_onnx

    height, width = args.size or (None, None)
    report = export_onnx(args.model, args.out, opset=args.opset, height=height, width=width,
                         dynamic=not args.static, check=not args.no_check, atol=args.atol, overwrite=args.overwrite)
    print(report.summary())


def _convert_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="import official checkpoints of other code bases as segwise models")
    csub = p.add_subparsers(dest="convert_command", required=True)
    fs = csub.add_parser("factseg", help="official FactSeg .pth (Junjue-Wang/FactSeg) or the PaddlePaddle "
                                         "reproduction's .pdparams → model.safetensors/model.yaml")
    fs.add_argument("checkpoint", type=Path, help="official FactSeg checkpoint (.pth, read with weights_only) or "
                                                  "Paddle .pdparams (read without PaddlePaddle, numpy arrays only)")
    fs.add_argument("out", type=Path, nargs="?", help="output folder, usable as MODEL by eval/predict (or -o)")
    fs.add_argument("-o", "--out", dest="out_option", type=Path, help="output folder (the same as OUT)")
    fs.add_argument("--paddle", action="store_true", default=None,
                    help="the checkpoint is a PaddlePaddle .pdparams (default: when its name ends in .pdparams)")
    fs.add_argument("--classes", action=flags.ListAction, help="class names (default: iSAID's 16 for 16 classes)")
    fs.set_defaults(handler=cmd_convert_factseg)
    tri = csub.add_parser("trimap", help="a checkpoint of the SimpleClick-based trimap ViT (SegTrimapH100) → "
                                         "model.safetensors/model.yaml for `segwise trimap eval/predict`",
                          description="Read with weights_only (torch loss modules in its config allowed, no pickled "
                                      "code). ViT size, depth, patch, input size, head width and up-sampling are "
                                      "read from the shapes; keys the upstream model never uses are listed.")
    tri.add_argument("checkpoint", type=Path, help="the .pth file ({'state_dict': ...} as the upstream trainer saves)")
    tri.add_argument("-o", "--out", type=Path, required=True, help="output folder, usable as MODEL by trimap "
                                                                   "eval/predict")
    tri.set_defaults(handler=cmd_convert_trimap)
    smp = csub.add_parser("smp", help="an smp model's state_dict, or a checkpoint of the smp trainer or of "
                                      "pytorch-segmentation's smp mode → model.safetensors/model.yaml",
                          description="Read with weights_only (numpy arrays allowed, no pickled code). What the "
                                      "checkpoint names (model, encoder, class list, extra channels, mean/std) is "
                                      "used; flags fill in or override it. Sigmoid heads become softmax heads.")
    smp.add_argument("checkpoint", type=Path, help="the .pth file")
    smp.add_argument("-o", "--out", type=Path, required=True, help="output folder, usable as MODEL by eval/predict")
    smp.add_argument("--arch", help="smp architecture (unet, deeplabv3+, UnetPlusPlus, ...) if the file lacks it")
    smp.add_argument("--encoder", help="smp encoder (e.g. efficientnet-b0) if the file lacks it")
    smp.add_argument("--class-list", action=flags.ListAction, cast=int, metavar="V",
                     help="mask value of each class, as the smp trainer's --class-list (background is added)")
    smp.add_argument("--classes", action=flags.ListAction, help="class names, background first")
    smp.add_argument("--add-dirs", action=flags.ListAction, help="extra channel folders the model was trained with")
    smp.add_argument("--mean", action=flags.ListAction, cast=float, help="per-channel mean, raw pixel units")
    smp.add_argument("--std", action=flags.ListAction, cast=float, help="per-channel std, raw pixel units")
    head = smp.add_mutually_exclusive_group()
    head.add_argument("--sigmoid", dest="sigmoid", action="store_true", default=None,
                      help="the head is sigmoid (default: for smp-trainer checkpoints and one-logit models)")
    head.add_argument("--softmax", dest="sigmoid", action="store_false", help="the head is already softmax")
    smp.set_defaults(handler=cmd_convert_smp)
    cs = csub.add_parser("contextseg", help="the ContextSeg PyTorch port's stroke embedder (+ transformer) → "
                                            "OUT/embed and OUT/segment, the two sketch stages",
                         description="Read with weights_only. Widths, depth, code size and layers come from the "
                                     "shapes; the heads and the part names are not in the weights.")
    cs.add_argument("embedder", type=Path, help="train_Embed.py checkpoint (e.g. best_loss_model.pth)")
    cs.add_argument("transformer", type=Path, nargs="?", help="train_Segformer.py checkpoint (e.g. best_model.pth)")
    cs.add_argument("-o", "--out", type=Path, required=True, help="folder for embed/ and segment/")
    cs.add_argument("--heads", type=int, default=4, help="the transformer's --num_heads (default 4, the port's)")
    cs.add_argument("--parts", action=flags.ListAction, help="part names, one per decoding step (default 4 parts, "
                                                             "the port's --num_of_group)")
    cs.add_argument("--category", default="sketch", help="category the parts belong to (default: sketch)")
    cs.set_defaults(handler=cmd_convert_contextseg)


def _config_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="config files of other systems: import a pytorch-segmentation config.json")
    csub = p.add_subparsers(dest="config_command", required=True)
    imp = csub.add_parser("import", help="pytorch-segmentation config.json (comments allowed) → segwise YAML with "
                                         "the source key of every value; keys without effect are listed")
    imp.add_argument("source", type=Path, help="the config.json")
    imp.add_argument("-o", "--out", type=Path, required=True, help="YAML file to write, usable with --config")
    imp.set_defaults(handler=cmd_config_import)


def cmd_config_import(args: argparse.Namespace) -> None:
    from segwise.config import Config, validate_config
    from segwise.convert.pytorch_segmentation import to_yaml, translate_config
    from segwise.io_utils import atomic_write_text

    translation = translate_config(args.source)
    validate_config(translation.nested(), source=str(args.source), schema=Config)  # the YAML must load as it is
    atomic_write_text(args.out, to_yaml(translation, args.source))
    for note in translation.notes:
        print(f"no effect: {note}")
    print(f"wrote {args.out} ({len(translation.values)} keys translated, {len(translation.notes)} without effect)")


def cmd_convert_smp(args: argparse.Namespace) -> None:
    from segwise.convert.smp import convert_smp_checkpoint

    spec = convert_smp_checkpoint(args.checkpoint, args.out, arch=args.arch, encoder=args.encoder,
                                  sigmoid=args.sigmoid, class_values=args.class_list, class_names=args.classes,
                                  extra_channels=args.add_dirs, mean=args.mean, std=args.std)
    print(f"converted {args.checkpoint} ({spec.name}/{spec.encoder}, {spec.num_classes} classes, "
          f"{spec.in_channels} channels) into {args.out}/model.safetensors and model.yaml")


def cmd_convert_contextseg(args: argparse.Namespace) -> None:
    from segwise.convert.contextseg import convert_port_checkpoints

    written = convert_port_checkpoints(args.embedder, args.out, args.transformer, args.heads, args.parts,
                                       args.category)
    print(f"converted into {' and '.join(str(d) for d in written)} (model.safetensors + model.yaml each)")


def cmd_convert_trimap(args: argparse.Namespace) -> None:
    from segwise.convert.trimap import convert_trimap_checkpoint

    result = convert_trimap_checkpoint(args.checkpoint, args.out)
    a = result.spec.args
    print(f"converted {args.checkpoint} (ViT-{a['size']}/{a['patch_size']}, {a['depth']} blocks, {a['img_size']} px, "
          f"upsample {a['upsample']}) into {result.out_dir}/model.safetensors and model.yaml")
    if result.unused:
        print(f"left out {len(result.unused)} key(s) the upstream model never uses: {', '.join(result.unused)}")


def cmd_convert_factseg(args: argparse.Namespace) -> None:
    from segwise.convert.factseg import convert_official_checkpoint
    from segwise.errors import ConfigError

    if (args.out is None) == (args.out_option is None):
        raise ConfigError("convert factseg needs one output folder: give it as OUT or with -o/--out, not both")
    out = convert_official_checkpoint(args.checkpoint, args.out or args.out_option, args.classes, args.paddle)
    print(f"converted {args.checkpoint} into {out}/model.safetensors and model.yaml")

