"""`segwise report`: one self-contained HTML page (settings, training curves, metrics, confusion matrix, worst
images) of a run and its evaluation, readable offline and easy to share."""

from segwise.report.build import build_report, default_eval_dir
from segwise.report.sources import check_run, run_directory

__all__ = ["build_report", "check_run", "default_eval_dir", "run_directory"]
