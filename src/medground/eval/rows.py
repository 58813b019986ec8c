"""Reading prediction files into flat rows, one question/answer pair each.

Three input forms are accepted, one JSON object per line:

1. BiRD's inference output ``{"id", "image", "question", "annotation", "response"}``. The modality is
   the prefix of the image *file name* before its first ``_`` (``ct_0001.png`` -> ``ct``; BiRD's
   scripts split the whole ``image`` string, which is the same for the bare names they write).
2. medground's flat prediction rows, one per turn (what ``medground predict`` writes)::

       {"id": str, "image": str, "modality": str, "task": "rec"|"roc"|"reg"|"mia" (or BiRD's vg/rc,
        any name or alias of medground.tasks.TASKS),
        "question": str, "annotation": str, "response": str,
        "width": int, "height": int,          # pixels of the saved image the boxes refer to
        "negative": bool,                     # the question asks for an absent structure
        "dialect": str,                       # a name of medground.grounding.DIALECTS (default qwen-vl-grid)
        "structure": str | null,              # optional: the class name asked about (roc)
        "case": str | null}                   # optional: the patient key (records carry it; null: unknown)

3. A data-engine record (``conversations`` + ``turns``) plus ``"response"``: a list with one answer
   per turn, or a string when the record has one turn. It is split into flat rows as in form 2.

A row's ``dialect`` is kept under its current name (an old name such as ``qwen-vl`` is read with a
DeprecationWarning); an unknown one is an error naming the line.

Task names are normalised to the one task name of :data:`medground.tasks.TASKS` (``rec``, ``roc``,
``reg``, ``mia``): BiRD's names (``vg`` -> ``rec``, ``rc`` -> ``reg``), its file tags and the aliases
listed there are read at this edge only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medground.grounding import Dialect, get_dialect
from medground.modalities import BIRD_FILE_PREFIX, MEDGRIT_MODALITIES, OTHER, medgrit_modality
from medground.tasks import TASKS, RowShape, find_task

__all__ = [
    "BIRD_DIALECT",
    "BIRD_MODALITIES",
    "PredRow",
    "auto_task",
    "bird_modality_key",
    "file_task_hint",
    "load_rows",
    "normalise_task",
]

BIRD_MODALITIES: tuple[str, ...] = tuple(BIRD_FILE_PREFIX[m] for m in MEDGRIT_MODALITIES)
"""BiRD's eight modality keys (``ct``, ``mr``, ``x``, ...), in the order of its scripts' dictionaries."""

BIRD_DIALECT: Dialect = get_dialect("qwen-vl-grid")
"""The dialect BiRD's rows are written in (and the default of a row that names none)."""


@dataclass(frozen=True)
class PredRow:
    """One question, its reference answer and the model's response.

    ``modality`` is medground's canonical name (``x-ray``, not BiRD's ``x``; any name, the vocabulary is
    open); ``bird_modality`` is the BiRD key the row counts under in the bird protocol, or None when
    it is none of the eight (counted as "other" there).
    ``width``/``height`` are the saved image's pixels (None for BiRD rows: their boxes are on the
    [0, 1000) grid). ``origin`` is ``"bird"`` or ``"medground"``; ``line`` is 1-based in the file.
    ``case`` is the patient key when the row states one (None: unknown, e.g. every BiRD row).
    """

    id: str
    image: str
    modality: str
    bird_modality: str | None
    task: str
    question: str
    annotation: str
    response: str
    origin: str
    line: int
    width: int | None = None
    height: int | None = None
    negative: bool | None = None
    dialect: str = BIRD_DIALECT.name
    structure: str | None = None
    case: str | None = None


def bird_modality_key(modality: str) -> str | None:
    """Any modality name -> the BiRD key it counts under (:data:`BIRD_MODALITIES`), or None for one
    outside the eight (BiRD's protocol then counts it as "other"); the map is
    :func:`medground.modalities.medgrit_modality`."""
    return BIRD_FILE_PREFIX.get(medgrit_modality(modality))


def normalise_task(task: str, where: str) -> str:
    """A task name, BiRD name or alias -> the task name (``vg`` -> ``rec``); unknown names raise naming ``where``."""
    return find_task(task, where).name


def file_task_hint(path: Path) -> str | None:
    """Task from a BiRD file name (``..._VG_...``, ``_RO_``, ``_GC_``, ``_MII_``, as in its eval_all.sh;
    the tags are the registry's ``bird_file_tag``)."""
    for spec in TASKS.values():
        if spec.bird_file_tag and f"_{spec.bird_file_tag}_" in f"_{path.name}_":
            return spec.name
    return None


def _fits(shape: RowShape, question: str, annotation: str, dialect: Dialect) -> bool:
    """Whether a question/answer pair in ``dialect`` looks like rows of a task of this shape (:class:`RowShape`)."""
    if dialect.has_box(question) != shape.question_box:
        return False
    boxed = bool(dialect.box_contents(annotation))
    if shape.answer_box is True and not boxed:
        return False
    if shape.answer_box is False and dialect.has_box(annotation):
        return False
    text = dialect.protected_pattern.sub(" ", annotation) if boxed else annotation
    return shape.max_words is None or len(text.split()) <= shape.max_words


