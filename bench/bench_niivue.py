"""Why the page is not built on NiiVue: NiiVue (@niivue/niivue, BSD-2-Clause) in the same headless Chromium
as bench_page.py, on the same synthetic 50 MB CT volume and on a real 128^3 CT.

NiiVue draws through WebGL2; headless Chromium here has no GPU, so WebGL2 runs on SwiftShader (a CPU
renderer), as it does on any machine without a usable GPU. Measured in the page, for each volume: load
and first draw (``Niivue.loadFromArrayBuffer`` of bytes already fetched, multiplanar view without the 3D
render tile), one window/level step as NiiVue does it on a drag (new cal_min/cal_max, ``updateGLVolume``,
then ``readPixels`` so the GPU work is done) and one redraw (``drawScene`` + ``readPixels``).

The package is fetched once with ``npm pack @niivue/niivue@VERSION`` into a temporary folder (a bench
step; nothing of it is kept or served by medground) and its SHA-256 checked against the one below.
Needs npm, Debian's chromium and chromium-driver (make browsers) and selenium.

    python bench/bench_niivue.py [--steps 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from medground.serve.local import headless_chromium, running

VERSION = "0.69.0"
TARBALL_SHA256 = "6e9a6a471b428eb3b258a0086beca9187d95e43a781a39e8a519c6da246af485"
CT = Path(
    "/work/shared/data/medvol/openkbp_headneck_ct/images/openkbp_pt_22_ct.nii.gz"
)  # 128^3, 3.9 x 3.9 x 2.5 mm

PAGE = """<!doctype html><html><body style="margin:0">
<canvas id="gl" style="width:900px;height:700px"></canvas>
<script src="niivue.umd.js"></script>
<script>
async function measure(name, steps) {
  const nv = new niivue.Niivue({ isRadiologicalConvention: true, sagittalNoseLeft: true, multiplanarShowRender: 0 });
  await nv.attachTo("gl");
  const bytes = await (await fetch(name)).arrayBuffer();
  const gl = nv.gl, pixel = new Uint8Array(4);
  let t = performance.now();
  await nv.loadFromArrayBuffer(bytes, name);
  nv.setSliceType(nv.sliceTypeMultiplanar);
  gl.readPixels(450, 350, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
  const load = performance.now() - t, window = [], redraw = [];
  for (let i = 0; i < steps; i++) {
    t = performance.now();
    nv.volumes[0].cal_min = -160 + 10 * i; nv.volumes[0].cal_max = 240 + 10 * i;
    nv.updateGLVolume();
    gl.readPixels(450, 350, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
    window.push(performance.now() - t);
    t = performance.now();
    nv.drawScene();
    gl.readPixels(450, 350, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
    redraw.push(performance.now() - t);
  }
  const renderer = gl.getParameter(gl.getExtension("WEBGL_debug_renderer_info").UNMASKED_RENDERER_WEBGL);
  return { load, window, redraw, renderer, dims: nv.volumes[0].dimsRAS.slice(1) };
}
</script></body></html>"""


def niivue_umd(folder: Path) -> Path:
    """dist/niivue.umd.js of @niivue/niivue@VERSION, from ``npm pack``, its tarball's SHA-256 checked."""
    subprocess.run(["npm", "pack", f"@niivue/niivue@{VERSION}"], cwd=folder, check=True, capture_output=True)
    tarball = folder / f"niivue-niivue-{VERSION}.tgz"
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise SystemExit(f"{tarball.name}: SHA-256 {digest}, expected {TARBALL_SHA256}")
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/dist/niivue.umd.js")
        if member is None:
            raise SystemExit(f"{tarball.name} has no package/dist/niivue.umd.js")
        (folder / "niivue.umd.js").write_bytes(member.read())
    return folder / "niivue.umd.js"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    from bench_page import phantom  # same folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        niivue_umd(folder)
        nib.save(nib.Nifti1Image(phantom(50), np.diag([0.7, 0.7, 1.0, 1.0])), folder / "phantom.nii")
        (folder / "ct.nii.gz").write_bytes(CT.read_bytes())
        (folder / "index.html").write_text(PAGE)
        app = FastAPI()
        app.mount("/", StaticFiles(directory=folder), name="files")
        with running(app) as url:
            driver = headless_chromium(folder / "profile")
            driver.command_executor._client_config.timeout = (
                1800  # one WebGL step can hold the page for minutes
            )
            try:
                for name in ("ct.nii.gz", "phantom.nii"):
                    driver.get(url + "/index.html")
                    driver.execute_script(
                        "window.got = null; measure(arguments[0], arguments[1]).then((r) => { window.got = r; })",
                        name,
                        args.steps,
                    )
                    got = None
                    while got is None:
                        time.sleep(1)
                        got = driver.execute_script("return window.got")
                    print(
                        f"{name} {'x'.join(str(d) for d in got['dims'])}: load and first draw {got['load'] / 1000:.2f} s; "
                        f"window/level step median {statistics.median(got['window']):.0f} ms "
                        f"(max {max(got['window']):.0f}); redraw median {statistics.median(got['redraw']):.0f} ms; "
                        f"{args.steps} steps; {got['renderer']}"
                    )
            finally:
                driver.quit()
    print(f"@niivue/niivue {VERSION}; bar for a drag step: 33 ms (bench_page.py)")


if __name__ == "__main__":
    main()
