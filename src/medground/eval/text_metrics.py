"""Caption metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr; one reference per item.

Java: the PTB tokenizer (Stanford CoreNLP 3.4.1) and METEOR 1.5 run as Java programs. BLEU, ROUGE-L
and CIDEr are pure Python, so without Java they still run on :func:`simple_tokenize` output;
METEOR is then skipped and the skip is reported, never replaced by a guess. SPICE is never run (it
downloads Stanford CoreNLP 3.6.0 at run time).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from dataclasses import dataclass, field

__all__ = [
    "TEXT_METRICS",
    "CaptionScorer",
    "TextScores",
    "caption_scores",
    "java_available",
    "ptb_tokenize",
    "simple_tokenize",
    "tokenize",
]

TEXT_METRICS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE_NOTE = "SPICE not computed: pycocoevalcap's SPICE downloads Stanford CoreNLP 3.6.0 at run time"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def java_available() -> bool:
    """True when a ``java`` executable is on PATH (needed by the PTB tokenizer and METEOR)."""
    return shutil.which("java") is not None


@dataclass
class TextScores:
    """Corpus scores by metric name, per-item scores (ROUGE_L, METEOR) and metrics skipped with reasons."""

    scores: dict[str, float] = field(default_factory=dict)
    per_item: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    tokenizer: str = "ptb"


def simple_tokenize(text: str) -> str:
    """Java-free tokenizer: lower-case words and numbers (``[a-z0-9]+``, keeping ``'s``), space-joined."""
    return " ".join(_WORD.findall(text.lower()))


def ptb_tokenize(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer (Java) on each text: lower-cased, punctuation tokens removed."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not texts:
        return []
    keyed = {i: [{"caption": text}] for i, text in enumerate(texts)}
    with contextlib.redirect_stdout(io.StringIO()):
        out = PTBTokenizer().tokenize(keyed)
    return [out.get(i, [""])[0] for i in range(len(texts))]


def tokenize(texts: list[str], tokenizer: str) -> list[str]:
    """Tokenize every text with ``"ptb"`` (Java, one JVM call for all) or ``"simple"``."""
    if tokenizer == "ptb":
        return ptb_tokenize(texts)
    if tokenizer == "simple":
        return [simple_tokenize(t) for t in texts]
    raise ValueError(f"unknown tokenizer {tokenizer!r}; expected 'ptb' or 'simple'")


class CaptionScorer:
    """Scores many subsets with one METEOR process; use as a context manager (closes the process).

    tokenizer: ``"ptb"`` (Java, BiRD's setting) or ``"simple"`` (no Java). meteor: run METEOR (Java).
    Java-dependent metrics are skipped with a reason when Java is absent.
    """

    def __init__(self, tokenizer: str = "ptb", meteor: bool = True) -> None:
        self.tokenizer, self.meteor, self.java = tokenizer, meteor, java_available()
        self._meteor = None

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._meteor = None  # pycocoevalcap's Meteor.__del__ stops the Java process

    def score(self, references: list[str], candidates: list[str], pretokenized: bool = False) -> TextScores:
        """Corpus scores of candidates against references (item i with item i), as COCOEvalCap.

        CIDEr's IDF comes from the references given here, so call once per subset (e.g. modality).
        pretokenized: the texts already went through :func:`tokenize` with this scorer's tokenizer.
        """
        if len(references) != len(candidates):
            raise ValueError(
                f"{len(references)} references but {len(candidates)} candidates; they must pair up"
            )
        result = TextScores(tokenizer=self.tokenizer)
        if not references:
            return result
        if self.tokenizer == "ptb" and not self.java:
            result.skipped = {m: "Java not found (the PTB tokenizer needs it)" for m in TEXT_METRICS}
            return result
        if not pretokenized:
            both = tokenize(list(references) + list(candidates), self.tokenizer)
            references, candidates = both[: len(references)], both[len(references) :]
        gts = {i: [r] for i, r in enumerate(references)}
        res = {i: [c] for i, c in enumerate(candidates)}
        _python_scores(gts, res, result)
        if not self.meteor:
            result.skipped["METEOR"] = "METEOR not requested"
        elif not self.java:
            result.skipped["METEOR"] = "Java not found (METEOR 1.5 is a Java program)"
        else:
            self._run_meteor(gts, res, result)
        result.scores = {m: result.scores[m] for m in TEXT_METRICS if m in result.scores}
        return result

    def _run_meteor(self, gts: dict, res: dict, result: TextScores) -> None:
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        score, items = self._meteor.compute_score(gts, res)
        result.scores["METEOR"] = float(score)
        result.per_item["METEOR"] = [float(v) for v in items]


def caption_scores(
    references: list[str], candidates: list[str], tokenizer: str = "ptb", meteor: bool = True
) -> TextScores:
    """One-off :meth:`CaptionScorer.score` (starts and stops its own METEOR process)."""
    with CaptionScorer(tokenizer, meteor) as scorer:
        return scorer.score(references, candidates)


def _python_scores(gts: dict, res: dict, result: TextScores) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    for n, value in enumerate(bleu, start=1):
        result.scores[f"Bleu_{n}"] = float(value)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    result.scores["ROUGE_L"] = float(rouge)
    result.per_item["ROUGE_L"] = [float(v) for v in rouge_items]
    cider, _ = Cider().compute_score(gts, res)
    result.scores["CIDEr"] = float(cider)
