"""Reports: one JSON with every number, a Markdown table, PNG plots and a rich table in the terminal.

All views are built from the same :func:`tables`, so the terminal and Markdown show the same numbers
as the JSON. Which metrics a table shows, in which order and table, with how many decimals (6 for the
bird protocol, as its scripts round, 4 else), and which one is the headline: all of it is read from
the metrics each scorer declares (:mod:`medground.eval.metrics`), so a metric a scorer adds appears
here without an edit. A metric that was not computed shows as ``—`` with the reason listed under the
table, never as 0.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from medground.eval.metrics import MetricSpec, declared, headline, in_group
from medground.tasks import TASKS

__all__ = ["Table", "markdown", "print_report", "tables", "write_report"]


@dataclass
class Table:
    """A titled grid of display strings plus free-text notes shown under it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_OTHER_ROW = "other (not in the mean)"


def _headline_note(res: dict) -> list[str]:
    """``headline: f1@0.5 (higher is better)``, from the scorer's declaration (nothing when it has none)."""
    head = headline(res)
    return [f"headline: {head.name} ({head.direction} is better)"] if head else []


def _fmt(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bird_title(task: str) -> str:
    """``bird / vg (rec)``: BiRD's name for the task labels its protocol's tables, the task name beside it."""
    spec = TASKS.get(task)
    name = spec.bird_name if spec else None
    return f"bird / {name} ({task})" if name and name != task else f"bird / {task}"


def _bird_table(task: str, res: dict) -> Table:
    specs = declared(res)
    digits = specs[0].digits if specs else 6
    if res["metric"] == "caption":
        metrics = [m.name for m in specs if m.name in res["mean"]] or ["(none)"]
        table = Table(_bird_title(task), ["modality", "items", *metrics])
        for m, n in res["counts"].items():
            scores = res["per_modality"].get(m, {})
            table.rows.append([m, str(n), *(_fmt(scores.get(k), digits) for k in metrics)])
        table.rows.append(["mean", "", *(_fmt(res["mean"].get(k), digits) for k in metrics)])
        other = res.get("other")
        if other:
            n = str(sum(other["modalities"].values()))
            scores = other["scores"]
            table.rows.append([_OTHER_ROW, n, *(_fmt(scores.get(k), digits) for k in metrics)])
        table.notes += res.get("notes", []) + [
            f"{k} not computed: {v}" for k, v in res["not_computed"].items()
        ]
    else:
        head = headline(res)
        table = Table(_bird_title(task), ["modality", head.name if head else res["metric"], "hits", "count"])
        for m, score in res["per_modality"].items():
            hits, count = list(res["counts"][m].values())
            table.rows.append([m, _fmt(score, digits), str(hits), str(count)])
        table.rows.append(["mean (8 modalities)", _fmt(res["mean"], digits), "", ""])
        other = res.get("other")
        if other:
            hits, count = (str(v) for v in other["counts"].values())
            table.rows.append([_OTHER_ROW, _fmt(other["score"], digits), hits, count])
    if res.get("skipped"):
        table.notes.append(f"{len(res['skipped'])} rows skipped (reasons in report.json)")
    if res["metric"] != "caption":
        table.notes += res.get("notes", [])
    table.notes += _headline_note(res)
    return table


def _aggregate_table(title: str, res: dict, specs: list[MetricSpec]) -> Table:
    """Per-group, micro, macro and interval rows of the declared metrics ``specs`` the result computed."""
    specs = [s for s in specs if s.name in res["micro"]]
    metrics = [s.name for s in specs]
    table = Table(title, ["modality", "n", *metrics])
    for g, scores in res["per_group"].items():
        table.rows.append([g, str(res["n"].get(g, "")), *(_fmt(scores.get(s.name), s.digits) for s in specs)])
    total = str(sum(res["n"].values()))
    table.rows.append(["micro", total, *(_fmt(res["micro"][s.name], s.digits) for s in specs)])
    table.rows.append(["macro", "", *(_fmt(res["macro"].get(s.name), s.digits) for s in specs)])
    boot = res.get("bootstrap") or {}
    level = f"{100 * boot.get('level', 0.95):g}%"
    table.rows.append([f"micro {level} CI", "", *(_fmt(res["ci"].get(m), 3) for m in metrics)])
    if boot.get("replicates"):
        table.notes.append(_bootstrap_note(boot))
    return table


def _bootstrap_note(boot: dict) -> str:
    """One sentence saying what the intervals resampled, e.g. over 14 images with all their turns."""
    unit = boot["unit"]
    plural = {"patient": "patients", "image": "images", "item": "items"}.get(unit, f"units ({unit})")
    together = "" if unit == "item" else f" ({boot['items']} items, all items of a unit drawn together)"
    return (
        f"{100 * boot['level']:g}% CI: percentile bootstrap, {boot['replicates']} replicates, "
        f"resampling {boot['units']} {plural}{together}"
    )


def _specs(res: dict, computed: dict) -> list[MetricSpec]:
    """The metrics ``res`` declares, else (a result saved before declarations) every one it computed."""
    return list(declared(res)) or [MetricSpec(m) for m in computed]


def _strict_tables(task: str, res: dict) -> list[Table]:
    """One table per group of declared metrics (REC: one per IoU threshold, as 12 columns do not fit a
    terminal), the headline's group first; a result that declares nothing shows every metric it has."""
    groups = in_group(res) or {"": _specs(res, res["micro"])}
    out = []
    for group, specs in groups.items():
        title = f"strict / {task} / {group}" if group else f"strict / {task}"
        out.append(_aggregate_table(title, res, specs))
    out[0].notes += _headline_note(res)
    if res.get("skipped"):
        out[-1].notes.append(f"{len(res['skipped'])} rows skipped (reasons in report.json)")
    return out


def tables(result: dict) -> list[Table]:
    """Display tables for a result of :func:`medground.eval.api.evaluate_predictions` or ``evaluate_segmentation``."""
    if result.get("kind") == "segmentation":
        return [_seg_table(result)]
    out = []
    for task, res in result["tasks"].items():
        if result["protocol"] == "bird":
            out.append(_bird_table(task, res))
        elif "variants" in res:
            for name, variant in res["variants"].items():
                if "micro" in variant:
                    table = _aggregate_table(
                        f"strict / {task} / {name}", variant, _specs(res, variant["micro"])
                    )
                    table.notes += [f"{k} not computed: {v}" for k, v in variant["not_computed"].items()]
                    table.notes += _headline_note(res)
                    out.append(table)
                else:
                    out.append(
                        Table(
                            f"strict / {task} / {name}",
                            ["status"],
                            [["not computed"]],
                            [variant["not_computed"]],
                        )
                    )
        else:
            out.extend(_strict_tables(task, res))
    if out:
        out[-1].notes += result.get("notes", [])
    return out


def _seg_table(result: dict) -> Table:
    specs = _specs(result, result["summary"])
    table = Table("segmentation", ["scope", "cases", *(s.name for s in specs)])
    scopes = [("all", result["summary"])] + [(f"group {g}", s) for g, s in result["per_group"].items()]
    scopes += [(f"label {lb}", s) for lb, s in result["per_label"].items() if lb != "None"]
    for name, summary in scopes:
        table.rows.append(
            [
                name,
                str(summary[specs[0].name]["n"] + summary[specs[0].name]["n_undefined"]),
                *(_fmt(summary[s.name]["mean"], s.digits) for s in specs),
            ]
        )
    rules = result["rules"]
    table.notes.append(
        f"means over defined values; HD95 in {rules['units']}; NSD tolerance "
        f"{rules['tolerance_mm']} mm; empty masks: {rules['empty']}"
    )
    table.notes += _headline_note(result)
    if result["missing"]:
        table.notes.append(
            f"{len(result['missing'])} cases without a prediction, scored as empty predictions"
        )
    return table


def markdown(result: dict) -> str:
    """Markdown with one pipe table per :class:`Table`."""
    lines = [f"# medground eval: {result.get('protocol', 'segmentation')}", ""]
    for table in tables(result):
        lines += [
            f"## {table.title}",
            "",
            "| " + " | ".join(table.header) + " |",
            "|" + "---|" * len(table.header),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines += [""] + [f"- {note}" for note in table.notes] + [""]
    return "\n".join(lines)


def print_report(result: dict, console: object | None = None) -> None:
    """Print the tables with rich (to ``console`` if given)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    for table in tables(result):
        view = RichTable(title=table.title)
        for name in table.header:
            view.add_column(name, justify="left" if name in ("modality", "scope") else "right")
        for row in table.rows:
            view.add_row(*row)
        console.print(view)
        for note in table.notes:
            console.print(f"  note: {note}")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(obj: object) -> object:
    """NaN -> None (not computed), ±inf -> "inf"/"-inf", so the file is strict JSON."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def write_report(result: dict, out: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and PNG plots into ``out``; returns {kind: path}."""
    from medground.eval.plots import plot_result

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    _write(paths["json"], json.dumps(_jsonable(result), indent=1, allow_nan=False, default=str))
    _write(paths["markdown"], markdown(result))
    for i, path in enumerate(plot_result(result, out)):
        paths[f"plot{i}"] = path
    return paths
