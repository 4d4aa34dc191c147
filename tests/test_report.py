"""`segwise report` and `segwise eval --report`: a tiny real run (trained a few steps, evaluated with --plots) turned
into one HTML page, parsed back with the standard library's HTML parser."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from helpers import save_untrained_trimap_run
from segwise.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEMANTIC_SECTIONS = {"settings", "curves", "per-class", "confusion", "worst-images"}


class Page(HTMLParser):
    """What the tests look at: section ids, every src/href, images, tags, the hidden confusion table, captions."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.confusion: dict[str, str] = {}
        self.captions: list[str] = []
        self._caption: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        self.tags.add(tag)
        self.links += [attributes[key] for key in ("src", "href") if key in attributes]
        if tag == "section":
            self.sections.append(attributes["id"])
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "table" and attributes.get("id") == "confusion-matrix":
            self.confusion = attributes
        elif tag == "figcaption":
            self._caption = []

    def handle_data(self, data: str) -> None:
        if self._caption is not None:
            self._caption.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption" and self._caption is not None:
            self.captions.append("".join(self._caption))
            self._caption = None


@pytest.fixture(scope="module")
def evaluated_run(synthetic_root, tmp_path_factory, one_thread) -> Path:
    """A 4-step ENet run on the synthetic set, evaluated on val with the 2 worst panels and `--report`."""
    log_dir = tmp_path_factory.mktemp("report_runs")
    settings = ["run.log_dir=" + str(log_dir), "run.name=tiny", "trainer.accelerator=cpu", "trainer.progress_bar=false",
                "data.num_workers=0", "data.batch_size=4", "trainer.log_every_steps=1", "trainer.max_steps=4",
                "trainer.val_every_steps=2", "trainer.log_images=0", "trainer.log_worst_images=0"]
    assert main(["train", str(synthetic_root), "--model", "enet",
                 *[arg for setting in settings for arg in ("--set", setting)]]) == 0
    run = log_dir / "tiny"
    assert main(["eval", str(run), str(synthetic_root / "val"), "--plots", "2", "--per-image", "--device", "cpu",
                 "--report"]) == 0
    return run


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def test_eval_report_has_every_section_with_embedded_images_only(evaluated_run):
    page = read_page(evaluated_run / "eval" / "report.html")
    assert SEMANTIC_SECTIONS <= set(page.sections)
    assert not page.tags & {"script", "link", "iframe", "object"}  # nothing fetched or run when it opens
    assert page.links and all(link.startswith("data:image/png;base64,") for link in page.links)
    for image in page.images:
        assert base64.b64decode(image["src"].split(",", 1)[1]).startswith(PNG_SIGNATURE)
    curves = {image["alt"] for image in page.images}
    assert {"loss", "learning rate", "validation metrics"} <= curves


def test_worst_panels_are_embedded_with_their_miou(evaluated_run):
    page = read_page(evaluated_run / "eval" / "report.html")
    plots = sorted((evaluated_run / "eval" / "plots").glob("*.png"))
    embedded = {base64.b64decode(image["src"].split(",", 1)[1]) for image in page.images}
    assert len(plots) == 2 and all(plot.read_bytes() in embedded for plot in plots)
    panel_captions = [caption for caption in page.captions if "mIoU" in caption]
    assert [caption.split(":")[0] for caption in panel_captions] == [plot.stem[4:] for plot in plots]


def test_confusion_matrix_in_the_page_equals_metrics_json(evaluated_run):
    metrics = json.loads((evaluated_run / "eval" / "metrics.json").read_text())
    page = read_page(evaluated_run / "eval" / "report.html")
    matrix = json.loads(page.confusion["data-matrix"])
    assert matrix == metrics["confusion_matrix"]
    assert json.loads(page.confusion["data-classes"]) == [row["name"] for row in metrics["per_class"]]
    assert np.sum(matrix) == metrics["num_pixels"]
    assert np.diag(matrix).tolist() == [round(row["recall"] * row["support"]) if row["support"] else 0
                                        for row in metrics["per_class"]]


def test_report_command_defaults_to_run_eval(evaluated_run, tmp_path, capsys):
    out = tmp_path / "shared" / "report.html"
    assert main(["report", str(evaluated_run), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert SEMANTIC_SECTIONS <= set(read_page(out).sections)


def test_sketch_and_trimap_evaluations_get_their_sections(evaluated_run, tmp_path):
    from segwise.data.matting import make_synthetic_matting
    from segwise.data.sketch.synthetic import make_synthetic_sketches
    from segwise.metrics.sketch import sketch_metrics, write_sketch_metrics

    eval_dir = tmp_path / "eval"
    mattes = make_synthetic_matting(tmp_path / "mattes", num_train=0, num_val=2, size=32, seed=0)
    trimap_run = save_untrained_trimap_run(tmp_path / "trimap_run")
    assert main(["trimap", "eval", str(trimap_run), str(mattes / "val"), "-o", str(eval_dir), "--save",
                 "--device", "cpu"]) == 0
    sketches = make_synthetic_sketches(2)
    metrics = sketch_metrics(sketches, [np.zeros_like(sketch.labels) for sketch in sketches])
    write_sketch_metrics({**metrics, "split": "test", "model": "sketch_run"}, eval_dir)  # what `sketch eval` writes
    from segwise.tasks.sketch.infer import write_worst_sketches

    drawn = write_worst_sketches(eval_dir / "plots", sketches, [np.zeros_like(s.labels) for s in sketches], 2, 64, 2)
    out = tmp_path / "report.html"
    assert main(["report", str(evaluated_run), str(eval_dir), "-o", str(out)]) == 0
    page = read_page(out)
    html = out.read_text()
    assert {"settings", "curves", "sketch", "trimap"} <= set(page.sections)
    assert not {"per-class", "confusion"} & set(page.sections)
    assert all(f"<td>{category}</td>" in html for category in metrics["per_category"])
    assert any(image["alt"] == "predicted trimaps of val" for image in page.images)
    assert sum(image["alt"].startswith("overlay ") for image in page.images) == 2  # both val images, overlaid
    assert len(drawn) == 2 and html.count("ground truth | prediction") == 1  # the sketch drawings are embedded
    assert sum(image["alt"] == path.stem.split("_", 1)[1] for path in drawn for image in page.images) == 2


def test_run_without_events_is_one_clear_error(evaluated_run, synthetic_root, tmp_path, capsys):
    bare = tmp_path / "bare_run"
    bare.mkdir()
    for name in ("model.yaml", "model.safetensors", "config.yaml"):
        shutil.copy(evaluated_run / name, bare / name)
    assert main(["report", str(bare), str(evaluated_run / "eval"), "-o", str(tmp_path / "r.html")]) == 2
    error = capsys.readouterr().err
    assert str(bare) in error and "TensorBoard event files" in error and "RUN/tensorboard/" in error
    assert main(["eval", str(bare), str(synthetic_root / "val"), "--report"]) == 2  # stops before evaluating
    assert "TensorBoard event files" in capsys.readouterr().err and not (bare / "eval").exists()


def test_eval_dir_without_metrics_is_one_clear_error(evaluated_run, tmp_path, capsys):
    assert main(["report", str(evaluated_run), str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "metrics.json" in error and "segwise eval RUN DATA" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()
