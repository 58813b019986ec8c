"""The task registry: every refer-and-ground task described once, for the engine, the CLI and eval.

A task (``rec``, ``roc``, ``reg``, ``mia``) is one :class:`TaskSpec` in :data:`TASKS`: its one name
(in records, prediction rows, reports and the CLI), BiRD's name for it (``vg``/``roc``/``rc``/``mia``,
used only at the BiRD-protocol edge: reading BiRD's files, labelling BiRD's report) and aliases, whether its turns
box the regions they name (what :func:`medground.data.records.verify_turn` checks), how the
conversation builder schedules it, its generator, its scorer per evaluation protocol (each scorer
declares its own metrics and headline: :mod:`medground.eval.metrics`), and how its rows look when a
file does not say which task they are.

Dependencies stay one way (``medground.tasks`` is ground floor and imports nothing of ours):
generators and scorers are named as ``"module:function"`` strings and resolved lazily with
:func:`load` by the room that calls them, so ``medground.data`` imports the generators and
``medground.eval`` the scorers, and eval never imports data. Call conventions:

* generator: ``fn(state: TaskState, rng: random.Random) -> Turn | None`` (None: nothing left to ask);
* negative generator (a task that can ask about an absent structure): same signature;
* scorer of protocol ``bird``: ``fn(rows: list[PredRow], task=name) -> dict``;
* scorer of protocol ``strict``: ``fn(rows, task=name, config=BootstrapConfig) -> dict``.

Adding a task is one generator module (plus its scorer, unless an existing one fits) and one line
here. The tasks whose ``default_mix`` is True, in :data:`TASKS` order, are the default task mix of a
build (:func:`default_tasks`, read by ``TaskConfig`` and ``build --tasks``); a task added with
``default_mix=False`` is opt-in (``build --tasks rec,count``) and leaves every default build
byte-identical. The order of :data:`TASKS` is also the order the conversation planner draws from, so
append; reordering changes builds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from medground.choices import closest, unknown_choice

__all__ = [
    "PROTOCOLS",
    "TASKS",
    "RowShape",
    "TaskSpec",
    "default_tasks",
    "find_task",
    "load",
    "scorers",
    "task_names",
    "task_spec",
    "unknown_tasks_message",
]

PROTOCOLS: tuple[str, ...] = ("bird", "strict")
"""The evaluation protocols: BiRD's scripts reproduced, and medground's strict one."""


@dataclass(frozen=True)
class RowShape:
    """How a task's question/answer look, to guess the task of a BiRD row whose file does not say.

    ``question_box``: the question points at a box. ``answer_box``: the answer holds a box (True), none
    (False), or either (None). ``max_words``: at most this many words in the answer, its reference/box
    tags removed when it holds a box (None: any length). Boxes are those of the rows' dialect
    (BiRD's qwen-vl-grid, :data:`medground.eval.rows.BIRD_DIALECT`), bare corner pairs included.
    """

    question_box: bool
    answer_box: bool | None = None
    max_words: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task, described once; see the module docstring for the call conventions of the strings."""

    name: str  # the one name: records' "tasks"/"turns", ``build --tasks``, prediction rows, reports ("rec")
    summary: str  # one line for help texts: what is asked and answered
    generator: str  # "module:function" of the turn generator
    boxes: bool  # True: its text boxes exactly the regions it names; False: its text holds no box
    scorers: Mapping[str, str]  # protocol -> "module:function" of the scorer (it declares its metrics)
    bird_name: str | None = None  # BiRD's name ("vg"), only at its protocol's edge; None: BiRD has none
    aliases: tuple[str, ...] = ()  # more names ``eval --task`` and rows accept ("ro", BiRD's file tag)
    bird_file_tag: str | None = None  # BiRD result files named ``*_TAG_*`` hold this task ("VG")
    negative: str | None = None  # "module:function" of its absent-structure form (REC's negatives)
    whole_image: bool = False  # about the whole image: one turn at most, drawn with TaskConfig.mia_rate
    shape: RowShape | None = None  # for guessing the task of unlabelled rows; None: never guessed
    default_mix: bool = True  # in the default task mix of a build; False: opt-in (named in --tasks)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name evaluation accepts for this task (lower case): its name, BiRD's, the aliases."""
        return tuple(dict.fromkeys(n.lower() for n in (self.name, self.bird_name, *self.aliases) if n))


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="rec",
            bird_name="vg",
            summary="'Where is X?' -> the boxes of every X (grounding)",
            generator="medground.data.generators.rec:rec_turn",
            negative="medground.data.generators.rec:negative_turn",
            boxes=True,
            scorers={"bird": "medground.eval.bird:bird_vg", "strict": "medground.eval.strict:strict_rec"},
            bird_file_tag="VG",
            shape=RowShape(question_box=False, answer_box=True, max_words=10),
        ),
        TaskSpec(
            name="roc",
            bird_name="roc",
            summary="'What structure is at <box>?' -> its name",
            generator="medground.data.generators.roc:roc_turn",
            boxes=True,
            scorers={"bird": "medground.eval.bird:bird_roc", "strict": "medground.eval.strict:strict_roc"},
            aliases=("ro",),
            bird_file_tag="RO",
            shape=RowShape(question_box=True, answer_box=False, max_words=5),
        ),
        TaskSpec(
            name="reg",
            bird_name="rc",
            summary="'Describe the region <box>.' -> name, position, neighbour, anatomy",
            generator="medground.data.generators.reg:reg_turn",
            boxes=True,
            scorers={"bird": "medground.eval.bird:bird_text", "strict": "medground.eval.strict:strict_text"},
            aliases=("gc",),
            bird_file_tag="GC",
            shape=RowShape(question_box=True),
        ),
        TaskSpec(
            name="mia",
            bird_name="mia",
            summary="'Analyse this image.' -> modality, plane, body region, structures",
            generator="medground.data.generators.mia:mia_turn",
            boxes=False,
            whole_image=True,
            scorers={"bird": "medground.eval.bird:bird_text", "strict": "medground.eval.strict:strict_text"},
            aliases=("mii",),
            bird_file_tag="MII",
            shape=RowShape(question_box=False),
        ),
        TaskSpec(
            name="count",
            summary="'How many cell nuclei are there?' -> the number of its instances",
            generator="medground.data.generators.count:count_turn",
            boxes=False,
            scorers={"strict": "medground.eval.strict:strict_number"},
            default_mix=False,
        ),
    )
}
"""Task name -> spec, in the order the engine mixes them (append new tasks; see the module docstring)."""


