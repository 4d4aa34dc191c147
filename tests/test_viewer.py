"""The browser viewer at `GET /`, driven in headless Chromium (Debian's `chromium` + `chromium-driver`, through
Selenium; nothing is downloaded): upload an image, wait for the overlay, move the opacity slider, show one class
from the legend, and check the canvas pixels against the image, the palette and the server's mask."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from segwise.data.io import read_image
from segwise.inference import Predictor
from segwise.serve import create_app
from test_serve import running, sample_image, save_tiny_run

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402 - after the skip above
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="the viewer test needs a system Chromium and its "
                                 "driver (Debian: apt-get install -y chromium chromium-driver; .ci/run does this as "
                                 "root); no browser is downloaded at test time"),
              pytest.mark.usefixtures("one_thread")]
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.float64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Predictor]]:
    root = tmp_path_factory.mktemp("viewer")
    predictor = Predictor.from_path(save_tiny_run(root / "run"), "cpu")
    with running(create_app(predictor)) as url:
        yield url, sample_image(root / "field.png", 70, 90, seed=0), predictor


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--force-color-profile=srgb", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def canvas(driver) -> np.ndarray:
    """The canvas's RGB pixels, read in the page."""
    width, height, values = driver.execute_script(
        "const c = document.getElementById('canvas');"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];")
    return np.array(values, dtype=np.float64).reshape(height, width, 4)[..., :3]


def blended(image: np.ndarray, mask: np.ndarray, alpha: float, shown: np.ndarray) -> np.ndarray:
    """What the page draws: palette colours at `alpha` over the image where `shown`, the image elsewhere."""
    mixed = np.floor(image * (1 - alpha) + PALETTE[mask] * alpha + 0.5)  # JavaScript's Math.round
    return np.where(shown[..., None], mixed, image)


def test_upload_overlay_slider_and_one_class(setup, browser):
    url, path, predictor = setup
    image = read_image(path).astype(np.float64)
    mask = predictor.predict(read_image(path))
    counts = np.bincount(mask.ravel(), minlength=4)
    browser.get(url + "/")
    browser.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                     in ("ready", "error"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", \
        browser.find_element(By.ID, "status").text
    everywhere = np.ones(mask.shape, bool)
    assert np.abs(canvas(browser) - blended(image, mask, 0.5, everywhere)).max() <= 1  # default opacity 50 %

    slider = browser.find_element(By.ID, "opacity")
    slider.send_keys(Keys.END)  # slider to 100 %: the mask's colours alone
    assert browser.find_element(By.ID, "opacity-value").text == "100 %"
    np.testing.assert_array_equal(canvas(browser), PALETTE[mask])

    entries = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    assert [e.text.split("\n")[0] for e in entries] == ["bg", "road", "tree", "roof"]
    for entry, count in zip(entries, counts):
        assert f"({count} px)" in entry.text and f"{100 * count / mask.size:.1f} %" in entry.text
    chosen = int(np.argmax(counts))
    entries[chosen].click()  # only that class is coloured; the rest shows the image
    np.testing.assert_array_equal(canvas(browser), blended(image, mask, 1.0, mask == chosen))
    assert browser.find_elements(By.CSS_SELECTOR, "#legend li")[chosen].get_attribute("aria-pressed") == "true"

    slider.send_keys(Keys.HOME)  # 0 %: the image itself
    np.testing.assert_array_equal(canvas(browser), image)
    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "field_mask.png"


def test_a_bad_upload_is_reported_on_the_page(setup, browser, tmp_path):
    url = setup[0]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    browser.get(url + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                     == "error")
    assert "not a PNG, JPEG or TIFF" in browser.find_element(By.ID, "status").text
