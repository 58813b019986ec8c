"""A visual report of a build output folder: count plots, box-size histograms, sample overlays and one HTML page.

``write_report(DIR)`` streams ``DIR/records/*.jsonl`` (or records you pass), keeps only counters and a
bounded sample, and writes ``DIR/report/``: ``modality.png``, ``tasks.png``, ``splits.png``,
``box_sizes.png``, ``regions_per_image.png``, ``skipped.png``, ``overlays.png`` and ``report.html``
(relative links to the PNGs). Same records give the same bytes. Drawing lives in :mod:`medground.viz`.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medground.data.export import iter_records
from medground.io import ReadError, read_image, region_mask
from medground.types import Box
from medground.viz import draw_boxes, fill_masks

__all__ = ["write_report"]

AREA_BINS = np.logspace(-6, 0, 49)  # relative box area box_area / (w * h), log-spaced bin edges
MAX_OVERLAYS = 12
TILE = 256  # overlay tile side in pixels
CAPTION = 16  # caption band above each tile, pixels
SKIPPED_LINES = 20  # first lines of skipped.jsonl shown in the HTML
PNG_META = {"Software": None}


@dataclass
class _Stats:
    """Counters over a stream of records, plus a bounded per-modality sample for overlays."""

    images: Counter = field(default_factory=Counter)  # modality -> records
    regions: Counter = field(default_factory=Counter)  # modality -> regions
    turns: Counter = field(default_factory=Counter)  # task -> non-negative turns
    negatives: Counter = field(default_factory=Counter)  # task -> negative turns
    splits: Counter = field(default_factory=Counter)  # split -> records
    per_image: Counter = field(default_factory=Counter)  # regions in a record -> records
    areas: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> counts over AREA_BINS
    sample: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)  # modality -> [(hash, record)]

    def add(self, rec: dict) -> None:
        mod = str(rec.get("modality") or "other")
        regions = rec.get("regions") or []
        self.images[mod] += 1
        self.regions[mod] += len(regions)
        self.splits[str(rec.get("split") or "none")] += 1
        self.per_image[len(regions)] += 1
        for turn in rec.get("turns") or []:
            (self.negatives if turn.get("negative") else self.turns)[str(turn.get("task"))] += 1
        size = float(rec["width"]) * float(rec["height"])
        rel = [Box.from_list(r["box"]).area / size for r in regions if r.get("box")]
        hist = self.areas.setdefault(mod, np.zeros(len(AREA_BINS) - 1, np.int64))
        hist += np.histogram(np.clip(rel, AREA_BINS[0], AREA_BINS[-1]), bins=AREA_BINS)[0]
        self._keep(mod, rec)

    def _keep(self, mod: str, rec: dict) -> None:
        key = hashlib.sha1(str(rec["id"]).encode()).hexdigest()
        slim = {k: rec.get(k) for k in ("id", "image", "width", "height", "modality")}
        slim["regions"] = [
            {k: r.get(k) for k in ("name", "key", "box", "mask", "rle")} for r in rec.get("regions") or []
        ]
        kept = self.sample.setdefault(mod, [])
        kept.append((key, slim))
        kept.sort(key=lambda item: item[0])
        del kept[MAX_OVERLAYS:]

    def chosen(self) -> list[dict]:
        """Up to MAX_OVERLAYS records, round-robin over sorted modalities, lowest id hash first."""
        queues = [list(self.sample[m]) for m in sorted(self.sample)]
        out: list[dict] = []
        while len(out) < MAX_OVERLAYS and any(queues):
            for q in queues:
                if q and len(out) < MAX_OVERLAYS:
                    out.append(q.pop(0)[1])
        return out


def _read_skipped(path: Path) -> tuple[Counter, list[str]]:
    reasons: Counter = Counter()
    first: list[str] = []
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                if len(first) < SKIPPED_LINES:
                    first.append(line.rstrip("\n"))
                try:
                    reason = str(json.loads(line).get("reason", "unknown"))
                except (json.JSONDecodeError, AttributeError):
                    reason = "unreadable skipped line"
                reasons[reason[:80]] += 1
    return reasons, first


def _figure(width: float = 6.0, height: float = 3.5):  # noqa: ANN202 - matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _bars(
    path: Path, title: str, labels: list[str], series: dict[str, list[int]], horizontal: bool = False
) -> None:
    """Grouped bars (one group per label, one bar per series) saved to ``path``."""
    fig = _figure(6.0, max(3.5, 0.3 * len(labels)) if horizontal else 3.5)
    ax = fig.add_subplot(1, 1, 1)
    n = max(1, len(series))
    pos = np.arange(len(labels), dtype=float)
    for j, (name, values) in enumerate(series.items()):
        offset = pos + (j - (n - 1) / 2) * 0.8 / n
        (ax.barh if horizontal else ax.bar)(offset, values, 0.8 / n, label=name)
    (ax.set_yticks if horizontal else ax.set_xticks)(pos, labels, **({} if horizontal else {"rotation": 30}))
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    if n > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_META)


def _area_plot(path: Path, areas: dict[str, np.ndarray]) -> None:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for mod in sorted(areas):
        ax.stairs(areas[mod], AREA_BINS, label=mod)
    ax.set_xscale("log")
    ax.set_xlabel("box area / image area")
    ax.set_ylabel("regions")
    ax.set_title("Box sizes per modality")
    if areas:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_META)


def _tile(root: Path, rec: dict) -> np.ndarray:
    """One sample drawn at a TILE-fitting scale: translucent masks, then labelled boxes. (h, w, 3) uint8.

    Files are read through :mod:`medground.io` (the readers the engine and eval use); a ReadError
    propagates so that the caller lists the file and its reason instead of drawing a placeholder.
    """
    w, h = int(rec["width"]), int(rec["height"])
    scale = min(TILE / w, TILE / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pixels = read_image(root / rec["image"])
    image = np.asarray(Image.fromarray(pixels).convert("RGB").resize(size, Image.Resampling.BILINEAR))
    masks = []
    for r in rec["regions"]:
        if not r.get("mask") and r.get("rle") is None:  # a region without a mask: box only
            masks.append(np.zeros((size[1], size[0]), np.uint8))
            continue
        inside = region_mask(root, r).astype(np.uint8) * np.uint8(255)
        masks.append(np.asarray(Image.fromarray(inside).resize(size, Image.Resampling.NEAREST)))
    image = fill_masks(image, masks)
    boxes = [
        [math.floor(v * scale) for v in r["box"][:2]] + [math.ceil(v * scale) for v in r["box"][2:]]
        if r.get("box")
        else [0, 0, 0, 0]
        for r in rec["regions"]
    ]
    return draw_boxes(image, boxes, [str(r.get("name", "")) for r in rec["regions"]])


def _overlays(path: Path, root: Path, chosen: list[dict], cols: int = 4) -> list[tuple[str, str, str]]:
    """Grid of the sampled records' tiles, each under a caption with the record id and modality.

    A record whose image or mask cannot be read gets no tile; it is returned as (record id, file,
    reason) for the report's error list.
    """
    tiles, errors = [], []
    for rec in chosen:
        try:
            tiles.append((rec, _tile(root, rec)))
        except ReadError as error:
            errors.append((str(rec["id"]), error.path, error.reason))
    n = max(1, len(tiles))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    canvas = Image.new("RGB", (cols * TILE, rows * (TILE + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (rec, tile) in enumerate(tiles):
        x, y = (k % cols) * TILE, (k // cols) * (TILE + CAPTION)
        draw.text((x + 2, y + 2), f"{rec['modality']}: {rec['id']}"[:48], fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(tile), (x, y + CAPTION))
    canvas.save(path, format="PNG")
    return errors


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in rows
    )
    return f"<table>\n<tr>{cells}</tr>\n{body}</table>\n"


def _html(
    stats: _Stats,
    reasons: Counter,
    first_skipped: list[str],
    manifest: dict | None,
    errors: list[tuple[str, str, str]],
) -> str:
    tasks = sorted(set(stats.turns) | set(stats.negatives))
    alarm = (
        [
            f"<p><b>Errors: {len(errors)} file(s) of the sampled records could not be read</b> "
            "(listed under <a href='#errors'>Errors</a>).</p>"
        ]
        if errors
        else []
    )
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>medground data report</title>",
        "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 8px}</style></head><body>",
        "<h1>medground data report</h1>",
        *alarm,
        _table(
            ["records", "regions", "turns", "skipped"],
            [
                [
                    sum(stats.images.values()),
                    sum(stats.regions.values()),
                    sum(stats.turns.values()) + sum(stats.negatives.values()),
                    sum(reasons.values()),
                ]
            ],
        ),
        "<h2>Modalities</h2>",
        _table(
            ["modality", "images", "regions"],
            [[m, stats.images[m], stats.regions[m]] for m in sorted(stats.images)],
        ),
        "<img src='modality.png'>",
        "<h2>Tasks</h2>",
        _table(["task", "turns", "negative turns"], [[t, stats.turns[t], stats.negatives[t]] for t in tasks]),
        "<img src='tasks.png'>",
        "<h2>Splits</h2>",
        _table(["split", "records"], [[s, stats.splits[s]] for s in sorted(stats.splits)]),
        "<img src='splits.png'>",
        "<h2>Regions per image</h2>",
        _table(["regions", "images"], sorted(stats.per_image.items())),
        "<img src='regions_per_image.png'>",
        "<h2>Box sizes</h2><img src='box_sizes.png'>",
        "<h2>Samples</h2><img src='overlays.png'>",
        *(
            [
                "<h2 id='errors'>Errors</h2><p>Sampled records whose files could not be read (no tile drawn):</p>",
                _table(["record", "file", "reason"], errors),
            ]
            if errors
            else []
        ),
        "<h2>Skipped</h2>",
        _table(["reason", "count"], sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "<img src='skipped.png'>",
        "<h3>First lines of skipped.jsonl</h3><pre>" + html.escape("\n".join(first_skipped)) + "</pre>",
    ]
    if manifest is not None:
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False)[:4000]
        parts.append("<h2>Manifest</h2><pre>" + html.escape(text) + "</pre>")
    return "\n".join(parts) + "\n</body></html>\n"


def write_report(out_dir: Path, records: Iterable[dict] | None = None) -> Path:
    """Write ``out_dir/report/`` (PNGs + report.html) for a build folder; return the HTML path.

    records: the records to describe (streamed once); default: ``out_dir/records/*.jsonl``. Also reads
    ``out_dir/manifest.json`` and ``out_dir/skipped.jsonl`` when present. Memory: counters plus at most
    MAX_OVERLAYS records per modality. A sampled record whose image or mask cannot be read is an error
    of the report: listed in the HTML with its reason (and warned), never drawn as a placeholder.
    """
    root = Path(out_dir)
    stats = _Stats()
    for rec in iter_records(root) if records is None else records:
        stats.add(rec)
    reasons, first_skipped = _read_skipped(root / "skipped.jsonl")
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else None
    report = root / "report"
    report.mkdir(parents=True, exist_ok=True)
    mods = sorted(stats.images)
    _bars(
        report / "modality.png",
        "Images and regions per modality",
        mods,
        {"images": [stats.images[m] for m in mods], "regions": [stats.regions[m] for m in mods]},
    )
    tasks = sorted(set(stats.turns) | set(stats.negatives))
    _bars(
        report / "tasks.png",
        "Turns per task",
        tasks,
        {"turns": [stats.turns[t] for t in tasks], "negative": [stats.negatives[t] for t in tasks]},
    )
    splits = sorted(stats.splits)
    _bars(report / "splits.png", "Records per split", splits, {"records": [stats.splits[s] for s in splits]})
    counts = sorted(stats.per_image)
    _bars(
        report / "regions_per_image.png",
        "Images by number of regions",
        [str(c) for c in counts],
        {"images": [stats.per_image[c] for c in counts]},
    )
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    _bars(
        report / "skipped.png",
        "Skipped inputs by reason",
        [r for r, _ in top],
        {"skipped": [c for _, c in top]},
        horizontal=True,
    )
    _area_plot(report / "box_sizes.png", stats.areas)
    errors = _overlays(report / "overlays.png", root, stats.chosen())
    for record, path, reason in errors:
        warnings.warn(f"report: record {record}: {path}: {reason}", stacklevel=2)
    page = report / "report.html"
    tmp = page.with_name(".report.html.tmp")
    tmp.write_text(_html(stats, reasons, first_skipped, manifest, errors), encoding="utf-8")
    tmp.replace(page)
    return page
