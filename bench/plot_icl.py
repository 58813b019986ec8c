"""Draw held-out Dice against k for several `medground icl-eval` runs in one figure.

Each ``--run LABEL=RESULTS.jsonl[:METHOD]`` adds the rows of one run (only METHOD's rows when given,
relabelled LABEL). Curves are means over tasks of the per-task mean Dice, on the tasks that every
curve has at every k (like for like); the band is the spread over those tasks' means (std / sqrt n).

    python bench/plot_icl.py --out bench/figures/icl_dice_vs_k.png \
        --run "RidgeSeg=runs/icl2/eval_lodo/results.jsonl:ridgeseg" --run "prior=runs/icl2/eval_lodo/results.jsonl:prior"
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def load_curves(specs: list[str]) -> dict[str, dict[tuple[int, str], list[float]]]:
    """LABEL -> (k, task) -> Dice of every query row."""
    curves: dict[str, dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for spec in specs:
        label, _, rest = spec.partition("=")
        path, _, method = rest.partition(":")
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            if row["k"] > 0 and (not method or row["method"] == method):
                curves[label][(row["k"], row["task"])].append(row["dice"])
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", required=True, help="LABEL=RESULTS.jsonl[:METHOD]; repeat")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    curves = load_curves(args.run)
    ks = sorted({k for c in curves.values() for k, _ in c})
    tasks = sorted({t for c in curves.values() for _, t in c})
    common = [t for t in tasks if all((k, t) in c for c in curves.values() for k in ks)]
    if not common:
        raise SystemExit("no task is present at every k in every run; nothing comparable to draw")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, cells in curves.items():
        per_task = np.array([[np.mean(cells[(k, t)]) for t in common] for k in ks])  # (k, task)
        mean, err = per_task.mean(1), per_task.std(1) / np.sqrt(len(common))
        ax.plot(ks, mean, marker="o", label=label)
        ax.fill_between(ks, mean - err, mean + err, alpha=0.15)
        print(label, " ".join(f"k={k}: {m:.3f}" for k, m in zip(ks, mean, strict=True)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (support examples)")
    ax.set_ylabel(f"mean Dice, {len(common)} held-out tasks")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"tasks: {', '.join(common)}\nwrote {args.out}")


if __name__ == "__main__":
    main()
