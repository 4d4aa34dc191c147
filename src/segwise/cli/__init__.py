"""The `segwise` command: train, eval, validate, predict, data, trimap, sketch, rle, export, convert, config, models,
serve and report.

Each module in `COMMAND_MODULES` registers its own subcommands (a task's commands live beside each other; a new task
is one module and one entry here) and sets each parser's `handler`; shared flags come from `segwise.cli.flags`.
Handlers import the task code lazily, so `--help` is fast and config errors come before torch or Lightning loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from segwise.cli import data, models, plan, report, semantic, serve, sketch, tools, trimap
from segwise.errors import Interrupted, SegwiseError

COMMAND_MODULES = (semantic, plan, data, trimap, sketch, tools, models, serve, report)
INTERRUPTED = ("interrupted (Ctrl-C); every output written before it is complete: run the same command again to "
               "finish")


def build_parser() -> argparse.ArgumentParser:
    """The `segwise` parser: every module of `COMMAND_MODULES` adds its subcommands."""
    parser = argparse.ArgumentParser(prog="segwise", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("-V", "--version", action="version", version=f"segwise {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def package_version() -> str:
    """The installed package's version, read from its metadata so it is always the one pip installed."""
    try:
        return metadata.version("segwise")
    except metadata.PackageNotFoundError:  # a source tree run without installing it
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run one `segwise` command; a SegwiseError is one line on stderr and exit code 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (Interrupted, KeyboardInterrupt) as exc:  # Ctrl-C: not an error of the user's input; 130 is SIGINT's code
        print(f"segwise {args.command}: {exc if isinstance(exc, Interrupted) else INTERRUPTED}", file=sys.stderr)
        return 130
    except SegwiseError as exc:
        print(f"segwise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
    return 0
