"""`segwise data check|synth|tile`: validate a pixel data set, write the synthetic one, cut large images into tiles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags


def register(sub: Any) -> None:
    """Add `data` and its subcommands to the `segwise` subcommands."""
    p = sub.add_parser("data", help="data-set tools: check, synth, tile")
    dsub = p.add_subparsers(dest="data_command", required=True)
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
                                       "back to end on the border; smaller images are padded (image 0, mask "
                                       "ignore). Masks are written as class-index PNGs.")
    tile.add_argument("src", type=Path, help="split folder with images/ and masks/")
    tile.add_argument("out", type=Path, help="output split folder (gets images/ and masks/)")
    tile.add_argument("--size", type=int, default=896, help="window side in pixels (default 896, FactSeg)")
    tile.add_argument("--stride", type=int, default=512, help="step between windows (default 512)")
    tile.add_argument("--whole", action="store_true", help="no tiling: convert the masks of whole images only")
    tile.add_argument("--prefix", default="", help="prepended to every output name (to merge several sources)")
    flags.add_data_flags(tile)
    tile.set_defaults(handler=cmd_tile)


def cmd_check(args: argparse.Namespace) -> None:
    config = flags.load_args_config(args, args.data_dir)

    from segwise.tasks.semantic.data import check_data

    print(check_data(config))


def cmd_synth(args: argparse.Namespace) -> None:
    from segwise.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(args.out, num_train=args.train, num_val=args.val, num_test=args.test,
                                  size=args.size, seed=args.seed)
    print(f"synthetic data set written to {root}")


def cmd_tile(args: argparse.Namespace) -> None:
    config = flags.load_args_config(args, args.src)

    from segwise.data.readers import find_split
    from segwise.data.tile import class_map_decoder, tile_samples
    from segwise.tasks.semantic.data import build_class_map, with_dataset_defaults

    data = with_dataset_defaults(config.data)
    samples = find_split(data.format, args.src, data.extra_channels)
    class_map = build_class_map(data, samples)
    count = tile_samples(samples, args.out, class_map_decoder(class_map), None if args.whole else args.size,
                         args.stride, class_map.ignore_index, class_map.num_classes, args.prefix)
    print(f"wrote {count} tile(s) from {len(samples)} image(s) into {args.out}/images and {args.out}/masks")
