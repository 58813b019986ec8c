"""The server's batching of grounding questions: questions waiting together share one ``generate``,
each gets the answer it gets alone, a streamed answer runs alone in its turn, and errors reach their
callers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from medground.serve.batching import BatchingGrounder, ClientGoneError

from .conftest import CXR, SAMPLE

CT = SAMPLE / "sa_med2d_demo_ct" / "images"
MR = SAMPLE / "brats2021_flair_mr" / "images"
ASKED = [
    (CXR, "Where are both lungs?"),
    (CT / "amos_0004_75.png", "Where is the liver?"),
    (MR / "BraTS2021_01646_z053.png", "Where is the tumor?"),
    (CT / "s0114_111.png", "Where is the liver?"),
    (CXR.with_name("CHNCXR_0002_0.png"), "Where are both lungs?"),
    (MR / "BraTS2021_01646_z065.png", "Where is the tumor?"),
]


class _Held:
    """Wraps the grounder's ``answer``: records each batch's size and holds the first batch until
    released, so the test can queue the next questions in a known order."""

    def __init__(self, grounder, monkeypatch) -> None:
        self.sizes: list[int] = []
        self.release, self.fail = threading.Event(), False
        real = grounder.answer

        def answer(questions, segment=False, on_text=None, stopping_criteria=None):
            self.sizes.append(len(questions))
            if len(self.sizes) == 1:
                assert self.release.wait(60)
            if self.fail:
                raise RuntimeError("model failed")
            return real(questions, segment, on_text, stopping_criteria)

        monkeypatch.setattr(grounder, "answer", answer)


def _queue_in_order(batcher: BatchingGrounder, pool: ThreadPoolExecutor, calls) -> list:
    """Submit ``calls`` one by one, each after the one before is in the batcher's queue."""
    futures = []
    for call in calls:
        waiting = batcher._jobs.qsize()
        futures.append(pool.submit(call))
        deadline = time.monotonic() + 30
        while batcher._jobs.qsize() == waiting:
            assert time.monotonic() < deadline, "a question never reached the queue"
            time.sleep(0.005)
    return futures


def test_waiting_questions_share_batches_and_get_the_answers_given_alone(models, monkeypatch):
    grounder, _ = models
    alone = [grounder.ask(image, question) for image, question in ASKED]
    assert len({a.text for a in alone}) >= 4  # different questions, different answers
    held = _Held(grounder, monkeypatch)
    batcher = BatchingGrounder(grounder, max_batch=4)
    pieces: list[str] = []
    with ThreadPoolExecutor(9) as pool:  # a thread for each of the 9 questions in flight
        first = pool.submit(batcher.ask, *ASKED[0])
        deadline = time.monotonic() + 30
        while not held.sizes:  # the worker holds the first question's batch
            assert time.monotonic() < deadline
            time.sleep(0.005)
        calls = [
            lambda: batcher.ask(*ASKED[1]),
            lambda: batcher.ask(*ASKED[2]),
            lambda: batcher.ask(*ASKED[3], on_text=pieces.append),  # streamed: alone, in its turn
            *[lambda a=a: batcher.ask(*a) for a in ASKED[1:]],
        ]
        rest = _queue_in_order(batcher, pool, calls)
        held.release.set()
        answers = [first.result(60), *[f.result(60) for f in rest]]
    # first alone; two before the streamed question; it alone; then the last five in batches of 4 and 1
    assert held.sizes == [1, 2, 1, 4, 1]
    assert answers == [alone[0], alone[1], alone[2], alone[3], *alone[1:]]
    assert "".join(pieces) == alone[3].text


def test_errors_reach_every_caller_of_their_batch_and_bad_boxes_never_queue(models, monkeypatch):
    grounder, _ = models
    held = _Held(grounder, monkeypatch)
    batcher = BatchingGrounder(grounder, max_batch=8)
    with pytest.raises(ValueError, match="outside"):
        batcher.ask(CXR, "What is at {box}?", [0, 0, 5000, 10])
    assert batcher._jobs.qsize() == 0 and held.sizes == []
    held.fail = True
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.ask, *ASKED[0])
        while not held.sizes:
            time.sleep(0.005)
        rest = _queue_in_order(batcher, pool, [lambda a=a: batcher.ask(*a) for a in ASKED[1:4]])
        held.release.set()
        for future in [first, *rest]:
            with pytest.raises(RuntimeError, match="model failed"):
                future.result(60)
    assert held.sizes == [1, 3]
    held.fail = False
    assert batcher.ask(*ASKED[2]) == grounder.ask(*ASKED[2])  # the worker lives on


def test_max_batch_must_be_positive(models):
    with pytest.raises(ValueError, match="max_batch"):
        BatchingGrounder(models[0], max_batch=0)


def test_a_question_whose_client_left_is_dropped_while_waiting_and_stopped_while_running(models, monkeypatch):
    grounder, _ = models
    whole, third = grounder.ask(*ASKED[0]).text, grounder.ask(*ASKED[2])
    batcher = BatchingGrounder(grounder, max_batch=4)
    left, pieces = threading.Event(), []

    def leave_after_first_piece(piece: str) -> None:
        pieces.append(piece)
        left.set()

    with pytest.raises(ClientGoneError):  # running: its row stops at the next generate step
        batcher.ask(*ASKED[0], on_text=leave_after_first_piece, cancelled=left)
    assert whole.startswith("".join(pieces)) and len(pieces) <= 2 and len("".join(pieces)) < len(whole)
    held = _Held(grounder, monkeypatch)
    gone = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.ask, *ASKED[0])
        while not held.sizes:
            time.sleep(0.005)
        calls = [lambda: batcher.ask(*ASKED[1], cancelled=gone), lambda: batcher.ask(*ASKED[2])]
        waiting, other = _queue_in_order(batcher, pool, calls)
        gone.set()  # its client leaves while it waits: it never reaches the model
        held.release.set()
        with pytest.raises(ClientGoneError):
            waiting.result(60)
        assert other.result(60) == third
        assert first.result(60).text == whole
    assert held.sizes == [1, 1]
