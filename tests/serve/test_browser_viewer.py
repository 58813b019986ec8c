"""The page's viewer in a real headless Chromium: physical aspect, window/level presets and drag, zoom and
pan, the crosshair over three planes with the right orientation markers, box labels at a fixed screen
size, TIFF/BMP/WebP as images, everything reset when a new file opens, errors next to their control, the
model named with its card, and a layout that works 800 px wide. Screenshots: see browser_helpers."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medground.io.display import rescale_to_uint8, slice_volume
from medground.io.nifti import load_volume

from .browser_helpers import FIRST_COLOUR, browser, canvas, drag, layout, open_file, shots, wait
from .conftest import CXR
from .test_volumes import AXIAL, CT_NII, _marked

__all__ = ["browser", "shots"]  # fixtures, used by name


def _bright(view: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) bounding the view's non-black pixels (x1, y1 exclusive)."""
    ys, xs = np.nonzero(view.max(axis=2) > 20)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_a_volume_is_drawn_at_its_physical_aspect(browser, server, tmp_path: Path, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # 64 x 64 x 8 voxels of 0.5 x 0.5 x 7.5 mm: a coronal slice is 64 px wide (32 mm), 8 px high (60 mm)
    path = tmp_path / "thick.nii"
    nib.save(nib.Nifti1Image(np.full((64, 64, 8), 100, np.int16), np.diag([0.5, 0.5, 7.5, 1.0])), path)
    open_file(browser, server, path, volume=True)
    Select(browser.find_element(By.ID, "plane")).select_by_value("coronal")
    wait(browser, lambda d: d.find_element(By.ID, "edge-top").text == "S")
    wait(browser, lambda d: canvas(d).shape[:2] == (8, 64))
    x0, y0, x1, y1 = _bright(canvas(browser, "view"))
    assert (y1 - y0) / (x1 - x0) == pytest.approx(60 / 32, rel=0.03)  # not 8 / 64
    browser.save_screenshot(str(shots / "aspect_coronal.png"))


def test_window_presets_and_a_window_level_drag_redraw_the_slice(browser, server, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server + "/")
    Select(browser.find_element(By.ID, "modality")).select_by_value("ct")
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))
    wait(browser, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    volume = browser.execute_script("return state.volume.id")
    Select(browser.find_element(By.ID, "window")).select_by_value("bone")
    with urllib.request.urlopen(f"{server}/v1/volumes/{volume}/axial/64.png?window=bone") as reply:
        expected = np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB"))
    wait(
        browser, lambda d: np.array_equal(canvas(d), expected)
    )  # the server's own bone window, byte for byte

    browser.find_element(By.CSS_SELECTOR, "input[name=tool][value=wl]").click()
    drag(browser, (300, 300), (360, 270), steps=6)  # right: wider, up: lower level
    assert browser.find_element(By.ID, "window").get_attribute("value") == "custom"
    lo, hi = browser.execute_script("return state.wl")
    assert hi - lo == pytest.approx(1800 * np.exp(60 / 256), rel=0.02)
    assert (lo + hi) / 2 == pytest.approx(400 - 30 * 1800 / 256, rel=0.02)
    canonical = load_volume(CT_NII).array  # read here, windowed here with the page's lo, hi
    own = rescale_to_uint8(slice_volume(canonical, "axial", 64), lo, hi)
    assert np.array_equal(canvas(browser)[:, :, 0], own)
    assert browser.find_element(By.ID, "wl-out").text == f"W {round(hi - lo)} L {round((lo + hi) / 2)}"
    browser.save_screenshot(str(shots / "window_level.png"))


def test_zoom_keeps_the_point_under_the_cursor_and_pan_moves_the_picture(browser, server) -> None:
    from selenium.webdriver.common.by import By

    open_file(browser, server, CXR)
    before = layout(browser)
    browser.execute_script("zoomAt(2, 200, 150)")  # what Ctrl+wheel and the buttons call
    after = layout(browser)
    assert after["sx"] == pytest.approx(2 * before["sx"])
    under = [((200 - at["x"]) / at["sx"], (150 - at["y"]) / at["sy"]) for at in (before, after)]
    assert under[1] == pytest.approx(under[0])  # the picture point under (200, 150) stays there
    assert browser.find_element(By.ID, "zoom-value").text == "200%"
    browser.find_element(By.CSS_SELECTOR, "input[name=tool][value=pan]").click()
    drag(browser, (300, 300), (350, 330))
    moved = layout(browser)
    assert (moved["x"] - after["x"], moved["y"] - after["y"]) == pytest.approx((50, 30), abs=1.5)
    # what the view shows there is the picture's pixel (nearest neighbour): checked at a few points
    view, picture = canvas(browser, "view"), canvas(browser)
    for u, v in ((300, 300), (400, 250), (350, 420)):
        x, y = int(moved["x"] + (u + 0.5) * moved["sx"]), int(moved["y"] + (v + 0.5) * moved["sy"])
        assert tuple(view[y, x]) == tuple(picture[v, u])
    browser.find_element(By.ID, "zoom-fit").click()
    assert layout(browser) == pytest.approx(before)


def test_the_crosshair_moves_through_three_planes_with_the_right_markers(
    browser, server, tmp_path, shots
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    path = tmp_path / "psr_left.nii"
    path.write_bytes(_marked("left"))  # stored P, S, R; the patient's left half bright
    open_file(browser, server, path, volume=True)
    assert {side: browser.find_element(By.ID, f"edge-{side}").text for side in AXIAL} == AXIAL
    shown = canvas(browser)[:, :, 0]
    half = shown.shape[1] // 2
    assert shown[:, half:].min() == 255 and shown[:, :half].max() == 0  # patient left on the image right
    assert browser.find_element(By.ID, "planes").is_displayed()
    point = browser.execute_script("return state.point")
    # a click in the sagittal view (columns: A -> P, rows: S -> I) moves the point's j and k
    mini = browser.find_element(By.ID, "plane-sagittal")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", mini)
    x, y, sx, sy = browser.execute_script("return JSON.parse(arguments[0].dataset.fit)", mini)
    shape = browser.execute_script("return state.volume.shape")
    w, h = mini.size["width"], mini.size["height"]
    c, r = 1, 0  # display pixel (column 1, row 0): j = Y - 2, k = Z - 1
    ActionChains(browser).move_to_element_with_offset(
        mini, int(x + (c + 0.5) * sx - w / 2), int(y + (r + 0.5) * sy - h / 2)
    ).click().perform()
    wait(browser, lambda d: d.execute_script("return state.point") != point)
    assert browser.execute_script("return state.point") == [point[0], shape[1] - 2, shape[2] - 1]
    wait(browser, lambda d: d.find_element(By.ID, "slice").get_attribute("value") == str(shape[2] - 1))
    browser.save_screenshot(str(shots / "three_planes.png"))


def _label_height(view: np.ndarray) -> int:
    """Rows of the tallest solid run of the first box colour 20+ pixels wide: the label's background."""
    rows = ((view == FIRST_COLOUR).all(axis=2).sum(axis=1) >= 20).astype(int)
    best = run = 0
    for on in rows:
        run = run + 1 if on else 0
        best = max(best, run)
    return best


def test_box_labels_keep_their_screen_size_whatever_the_zoom_or_image_size(browser, server, tmp_path) -> None:
    small = tmp_path / "small.png"
    Image.new("L", (48, 40), 90).save(small)
    heights = []
    for path, zoom in ((CXR, 1), (CXR, 3), (small, 1)):
        open_file(browser, server, path)
        w, h = browser.execute_script("return [picture.width, picture.height]")
        browser.execute_script(
            "showAnswer({boxes: [{label: 'left lung', box: arguments[0]}]})"
            ".then(() => zoomAt(arguments[1], ...toScreen(arguments[0][0], arguments[0][1])))",
            [w // 4, h // 3, w // 2, 2 * h // 3],
            zoom,
        )
        wait(browser, lambda d: d.find_element("id", "view").get_attribute("data-boxes") == "1")
        heights.append(_label_height(canvas(browser, "view")))
    assert heights[0] >= 15 and heights == [heights[0]] * 3  # 13 px text + 4: the same in every case


@pytest.mark.parametrize("form", ["TIFF", "BMP", "WEBP"])
def test_tiff_bmp_and_webp_open_as_images_not_volumes(browser, server, tmp_path: Path, form: str) -> None:
    path = tmp_path / f"cxr.{form.lower()}"
    original = Image.open(CXR).convert("RGB")
    original.save(
        path,
        format=form,
        **({"lossless": True} if form == "WEBP" else {"compression": "tiff_lzw"} if form == "TIFF" else {}),
    )
    open_file(browser, server, path)
    assert browser.execute_script("return state.volume") is None
    assert browser.execute_script("return state.image").startswith(f"data:image/{form.lower()};base64,")
    assert np.array_equal(canvas(browser), np.asarray(original))


def test_a_new_file_starts_clean_and_progress_and_errors_show_by_their_control(
    browser, server, tmp_path, shots
) -> None:
    from selenium.webdriver.common.by import By

    open_file(browser, server, CXR)
    browser.execute_script(
        "showAnswer({boxes: [{label: 'lung', box: [10, 10, 100, 100]}]}); logLine('a question', 'user');"
        "state.box = [5, 5, 50, 50]; draw();"
    )
    browser.find_element(By.ID, "add-support").click()
    browser.find_element(By.ID, "truth").send_keys(str(CXR))
    browser.find_element(By.ID, "structure").send_keys("lungs")
    bad = tmp_path / "broken.nii"
    bad.write_bytes(b"\x00" * 400)
    browser.find_element(By.ID, "file").clear()  # a new pick, not added to the last one
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait(browser, lambda d: "error" in d.find_element(By.ID, "open-status").get_attribute("class"))
    assert browser.find_element(By.ID, "open-status").text.startswith("Could not open: 400: broken.nii")
    assert browser.find_elements(By.CSS_SELECTOR, "#chat-log li, #supports li, #mask-list li") == []
    assert browser.execute_script("return [state.box, state.answer.length, state.image, picture.width]") == [
        None,
        0,
        None,
        0,
    ]
    assert (
        browser.find_element(By.ID, "truth").get_attribute("value"),
        browser.find_element(By.ID, "structure").get_attribute("value"),
    ) == ("", "")
    assert browser.find_element(By.ID, "download-mask").get_attribute("aria-disabled") == "true"
    browser.find_element(By.ID, "question").send_keys(
        "Where is it?\n"
    )  # nothing open: said by the Ask button
    wait(browser, lambda d: "open an image" in d.find_element(By.ID, "ask-status").text)
    browser.save_screenshot(str(shots / "errors.png"))

    # while an upload or a question is under way, its control says so (the page's next request held back)
    hold = (
        "const real = window.fetch; window.held = null;"
        "window.fetch = (url, options) => { window.fetch = real;"
        "  return new Promise((go) => { window.held = () => go(real(url, options)); }); };"
    )
    browser.execute_script(hold)
    browser.find_element(By.ID, "file").clear()  # a new pick, not added to the last one
    browser.find_element(By.ID, "file").send_keys(str(CT_NII))
    wait(browser, lambda d: d.execute_script("return window.held !== null"))
    status = browser.find_element(By.ID, "open-status")
    assert "busy" in status.get_attribute("class") and status.text.startswith("Uploading openkbp_pt_22_ct")
    browser.execute_script("window.held()")
    wait(browser, lambda d: "done" in status.get_attribute("class"))
    browser.execute_script(hold)
    browser.find_element(By.ID, "question").send_keys("Where is it?\n")
    wait(browser, lambda d: d.execute_script("return window.held !== null"))
    asking = browser.find_element(By.ID, "ask-status")
    assert "busy" in asking.get_attribute("class") and asking.text == "Asking bird-nano..."
    assert not browser.find_element(By.ID, "ask").is_enabled()
    browser.execute_script("window.held()")
    wait(browser, lambda d: "done" in asking.get_attribute("class"))


def test_the_model_is_named_with_its_card_and_the_page_fits_800_px(browser, server, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.set_window_size(800, 900)
    try:
        open_file(browser, server, CT_NII, volume=True)
        note = browser.find_element(By.ID, "model-note")
        wait(browser, lambda d: "bird-nano" in note.text)
        assert "demo model" in note.text
        card = browser.find_element(By.ID, "model-card").get_attribute("href")
        with urllib.request.urlopen(card) as reply:
            assert "bird-nano" in reply.read().decode()
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert (
            browser.execute_script("return document.documentElement.scrollWidth") <= width
        )  # no sideways scroll
        for name in ("view", "ask", "segment", "slice", "window", "zoom-in"):
            rect = browser.find_element(By.ID, name).rect
            assert rect["x"] >= 0 and rect["x"] + rect["width"] <= width, name
        assert browser.find_element(By.ID, "view").rect["width"] >= 0.9 * width - 60
        browser.save_screenshot(str(shots / "narrow_800.png"))
    finally:
        browser.set_window_size(1366, 900)


def test_the_vendored_page_files_load_nothing_from_elsewhere() -> None:
    from medground.serve.page import STATIC

    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path.name
