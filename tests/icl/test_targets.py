"""Segmentation-task readers, held-out groups, skip lists, episodes, augmentation and synthetic tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from icl_helpers import disc
from PIL import Image

from medground.icl.augment import AugmentConfig, augment_examples, augment_task
from medground.icl.episodes import EpisodeConfig, sample_batch, step_generator
from medground.icl.synthetic import synthetic_episode
from medground.icl.targets import load_targets, split_held_out, targets_from_source


def test_engine_regions_become_tasks_with_instances_united(engine_dir: Path) -> None:
    tasks = {t.name: t for t in load_targets([engine_dir], size=24).tasks}
    assert sorted(tasks) == ["demo/hip_left", "demo/liver"]
    hip = tasks["demo/hip_left"]
    assert len(hip) == 3 and len(tasks["demo/liver"]) == 2
    assert hip.text == "left hip"  # the display name (names.clean_name), what a user would type
    assert hip.images.shape == (3, 3, 24, 24) and hip.masks.shape == (3, 1, 24, 24)
    # img0 has two disjoint instances (discs of radius 4 and 3): the task mask is their union. The 48x48
    # image becomes 24x24 by 2x2 area averaging, so the mask mass is a quarter of the union's area.
    both = disc(48, 48, 10, 10, 4).sum() + disc(48, 48, 30, 40, 3).sum()
    first = hip.ids.index(str(engine_dir / "images/demo/img0.png"))
    assert float(hip.masks[first].sum()) == pytest.approx(both / 4, rel=1e-5)


def test_pairs_csv_reader_unites_instance_maps(tmp_path: Path) -> None:
    ds = tmp_path / "cells_histo"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(ds / "images/a.png")
    inst = np.zeros((16, 16), np.uint16)
    inst[2:5, 2:5], inst[10:12, 9:15] = 1, 2
    Image.fromarray(inst).save(ds / "masks/a.png")
    (ds / "pairs.csv").write_text(
        "image,mask,structure,mask_values\nimages/a.png,masks/a.png,cell nuclei (instance label map),x\n"
    )
    (ds / "labels.json").write_text('{"0": "background", "1..N": "nucleus instance id"}')
    (ds / "meta.json").write_text('{"modality": "histopathology"}')
    (task,) = targets_from_source(ds, size=16).tasks
    assert task.name == "cells_histo/cell_nuclei" and task.text == "cell nuclei"
    assert float(task.masks.sum()) == pytest.approx(9 + 12)


def test_unknown_held_out_source_lists_known(engine_dir: Path) -> None:
    tasks = load_targets([engine_dir], size=32).tasks
    with pytest.raises(ValueError, match=r"known sources: \['demo'\]"):
        split_held_out(tasks, ["nope"])
    train, held = split_held_out(tasks, ["demo"])
    assert train == [] and len(held) == 2


def test_load_targets_rejects_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pairs.csv"):
        load_targets([tmp_path], size=32)


def test_task_augmentation_moves_image_and_mask_together() -> None:
    gen = torch.Generator().manual_seed(3)
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, 0, 2:6, 1:9] = 1
    masks[1, 0, 10:15, 3:5] = 1
    images = masks.expand(-1, 3, -1, -1).clone()
    cfg = AugmentConfig(p_flip=1.0, p_rot90=1.0, p_invert=0.0, gamma=0.0)
    new_images, new_masks = augment_task(images, masks, gen, cfg)
    assert torch.equal(new_images[:, 0:1], new_masks)  # channels may be shuffled, all equal the mask
    assert torch.equal(new_masks, masks.flip(-1).flip(-2).rot90(1, (-2, -1)))


def test_example_augmentation_keeps_shapes_and_range() -> None:
    gen = torch.Generator().manual_seed(0)
    images, masks = torch.rand(3, 3, 32, 32), (torch.rand(3, 1, 32, 32) > 0.5).float()
    a, b = augment_examples(images, masks, gen, AugmentConfig())
    assert a.shape == images.shape and b.shape == masks.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and float(b.min()) >= 0 and float(b.max()) <= 1


def test_synthetic_tasks_have_non_empty_masks_and_are_seeded() -> None:
    images, masks = synthetic_episode(6, 32, torch.Generator().manual_seed(1))
    again, _ = synthetic_episode(6, 32, torch.Generator().manual_seed(1))
    assert images.shape == (6, 3, 32, 32) and masks.shape == (6, 1, 32, 32)
    assert bool((masks.flatten(1).sum(1) > 0).all())
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(images, again)


def test_batches_have_the_drawn_shapes(engine_dir: Path) -> None:
    tasks = load_targets([engine_dir], size=32).tasks
    table = {"left hip": torch.ones(384)}
    cfg = EpisodeConfig(episodes=3, queries=2, max_k=4, p_text_only=0.5)
    seen_k = set()
    for step in range(12):
        batch = sample_batch(tasks, table, 32, step_generator(0, step), cfg, AugmentConfig())
        k = batch.images.shape[1]
        seen_k.add(k)
        assert batch.queries.shape == (3, 2, 3, 32, 32) and batch.masks.shape == (3, k, 1, 32, 32)
        if k == 0:  # text-only batches only use tasks that have a text embedding
            assert bool((batch.text.abs().sum(1) > 0).all())
    assert 0 in seen_k and len(seen_k) > 2


def test_episodes_pick_a_source_first() -> None:
    from medground.icl.episodes import _pick_task
    from medground.icl.targets import SegTarget

    def task(source: str, key: str) -> SegTarget:
        return SegTarget(source, key, key, torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 8, 8), ["x"])

    pool = [task("many", f"s{i}") for i in range(20)] + [task("one", "only")]
    gen = torch.Generator().manual_seed(0)
    picks = [_pick_task(pool, gen).source for _ in range(400)]
    assert 0.4 < picks.count("one") / 400 < 0.6  # uniform over tasks would give 1/21


def test_holding_out_one_fundus_vessel_set_holds_out_the_other() -> None:
    from medground.icl.targets import SegTarget

    def task(source: str) -> SegTarget:
        return SegTarget(source, "v", "v", torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 8, 8), ["x"])

    tasks = [task("drive_fundus"), task("fives_fundus_vessels"), task("hc18_fetal_ultrasound")]
    train, held = split_held_out(tasks, ["drive_fundus"])
    assert [t.source for t in train] == ["hc18_fetal_ultrasound"]
    assert sorted(t.source for t in held) == ["drive_fundus", "fives_fundus_vessels"]


def test_skipped_images_and_tasks_are_listed_with_reasons(tmp_path: Path) -> None:
    ds = tmp_path / "organs"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    rows = ["image,mask,structure,mask_values"]
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i + 20, np.uint8)).save(ds / f"images/{i}.png")
        liver = np.zeros((16, 16), np.uint8)
        liver[4:9, 3:8] = 255
        Image.fromarray(liver).save(ds / f"masks/{i}_liver.png")
        rows.append(f"images/{i}.png,masks/{i}_liver.png,liver,255")
    spleen = np.zeros((16, 16), np.uint8)
    spleen[1:3, 1:3] = 255
    Image.fromarray(spleen).save(ds / "masks/0_spleen.png")
    rows.append("images/0.png,masks/0_spleen.png,spleen,255")
    rows.append("images/missing.png,masks/0_liver.png,liver,255")
    (ds / "pairs.csv").write_text("\n".join(rows) + "\n")
    (ds / "labels.json").write_text('{"0": "background", "255": "structure"}')
    (ds / "meta.json").write_text('{"modality": "ct", "cases": "image"}')
    loaded = load_targets([ds], size=16, min_examples=2)
    assert [t.name for t in loaded.tasks] == ["organs/liver"] and len(loaded.tasks[0]) == 3
    reasons = {s.what: s.reason for s in loaded.skipped}
    assert "too few examples: 1 usable image(s), needs 2" in reasons["organs/spleen"]
    assert any("missing.png" in what for what in reasons), reasons  # the unreadable row is listed
    assert "2 items skipped" in loaded.summary()
