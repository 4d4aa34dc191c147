"""Inference engine: a `Predictor` runs a trained model with a pluggable mode: whole image, sliding windows,
test-time augmentation around either, streaming of rasters larger than memory, ensembles and RLE output."""

from segwise.inference.ensemble import Ensemble
from segwise.inference.modes import build_mode
from segwise.inference.predictor import Predictor
from segwise.inference.raster import RasterModel, RasterResult, RasterStats, predict_raster
from segwise.inference.rle import (
    coco_rle_decode, coco_rle_encode, decode_rle_csv, raster_rle_encode, read_rle_csv, rle_decode, rle_encode,
    write_rle_csv,
)
from segwise.inference.sliding import SlidingWindow
from segwise.inference.tta import MultiScaleFlip
from segwise.inference.whole import InferenceMode, WholeImage, pad_to_multiple
from segwise.inference.windows import WindowPlan, plan_windows, weight_map

__all__ = ["Ensemble", "InferenceMode", "MultiScaleFlip", "Predictor", "RasterModel", "RasterResult", "RasterStats",
           "SlidingWindow", "WholeImage", "WindowPlan", "build_mode", "pad_to_multiple", "plan_windows",
           "predict_raster", "weight_map", "coco_rle_decode", "coco_rle_encode", "decode_rle_csv",
           "raster_rle_encode", "read_rle_csv", "rle_decode", "rle_encode", "write_rle_csv"]
