"""How long a large NIfTI volume takes to show its first slice in the web page, the page of today against
an older one (``--old-rev``) served by the same server in the same run, and how fast a window/level drag
redraws the slice (real headless Chromium).

The volume is SYNTHETIC (a CT-like int16 phantom: an elliptic body of soft tissue and bone in air, with
noise), written uncompressed as .nii (about 50 MB) and, for reference, as .nii.gz. Measured in the
browser, from the file input's change to the first slice drawn (the page's performance marks
``medground-file-change`` -> ``medground-first-slice``: upload, read, then the slice fetched and drawn).

Baselines in the same run: the page as it was at ``--old-rev`` (its files from ``git show``, served by
the same server under /old/, timed back to back with today's, each going first in turn; "paired" is the
median of each repeat's new/old), the browser uploading the same bytes to a no-op endpoint of the same
server (the transfer floor), and medground.io.load_volume reading the file from disk in this process
(the reader's floor).

Window/level: today's page, the .nii opened as CT, the drag tool chosen, then one drag of ``--events``
pointer moves (selenium actions, 10 ms apart); the page records, for each move, the time from the
event's timeStamp to the slice's pixels changed in the canvas (its handler windows the float32 slice and
redraws synchronously) and to the next animation frame. Bar: median <= 33 ms.

Needs Debian's chromium and chromium-driver (make browsers), selenium and git.

    python bench/bench_page.py [--repeats 3] [--mb 50] [--old-rev 3f97972^] [--events 100]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from medground.icl.segmenter import InContextSegmenter
from medground.io.nifti import load_volume
from medground.mllm.grounder import Grounder
from medground.serve.app import ServeSettings, create_app
from medground.serve.local import headless_chromium, running


def phantom(megabytes: float, seed: int = 0) -> np.ndarray:
    """(512, 512, Z) int16 HU with Z set so the voxels take ``megabytes`` MB: air, a soft-tissue ellipse, a
    bone ring, noise."""
    z = max(8, round(megabytes * 1e6 / (512 * 512 * 2)))
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, 512), np.linspace(-1, 1, 512), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2
    plane = np.where(body < 1, 40, -1000).astype(np.int16)
    plane[(body > 0.55) & (body < 0.65)] = 700
    volume = np.repeat(plane[:, :, None], z, axis=2)
    return (volume + rng.normal(0, 20, volume.shape)).astype(np.int16)


STATIC = "src/medground/serve/static"


def old_page(rev: str, folder: Path) -> Path:
    """The page's files at git revision ``rev`` in ``folder``, index.html pointing at /old/ for them."""
    repo = Path(__file__).resolve().parents[1]
    folder.mkdir()
    for name in ("index.html", "page.css", "page.js"):
        text = subprocess.run(
            ["git", "show", f"{rev}:{STATIC}/{name}"], cwd=repo, check=True, capture_output=True, text=True
        ).stdout
        (folder / name).write_text(text.replace("/static/page.", "/old/page."))
    return folder


def serving_app(settings: ServeSettings, old: Path) -> Any:
    """The app with the shipped models, the old page under /old/ and a no-op upload endpoint (reads the
    body, answers 204)."""
    app = create_app(Grounder.from_pretrained(), InContextSegmenter.from_pretrained(), settings)

    @app.post("/bench/noop")
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    @app.get("/old/")
    def old_index() -> HTMLResponse:
        return HTMLResponse((old / "index.html").read_text())

    app.mount("/old", StaticFiles(directory=old), name="old")
    return app


def first_slice_s(driver, page: str, path: Path, modality: str) -> float:
    """Seconds from the file input's change to the first slice drawn, as the page's marks say (``page``:
    its URL; ``modality``: the page's choice, "ct" or "" for auto, which shows a NIfTI by its percentiles)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(page)
    Select(driver.find_element(By.ID, "modality")).select_by_value(modality)
    driver.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(driver, 120, poll_frequency=0.02).until(
        lambda d: d.find_element(By.ID, "view").get_attribute("data-first-slice") == "1"
    )
    return (
        driver.execute_script(
            "return performance.measure('first', 'medground-file-change', 'medground-first-slice').duration"
        )
        / 1000.0
    )


def noop_upload_s(driver, url: str, path: Path) -> float:
    """Seconds for the browser to POST the same file's bytes to the no-op endpoint."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.execute_script(
        "const i = document.createElement('input'); i.type = 'file'; i.id = 'bench-file'; document.body.append(i);"
    )
    driver.find_element(By.ID, "bench-file").send_keys(str(path))
    return driver.execute_async_script(
        "const done = arguments[0]; const file = document.getElementById('bench-file').files[0];"
        "const t = performance.now();"
        "fetch('/bench/noop', {method: 'POST', body: file}).then(() => done((performance.now() - t) / 1000));"
    )


