"""Concurrent questions to a local grounding model, answered in shared batches.

One ``generate`` step costs about the same for one sequence as for eight on a small model (shipped
bird-nano, CPU: 128 new tokens take 0.24 s for one question, about 0.5 s for eight at once) and on a
GPU, so a server that answered its clients one at a time would waste most of the model's throughput.
:class:`BatchingGrounder` stands where the :class:`~medground.mllm.grounder.Grounder` stands in the app:
each request is encoded in its own thread (decode, resize, tokenize: work that runs in parallel), then
one worker thread, the only one that calls the model, answers whatever is waiting together, up to
``max_batch`` questions per ``generate``. A streamed answer (``on_text``) runs alone, in its turn.
A question whose ``cancelled`` event is set (its client left) is dropped if it still waits, and its row
stops generating at the next step if it runs (:class:`_StopCancelled`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

from medground.mllm.grounder import Answer, EncodedQuestion, Grounder
from medground.types import Box

__all__ = ["BatchingGrounder", "ClientGoneError"]


class ClientGoneError(Exception):
    """A question was given up because its client left (the app answers 499, to no one)."""


@dataclass
class _Job:
    question: EncodedQuestion
    on_text: Callable[[str], None] | None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: Answer | Exception | None = None


class _StopCancelled(StoppingCriteria):
    """``generate`` stops the rows of the jobs whose client left (per row: (batch,) bool)."""

    def __init__(self, jobs: list[_Job]) -> None:
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        stop = [job.cancelled.is_set() for job in self.jobs]
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


class BatchingGrounder:
    """A :class:`~medground.mllm.grounder.Grounder` whose concurrent :meth:`ask` calls share batches.

    ``max_concurrent`` (= ``max_batch``) tells the app's gate how many calls to let in at once.
    Answers equal the grounder's own, one question at a time (left-padded batches; tested).
    """

    def __init__(self, grounder: Grounder, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.grounder, self.max_concurrent = grounder, max_batch
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="medground-batches", daemon=True)
        self._worker.start()

    def prompt(
        self, question: str, box: Box | list[int] | tuple[int, ...] | None, width: int, height: int
    ) -> str:
        """The grounder's :meth:`~medground.mllm.grounder.Grounder.prompt`."""
        return self.grounder.prompt(question, box, width, height)

    def ask(
        self,
        image: str | Path | np.ndarray | Image.Image,
        question: str,
        box: Box | list[int] | tuple[int, ...] | None = None,
        history: Sequence[tuple[str, str]] = (),
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Answer:
        """:meth:`Grounder.ask <medground.mllm.grounder.Grounder.ask>`, answered in the next batch
        (``on_text`` is called from the worker thread). Raises what the grounder raises, and
        :class:`ClientGoneError` when ``cancelled`` was set before the answer was complete."""
        job = _Job(
            self.grounder.encode(image, question, box, history), on_text, cancelled or threading.Event()
        )
        self._jobs.put(job)
        job.done.wait()
        if job.cancelled.is_set():
            raise ClientGoneError("the client left before the answer was complete")
        if isinstance(job.result, Exception):
            raise job.result
        return job.result

    def _take(self, block: bool) -> _Job | None:
        """The next waiting job whose client is still there (those that left are answered ``done``)."""
        while True:
            try:
                job = self._jobs.get(block)
            except queue.Empty:
                return None
            if not job.cancelled.is_set():
                return job
            job.done.set()

    def _next_batch(self, held: _Job | None) -> tuple[list[_Job], _Job | None]:
        """The jobs to answer together, and a streamed job taken from the queue that must wait its turn."""
        first = held or self._take(block=True)
        if first.on_text is not None:
            return [first], None
        batch = [first]
        while len(batch) < self.max_concurrent:
            job = self._take(block=False)
            if job is None:
                break
            if job.on_text is not None:
                return batch, job
            batch.append(job)
        return batch, None

    def _serve(self) -> None:
        held: _Job | None = None
        while True:
            batch, held = self._next_batch(held)
            try:
                stop = StoppingCriteriaList([_StopCancelled(batch)])
                results: list = self.grounder.answer(
                    [j.question for j in batch], on_text=batch[0].on_text, stopping_criteria=stop
                )
            except Exception as error:  # handed to every caller of the batch
                results = [error] * len(batch)
            for job, result in zip(batch, results, strict=True):
                job.result = result
                job.done.set()
