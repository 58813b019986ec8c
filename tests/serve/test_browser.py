"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
open a PNG and a NIfTI volume, move through slices, draw a box, ask, and check what is drawn.

The viewer's own features (aspect, window/level, zoom and pan, planes, masks, labels, formats, layout)
are in test_browser_viewer.py; both skip without Chromium, and fail instead under CI=true.
"""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.serve.app import ServeSettings, create_app
from medground.serve.local import running

from .browser_helpers import FIRST_COLOUR, browser, canvas, drag_box, layout, open_file, shots, wait
from .conftest import CXR
from .test_volumes import AXIAL, CT_NII, SAGITTAL

__all__ = ["browser", "shots"]  # fixtures, used by name


def _view_pixel(driver, u: float, v: float) -> tuple[int, int, int]:
    """The view's pixel over picture point (u, v)."""
    at = layout(driver)
    x, y = int(at["x"] + u * at["sx"]), int(at["y"] + v * at["sy"])
    return tuple(int(c) for c in canvas(driver, "view")[y, x])


def _ask(driver, question: str) -> str:
    """Type ``question`` and press Enter; returns the answer's text once the page shows it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(driver.find_elements(By.CSS_SELECTOR, "#chat-log li.assistant, #chat-log li.error"))
    field = driver.find_element(By.ID, "question")
    field.send_keys(question)
    field.send_keys(Keys.ENTER)
    wait(
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
    open_file(browser, server, CXR)
    assert browser.title.startswith("medground")
    shown = canvas(browser)
    assert np.array_equal(shown, np.asarray(Image.open(CXR).convert("RGB")))  # its own pixels, unchanged
    box = drag_box(browser, (0.2, 0.2), (0.55, 0.7))
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
    if len(direct.boxes) == 1:  # the stroke of the first box on its bottom edge, read back from the view
        assert _view_pixel(browser, (x0 + x1) / 2, y1) == FIRST_COLOUR
    colours = {tuple(p) for p in canvas(browser, "view").reshape(-1, 3)}
    assert FIRST_COLOUR in colours and FIRST_COLOUR not in {tuple(p) for p in shown.reshape(-1, 3)}
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
    open_file(browser, server, CT_NII, volume=True)
    edges = {side: browser.find_element(By.ID, f"edge-{side}").text for side in AXIAL}
    assert edges == AXIAL
    slider = browser.find_element(By.ID, "slice")
    assert (slider.get_attribute("max"), slider.get_attribute("value")) == ("127", "64")

    def shown_index() -> int:
        return int(browser.find_element(By.ID, "slice-out").text)

    slider.send_keys(Keys.RIGHT, Keys.RIGHT, Keys.RIGHT)
    wait(browser, lambda d: shown_index() == 67)
    browser.find_element(By.ID, "stage").send_keys(Keys.ARROW_DOWN)  # arrow keys on the view step slices
    wait(browser, lambda d: shown_index() == 66)
    volume = browser.execute_script("return state.volume.id")

    def api_slice(plane: str, index: int) -> np.ndarray:
        with urllib.request.urlopen(f"{server}/v1/volumes/{volume}/{plane}/{index}.png") as reply:
            return np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"))

    wait(browser, lambda d: np.array_equal(canvas(d), api_slice("axial", 66)))

    Select(browser.find_element(By.ID, "plane")).select_by_value("sagittal")
    wait(browser, lambda d: d.find_element(By.ID, "edge-left").text == "A")
    assert {side: browser.find_element(By.ID, f"edge-{side}").text for side in SAGITTAL} == SAGITTAL
    wait(browser, lambda d: np.array_equal(canvas(d), api_slice("sagittal", 64)))

    box = drag_box(browser, (0.3, 0.3), (0.7, 0.8))
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
    open_file(browser, server, CXR)
    for image, mask in support:
        browser.find_element(By.ID, "add-support").click()
        row = browser.find_elements(By.CSS_SELECTOR, "#supports li")[-1]
        row.find_element(By.CSS_SELECTOR, ".support-image").send_keys(str(image))
        row.find_element(By.CSS_SELECTOR, ".support-mask").send_keys(str(mask))
    browser.find_element(By.ID, "truth").send_keys(str(truth))
    browser.find_element(By.ID, "segment").click()
    wait(browser, lambda d: "Dice" in d.find_element(By.ID, "dice").text)
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


def test_with_a_token_the_page_asks_once_says_when_it_is_wrong_and_keeps_it_for_the_tab(
    browser, token_server, shots: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(token_server + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))  # a volume: the upload needs the token
    wait(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed())
    assert browser.switch_to.active_element == browser.find_element(By.ID, "token")
    assert browser.find_element(By.ID, "token-error").text == ""  # asked, nothing refused yet
    browser.find_element(By.ID, "token").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(browser, lambda d: "refused" in d.find_element(By.ID, "token-error").text)  # 401 again: says so
    assert browser.find_element(By.ID, "token-form").is_displayed()
    browser.save_screenshot(str(shots / "token_refused.png"))
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys("page-token")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    wait(browser, lambda d: "bird-nano" in d.find_element(By.ID, "model-note").text)  # named once let in
    browser.refresh()  # same tab: the token is kept, nothing asked
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))
    wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    assert not browser.find_element(By.ID, "token-form").is_displayed()


def _inside(mask: np.ndarray, boxes: list[list[int]], at: dict[str, float]) -> tuple[int, int]:
    """A pixel (u, v) of ``mask`` whose view position is clear of every box's stroke and label (15 view
    pixels from each edge, the label's band above the box top)."""
    vs, us = np.nonzero(mask)
    x, y = at["x"] + (us + 0.5) * at["sx"], at["y"] + (vs + 0.5) * at["sy"]
    clear = np.ones(us.shape, bool)
    for x0, y0, x1, y1 in boxes:
        left, top, right, bottom = (
            at["x"] + x0 * at["sx"],
            at["y"] + y0 * at["sy"],
            at["x"] + x1 * at["sx"],
            at["y"] + y1 * at["sy"],
        )
        near_x = (np.abs(x - left) < 15) | (np.abs(x - right) < 15)
        near_y = (np.abs(y - top) < 15) | (np.abs(y - bottom) < 15)
        inside_x, inside_y = (x > left - 15) & (x < right + 15), (y > top - 40) & (y < bottom + 15)
        clear &= ~((near_x & inside_y) | (near_y & inside_x) | ((y > top - 40) & (y < top + 15) & inside_x))
    n = int(np.flatnonzero(clear)[clear.sum() // 2])
    return int(us[n]), int(vs[n])


def test_answer_masks_are_drawn_each_with_its_toggle_and_opacity(browser, server, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    question = "Where are both lungs?"
    open_file(browser, server, CXR)
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
    rows = browser.find_elements(By.CSS_SELECTOR, "#mask-list li")
    assert len(rows) == len(masks)
    browser.save_screenshot(str(shots / "masks.png"))

    # the first mask off: the view shows the picture's own pixel there (nearest neighbour, so one of the
    # 3 x 3 around it at a fractional zoom); on at its default 45%: 0.45 colour + 0.55 that pixel;
    # at 100%: the mask's colour alone
    original = np.asarray(Image.open(CXR).convert("RGB")).astype(int)
    at = layout(browser)
    others = np.any(masks[1:], axis=0) if len(masks) > 1 else np.zeros_like(masks[0])
    u, v = _inside(masks[0] & ~others, [b["box"] for b in boxes], at)
    toggle = rows[0].find_element(By.CSS_SELECTOR, ".mask-on")
    toggle.click()
    assert int(browser.find_element(By.ID, "view").get_attribute("data-masks")) == len(masks) - 1
    grey = _view_pixel(browser, u + 0.5, v + 0.5)
    assert grey in {tuple(p) for p in original[v - 1 : v + 2, u - 1 : u + 2].reshape(-1, 3)}
    toggle.click()
    blended = 0.45 * np.array(FIRST_COLOUR) + 0.55 * np.array(grey)
    assert np.abs(np.array(_view_pixel(browser, u + 0.5, v + 0.5)) - blended).max() <= 2
    opacity = rows[0].find_element(By.CSS_SELECTOR, ".mask-opacity")
    browser.execute_script(
        "arguments[0].value = 100; arguments[0].dispatchEvent(new Event('input'))", opacity
    )
    assert _view_pixel(browser, u + 0.5, v + 0.5) == FIRST_COLOUR


def test_several_dicom_files_picked_at_once_open_as_one_ct_series(browser, server) -> None:
    from selenium.webdriver.common.by import By

    from medground.io.dicom import load_dicom_series

    from .test_volumes import CT_SERIES

    files = sorted(CT_SERIES.iterdir())
    open_file(browser, server, "\n".join(str(p) for p in files), volume=True)  # zipped by the page
    info = browser.execute_script("return state.volume")
    assert info["shape"] == list(load_dicom_series(CT_SERIES).shape)
    assert (info["window"], info["planes"]["axial"]["count"]) == ("soft-tissue", len(files))
    assert browser.find_element(By.ID, "window").get_attribute("value") == "soft-tissue"
    with urllib.request.urlopen(f"{server}/v1/volumes/{info['id']}/axial/2.png") as reply:
        expected = np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"))
    wait(browser, lambda d: np.array_equal(canvas(d), expected))  # the middle of 5 slices is shown