def auto_task(question: str, annotation: str, dialect: Dialect = BIRD_DIALECT) -> str:
    """Guess a BiRD row's task from its text (used only when neither ``--task`` nor the file name says):
    the first task of the registry whose :class:`RowShape` the row fits, boxes found in ``dialect`` only.

    For the shipped tasks: a question that points at a box is ``roc`` when the reference answer has at
    most 5 words and no box, else ``reg``; a question without a box whose answer has a box and at most
    10 words beside its ``<ref>``/``<box>`` tags is ``rec``; everything else is ``mia``.
    """
    for spec in TASKS.values():
        if spec.shape is not None and _fits(spec.shape, question, annotation, dialect):
            return spec.name
    raise ValueError(
        f"no task of the registry fits the question {question[:60]!r}; name the task with --task"
    )


def _bird_row(obj: dict, line: int, task: str | None) -> PredRow:
    image = str(obj["image"])
    prefix = Path(image).name.split("_")[0].lower()
    question, annotation = str(obj.get("question", "")), str(obj["annotation"])
    return PredRow(
        id=str(obj["id"]),
        image=image,
        modality=prefix if medgrit_modality(prefix) == OTHER else medgrit_modality(prefix),
        bird_modality=bird_modality_key(prefix),
        task=task or auto_task(question, annotation),
        question=question,
        annotation=annotation,
        response=str(obj["response"]),
        origin="bird",
        line=line,
    )


def _flat_row(obj: dict, line: int, task: str | None, where: str) -> PredRow:
    modality = str(obj["modality"]).lower()
    row_task = task or normalise_task(obj["task"], where)
    return PredRow(
        id=str(obj["id"]),
        image=str(obj.get("image", "")),
        modality=modality,
        bird_modality=bird_modality_key(modality),
        task=row_task,
        question=str(obj.get("question", "")),
        annotation=str(obj["annotation"]),
        response=str(obj["response"]),
        origin="medground",
        line=line,
        width=_opt_int(obj.get("width")),
        height=_opt_int(obj.get("height")),
        negative=bool(obj["negative"]) if obj.get("negative") is not None else None,
        dialect=_dialect_name(obj.get("dialect"), where),
        structure=obj.get("structure"),
        case=None if obj.get("case") is None else str(obj["case"]),
    )


def _dialect_name(name: object, where: str) -> str:
    """A row's dialect under its current name (BiRD's when the row names none); unknown names raise."""
    if not name:
        return BIRD_DIALECT.name
    try:
        return get_dialect(str(name)).name
    except KeyError as error:
        raise ValueError(f"{where}: {error.args[0]}") from None


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[arg-type]


def _record_rows(obj: dict, line: int, task: str | None, where: str) -> list[PredRow]:
    """Split a data-engine record with ``response`` (list per turn, or str for one turn) into flat rows."""
    convs, turns = obj["conversations"], obj["turns"]
    responses = obj["response"]
    if isinstance(responses, str):
        responses = [responses]
    if len(responses) != len(turns):
        raise ValueError(
            f"{where}: record {obj.get('id')!r} has {len(turns)} turns but {len(responses)} "
            "responses; give 'response' as a list with one answer per turn"
        )
    rows = []
    for i, (turn, response) in enumerate(zip(turns, responses, strict=True)):
        question = str(convs[2 * i]["value"]).replace("<image>\n", "")
        flat = {
            **obj,
            "id": f"{obj['id']}/{i}",
            "task": turn["task"],
            "question": question,
            "annotation": convs[2 * i + 1]["value"],
            "response": response,
            "negative": turn.get("negative"),
            "structure": turn.get("structure"),
        }
        rows.append(_flat_row(flat, line, task, where))
    return rows


def load_rows(path: Path, task: str = "auto") -> list[PredRow]:
    """Read a predictions JSONL file (any of the three forms above) into flat rows.

    ``task``: ``auto`` (per row: the row's own ``task`` field, else the BiRD file-name tag, else
    :func:`auto_task`) or a task name (rec/roc/reg/mia, BiRD's vg/rc too) to force it for every row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"predictions file {path} does not exist; pass the JSONL written by inference"
        )
    forced = None if task == "auto" else normalise_task(task, "--task")
    hint = forced or file_task_hint(path)
    rows: list[PredRow] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{where}: not valid JSON ({error.msg}); expected one object per line"
                ) from None
            rows.extend(_parse_object(obj, number, forced, hint, where))
    return rows


def _parse_object(obj: dict, number: int, forced: str | None, hint: str | None, where: str) -> list[PredRow]:
    if not isinstance(obj, dict) or "response" not in obj:
        raise ValueError(f"{where}: expected an object with a 'response' field, found {str(obj)[:80]!r}")
    try:
        if "conversations" in obj and "turns" in obj:
            return _record_rows(obj, number, forced, where)
        if "modality" in obj and "task" in obj:
            return [_flat_row(obj, number, forced, where)]
        return [_bird_row(obj, number, hint)]
    except KeyError as error:
        raise ValueError(
            f"{where}: missing field {error.args[0]!r}; see medground.eval.rows for the accepted row forms"
        ) from None