def task_names() -> tuple[str, ...]:
    """Every engine task name, in registry order (opt-in tasks included)."""
    return tuple(TASKS)


def default_tasks() -> tuple[str, ...]:
    """The default task mix of a build: the tasks with ``default_mix``, in registry order."""
    return tuple(name for name, spec in TASKS.items() if spec.default_mix)


def unknown_tasks_message(names: list[str], known: tuple[str, ...] | None = None) -> str:
    """``unknown task(s) 'rek'; known: rec, roc, reg, mia. 'rek' -> did you mean 'rec'?``"""
    known = task_names() if known is None else known
    close = [closest(n, known) for n in names]
    hints = "; ".join(f"{n!r} -> did you mean {c!r}?" for n, c in zip(names, close, strict=True) if c)
    return f"unknown task(s) {', '.join(map(repr, names))}; known: {', '.join(known)}." + (
        f" {hints}" if hints else ""
    )


def task_spec(name: str) -> TaskSpec:
    """The spec of an engine task name; an unknown name raises KeyError with the closest known one."""
    if name in TASKS:
        return TASKS[name]
    raise KeyError(unknown_choice("task", name, TASKS))


def find_task(name: str, where: str) -> TaskSpec:
    """The spec that task name, BiRD name or alias ``name`` (any case) denotes ("vg" -> rec's spec).

    Unknown names raise ValueError starting with ``where`` (a file and line, or an option name).
    """
    key = str(name).strip().lower()
    for spec in TASKS.values():
        if key in spec.names:
            return spec
    accepted = sorted(n for spec in TASKS.values() for n in spec.names)
    raise ValueError(f"{where}: unknown task {name!r}; expected one of {accepted}")


def scorers(protocol: str, present: set[str]) -> list[tuple[str, Callable[..., Any]]]:
    """(task name, scorer) of each task in ``present`` (task names), in registry order.

    A present task without a scorer for ``protocol`` raises ValueError naming both, so that no row
    is dropped without a word.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    specs = [spec for spec in TASKS.values() if spec.name in present]
    missing = [spec.name for spec in specs if protocol not in spec.scorers]
    if missing:
        raise ValueError(
            f"task(s) {missing} have no scorer in the {protocol} protocol; score them with "
            f"--protocol {' or '.join(p for p in PROTOCOLS if p != protocol)}, or leave their rows out"
        )
    return [(spec.name, load(spec.scorers[protocol])) for spec in specs]


@cache
def load(ref: str) -> Callable[..., Any]:
    """The function a ``"package.module:function"`` string names (imported on first use)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"task registry entry {ref!r} is not 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"task registry entry {ref!r}: cannot import {module_name!r} ({error})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"task registry entry {ref!r}: {module_name} has no {attr!r}") from None
