"""`create_app`: a trained model behind HTTP (FastAPI). The model is loaded once by the caller; requests that
arrive together share a forward pass (`MicroBatcher`); a bad upload gets a 4xx `{"error": ...}` and the server
keeps serving. No socket is opened here, so tests can drive the app in-process or under uvicorn."""

from __future__ import annotations

import dataclasses
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from segwise.errors import SegwiseError
from segwise.inference.ensemble import Ensemble
from segwise.inference.modes import DEFAULT_MAX_PIXELS
from segwise.inference.predictor import Predictor
from segwise.serve.batcher import MicroBatcher
from segwise.serve.uploads import UploadError, decode_upload, encode_png
from segwise.serve.viewer import PAGE
from segwise.visualize import overlay, to_display_rgb

OUTPUTS = ("index", "counts", "overlay", "image")
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
               "connect-src 'self'")


def describe_mode(mode: Any) -> Any:
    """An inference mode (nested dataclasses) as JSON: `{"name": "SlidingWindow", "window": 512, ...}`."""
    if dataclasses.is_dataclass(mode) and not isinstance(mode, type):
        return {"name": type(mode).__name__,
                **{f.name: describe_mode(getattr(mode, f.name)) for f in dataclasses.fields(mode)}}
    if isinstance(mode, (list, tuple)):
        return [describe_mode(v) for v in mode]
    if mode is None or isinstance(mode, (bool, int, float, str)):
        return mode
    return {"name": type(mode).__name__}


def model_info(predictor: Predictor | Ensemble, names: list[str]) -> dict[str, Any]:
    """What `GET /model` answers: the classes and palette, the input the model takes and how it is run."""
    spec = predictor.spec
    first = predictor.members[0] if isinstance(predictor, Ensemble) else predictor
    ensemble = ({"method": predictor.method, "weights": predictor.weights.tolist()}
                if isinstance(predictor, Ensemble) else None)
    return {"models": names, "architecture": spec.name, "encoder": spec.encoder, "classes": list(spec.class_names),
            "num_classes": spec.num_classes, "palette": [list(c) for c in spec.palette],
            "ignore_index": spec.ignore_index, "in_channels": spec.in_channels,
            "extra_channels": list(spec.extra_channels), "image_size": spec.image_size, "mean": spec.mean,
            "std": spec.std, "inference": describe_mode(first.image_mode), "ensemble": ensemble,
            "device": str(predictor.device)}


def render(predictor: Predictor | Ensemble, image: np.ndarray, probs: np.ndarray, output: str,
           probs_class: int | None) -> Response:
    """The answer to one prediction: probability PNG, index PNG, per-class counts (JSON) or overlay PNG."""
    spec = predictor.spec
    if probs_class is not None:
        return Response(encode_png(np.rint(np.clip(probs[probs_class], 0, 1) * 255).astype(np.uint8)),
                        media_type="image/png")
    labels = predictor.labels(probs)
    if output == "counts":
        counts = np.bincount(labels.ravel(), minlength=spec.num_classes)
        return JSONResponse({"height": int(labels.shape[0]), "width": int(labels.shape[1]), "classes": [
            {"index": k, "name": name, "pixels": int(counts[k]), "fraction": float(counts[k] / labels.size)}
            for k, name in enumerate(spec.class_names)]})
    if output == "overlay":
        return Response(encode_png(overlay(image, labels, np.asarray(spec.palette, np.uint8),
                                           ignore_index=spec.ignore_index)), media_type="image/png")
    return Response(encode_png(labels.astype(np.uint8 if spec.num_classes <= 256 else np.uint16)),
                    media_type="image/png")


def check_query(output: str, probs_class: int | None, num_classes: int) -> None:
    """Refuse a query the server cannot answer before the upload is decoded."""
    if output not in OUTPUTS:
        raise UploadError(400, f"output={output}: not one of {', '.join(OUTPUTS)}; e.g. POST /predict?output=counts")
    if probs_class is not None:
        if not 0 <= probs_class < num_classes:
            raise UploadError(400, f"probs_class={probs_class}: the model has classes 0..{num_classes - 1}; pick one "
                                   "of them (GET /model lists them)")
        if output != "index":
            raise UploadError(400, f"probs_class={probs_class} answers with its probability PNG and cannot be "
                                   f"combined with output={output}; send one of the two")


def create_app(predictor: Predictor | Ensemble, *, names: list[str] | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, batch_window_ms: float = 10.0, max_batch: int = 8) -> FastAPI:
    """The ASGI app serving `predictor` (a `Predictor` or an `Ensemble`): `POST /predict`, `GET /model`,
    `GET /health` and the viewer page at `GET /`. `batch_window_ms = 0` runs every request on its own."""
    batcher = MicroBatcher(predictor.predict_proba_batch, batch_window_ms / 1000, max_batch)
    info = model_info(predictor, [str(n) for n in names or ["model"]])
    info.update(max_pixels=max_pixels, batching={"window_ms": batch_window_ms, "max_batch": batcher.max_batch})
    stats = {"answered": 0, "refused": 0}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="segwise", summary=f"segmentation with {', '.join(info['models'])}", lifespan=lifespan)

    def error(status: int, message: str) -> JSONResponse:
        stats["refused"] += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(SegwiseError)
    async def segwise_error(_: Request, exc: SegwiseError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return error(422, "; ".join(problems) + " (send the image as the multipart form field 'file', e.g. "
                                                "curl -F file=@image.png 'http://HOST:PORT/predict?output=index')")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def viewer() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and how many requests were answered, refused and batched."""
        return {"status": "ok", **stats, "batches": batcher.batches, "batched_images": batcher.images}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """Classes, palette, input bands, image size, inference mode, batching and size limit."""
        return info

    @app.post("/predict", responses={200: {"content": {"image/png": {}}}, 400: {}, 413: {}, 415: {}, 422: {}})
    async def predict(file: UploadFile = File(..., description="PNG, JPEG or TIFF image"), output: str = "index",
                      probs_class: int | None = None) -> Response:
        """`output=index` (class-index PNG, default), `counts` (JSON pixels per class), `overlay` (colour PNG) or
        `image` (the upload as displayed under the overlay); `probs_class=K`: P(class K) × 255 as an 8-bit PNG."""
        check_query(output, probs_class, predictor.spec.num_classes)
        name = file.filename or "upload"
        image = await run_in_threadpool(decode_upload, await file.read(), name, predictor.spec.in_channels,
                                        max_pixels)
        if output == "image":
            response = Response(encode_png(to_display_rgb(image)), media_type="image/png")
        else:
            probs = await batcher.submit(image)
            response = await run_in_threadpool(render, predictor, image, probs, output, probs_class)
        stats["answered"] += 1
        return response

    return app
