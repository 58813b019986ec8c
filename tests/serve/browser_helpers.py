"""What the page's browser tests share: a headless Chromium (Debian's chromium + chromium-driver through
selenium), a folder for screenshots, and readers of the page's canvases.

Without /usr/bin/chromium the browser tests skip, except under CI (``CI=true``), where they fail: a CI run
must not pass without them (``make browsers`` installs Chromium; ``.ci/run`` stops when it cannot).
Screenshots go to a folder under pytest's tmp dir and, when set, to ``$MEDGROUND_ARTIFACTS/browser``
(``.ci/run`` sets it to ``runs/artifacts``).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medground.serve.local import CHROMEDRIVER, CHROMIUM, headless_chromium

FIRST_COLOUR = (255, 90, 90)  # page.js COLOURS[0], the first answer box's stroke and label


def need_chromium() -> None:
    """Skip without Chromium, or fail when ``CI`` says this is a CI run."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    message = f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): run `make browsers`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            f"CI={os.environ['CI']}: the browser tests must run, and cannot: {message}", pytrace=False
        )
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium through /usr/bin/chromedriver (Selenium Manager never downloads anything)."""
    need_chromium()
    driver = headless_chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
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


def wait(driver, condition, seconds: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: condition(d))


def canvas(driver, name: str = "picture") -> np.ndarray:
    """A canvas of the page as (H, W, 3) uint8 through toDataURL: "picture" is the image or slice at its own
    pixels (windowed), "view" what the screen shows (device pixel ratio 1 in headless Chromium)."""
    url = driver.execute_script(f"return document.getElementById('{name}').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def layout(driver) -> dict[str, float]:
    """{x, y, sx, sy}: picture pixel (u, v) is at view pixel (x + u sx, y + v sy)."""
    return driver.execute_script("return layout()")


def open_file(driver, server: str, path: Path | str, *, volume: bool = False) -> None:
    """Load the page and open ``path`` (several paths: newline-separated) by the file input; wait for it."""
    from selenium.webdriver.common.by import By

    driver.get(server + "/")
    driver.find_element(By.ID, "file").send_keys(str(path))
    if volume:
        wait(driver, lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1")
    else:
        wait(driver, lambda d: "pixels" in d.find_element(By.ID, "open-status").text)


def drag(
    driver, start: tuple[float, float], end: tuple[float, float], steps: int = 4, button: str = "left"
) -> None:
    """Drag on the view from ``start`` to ``end`` (view CSS pixels, from its top left)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    from selenium.webdriver.common.by import By

    view = driver.find_element(By.ID, "view")
    w, h = view.size["width"], view.size["height"]
    at = lambda p: (int(p[0] - w / 2), int(p[1] - h / 2))  # noqa: E731  (selenium: offsets from the centre)
    actions = ActionBuilder(driver, duration=10)  # ms per move (selenium's default: 250)
    pressed = MouseButton.RIGHT if button == "right" else MouseButton.LEFT
    actions.pointer_action.move_to(view, *at(start)).pointer_down(pressed)
    for n in range(1, steps + 1):
        f = n / steps
        actions.pointer_action.move_to(
            view, *at((start[0] + f * (end[0] - start[0]), start[1] + f * (end[1] - start[1])))
        )
    actions.pointer_action.pointer_up(pressed)
    actions.perform()


def drag_box(driver, start: tuple[float, float], end: tuple[float, float]) -> list[int]:
    """Drag a box from ``start`` to ``end`` (fractions of the picture as shown); returns the box the page
    says it drew (picture pixels)."""
    import re

    from selenium.webdriver.common.by import By

    at = layout(driver)
    width, height = driver.execute_script("return [picture.width, picture.height]")
    point = lambda f: (at["x"] + f[0] * width * at["sx"], at["y"] + f[1] * height * at["sy"])  # noqa: E731
    drag(driver, point(start), point(end))
    return [int(v) for v in re.findall(r"-?\d+", driver.find_element(By.ID, "box-text").text)]
