"""How long a large NIfTI volume takes to show its first slice in the web page (real headless Chromium).

The volume is SYNTHETIC (a CT-like int16 phantom: an elliptic body of soft tissue and bone in air, with
noise), written uncompressed as .nii (about 50 MB) and, for reference, as .nii.gz. Measured in the
browser, from the file input's change to the first slice drawn (the page's performance marks
``medground-file-change`` -> ``medground-first-slice``: upload, read, display, PNG, decode, draw).

Baselines in the same run: the browser uploading the same bytes to a no-op endpoint of the same server
(the transfer floor), and medground.io.load_volume reading the file from disk in this process (the
reader's floor). Needs Debian's chromium and chromium-driver (make browsers) and selenium.

    python bench/bench_page.py [--repeats 3] [--mb 50]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi import Request
from fastapi.responses import Response

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


def serving_app(settings: ServeSettings) -> Any:
    """The app with the shipped models and a no-op upload endpoint (reads the body, answers 204)."""
    app = create_app(Grounder.from_pretrained(), InContextSegmenter.from_pretrained(), settings)

    @app.post("/bench/noop")
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    return app


def first_slice_s(driver, url: str, path: Path, modality: str) -> float:
    """Seconds from the file input's change to the first slice drawn, as the page's marks say
    (``modality``: the page's choice, "ct" or "" for auto, which shows a NIfTI by its percentiles)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url + "/")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mb", type=float, default=50.0)
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
        app = serving_app(ServeSettings(max_body_bytes=256 * 1024 * 1024))
        with running(app) as url:
            driver = headless_chromium(folder / "profile")
            driver.set_script_timeout(120)
            try:
                rows = []
                for path, modality in ((nii, "ct"), (gz, "ct"), (nii, "")):
                    shown = [first_slice_s(driver, url, path, modality) for _ in range(args.repeats)]
                    upload = [noop_upload_s(driver, url, path) for _ in range(args.repeats)]
                    read = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        load_volume(path)
                        read.append(time.perf_counter() - start)
                    window = "CT soft-tissue" if modality else "percentiles"
                    rows.append(
                        (f"{path.name} {window}", *(statistics.median(t) for t in (shown, upload, read)))
                    )
            finally:
                driver.quit()
    print(
        f"{'file, window':<30} {'first slice s':>14} {'no-op upload s':>15} {'load_volume s':>14} {'/upload':>8} {'/read':>7}"
    )
    for name, shown, upload, read in rows:
        print(
            f"{name:<30} {shown:>14.2f} {upload:>15.2f} {read:>14.2f} {shown / upload:>8.1f} {shown / read:>7.1f}"
        )
    print(f"medians of {args.repeats}; bar: first slice within 3 s")


if __name__ == "__main__":
    main()
