"""Cache LiteMedSAM embeddings (fp16) and model-frame masks of every image of the shared collection, once.

    nice .venv/bin/python bench/embed_collection.py [--cache runs/textseg_cache]

Reads the 19 shared 2D datasets and the multi-patient volumes through the data engine, fixes the
issue-24 split by patient (seed and ratios: medground.textseg.collection; written to
bench/textseg_split.json, and checked against it when that file exists), then encodes each image not
yet in the cache (resumable: one file per image, written atomically) with a progress bar. Writes
``<cache>/index.jsonl`` first: one line per image (dataset, id, case, modality, split, file, names, H,
W), in a round-robin order over datasets and splits, so a partial cache is usable (readers skip absent files).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from itertools import chain, zip_longest
from pathlib import Path

import numpy as np

from medground.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from medground.progress import progress_bar
from medground.textseg.collection import (
    SPLIT_RATIOS,
    SPLIT_SEED,
    VOLUME_SLICES,
    Entry,
    assign_splits,
    iter_entries,
    model_frame_mask,
)
from medground.vision.cache import image_key

DATA = Path("/work/shared/data")
SPLIT_FILE = Path(__file__).with_name("textseg_split.json")


def interleave(entries: list[Entry], splits: dict[str, dict[str, str]]) -> list[Entry]:
    """Round-robin over datasets, and within a dataset over splits, so a partial cache is balanced."""
    per: dict[str, dict[str, list[Entry]]] = {}
    for e in entries:
        per.setdefault(e.dataset, {}).setdefault(splits[e.dataset][e.unit], []).append(e)
    queues = [list(chain.from_iterable(zip_longest(*groups.values()))) for groups in per.values()]
    return [e for e in chain.from_iterable(zip_longest(*queues)) if e is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medseg", type=Path, default=DATA / "medseg")
    parser.add_argument("--volumes", type=Path, nargs="*", default=[DATA / "medvol/msd_hippocampus_mr"])
    parser.add_argument("--cache", type=Path, default=Path("runs/textseg_cache"))
    parser.add_argument("--split-file", type=Path, default=SPLIT_FILE)
    parser.add_argument(
        "--part", default="0/1", help="K/N: encode every N-th image from the K-th (parallel workers)"
    )
    parser.add_argument("--reverse", action="store_true", help="walk the list from its end (more workers)")
    args = parser.parse_args()

    folders = [(p, False) for p in sorted(args.medseg.iterdir()) if p.is_dir()]
    entries = [
        e for path, vol in folders + [(p, True) for p in args.volumes] for e in iter_entries(path, vol)
    ]
    units: dict[str, list[str]] = {}
    for e in entries:
        units.setdefault(e.dataset, []).append(e.unit)
    splits = assign_splits(units)
    record = {
        "seed": SPLIT_SEED,
        "ratios": SPLIT_RATIOS,
        "volume_slices": VOLUME_SLICES,
        "rule": "per dataset: sorted units shuffled by default_rng([seed, crc32(dataset)]); "
        "first round(0.2n) test, next round(0.2n) val, rest train; unit = patient, or image when unknown",
        "splits": splits,
    }
    if args.split_file.exists():
        if json.loads(args.split_file.read_text()) != record:
            print(
                f"{args.split_file}: the split computed now differs from the committed one; "
                "the data or the rule changed (delete the file to fix a new split)",
                file=sys.stderr,
            )
            return 1
    else:
        atomic_write_json(args.split_file, record)

    entries = interleave(entries, splits)
    index = [
        {
            "dataset": e.dataset,
            "id": e.id,
            "case": e.case,
            "modality": e.modality,
            "split": splits[e.dataset][e.unit],
            "file": f"images/{image_key(e.image)[:32]}.npz",
            "names": sorted(e.structures),
            "height": int(e.image.shape[0]),
            "width": int(e.image.shape[1]),
        }
        for e in entries
    ]
    atomic_write_text(args.cache / "index.jsonl", "".join(json.dumps(r) + "\n" for r in index))

    import torch

    from medground.vision import ImageEncoder

    torch.set_num_threads(2)
    encoder = ImageEncoder.from_pretrained(cache_bytes=0)
    k, n = (int(v) for v in args.part.split("/"))
    mine = list(zip(entries, index, strict=True))[k::n]
    if args.reverse:
        mine.reverse()
    with progress_bar(len(mine), f"embedding images (part {k}/{n})") as advance:
        for e, row in mine:
            path = args.cache / row["file"]
            if not path.exists():
                emb = encoder.embed(e.image, f"{e.dataset}/{e.id}").embedding[0].half().numpy()
                masks = np.stack([model_frame_mask(e.structures[n]) for n in row["names"]])
                buf = io.BytesIO()
                np.savez(buf, embedding=emb, masks=np.packbits(masks, axis=-1))
                atomic_write_bytes(path, buf.getvalue(), fsync=False)
            advance(1)
    print(f"{len(entries)} images cached under {args.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
