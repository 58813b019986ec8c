"""PNG plots for eval reports (matplotlib, Agg backend): per modality per task, per task, per case.

What is drawn is read from the metrics each scorer declares (:mod:`medground.eval.metrics`): per task,
the metrics of the headline's table per modality; across tasks, each task's headline, its direction
marked (↑ higher is better, ↓ lower); for masks, one box plot per direction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medground.eval.metrics import declared, headline, in_group

__all__ = ["plot_result"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _bars(path: Path, title: str, groups: list[str], series: dict[str, list[float | None]]) -> Path:
    """Grouped bars: one group per x label, one bar per series; None values are drawn as gaps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.6))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + i * width - 0.4 + width / 2, heights, width, label=name)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _task_series(protocol: str, res: dict) -> tuple[list[str], dict[str, list[float | None]]] | None:
    """Modalities and, per metric of the headline's table, its value per modality (None: a gap)."""
    groups = in_group(res)
    shown = [m.name for m in next(iter(groups.values()))] if groups else []
    if protocol == "bird":
        per = res["per_modality"]
        if res["metric"] == "caption":
            metrics = [m for m in shown if m in res["mean"]]
            return list(per), {m: [per[g].get(m) for g in per] for m in metrics} if metrics else None
        return list(per), {res["metric"]: list(per.values())}
    block = res["variants"].get("java", {}) if "variants" in res else res
    if "micro" not in block:
        block = res["variants"]["no_java"] if "variants" in res else block
    per = block["per_group"]
    keys = [k for k in shown if k in block["micro"]]
    return list(per), {k: [per[g].get(k) for g in per] for k in keys}


def plot_result(result: dict, out: Path) -> list[Path]:
    """Write the plots for a prediction or segmentation result into ``out``; returns their paths."""
    if result.get("kind") == "segmentation":
        return _plot_segmentation(result, out)
    paths, overall = [], {}
    protocol = result["protocol"]
    for task, res in result["tasks"].items():
        series = _task_series(protocol, res)
        if series and series[1]:
            groups, values = series
            paths.append(
                _bars(out / f"{protocol}_{task}_per_modality.png", f"{protocol} / {task}", groups, values)
            )
        head = headline(res)
        if head is not None:
            overall[f"{task} {head.name} {head.arrow}"] = _headline(protocol, res, head.name)
    if overall:
        paths.append(
            _bars(
                out / f"{protocol}_per_task.png",
                f"{protocol}: headline metric per task",
                list(overall),
                {"score": list(overall.values())},
            )
        )
    return paths


def _headline(protocol: str, res: dict, metric: str) -> float | None:
    if protocol == "bird":
        mean = res["mean"]
        return mean.get(metric) if isinstance(mean, dict) else mean
    block = res["variants"]["no_java"] if "variants" in res else res
    return block["macro"].get(metric)


def _plot_segmentation(result: dict, out: Path) -> list[Path]:
    plt = _pyplot()
    panels = [(d, [s.name for s in declared(result) if s.direction == d]) for d in ("higher", "lower")]
    panels = [(d, names) for d, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, (direction, metrics) in zip(axes[0], panels, strict=True):
        data = [[c[m] for c in result["cases"] if c[m] is not None and np.isfinite(c[m])] for m in metrics]
        ax.boxplot([d if d else [np.nan] for d in data])
        ax.set_xticks(range(1, len(metrics) + 1), metrics)
        ax.set_title(f"{direction} is better", fontsize="small")
        if direction == "lower":
            ax.set_ylabel(result["rules"]["units"])
    fig.suptitle("segmentation: per-case distribution")
    fig.tight_layout()
    path = out / "segmentation_per_case.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
