"""Human-readable outputs of ``icl-eval``: report.md (tables) and dice_vs_k.png, from summary.json's payload."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["MAIN", "TABLES", "table_rows", "write_report"]

MAIN = "held-out, patients known"
"""The table the headline numbers come from (figure included)."""
UNSEEN = "held-out, patients known, not seen in design"
UNKNOWN = "held-out, patients unknown (reported apart)"
TABLES = (MAIN, UNSEEN, UNKNOWN, "in-distribution")


def _plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, by_k in sorted(summary.items()):
        ks = sorted(k for k in by_k if k > 0)
        if not ks:
            continue
        mean = np.array([by_k[k]["dice"] for k in ks])
        lo, hi = np.array([by_k[k]["lo"] for k in ks]), np.array([by_k[k]["hi"] for k in ks])
        ax.plot(ks, mean, marker="o", label=method)
        ax.fill_between(ks, lo, hi, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (support examples, other patients)")
    ax.set_ylabel("mean Dice at the query's resolution")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(summary: dict) -> list[str]:
    ks = sorted({k for by_k in summary.values() for k in by_k})
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in sorted(summary):
        cells = [
            f"{s['dice']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]" if (s := summary[m].get(k)) else "-" for k in ks
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _per_source(rows: list[dict]) -> list[str]:
    acc = defaultdict(list)
    for r in rows:
        acc[(r["source"], r["method"], r["k"])].append(r["dice"])
    ks = sorted({r["k"] for r in rows})
    lines = ["| source | method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for src, m in sorted({(s, m) for s, m, _ in acc}):
        cells = [f"{np.mean(acc[(src, m, k)]):.3f}" if (src, m, k) in acc else "-" for k in ks]
        lines.append(f"| {src} | {m} | " + " | ".join(cells) + " |")
    return lines


def write_report(payload: dict, rows: list[dict], out: Path) -> None:
    """Write ``out/report.md`` and ``out/dice_vs_k.png`` (the main table) from evaluate()'s payload."""
    k_max = max(payload["config"]["ks"])
    lines = [
        "# In-context segmentation: evaluation",
        "",
        "Mean Dice over tasks of each task's mean over (draw, query) rows, scored at the query's own resolution;",
        "[95% interval] from a hierarchical bootstrap: tasks resampled, then query patients within each drawn task.",
        "Supports never come from the query's patient. Every table holds only tasks that qualify for",
        f"k = {k_max} (the same tasks at every k).",
    ]
    for name, summary in payload["summaries"].items():
        by_rows = [r for r in rows if _belongs(r, name)]
        n_tasks = len({r["task"] for r in by_rows})
        n_design = len({r["task"] for r in by_rows if r["design_seen"]})
        lines += [
            "",
            f"## {name}: {n_tasks} tasks qualify for k = {k_max} ({n_design} of them seen while the model was designed)",
            "",
            *_table(summary),
        ]
        checks = payload["gain_checks"].get(name, {})
        if checks:
            lines += ["", "Sanity check, Dice(k_max) - Dice(k_min) on the same queries:", ""]
            for method, c in checks.items():
                verdict = "passes" if c["passes"] else "FAILS (does not improve with k)"
                lines.append(
                    f"- {method}: {c['gain']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] "
                    f"(k = {c['k_min']} -> {c['k_max']}): {verdict}"
                )
        lines += ["", "Per source (mean over rows):", "", *_per_source(by_rows)]
    lines += ["", f"## Tasks not evaluated ({len(payload['excluded_tasks'])})", ""]
    lines += [f"- {e['task']} ({e['fold']}): {e['reason']}" for e in payload["excluded_tasks"]] or ["none"]
    lines += ["", f"## Items skipped while loading ({len(payload['skipped'])})", ""]
    lines += [f"- {s['what']}: {s['reason']}" for s in payload["skipped"]] or ["none"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    main = payload["summaries"].get(MAIN)
    if main:
        n = len({r["task"] for r in rows if _belongs(r, MAIN)})
        _plot(main, out / "dice_vs_k.png", f"{MAIN}: the same {n} tasks at every k")


def _belongs(row: dict, table: str) -> bool:
    """Whether a result row belongs to a table: in-distribution rows apart; held-out rows by whether
    their task's patients are known; the last table is the main one without design-seen sources."""
    if table == "in-distribution":
        return row["role"] == "in-distribution"
    if row["role"] != "held-out":
        return False
    if table == UNKNOWN:
        return not row["patients_known"]
    if table == MAIN:
        return row["patients_known"]
    return row["patients_known"] and not row["design_seen"]


def table_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of each non-empty table; the design-unseen table only when it differs from the main one."""
    out = {name: [r for r in rows if _belongs(r, name)] for name in TABLES}
    if len(out[UNSEEN]) == len(out[MAIN]):
        out[UNSEEN] = []
    return {name: picked for name, picked in out.items() if picked}
