"""segwise: train, evaluate, run and export semantic-segmentation models."""

from importlib.metadata import version

__version__ = version("segwise")  # one source of truth: pyproject.toml
