"""A two-stage pipeline on a few threads: each item is prepared, then finished, by any thread.

:class:`~sse_onnx.encoder.Encoder` tokenizes a block of texts (first stage), then makes its
graph calls (second stage). Both let go of the GIL for most of their time, so two threads
overlap them; but a thread that has tokenized a block and waits for its turn at the graph
leaves a core idle, and two graph calls at once double onnxruntime's buffers. Here every
thread takes whichever step is due: finishing a prepared item when a second-stage slot is
free, else preparing the next item when a first-stage slot is free and fewer than ``ahead``
prepared items wait, else it waits for one of those to change.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["run_pipeline"]

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")


class _Pipeline(Generic[Item, Prepared]):
    def __init__(
        self,
        items: Iterable[Item],
        prepare: Callable[[Item], Prepared],
        finish: Callable[[Prepared], object],
        slots: tuple[int, int],
        ahead: int,
    ) -> None:
        self.items = iter(items)
        self.prepare, self.finish = prepare, finish
        self.slots = slots
        self.free = list(slots)  # free slots of each stage
        self.ahead = ahead
        self.ready: deque[Prepared] = deque()
        self.exhausted = False  # every item has been taken
        self.failures: list[BaseException] = []
        self.changed = threading.Condition()

    def _next_step(self) -> tuple[int, object] | None:
        """The step this thread takes next (holding the lock), or ``None`` when none is left."""
        while not self.failures:
            if self.ready and self.free[1]:
                self.free[1] -= 1
                return 1, self.ready.popleft()
            if not self.exhausted and self.free[0] and len(self.ready) < self.ahead:
                try:
                    item = next(self.items)
                except StopIteration:
                    self.exhausted = True
                    continue
                self.free[0] -= 1
                return 0, item
            if self.exhausted and not self.ready and self.free[0] == self.slots[0]:
                return None  # nothing prepared, nothing being prepared: the rest is others'
            self.changed.wait()
        return None

    def work(self) -> None:
        while True:
            with self.changed:
                step = self._next_step()
                if step is None:
                    self.changed.notify_all()
                    return
            stage, value = step
            failure: BaseException | None = None
            try:
                if stage == 0:
                    prepared = self.prepare(value)  # type: ignore[arg-type]
                else:
                    self.finish(value)  # type: ignore[arg-type]
            except BaseException as exc:  # re-raised on the calling thread
                failure = exc
            with self.changed:
                if failure is not None:
                    self.failures.append(failure)
                elif stage == 0:
                    self.ready.append(prepared)
                self.free[stage] += 1
                self.changed.notify_all()
            if failure is not None:
                return


def run_pipeline(
    items: Iterable[Item],
    prepare: Callable[[Item], Prepared],
    finish: Callable[[Prepared], object],
    *,
    threads: int,
    slots: tuple[int, int],
    ahead: int,
) -> None:
    """Call ``finish(prepare(item))`` for every item, on ``threads`` threads (the calling
    thread one of them), at most ``slots[0]`` preparing and ``slots[1]`` finishing at once; a
    preparation starts only while fewer than ``ahead`` prepared items wait. The first
    exception raised in a step stops the others from starting new steps and is raised here.
    """
    pipeline: _Pipeline[Item, Prepared] = _Pipeline(items, prepare, finish, slots, ahead)
    helpers = [threading.Thread(target=pipeline.work, daemon=True) for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    pipeline.work()
    for helper in helpers:
        helper.join()
    if pipeline.failures:
        raise pipeline.failures[0]
