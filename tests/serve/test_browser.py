"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
open a PNG and a NIfTI volume, move through slices, draw a box, ask, and check what is drawn.

Where /usr/bin/chromium is installed these tests run (never skip); screenshots go to a folder under
pytest's tmp dir and, when set, to $MEDGROUND_ARTIFACTS.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.serve.app import ServeSettings, create_app
from medground.serve.local import CHROMIUM, headless_chromium, running

from .conftest import CXR
from .test_volumes import AXIAL, CT_NII, SAGITTAL

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium and chromium-driver (make browsers)"
)
FIRST_COLOUR = (255, 90, 90)  # page.js COLOURS[0], the first answer box's stroke


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium through /usr/bin/chromedriver (Selenium Manager never downloads anything)."""
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    if os.environ.get("MEDGROUND_ARTIFACTS"):
        target = Path(os.environ["MEDGROUND_ARTIFACTS"]) / "browser"
        target.mkdir(parents=True, exist_ok=True)
        for shot in folder.glob("*.png"):
            shutil.copy2(shot, target / shot.name)


def _wait(driver, condition, seconds: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: condition(d))


def _pixel(driver, x: int, y: int) -> tuple[int, int, int]:
    rgba = driver.execute_script(
        "return Array.from(document.getElementById('view').getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data)",
        x,
        y,
    )
    return tuple(rgba[:3])


def _canvas(driver) -> np.ndarray:
    """The page's canvas as (H, W, 3) uint8, through toDataURL."""
    url = driver.execute_script("return document.getElementById('view').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def _drag_box(driver, start: tuple[float, float], end: tuple[float, float]) -> list[int]:
    """Drag from ``start`` to ``end`` (fractions of the canvas); returns the box the page says it drew."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "view")
    w, h = canvas.size["width"], canvas.size["height"]
    offset = lambda f: (int((f[0] - 0.5) * w), int((f[1] - 0.5) * h))  # noqa: E731  (from the centre)
    chain = ActionChains(driver).move_to_element_with_offset(canvas, *offset(start)).click_and_hold()
    chain.move_to_element_with_offset(canvas, *offset(end)).release().perform()
    text = driver.find_element(By.ID, "box-text").text
    return [int(v) for v in re.findall(r"-?\d+", text)]


def _ask(driver, question: str) -> str:
    """Type ``question`` and press Enter; returns the answer's text once the page shows it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(driver.find_elements(By.CSS_SELECTOR, "#chat-log li.assistant, #chat-log li.error"))
    field = driver.find_element(By.ID, "question")
    field.send_keys(question)
    field.send_keys(Keys.ENTER)
    _wait(
        driver,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "#chat-log li.assistant, #chat-log li.error")) > before
        ),
    )
    last = driver.find_elements(By.CSS_SELECTOR, "#chat-log li")[-1]
    assert "error" not in last.get_attribute("class"), last.text
    return last.get_attribute("data-raw")  # the model's text as the API sent it (shown without markers)


