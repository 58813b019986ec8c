"""Check a build's negative turns against the original mask files, read here without medground's code.

For every turn that says a structure is absent ("There is no X in this image"), this script reads the
masks of that image from the dataset folder itself (PIL + numpy for the medseg layout, nibabel for NIfTI
label volumes) and counts the turn as a **false negative** when X, or something X is part of or that is
part of X, has a pixel there. Names are compared by an independent word rule (lower case, parentheses
and separators dropped, CamelCase split, plural and ordinal suffixes cut, word order ignored): X and a
labelled name clash when the words of one are all among the words of the other ("kidney" vs
"left kidney"), which errs towards flagging.

Volume slices: the record id names the volume and the slice (``<key>_axial014``); the slice axis and its
direction are taken from the record's own positive regions (the reading under which every region of
every record of that volume has a pixel), so no slicing convention is copied from medground.

    python bench/bench_false_negatives.py BUILD [BUILD...] --data /work/shared/data [--json OUT]

Prints per build: negative turns, per rule, per source, per structure, false negatives (listed).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$")


def words(name: str) -> frozenset[str]:
    """Comparison words of a structure name: "rib_left_9" and "left 9th rib" -> {left, 9, rib}."""
    text = re.sub(r"\([^)]*\)", " ", name)
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text).lower()
    text = re.sub(r"(?<=\w)-(?=\w)", "", text)  # non-enhancing -> nonenhancing: one word
    found = set()
    for word in re.split(r"[^a-z0-9']+", text):
        if not word or word in ("the", "of", "and", "or"):
            continue
        match = _ORDINAL.match(word)
        if match:
            word = match[1]
        elif word.endswith("ae"):
            word = word[:-1]
        elif word.endswith("ies") and len(word) > 4:
            word = word[:-3] + "y"
        elif word.endswith("s") and len(word) > 3 and not word.endswith(("ss", "us", "is", "as")):
            word = word[:-1]
        found.add(word)
    return frozenset(found)


def clash(negative: str, labelled: str) -> bool:
    a, b = words(negative), words(labelled)
    return bool(a) and bool(b) and (a <= b or b <= a)


def _key(image: str) -> str:
    parts = Path(image).with_suffix("").parts
    return "__".join(parts[1:] if parts[0] == "images" and len(parts) > 1 else parts)


def _declared(labels: dict) -> dict[int, str]:
    return {int(k): str(v) for k, v in labels.items() if str(k).strip().isdigit() and int(k) != 0}


class PlanarTruth:
    """The labelled names of each image of a medseg folder, read from its masks."""

    def __init__(self, root: Path):
        self.root = root
        labels_path = root / "labels.json"
        self.labels = json.loads(labels_path.read_text()) if labels_path.exists() else {}
        self.instance_map = any(re.fullmatch(r"\d+\s*\.\.\s*N", k, re.I) for k in self.labels)
        self.rows: dict[str, list[dict]] = defaultdict(list)
        with open(root / "pairs.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                self.rows[_key(row["image"])].append(row)

    def present(self, key: str) -> set[str]:
        declared = _declared(self.labels)
        found = set()
        for row in self.rows[key]:
            mask = np.asarray(Image.open(self.root / row["mask"]))
            if mask.ndim == 3:
                mask = mask[..., 0]
            structure = (row.get("structure") or "").strip()
            if not mask.any():
                continue
            if self.instance_map or len(declared) <= 1:
                found.add(structure or next(iter(declared.values()), "structure"))
            else:
                found.update(declared[int(v)] for v in np.unique(mask) if int(v) in declared)
        return found


def _nifti_stem(path: str) -> str:
    name = Path(path).name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem


def _value_names(row: dict, labels: dict) -> dict[int, str]:
    text = row.get("label_values") or ""
    pairs = dict(re.findall(r"(\d+)\s*=\s*([^,]+)", text))
    named = {int(k): v.strip() for k, v in pairs.items() if int(k) != 0}
    if named:
        return named
    stem = _nifti_stem(row["label"])
    for group, values in labels.items():
        if isinstance(values, dict) and group in stem:
            return _declared(values)
    return _declared(labels)


class VolumeTruth:
    """Per slice of each label volume of a NIfTI medvol folder: the names with a voxel there."""

    def __init__(self, root: Path):
        import nibabel

        self.nibabel = nibabel
        self.root = root
        labels_path = root / "labels.json"
        labels = json.loads(labels_path.read_text()) if labels_path.exists() else {}
        with open(root / "pairs.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        stems = [_nifti_stem(r["image"]) for r in rows]
        self.pairs = {}
        for row, stem in zip(rows, stems, strict=True):
            key = stem if stems.count(stem) == 1 else f"{stem}__{_nifti_stem(row['label'])}"
            self.pairs[key] = (root / row["label"], _value_names(row, labels))
        self._cache: dict[str, np.ndarray] = {}

    def volume(self, key: str) -> tuple[np.ndarray, dict[int, str]]:
        path, names = self.pairs[key]
        if key not in self._cache:
            self._cache[key] = np.rint(np.asarray(self.nibabel.load(path).dataobj)).astype(np.int64)
        return self._cache[key], names

    def readings(self, key: str, index: int) -> list[set[str]]:
        """The names present at slice ``index`` under each of the 6 (axis, direction) readings."""
        array, names = self.volume(key)
        found = []
        for axis in range(3):
            for flip in (False, True):
                n = array.shape[axis]
                i = n - 1 - index if flip else index
                if not 0 <= i < n:
                    found.append(set())
                    continue
                values = np.unique(np.take(array, i, axis=axis))
                found.append({names[int(v)] for v in values if int(v) in names})
        return found


def check(build: Path, data: Path) -> dict:
    records = [
        json.loads(line)
        for f in sorted((build / "records").glob("shard-*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
    ]
    folders = {p.name: p for group in ("medseg", "medvol", "dicom") for p in (data / group).glob("*/")}
    planar: dict[str, PlanarTruth] = {}
    volumes: dict[str, VolumeTruth] = {}
    counts: Counter = Counter()
    by_source: Counter = Counter()
    by_rule: Counter = Counter()
    by_structure: Counter = Counter()
    false: list[dict] = []
    unchecked: Counter = Counter()
    # volume slices: gather every record's positives and negatives first, to fix each volume's reading
    slices: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for record in records:
        negatives = [t["structure"] for t in record["turns"] if t["negative"]]
        counts["records"] += 1
        counts["negative_turns"] += len(negatives)
        for name in negatives:
            by_source[record["source"]] += 1
            by_rule[record["negative_rule"]] += 1
            by_structure[name] += 1
        folder = folders.get(record["source"])
        key = record["id"].split("/", 1)[1].rsplit("#", 1)[0]
        if (
            folder is not None
            and (folder / "pairs.csv").exists()
            and "mask" in (folder / "pairs.csv").read_text(encoding="utf-8").partition("\n")[0]
        ):
            if not negatives:
                continue
            truth = planar.setdefault(record["source"], PlanarTruth(folder))
            present = truth.present(key)
            counts["negative_turns_checked"] += len(negatives)
            for name in negatives:
                hit = [p for p in present if clash(name, p)]
                if hit:
                    false.append({"id": record["id"], "said_absent": name, "labelled": hit})
        elif folder is not None and (folder / "pairs.csv").exists():
            match = re.fullmatch(r"(.+)_(axial|coronal|sagittal)(\d+)", key)
            slices[(record["source"], match[1])].append((int(match[3]), record))
        else:
            unchecked[record["source"]] += len(negatives)
    for (source, key), rows in slices.items():
        truth = volumes.setdefault(source, VolumeTruth(folders[source]))
        readings = [truth.readings(key, index) for index, _ in rows]
        # the reading under which every positive region of every record has a voxel in its slice
        consistent = [
            r
            for r in range(6)
            if all(
                {reg["key"] for reg in record["regions"]} <= reading[r]
                for reading, (_, record) in zip(readings, rows, strict=True)
            )
        ]
        for reading, (_, record) in zip(readings, rows, strict=True):
            negatives = [t["structure"] for t in record["turns"] if t["negative"]]
            if not negatives:
                continue
            if not consistent:
                unchecked[source] += len(negatives)
                continue
            present = set().union(*(reading[r] for r in consistent))
            counts["negative_turns_checked"] += len(negatives)
            for name in negatives:
                hit = [p for p in present if clash(name, p)]
                if hit:
                    false.append({"id": record["id"], "said_absent": name, "labelled": hit})
    return {
        "build": str(build),
        **counts,
        "false_negatives": len(false),
        "false": false,
        "unchecked_by_source": dict(unchecked),
        "by_rule": dict(by_rule),
        "by_source": dict(sorted(by_source.items())),
        "by_structure": dict(sorted(by_structure.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("builds", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = [check(build, args.data) for build in args.builds]
    for result in results:
        print(
            f"{result['build']}: {result['records']} records, {result['negative_turns']} negative turns "
            f"({result['by_rule']}), {result.get('negative_turns_checked', 0)} checked against the masks, "
            f"{result['false_negatives']} false; unchecked {result['unchecked_by_source']}"
        )
        for row in result["false"][:40]:
            print("   FALSE", row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
