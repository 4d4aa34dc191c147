"""`segwise report`: one self-contained HTML page of a run and its evaluation (see `segwise.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segwise.cli import flags


def register(sub: Any) -> None:
    """Add report to the `segwise` subcommands."""
    p = sub.add_parser("report", help="one self-contained HTML page of a run and its evaluation",
                       description="Settings, training curves (from the run's TensorBoard events), per-class "
                                   "metrics, the confusion matrix and the worst images of `segwise eval --plots`; "
                                   "sketch and trimap evaluations get their own sections. Images are embedded: "
                                   "the file opens offline and can be mailed as it is.")
    p.add_argument("run", type=Path, help="run directory (config.yaml, model.yaml, tensorboard/)")
    p.add_argument("eval_dir", type=Path, nargs="?",
                   help="folder an evaluation wrote (metrics.json or trimap_metrics.json); default RUN/eval when it "
                        "holds one")
    p.add_argument("-o", "--out", type=Path, help="the HTML file (default EVAL_DIR/report.html, else RUN/report.html)")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> None:
    flags.check_output_file(args.out, "-o/--out", "report.html")
    from segwise.report import build_report, default_eval_dir

    eval_dir = args.eval_dir if args.eval_dir is not None else default_eval_dir(args.run)
    print(f"report written to {build_report(args.run, eval_dir, args.out)}")