def test_open_a_png_draw_a_box_ask_and_see_the_answer_boxes(browser, server, models, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    grounder, _ = models
    browser.get(server + "/")
    assert browser.title.startswith("medground")
    browser.find_element(By.ID, "file").send_keys(str(CXR))
    _wait(browser, lambda d: d.execute_script("return document.getElementById('view').width") == 750)
    canvas = _canvas(browser)
    assert np.array_equal(canvas, np.asarray(Image.open(CXR).convert("RGB")))  # drawn pixel for pixel
    box = _drag_box(browser, (0.2, 0.2), (0.55, 0.7))
    assert len(box) == 4 and box[0] < box[2] and box[1] < box[3]
    assert abs(box[0] - 150) <= 8 and abs(box[3] - 514) <= 8  # 0.2 x 750 and 0.7 x 734, within a few pixels

    text = _ask(browser, "What is at")
    direct = grounder.ask(CXR, "What is at", box)
    assert text == direct.text
    drawn = int(browser.find_element(By.ID, "view").get_attribute("data-boxes"))
    assert drawn == len(direct.boxes)

    browser.find_element(By.ID, "clear-box").click()
    text = _ask(browser, "Where are both lungs?")
    direct = grounder.ask(CXR, "Where are both lungs?")
    assert text == direct.text and direct.boxes
    assert int(browser.find_element(By.ID, "view").get_attribute("data-boxes")) == len(direct.boxes)
    x0, y0, x1, y1 = direct.boxes[0].box.as_list()
    if len(direct.boxes) == 1:  # the stroke of the first box on its bottom edge, read back from the canvas
        assert _pixel(browser, (x0 + x1) // 2, y1) == FIRST_COLOUR
    colours = {tuple(p) for p in _canvas(browser).reshape(-1, 3)}
    assert FIRST_COLOUR in colours and FIRST_COLOUR not in {tuple(p) for p in canvas.reshape(-1, 3)}
    browser.save_screenshot(str(shots / "png_answer.png"))
    # "Download boxes (JSON)": the file's content, caught where the page makes its blob URL (the
    # download link's click is caught too, so nothing is saved)
    browser.execute_script(
        "URL.createObjectURL = (blob) => { window.savedBlob = blob; return 'blob:caught'; };"
        "HTMLAnchorElement.prototype.click = function () { window.savedName = this.download; };"
    )
    browser.find_element(By.ID, "download-boxes").click()
    saved = json.loads(
        browser.execute_async_script("window.savedBlob.text().then(arguments[arguments.length - 1])")
    )
    assert browser.execute_script("return window.savedName") == "boxes.json"
    assert saved == {
        "width": 750,
        "height": 734,
        "slice": None,
        "boxes": [{"label": g.label, "box": g.box.as_list()} for g in direct.boxes],
    }


def test_open_a_nifti_volume_move_slices_and_planes_draw_a_box_and_ask(
    browser, server, models, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    grounder, _ = models
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))
    _wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    edges = {side: browser.find_element(By.ID, f"edge-{side}").text for side in AXIAL}
    assert edges == AXIAL
    slider = browser.find_element(By.ID, "slice")
    assert (slider.get_attribute("max"), slider.get_attribute("value")) == ("127", "64")

    def shown_index() -> int:
        return int(browser.find_element(By.ID, "slice-out").text)

    slider.send_keys(Keys.RIGHT, Keys.RIGHT, Keys.RIGHT)
    _wait(browser, lambda d: shown_index() == 67)
    browser.find_element(By.ID, "stage").send_keys(Keys.ARROW_DOWN)  # arrow keys on the view step slices
    _wait(browser, lambda d: shown_index() == 66)
    volume = browser.execute_script("return state.volume.id")

    def api_slice(plane: str, index: int) -> np.ndarray:
        with urllib.request.urlopen(f"{server}/v1/volumes/{volume}/{plane}/{index}.png") as reply:
            return np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"))

    _wait(browser, lambda d: np.array_equal(_canvas(d), api_slice("axial", 66)))

    Select(browser.find_element(By.ID, "plane")).select_by_value("sagittal")
    _wait(browser, lambda d: d.find_element(By.ID, "edge-left").text == "A")
    assert {side: browser.find_element(By.ID, f"edge-{side}").text for side in SAGITTAL} == SAGITTAL
    _wait(browser, lambda d: np.array_equal(_canvas(d), api_slice("sagittal", 64)))

    box = _drag_box(browser, (0.3, 0.3), (0.7, 0.8))
    text = _ask(browser, "What is at")
    picture = Image.fromarray(api_slice("sagittal", 64))
    direct = grounder.ask(picture, "What is at", box)
    assert text == direct.text
    assert int(browser.find_element(By.ID, "view").get_attribute("data-boxes")) == len(direct.boxes)
    answered = browser.execute_script("return state.slice")
    assert {k: answered[k] for k in ("plane", "index", "edges")} == {
        "plane": "sagittal",
        "index": 64,
        "edges": SAGITTAL,
    }
    browser.save_screenshot(str(shots / "volume_answer.png"))


def test_segment_in_context_with_support_pairs_and_a_truth_mask_shows_the_dice(
    browser, server, shots: Path
) -> None:
    from selenium.webdriver.common.by import By

    masks = CXR.parent.parent / "masks"
    support = [(CXR.with_name(f"CHNCXR_000{n}_0.png"), masks / f"CHNCXR_000{n}_0_lungs.png") for n in (1, 2)]
    truth = masks / "CHNCXR_0008_0_lungs.png"
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(CXR))
    _wait(browser, lambda d: d.execute_script("return document.getElementById('view').width") == 750)
    for image, mask in support:
        browser.find_element(By.ID, "add-support").click()
        row = browser.find_elements(By.CSS_SELECTOR, "#supports li")[-1]
        row.find_element(By.CSS_SELECTOR, ".support-image").send_keys(str(image))
        row.find_element(By.CSS_SELECTOR, ".support-mask").send_keys(str(mask))
    browser.find_element(By.ID, "truth").send_keys(str(truth))
    browser.find_element(By.ID, "segment").click()
    _wait(browser, lambda d: "Dice" in d.find_element(By.ID, "dice").text)
    shown = float(re.search(r"Dice ([0-9.]+)", browser.find_element(By.ID, "dice").text)[1])

    # the same request straight to the API, and the Dice computed here with numpy
    url = lambda p: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    body = {"query": url(CXR), "support": [{"image": url(i), "mask": url(m)} for i, m in support]}
    request = urllib.request.Request(
        server + "/v1/segment", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as reply:
        answer = json.load(reply)
    predicted = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))) > 0
    expected = np.asarray(Image.open(truth).convert("L")) > 0
    dice = 2 * (predicted & expected).sum() / (predicted.sum() + expected.sum())
    assert shown == pytest.approx(dice, abs=5e-4)
    assert browser.find_element(By.ID, "view").get_attribute("data-masks") == "1"
    assert (
        browser.find_element(By.ID, "download-mask")
        .get_attribute("href")
        .startswith("data:image/png;base64,")
    )
    browser.save_screenshot(str(shots / "segment_dice.png"))


