"""The two-stage pipeline the Encoder's threads share: every item once, in its limits, errors out.

The expected results are written here (each item's square); the Encoder-level checks that
thread counts give the same vectors are in test_encoder.py.

Interleavings are not left to the OS's thread scheduler: :class:`Scheduler` holds every step
until the test lets it go, and waits until the pipeline is settled (every thread held in a
step, idle with nothing changed since, or gone) before it looks. What a test sees is then the
same on an idle laptop and on a loaded runner.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from sse_onnx import pipeline as pipeline_module
from sse_onnx.pipeline import run_pipeline

#: How long a test waits for the pipeline to settle before it calls the pipeline stuck. Only
#: a broken pipeline waits this long: a working one settles in microseconds.
STUCK = 60.0

Step = tuple[int, int]  # (stage, item)


class Scheduler:
    """Runs :func:`run_pipeline` with each step held until :meth:`release` lets it go."""

    def __init__(self, items: int, *, threads: int, slots: tuple[int, int], ahead: int) -> None:
        self.items, self.threads, self.slots, self.ahead = items, threads, slots, ahead
        self.lock = threading.Condition()  # guards every field below
        self.held: dict[Step, threading.Event] = {}
        self.idle = 0  # threads in the pipeline's wait since its last notify_all
        self.gone = 0  # threads whose work() has returned
        self.started: list[Step] = []
        self.finished: dict[int, int] = {}
        self.failing: Step | None = None
        self.free = False  # steps run without being held
        self.pipeline: Any = None
        self.error: BaseException | None = None
        self.runner = threading.Thread(target=self._run, daemon=True)

    # -- the pipeline's side

    def _step(self, step: Step) -> None:
        gate = threading.Event()
        with self.lock:
            self.started.append(step)
            if not self.free:
                self.held[step] = gate
            self.lock.notify_all()
        if not self.free:
            gate.wait()
        if step == self.failing:
            raise KeyError("bad item")

    def prepare(self, item: int) -> tuple[int, int]:
        self._step((0, item))
        return item, item * item

    def finish(self, prepared: tuple[int, int]) -> None:
        self._step((1, prepared[0]))
        with self.lock:
            assert prepared[0] not in self.finished, "an item finished twice"
            self.finished[prepared[0]] = prepared[1]

    def _run(self) -> None:
        scheduler = self

        class Watched(threading.Condition):
            """The pipeline's condition, telling the scheduler which threads wait on it."""

            def wait(self, timeout: float | None = None) -> bool:
                with scheduler.lock:  # the pipeline's lock is held: no notify can come between
                    scheduler.idle += 1
                    scheduler.lock.notify_all()
                return super().wait(timeout)

            def notify_all(self) -> None:
                with scheduler.lock:  # every waiter wakes, and counts again if it waits again
                    scheduler.idle = 0
                super().notify_all()

        class Observed(pipeline_module._Pipeline):  # type: ignore[type-arg]
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                self.changed = Watched()
                scheduler.pipeline = self

            def work(self) -> None:
                try:
                    super().work()
                finally:
                    with scheduler.lock:
                        scheduler.gone += 1
                        scheduler.lock.notify_all()

        original = pipeline_module._Pipeline
        pipeline_module._Pipeline = Observed  # type: ignore[misc]
        try:
            run_pipeline(
                range(self.items),
                self.prepare,
                self.finish,
                threads=self.threads,
                slots=self.slots,
                ahead=self.ahead,
            )
        except BaseException as exc:
            self.error = exc
        finally:
            pipeline_module._Pipeline = original  # type: ignore[misc]

    # -- the test's side

    def settle(self) -> dict[str, Any]:
        """Wait until no thread can move without the test, and describe that state."""
        with self.lock:
            settled = self.lock.wait_for(
                lambda: len(self.held) + self.idle + self.gone == self.threads, timeout=STUCK
            )
            assert settled, f"the pipeline never settled: {self.held=} {self.idle=} {self.gone=}"
            held = sorted(self.held)
            taken = sum(stage == 0 for stage, _ in self.started)
            state = {"held": held, "idle": self.idle, "gone": self.gone, "taken": taken}
        with self.pipeline.changed:  # no thread moves now; read under the lock all the same
            state["waiting"] = len(self.pipeline.ready)
            state["failures"] = list(self.pipeline.failures)
        state["running"] = [sum(stage == s for stage, _ in held) for s in (0, 1)]
        return state

    def release(self, step: Step, *, fail: bool = False) -> None:
        with self.lock:
            if fail:
                self.failing = step
            self.held.pop(step).set()

    def release_all(self) -> None:
        """Let every held step and every later one run, and wait for the pipeline to end."""
        with self.lock:
            self.free = True
            for gate in self.held.values():
                gate.set()
            self.held.clear()
        self.runner.join(timeout=STUCK)
        assert not self.runner.is_alive(), "the pipeline did not end"

    def explore(self, choose: Callable[[list[Step]], Step]) -> list[dict[str, Any]]:
        """Run to the end, letting go one held step (``choose``'s pick) at each settled state."""
        self.runner.start()
        states = []
        while True:
            state = self.settle()
            states.append(state)
            if state["gone"] == self.threads:
                break
            self.release(choose(state["held"]))
        self.runner.join(timeout=STUCK)
        assert not self.runner.is_alive() and self.error is None, self.error
        return states

    def check_limits(self, states: Iterable[dict[str, Any]]) -> None:
        """Every settled state keeps the slots and the waiting limit, and leaves no thread
        idle while a step is due."""
        for state in states:
            running, waiting = state["running"], state["waiting"]
            assert running[0] <= self.slots[0] and running[1] <= self.slots[1], state
            # A preparation starts below `ahead` waiting; those under way may still add theirs.
            assert waiting <= self.ahead + self.slots[0] - 1, state
            if state["idle"]:
                assert not (waiting and running[1] < self.slots[1]), state
                can_prepare = state["taken"] < self.items and running[0] < self.slots[0]
                assert not (can_prepare and waiting < self.ahead), state


