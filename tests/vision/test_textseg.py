"""Text -> mask on the LiteMedSAM encoder: split rule, model-frame masks, component boxes, "not found" path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medground.textseg.collection import assign_splits, model_frame_mask
from medground.textseg.model import HeadConfig, TextSegHead
from medground.textseg.outputs import segment_text_files
from medground.textseg.segmenter import TextSegmenter, component_boxes


def test_split_counts_by_unit_and_fixed_by_seed() -> None:
    units = {"a": [f"patient:{i}" for i in range(10)], "b": ["patient:x"], "c": ["image:1", "image:2"]}
    split = assign_splits(units)
    counts = {s: sum(v == s for v in split["a"].values()) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 2, "test": 2}  # round(0.2 * 10) = 2 test, 2 val
    assert split["b"] == {"patient:x": "train"}
    assert sorted(split["c"].values()) == ["test", "train"]
    shuffled = {"a": list(reversed(units["a"])) + units["a"][:3], "b": units["b"], "c": units["c"]}
    assert assign_splits(shuffled) == split  # order and repeats of the input do not matter
    assert any(assign_splits(units, seed=s)["a"] != split["a"] for s in range(1, 4))


def test_model_frame_mask_resizes_longest_side_and_pads() -> None:
    mask = np.zeros((100, 200), bool)
    mask[:, :100] = True  # left half
    out = model_frame_mask(mask)  # scale 256 / 200 = 1.28 -> resized 128 x 256, top-left
    assert out.shape == (256, 256)
    assert out[:128, :128].all() and not out[:128, 128:].any() and not out[128:].any()


def test_component_boxes_largest_first_small_dropped() -> None:
    mask = np.zeros((256, 256), bool)
    mask[10:20, 30:50] = True  # 200 px
    mask[100:110, 100:105] = True  # 50 px
    mask[200:202, 200:202] = True  # 4 px: below min_area 16
    assert component_boxes(mask) == [[30, 10, 49, 19], [100, 100, 104, 109]]
    assert component_boxes(mask, limit=1) == [[30, 10, 49, 19]]
    assert component_boxes(np.zeros((256, 256), bool)) == []


def test_head_takes_either_layout() -> None:
    head = TextSegHead(HeadConfig(width=16)).eval()
    emb, text = torch.randn(2, 256, 64, 64), torch.randn(2, 384)
    logits, presence = head(emb, text)
    assert logits.shape == (2, 32, 32) and presence.shape == (2,)
    again, _ = head(emb.permute(0, 2, 3, 1), text)
    assert torch.allclose(logits, again, atol=1e-5)


@pytest.fixture
def random_head(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    head = TextSegHead(HeadConfig(width=16))
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp_path / "head.safetensors"))
    config = {"head": HeadConfig(width=16).to_dict(), "threshold": 0.5, "refine_names": []}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_not_found_gives_empty_mask_and_says_so(random_head: Path, encoder, tmp_path: Path) -> None:
    image = (np.arange(48 * 80).reshape(48, 80) % 251).astype(np.uint8)
    seg = TextSegmenter(random_head)
    seg.threshold = 1.01  # no probability reaches it: never found
    res = seg.segment(image, "spleen", encoder=encoder)
    assert not res.found and res.mask.shape == (48, 80) and not res.mask.any()
    seg.threshold = 0.0  # always found: the mask is the head's, at the image's size
    res = seg.segment(image, "spleen", encoder=encoder)
    assert res.found and res.mask.shape == (48, 80) and res.mask.dtype == bool
    with pytest.raises(ValueError, match="structure name"):
        seg.segment(image, "  ", encoder=encoder)


def test_text_files_write_mask_and_report(random_head: Path, tmp_path: Path, monkeypatch, encoder) -> None:
    import medground.vision

    monkeypatch.setattr(medground.vision, "default_encoder", lambda: encoder)
    query = tmp_path / "q.png"
    Image.fromarray((np.arange(40 * 40).reshape(40, 40) % 256).astype(np.uint8)).save(query)
    lines: list[str] = []
    written = segment_text_files([query], tmp_path / "out", "spleen", echo=lines.append, weights=random_head)
    assert [p.name for p in written] == ["q.png", "q_overlay.png"]
    assert np.asarray(Image.open(written[0])).shape == (40, 40)
    assert len(lines) == 1 and "'spleen'" in lines[0] and "presence" in lines[0]
    with pytest.raises(ValueError, match="--text-engine icl"):
        segment_text_files([tmp_path / "v.nii.gz"], tmp_path / "out", "spleen", weights=random_head)


def test_pairs_never_use_same_modality_names_of_other_datasets() -> None:
    from medground.textseg.train import Cached, make_pairs, vocabulary

    rows = [
        {"dataset": "drive", "modality": "fundus", "names": ["retinal vessels"]},
        {"dataset": "idrid", "modality": "fundus", "names": ["optic disc"]},
        {"dataset": "sa", "modality": "ct", "names": ["liver"]},
        {"dataset": "sa", "modality": "ct", "names": ["liver", "spleen"]},
    ]
    vocab, modality = vocabulary(rows)
    data = Cached(rows, torch.zeros(4, 32, 32, 256), [{} for _ in rows])
    pairs = {
        (p.image, p.name, p.kind) for p in make_pairs(data, vocab, modality, None, np.random.default_rng(0))
    }
    assert {p for p in pairs if p[0] == 0} == {
        (0, "retinal vessels", "positive"),
        (0, "liver", "cross"),
        (0, "spleen", "cross"),
    }  # the idrid image may show vessels: "optic disc" is never asked of a drive image, nor the reverse
    assert {p for p in pairs if p[0] == 2} == {
        (2, "liver", "positive"),
        (2, "spleen", "same"),
        (2, "retinal vessels", "cross"),
        (2, "optic disc", "cross"),
    }
    assert {p for p in pairs if p[0] == 3} == {
        (3, "liver", "positive"),
        (3, "spleen", "positive"),
        (3, "retinal vessels", "cross"),
        (3, "optic disc", "cross"),
    }


def test_shipped_head_loads_with_a_threshold_and_its_vocabulary() -> None:
    from medground.textseg.segmenter import WEIGHTS

    seg = TextSegmenter(WEIGHTS)
    assert 0.0 < seg.threshold < 1.0
    assert {"spleen", "both lungs", "thyroid nodule"} <= set(seg.config["vocabulary"])
    assert (WEIGHTS / "head.safetensors").stat().st_size < 10 * 2**20