@pytest.fixture(scope="module")
def token_server(models) -> Iterator[str]:
    """A second server over the same models, with a bearer token."""
    with running(create_app(*models, ServeSettings(token="page-token"))) as url:
        yield url


def test_with_a_token_the_page_asks_once_and_keeps_it_for_the_tab(browser, token_server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(token_server + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))  # a volume: the upload needs the token
    _wait(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed())
    assert browser.switch_to.active_element == browser.find_element(By.ID, "token")
    browser.find_element(By.ID, "token").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed())  # 401 again: asked again
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys("page-token")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    browser.refresh()  # same tab: the token is kept, nothing asked
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))
    _wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    assert not browser.find_element(By.ID, "token-form").is_displayed()


def test_answer_masks_are_drawn_when_asked_for(browser, server, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    question = "Where are both lungs?"
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(CXR))
    _wait(browser, lambda d: d.execute_script("return document.getElementById('view').width") == 750)
    browser.find_element(By.ID, "want-masks").click()
    _ask(browser, question)
    url = "data:image/png;base64," + base64.b64encode(CXR.read_bytes()).decode()
    request = urllib.request.Request(
        server + "/v1/ground",
        data=json.dumps({"image": url, "question": question, "segment": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        boxes = json.load(reply)["boxes"]
    masks = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b["mask"]["mask_png"])))) > 0 for b in boxes]
    assert masks and int(browser.find_element(By.ID, "view").get_attribute("data-masks")) == len(masks)
    drawn, original = _canvas(browser).astype(int), np.asarray(Image.open(CXR).convert("RGB")).astype(int)
    edges = np.zeros(original.shape[:2], bool)  # box strokes and labels, left out of the comparison
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        edges[max(0, y0 - 30) : max(y0, 30) + 6, max(0, x0 - 6) : max(x1, x0 + 200) + 6] = True  # the label
        edges[max(0, y0 - 6) : y1 + 6, max(0, x0 - 6) : x0 + 6] = True
        edges[max(0, y0 - 6) : y1 + 6, max(0, x1 - 6) : x1 + 6] = True
        edges[max(0, y1 - 6) : y1 + 6, max(0, x0 - 6) : x1 + 6] = True
    covered = np.any(masks, axis=0)
    changed = np.any(drawn != original, axis=2)
    assert changed[covered & ~edges].all()  # every mask pixel is tinted
    assert not changed[~covered & ~edges].any()  # nothing else is
    browser.save_screenshot(str(shots / "masks.png"))


def test_several_dicom_files_picked_at_once_open_as_one_ct_series(browser, server) -> None:
    from selenium.webdriver.common.by import By

    from medground.io.dicom import load_dicom_series

    from .test_volumes import CT_SERIES

    files = sorted(CT_SERIES.iterdir())
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys("\n".join(str(p) for p in files))  # zipped by the page
    _wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    info = browser.execute_script("return state.volume")
    assert info["shape"] == list(load_dicom_series(CT_SERIES).shape)
    assert (info["window"], info["planes"]["axial"]["count"]) == ("soft-tissue", len(files))
    assert browser.find_element(By.ID, "window").get_attribute("value") == "soft-tissue"
    with urllib.request.urlopen(f"{server}/v1/volumes/{info['id']}/axial/2.png") as reply:
        expected = np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"))
    _wait(browser, lambda d: np.array_equal(_canvas(d), expected))  # the middle of 5 slices is shown
