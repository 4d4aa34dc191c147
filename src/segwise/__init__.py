"""segwise: train, evaluate, run and export semantic-segmentation models."""

__version__ = "0.1.0"
