"""Human-readable outputs of ``icl-eval``: report.md (tables) and dice_vs_k.png."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["write_report"]


def _per_source(rows: list[dict]) -> dict[tuple[str, str, int], float]:
    """Mean Dice per (source, method, k) over all queries."""
    acc = defaultdict(list)
    for r in rows:
        acc[(r["source"], r["method"], r["k"])].append(r["dice"])
    return {key: float(np.mean(v)) for key, v in acc.items()}


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, by_k in sorted(summary.items()):
        ks = sorted(by_k)
        mean = [by_k[k]["dice"] for k in ks]
        spread = [by_k[k]["dice_std_draws"] for k in ks]
        ax.errorbar(ks, mean, yerr=spread, marker="o", capsize=3, label=method)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("k (support examples)")
    ax.set_ylabel("mean Dice (held-out tasks)")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(summary: dict, ks: list[int]) -> list[str]:
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in sorted(summary):
        cells = []
        for k in ks:
            s = summary[m].get(k)
            cells.append(
                f"{s['dice']:.3f} ± {s['dice_std_draws']:.3f} (HD95 {s['hd95']:.1f}, {s['tasks']} tasks)"
                if s
                else "-"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def write_report(summary: dict, rows: list[dict], out: Path, common: dict | None = None) -> None:
    """Write ``out/report.md`` and ``out/dice_vs_k.png`` from an evaluation summary and its rows.

    ``common`` is the same summary restricted to tasks evaluated at every k (plotted when given).
    """
    methods = sorted(summary)
    ks = sorted({k for by_k in summary.values() for k in by_k})
    lines = [
        "# In-context segmentation: held-out evaluation",
        "",
        "Mean Dice over tasks (spread: std over support draws, averaged over tasks); HD95 in pixels at the working size.",
        "",
        "## All held-out tasks evaluable at each k (a task needs more than k images)",
        "",
        *_table(summary, ks),
    ]
    if common:
        lines += [
            "",
            "## Only the tasks evaluated at every k > 0 (like-for-like across k; plotted)",
            "",
            *_table(common, sorted({k for by_k in common.values() for k in by_k})),
        ]
    per = _per_source(rows)
    sources = sorted({s for s, _, _ in per})
    lines += [
        "",
        "## Mean Dice per held-out source",
        "",
        "| source | method | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for src in sources:
        for m in methods:
            cells = [f"{per[(src, m, k)]:.3f}" if (src, m, k) in per else "-" for k in ks]
            lines.append(f"| {src} | {m} | " + " | ".join(cells) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if summary:
        _plot(common or summary, out / "dice_vs_k.png")