def window_level_ms(driver, url: str, path: Path, events: int) -> tuple[list[float], list[float]]:
    """(ms to pixels changed, ms to the next frame) of each pointer move of one window/level drag."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    first_slice_s(driver, url + "/", path, "ct")
    driver.find_element(By.CSS_SELECTOR, "input[name=tool][value=wl]").click()
    view = driver.find_element(By.ID, "view")
    actions = ActionBuilder(driver, duration=10)
    actions.pointer_action.move_to(view, 0, 0).pointer_down()
    for n in range(events):
        actions.pointer_action.move_to(view, (n % 40) - 20, (n % 30) - 15)
    actions.pointer_action.pointer_up()
    actions.perform()
    time.sleep(0.2)  # the last animation frame
    return driver.execute_script("return [state.wlTimes, state.wlFrames]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--old-rev", default="3f97972^", help="git revision of the page to compare with")
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        volume = phantom(args.mb)
        affine = np.diag([0.7, 0.7, 1.0, 1.0])
        nii = folder / "phantom.nii"
        nib.save(nib.Nifti1Image(volume, affine), nii)
        gz = folder / "phantom.nii.gz"
        gz.write_bytes(gzip.compress(nii.read_bytes(), compresslevel=6))
        print(
            f"synthetic volume {volume.shape} int16: .nii {nii.stat().st_size / 1e6:.1f} MB, "
            f".nii.gz {gz.stat().st_size / 1e6:.1f} MB"
        )
        old = old_page(args.old_rev, folder / "old")
        app = serving_app(ServeSettings(max_body_bytes=256 * 1024 * 1024), old)
        with running(app) as url:
            driver = headless_chromium(folder / "profile")
            driver.set_script_timeout(120)
            try:
                rows = []
                for path, modality in ((nii, "ct"), (gz, "ct"), (nii, "")):
                    shown, before = [], []
                    for n in range(args.repeats):  # old and new back to back, taking turns to go first
                        pages = [(before, url + "/old/"), (shown, url + "/")]
                        for times, page in pages if n % 2 == 0 else pages[::-1]:
                            times.append(first_slice_s(driver, page, path, modality))
                    upload = [noop_upload_s(driver, url, path) for _ in range(args.repeats)]
                    read = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        load_volume(path)
                        read.append(time.perf_counter() - start)
                    window = "CT soft-tissue" if modality else "percentiles"
                    rows.append(
                        (
                            f"{path.name} {window}",
                            *(statistics.median(t) for t in (before, shown, upload, read)),
                            statistics.median(n / o for n, o in zip(shown, before, strict=True)),
                        )
                    )
                changed, frames = window_level_ms(driver, url, nii, args.events)
            finally:
                driver.quit()
    print(
        f"{'file, window':<30} {'old page s':>11} {'first slice s':>14} {'new/old':>8} {'paired':>9} {'no-op upload s':>15} {'load_volume s':>14}"
    )
    for name, before, shown, upload, read, paired in rows:
        print(
            f"{name:<30} {before:>11.2f} {shown:>14.2f} {shown / before:>8.2f} {paired:>9.2f} {upload:>15.2f} {read:>14.2f}"
        )
    print(
        f"medians of {args.repeats}, old page ({args.old_rev}) and today's back to back, taking turns first; paired: the median of "
        "each repeat's new/old; bar: new <= old"
    )
    for what, times in (("pixels changed", changed), ("next frame", frames)):
        q = statistics.quantiles(times, n=20)
        print(
            f"window/level drag, {len(times)} events, ms to {what}: median {statistics.median(times):.1f}, "
            f"p95 {q[-1]:.1f}, max {max(times):.1f}"
        )
    print("bar: median <= 33 ms")


if __name__ == "__main__":
    main()
