"""Inference engine: a `Predictor` runs a trained model with a pluggable mode (whole image for now)."""

from segwise.inference.predictor import Predictor
from segwise.inference.whole import InferenceMode, WholeImage, pad_to_multiple

__all__ = ["InferenceMode", "Predictor", "WholeImage", "pad_to_multiple"]