def oldest(held: list[Step]) -> Step:
    return min(held, key=lambda step: (step[1], step[0]))


def preparations_first(held: list[Step]) -> Step:
    return min(held)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_every_item_is_prepared_then_finished_once(threads: int) -> None:
    finished: dict[int, int] = {}
    lock = threading.Lock()

    def finish(prepared: tuple[int, int]) -> None:
        with lock:
            assert prepared[0] not in finished, "an item finished twice"
            finished[prepared[0]] = prepared[1]

    run_pipeline(range(200), lambda i: (i, i * i), finish, threads=threads, slots=(2, 2), ahead=3)
    assert finished == {i: i * i for i in range(200)}


@pytest.mark.parametrize("seed", range(5))
def test_every_interleaving_keeps_the_limits_and_no_thread_idles(seed: int) -> None:
    rng = random.Random(seed)
    scheduler = Scheduler(30, threads=4, slots=(2, 2), ahead=2)
    states = scheduler.explore(rng.choice)
    scheduler.check_limits(states)
    assert scheduler.finished == {i: i * i for i in range(30)}


def test_the_stages_overlap_within_their_slots_and_the_items_waiting() -> None:
    scheduler = Scheduler(40, threads=2, slots=(1, 1), ahead=1)
    scheduler.runner.start()
    assert scheduler.settle()["held"] == [(0, 0)]  # nothing to finish yet: the other waits
    scheduler.release((0, 0))
    state = scheduler.settle()
    assert state["held"] == [(0, 1), (1, 0)]  # one thread prepares while the other finishes
    scheduler.release((0, 1))
    state = scheduler.settle()
    # Item 1 waits for the finishing slot, and one waiting item is `ahead`: no preparation.
    assert (state["held"], state["idle"], state["waiting"]) == ([(1, 0)], 1, 1)
    scheduler.release((1, 0))
    assert scheduler.settle()["held"] == [(0, 2), (1, 1)]
    scheduler.release_all()
    assert scheduler.error is None
    assert scheduler.finished == {i: i * i for i in range(40)}


def test_more_threads_use_more_slots() -> None:
    scheduler = Scheduler(60, threads=5, slots=(2, 3), ahead=4)
    states = scheduler.explore(preparations_first)
    scheduler.check_limits(states)
    # The limits are reached, not only kept: two preparing, three finishing, 4 + 2 - 1 waiting.
    assert max(state["running"][0] for state in states) == 2
    assert max(state["running"][1] for state in states) == 3
    assert max(state["waiting"] for state in states) == 5
    assert scheduler.finished == {i: i * i for i in range(60)}


def test_no_items() -> None:
    scheduler = Scheduler(0, threads=2, slots=(1, 1), ahead=1)
    assert scheduler.explore(oldest)[-1]["gone"] == 2
    assert scheduler.finished == {}


@pytest.mark.parametrize("stage", [0, 1])
def test_the_first_error_stops_the_rest_and_is_raised(stage: int) -> None:
    scheduler = Scheduler(1000, threads=2, slots=(1, 1), ahead=1)
    scheduler.runner.start()
    while (stage, 5) not in (held := scheduler.settle()["held"]):
        scheduler.release(oldest(held))
    scheduler.release((stage, 5), fail=True)
    state = scheduler.settle()  # the failing thread has recorded its error and left
    assert len(state["failures"]) == 1 and state["gone"] == 1 and len(state["held"]) == 1
    started = list(scheduler.started)
    scheduler.release_all()  # the other thread ends its step, and starts no new one
    assert scheduler.started == started
    assert isinstance(scheduler.error, KeyError) and "bad item" in str(scheduler.error)
