"""`segwise data check|synth|tile|remap|filter|planes`: validate a pixel data set, write the synthetic one, cut large
images into tiles, and prepare a data set before training (rewrite mask values, keep the tiles holding a class,
gather extra-channel planes)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags


def register(sub: Any) -> None:
    """Add `data` and its subcommands to the `segwise` subcommands."""
    p = sub.add_parser("data", help="data-set tools: check, synth, tile, remap, filter, planes",
                       description="Data-set tools; `segwise data COMMAND --help` shows each one's options.")
    dsub = p.add_subparsers(dest="data_command", required=True, title="commands", metavar="COMMAND")
    check = dsub.add_parser("check", help="validate a data set and print class pixel counts, sizes and channels")
    check.add_argument("data_dir", type=Path, help="data set root (train/, val/, ...) or one split folder")
    flags.add_data_flags(check)
    check.set_defaults(handler=cmd_check)

    synth = dsub.add_parser("synth", help="write the built-in synthetic data set (textured shapes)")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--train", type=int, default=48, help="number of training images")
    synth.add_argument("--val", type=int, default=16, help="number of validation images")
    synth.add_argument("--test", type=int, default=8, help="number of test images")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.set_defaults(handler=cmd_synth)

    tile = dsub.add_parser("tile", help="cut a split of large images into fixed windows (index masks, pad 255)",
                           description="Windows of --size pixels every --stride pixels, the last row/column moved "
                                       "back to end on the border (or padded, or dropped: --edge); smaller images "
                                       "are padded (image 0, mask ignore). Masks are written as class-index PNGs, "
                                       "--add-dirs planes are cut with their images.")
    tile.add_argument("src", type=Path, help="split folder with images/ and masks/ (and --add-dirs planes), or "
                                             "ROOT/SPLIT of a --format data set (e.g. VOCdevkit/train_aug)")
    tile.add_argument("out", type=Path, help="output split folder (gets images/, masks/ and the plane folders)")
    tile.add_argument("--size", type=int, default=896, help="window side in pixels (default 896, FactSeg)")
    tile.add_argument("--stride", type=int, default=512,
                      help="step between windows (default 512; the smp trainer's shift)")
    tile.add_argument("--offset", type=int, default=0,
                      help="start shift: the grid starts this many pixels in from the top and left (default 0; e.g. "
                           "half a window for a second, staggered tiling)")
    tile.add_argument("--edge", choices=["shift", "pad", "drop"], default="shift",
                      help="the window at the far border: shift = moved back to end on it (default), pad = padded "
                           "like small images, drop = left out (whole windows only, as the smp trainer tiles)")
    tile.add_argument("--whole", action="store_true", help="no tiling: convert the masks of whole images only")
    tile.add_argument("--prefix", default="", help="prepended to every output name (to merge several sources)")
    flags.add_data_flags(tile)
    tile.set_defaults(handler=cmd_tile)
    register_prepare(dsub)


def register_prepare(dsub: Any) -> None:
    """`data remap|filter|planes`: the smp trainer's data-set scripts; SRC is checked and its masks read before
    anything is written, OUT mirrors SRC and may not lie inside it, images are hard-linked (copied with --copy)."""
    remap = _mirror_parser(dsub, "remap", "rewrite mask values (index, palette or colour masks)",
                           "Rewrite the masks' values with --map; prints the value histogram before and after. "
                           "Masks are written as index PNGs; images and planes are linked.")
    remap.add_argument("--map", dest="value_map", action=flags.ListAction, metavar="OLD:NEW",
                       help="source value → new value, e.g. 64:1,128:2,255:0; a source value no mask holds is "
                            "refused as a likely typo")
    remap.add_argument("--unmapped", choices=["keep", "ignore", "error"], default="keep",
                       help="values --map leaves out: keep (default: written unchanged), ignore (written as "
                            "--ignore-index) or error (refused, listing them)")
    remap.add_argument("--ignore-index", type=int, default=255, help="the value of ignored pixels (default 255)")
    remap.add_argument("--palette", action=flags.ListAction, metavar="RRGGBB",
                       help="colour masks: the colour of each value in order, e.g. 000000 ff0000 (or quoted "
                            "'#ff0000'); colour i reads as value i before --map, which may then be left out")
    flags.add_extra_dirs_flag(remap)
    remap.set_defaults(handler=cmd_remap)

    keep = _mirror_parser(dsub, "filter", "keep the samples whose masks hold a class",
                          "Keep the samples (with their --add-dirs planes) whose masks hold a class, and optionally "
                          "a seeded random share of the others; prints how many were kept per split.")
    keep.add_argument("--keep-class", action=flags.ListAction, cast=int, required=True, metavar="VALUE",
                      help="mask value(s) a kept sample must hold, e.g. 2 (several: any of them)")
    threshold = keep.add_mutually_exclusive_group()
    threshold.add_argument("--min-pixels", type=int, help="at least this many pixels of the class (default 1)")
    threshold.add_argument("--min-share", type=float, help="at least this share of the mask's pixels, e.g. 0.01")
    keep.add_argument("--max-empty-share", type=float, default=0.0,
                      help="also keep samples without the class, up to this share of the kept ones (default 0)")
    keep.add_argument("--seed", type=int, default=0, help="which samples without the class are kept (default 0)")
    flags.add_extra_dirs_flag(keep)
    keep.set_defaults(handler=cmd_filter)

    planes = _mirror_parser(dsub, "planes", "gather the extra-channel planes of a split's images from another tree",
                            "Mirror SRC's images (and masks) and add, for each image, the file of the same stem "
                            "from DIR/<split>/<plane>/ (else DIR/<plane>/); missing planes are listed and nothing "
                            "is written. A mask folder name (gt, masks) among --planes gathers the masks too.")
    planes.add_argument("--from", dest="source_root", type=Path, required=True, metavar="DIR",
                        help="folder tree holding the plane folders")
    planes.add_argument("--planes", action=flags.ListAction, required=True, help="plane folder names, e.g. nir dsm")
    planes.set_defaults(handler=cmd_planes)


def _mirror_parser(dsub: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A `data` subcommand reading SRC and writing its mirror OUT."""
    parser = dsub.add_parser(name, help=summary, description=description)
    parser.add_argument("src", type=Path, metavar="SRC",
                        help="split folder (images/, masks/) or data-set root (train/, val/, ...)")
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder, mirroring SRC; not inside SRC")
    parser.add_argument("--copy", action="store_true",
                        help="copy images and planes (default: hard links, copies across file systems)")
    return parser


