"""The two-stage pipeline the Encoder's threads share: every item once, in its limits, errors out.

The expected results are written here (each item's square); the Encoder-level checks that
thread counts give the same vectors are in test_encoder.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from sse_onnx.pipeline import run_pipeline


class Recorder:
    """Counts the steps under way, and the most of each kind at once."""

    def __init__(self, pause: float = 0.0, finish_pause: float | None = None) -> None:
        self.lock = threading.Lock()
        self.pause = pause
        self.finish_pause = pause if finish_pause is None else finish_pause
        self.running = [0, 0]
        self.most = [0, 0]
        self.both = False  # a preparation and a finish were once under way together
        self.waiting = 0  # prepared, not yet being finished
        self.most_waiting = 0
        self.finished: dict[int, int] = {}

    def _enter(self, stage: int) -> None:
        with self.lock:
            self.running[stage] += 1
            self.most[stage] = max(self.most[stage], self.running[stage])
            self.both = self.both or all(self.running)
            if stage == 1:
                self.waiting -= 1

    def _leave(self, stage: int) -> None:
        with self.lock:
            self.running[stage] -= 1
            if stage == 0:
                self.waiting += 1
                self.most_waiting = max(self.most_waiting, self.waiting)

    def prepare(self, item: int) -> tuple[int, int]:
        self._enter(0)
        time.sleep(self.pause)
        self._leave(0)
        return item, item * item

    def finish(self, prepared: tuple[int, int]) -> None:
        self._enter(1)
        time.sleep(self.finish_pause)
        with self.lock:
            assert prepared[0] not in self.finished, "an item finished twice"
            self.finished[prepared[0]] = prepared[1]
        self._leave(1)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_every_item_is_prepared_then_finished_once(threads: int) -> None:
    recorder = Recorder()
    run_pipeline(
        range(200), recorder.prepare, recorder.finish, threads=threads, slots=(2, 2), ahead=3
    )
    assert recorder.finished == {i: i * i for i in range(200)}


def test_the_stages_overlap_within_their_slots_and_the_items_waiting() -> None:
    recorder = Recorder(pause=0.0005, finish_pause=0.003)  # items would pile up
    run_pipeline(range(40), recorder.prepare, recorder.finish, threads=2, slots=(1, 1), ahead=1)
    assert recorder.finished == {i: i * i for i in range(40)}
    assert recorder.most == [1, 1]
    assert recorder.both  # one thread prepared while the other finished
    assert recorder.most_waiting <= 1


def test_more_threads_use_more_slots() -> None:
    recorder = Recorder(pause=0.0005, finish_pause=0.003)
    run_pipeline(range(60), recorder.prepare, recorder.finish, threads=5, slots=(2, 3), ahead=4)
    assert recorder.most[0] <= 2 and 2 <= recorder.most[1] <= 3
    assert recorder.most_waiting <= 4 + 2 - 1  # two preparations started below 4 waiting


def test_no_items() -> None:
    recorder = Recorder()
    run_pipeline([], recorder.prepare, recorder.finish, threads=2, slots=(1, 1), ahead=1)
    assert recorder.finished == {}


@pytest.mark.parametrize("stage", [0, 1])
def test_the_first_error_stops_the_rest_and_is_raised(stage: int) -> None:
    started: list[int] = []

    def prepare(item: int) -> int:
        started.append(item)
        if stage == 0 and item == 5:
            raise KeyError("bad item")
        time.sleep(0.001)
        return item

    def finish(item: int) -> None:
        if stage == 1 and item == 5:
            raise KeyError("bad item")

    with pytest.raises(KeyError, match="bad item"):
        run_pipeline(range(1000), prepare, finish, threads=2, slots=(1, 1), ahead=1)
    assert len(started) < 20  # no new step after the failure was seen
