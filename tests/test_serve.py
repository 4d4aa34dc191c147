"""`segwise serve`: the real server on 127.0.0.1 (uvicorn on a free port) answered over HTTP with httpx. Masks,
overlays and probabilities equal `segwise predict`'s for the same image; 24 concurrent requests are batched and all
correct; every bad upload gets a 4xx `{"error": ...}` naming the problem and the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient

from segwise.cli import main
from segwise.data.io import read_image, read_mask, write_png
from segwise.inference import Ensemble, Predictor
from segwise.inference.modes import build_mode
from segwise.serve import create_app
from segwise.serve.server import start_in_thread
from tests.helpers import save_untrained_unet_run

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_PIXELS = 40_000


def save_tiny_run(directory: Path, seed: int = 0) -> Path:
    """An untrained 4-class Unet whose classes the viewer's legend names."""
    return save_untrained_unet_run(directory, ("bg", "road", "tree", "roof"), seed)


def sample_image(path: Path, height: int, width: int, seed: int) -> Path:
    """A smooth random RGB image (blobs, so an untrained model still predicts several classes)."""
    noise = np.random.default_rng(seed).integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    return write_png(path, cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC))


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of 127.0.0.1 for the duration; yields its base URL."""
    server, thread, url = start_in_thread(app)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def predicted(run: Path, image: Path, out: Path, *flags: str) -> Path:
    """Run `segwise predict` on one image; returns its output folder."""
    assert main(["predict", str(run), str(image), "-o", str(out), "--save", "index", "overlay", "probs",
                 "--device", "cpu", *flags]) == 0
    return out


def png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)


def upload(path: Path) -> dict:
    return {"file": (path.name, path.read_bytes(), "image/png")}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    return {"run": save_tiny_run(root / "run"), "other": save_tiny_run(root / "other", seed=1),
            "image": sample_image(root / "field.png", 70, 90, seed=0),  # not a multiple of the stride: padded
            **{f"image{i}": sample_image(root / f"img{i}.png", 64 if i % 2 else 48, 80, seed=i) for i in range(6)},
            "root": root}


@pytest.fixture(scope="module")
def server(files) -> Iterator[str]:
    predictor = Predictor.from_path(files["run"], "cpu")
    with running(create_app(predictor, max_pixels=MAX_PIXELS, batch_window_ms=20, max_batch=8)) as url:
        yield url


def test_mask_overlay_and_probabilities_equal_segwise_predict(files, server):
    out = predicted(files["run"], files["image"], files["root"] / "predict")
    with httpx.Client(base_url=server, timeout=30) as client:
        index = png(client.post("/predict", files=upload(files["image"])))
        overlay = png(client.post("/predict?output=overlay", files=upload(files["image"])))
        probs = png(client.post("/predict?probs_class=2", files=upload(files["image"])))
        counts = client.post("/predict?output=counts", files=upload(files["image"])).json()
    expected = read_mask(out / "index" / "field.png")
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(overlay[..., ::-1], read_image(out / "overlay" / "field.png"))
    reference = np.load(out / "probs" / "field.npy").astype(np.float32)[2]  # float16 on disk
    assert np.abs(probs.astype(np.float32) - reference * 255).max() <= 1
    assert (counts["height"], counts["width"]) == (70, 90)
    assert [c["pixels"] for c in counts["classes"]] == np.bincount(expected.ravel(), minlength=4).tolist()
    assert [c["name"] for c in counts["classes"]] == ["bg", "road", "tree", "roof"]
    assert len(np.unique(expected)) > 1  # the comparison is not between two blank masks


def test_model_and_health(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        model = client.get("/model").json()
        health = client.get("/health").json()
        page = client.get("/")
        docs = client.get("/openapi.json").json()
    assert model["classes"] == ["bg", "road", "tree", "roof"]
    assert model["palette"][1] == [255, 0, 0]
    assert (model["in_channels"], model["image_size"], model["inference"]["name"]) == (3, None, "WholeImage")
    assert model["max_pixels"] == MAX_PIXELS and model["batching"] == {"window_ms": 20, "max_batch": 8}
    assert health["status"] == "ok"
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http" not in page.text.replace("http://HOST", "")  # nothing loaded from elsewhere: works offline
    assert "/predict" in docs["paths"]


def reference_labels(predictor: Predictor, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """The labels `predictor` gives one image, and where its two best classes are too close for the label to
    survive float rounding of a different batch size (1e-5 apart)."""
    probs = predictor.predict_proba(read_image(image))
    best = np.sort(probs, axis=0)
    return probs.argmax(0), best[-1] - best[-2] < 1e-5


def test_concurrent_requests_are_batched_and_all_correct(files, server):
    names = [f"image{i % 6}" for i in range(24)]
    predictor = Predictor.from_path(files["run"], "cpu")
    expected = {name: reference_labels(predictor, files[name]) for name in set(names)}
    with httpx.Client(base_url=server) as client:
        before = client.get("/health").json()

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict", files=upload(files[n])) for n in names))

    responses = asyncio.run(send_all())
    for name, response in zip(names, responses):
        labels, close = expected[name]
        mask = png(response)
        assert mask.shape == labels.shape
        assert np.array_equal(mask[~close], labels[~close]), f"{name}: wrong mask"
    with httpx.Client(base_url=server) as client:
        after = client.get("/health").json()
    assert after["batched_images"] - before["batched_images"] == 24
    assert after["batches"] - before["batches"] < 24  # requests in flight together shared forwards


def tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(files, server):
    good = files["image"].read_bytes()
    rgb = read_image(files["image"])
    cases = [  # (query, multipart files, status, words the error must contain)
        ("", {"file": ("notes.png", b"this is not an image", "image/png")}, 415,
         ["notes.png", "not a PNG, JPEG or TIFF"]),
        ("", {"file": ("empty.png", b"", "image/png")}, 400, ["empty.png", "empty"]),
        ("", {"file": ("cut.png", good[: len(good) // 2], "image/png")}, 400, ["cut.png", "truncated"]),
        ("", {"file": ("grey.tif", tiff_bytes(rgb[..., 0]), "image/tiff")}, 422, ["grey.tif", "1 band", "takes 3"]),
        ("", {"file": ("five.tif", tiff_bytes(np.dstack([rgb, rgb[..., :2]])), "image/tiff")}, 422, ["5 band"]),
        ("", {"file": ("huge.png", cv2.imencode(".png", np.zeros((250, 200, 3), np.uint8))[1].tobytes(),
                       "image/png")}, 413, ["huge.png", "250×200", "--max-pixels"]),
        ("?output=mask", upload(files["image"]), 400, ["output=mask", "index, counts, overlay"]),
        ("?probs_class=7", upload(files["image"]), 400, ["probs_class=7", "0..3"]),
        ("?probs_class=1&output=counts", upload(files["image"]), 400, ["cannot be combined"]),
        ("", {"image": ("field.png", good, "image/png")}, 422, ["file", "multipart form field 'file'"]),
    ]
    with httpx.Client(base_url=server, timeout=30) as client:
        for query, parts, status, words in cases:
            response = client.post(f"/predict{query}", files=parts)
            assert response.status_code == status, (query, parts, response.text)
            message = response.json()["error"]
            assert all(w in message for w in words), message
            assert "/tmp" not in message and "upload." not in message  # names the user's file, not ours
        assert client.get("/health").json()["status"] == "ok"
        tiff = client.post("/predict", files={"file": ("field.tif", tiff_bytes(rgb), "image/tiff")})
        np.testing.assert_array_equal(png(tiff), png(client.post("/predict", files=upload(files["image"]))))


def test_unbatched_sliding_and_ensemble_servers_equal_predict(files):
    """Batching off (`--batch-window-ms 0`), sliding windows, and an ensemble: each equals `segwise predict`
    with the same flags (in-process, without a socket)."""
    root, image = files["root"], files["image"]
    slide = predicted(files["run"], image, root / "slide", "--mode", "slide", "--window", "32", "--overlap", "0.5")
    pair = predicted(files["run"], image, root / "pair", "--ensemble", str(files["other"]))
    mode = build_mode("slide", window=32, overlap=0.5)
    apps = [(create_app(Predictor.from_path(files["run"], "cpu", mode), batch_window_ms=0), slide),
            (create_app(Ensemble.from_paths([files["run"], files["other"]], "cpu")), pair)]
    for app, out in apps:
        with TestClient(app) as client:
            np.testing.assert_array_equal(png(client.post("/predict", files=upload(image))),
                                          read_mask(out / "index" / "field.png"))
    with TestClient(apps[0][0]) as client:
        assert client.get("/model").json()["batching"]["max_batch"] == 1
        assert client.get("/model").json()["inference"]["window"] == 32


def test_serve_command_refuses_a_taken_port_before_loading(files, server, capsys):
    port = server.rsplit(":", 1)[1]
    assert main(["serve", str(files["root"] / "missing-run"), "--port", port]) == 2
    error = capsys.readouterr().err
    assert f"--port {port}" in error and "another --port" in error


@pytest.mark.slow  # a fresh process imports torch: ~10 s
def test_segwise_serve_command_serves_until_ctrl_c(files):
    """The command itself: `segwise serve RUN --port 0` prints its URL, answers, and stops cleanly on Ctrl-C."""
    command = [sys.executable, "-m", "segwise", "serve", str(files["run"]), "--port", "0", "--device", "cpu"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = next((m.group(1) for line in process.stderr if (m := re.search(r"viewer at (http://\S+)/ ", line))),
                   None)
        assert url and url.startswith("http://127.0.0.1:"), "the command printed no viewer URL"
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        index = png(httpx.post(f"{url}/predict", files=upload(files["image"]), timeout=60))
        assert index.shape == (70, 90)
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[1]
    assert process.returncode == 0, rest
    assert "stopped" in rest