def cmd_check(args: argparse.Namespace) -> None:
    config = flags.load_args_config(args, args.data_dir)

    from segwise.tasks.semantic.data import check_data

    print(check_data(config))


def cmd_synth(args: argparse.Namespace) -> None:
    flags.check_output_dir(args.out)
    from segwise.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(args.out, num_train=args.train, num_val=args.val, num_test=args.test,
                                  size=args.size, seed=args.seed)
    print(f"synthetic data set written to {root}")


def cmd_tile(args: argparse.Namespace) -> None:
    config = flags.load_args_config(args, args.src)
    flags.check_output_dir(args.out)

    from segwise.data.readers import find_split
    from segwise.data.tile import class_map_decoder, tile_samples
    from segwise.tasks.semantic.data import build_class_map, with_dataset_defaults

    data = with_dataset_defaults(config.data)
    samples = find_split(data.format, args.src, data.extra_channels)
    class_map = build_class_map(data, samples)
    count = tile_samples(samples, args.out, class_map_decoder(class_map), None if args.whole else args.size,
                         args.stride, class_map.ignore_index, class_map.num_classes, args.prefix, args.offset,
                         args.edge)
    folders = ", ".join(f"{args.out}/{name}" for name in ["images", "masks", *data.extra_channels])
    print(f"wrote {count} tile(s) from {len(samples)} image(s) into {folders}")


def cmd_remap(args: argparse.Namespace) -> None:
    from segwise.data.prepare import Remapping, parse_value_map, remap_masks

    value_map = parse_value_map(args.value_map) if args.value_map else {}
    remapping = Remapping(value_map, args.unmapped, args.ignore_index, tuple(args.palette) if args.palette else None)
    report = remap_masks(args.src, args.out, remapping, args.add_dirs or (), copy=args.copy)
    print(f"{report.format()}\nremapped data set written to {args.out}")


def cmd_filter(args: argparse.Namespace) -> None:
    from segwise.data.prepare import filter_samples

    report = filter_samples(args.src, args.out, args.keep_class, args.min_pixels, args.min_share,
                            args.max_empty_share, args.seed, args.add_dirs or (), copy=args.copy)
    print(f"{report.format()}\nfiltered data set written to {args.out}")


def cmd_planes(args: argparse.Namespace) -> None:
    from segwise.data.prepare import gather_planes

    report = gather_planes(args.src, args.out, args.source_root, args.planes, copy=args.copy)
    print(f"{report.format()}\ndata set with planes written to {args.out}")
