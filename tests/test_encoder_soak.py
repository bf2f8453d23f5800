"""Soak: one Encoder called from 8 threads at once, round after round, over the SciFact corpus.

Every result must equal, bit for bit, a sequential call on the same texts. The corpus (5,183
documents, ``title + " " + text``) is cut into 8 slices of uneven sizes, two above
``PARALLEL_TEXTS`` (so those calls run on the Encoder's own threads as well) and six below (run
on the calling thread alone). In each of the 10 rounds the 8 threads start together and thread
``t`` encodes slice ``(t + round) % 8``: each round embeds the whole corpus once, every slice
from a different thread each round: about 7 s in all on 2 cores. Encoding the whole corpus in
each of 8 threads for 10 rounds would take about 8 times longer for little more coverage: the
threads contend on the same Encoder either way.
"""

from __future__ import annotations

import itertools
import json
import threading

import numpy as np
import numpy.typing as npt
import pytest

from conftest import EVAL_DATA
from sse_onnx import Encoder
from sse_onnx.encoder import PARALLEL_TEXTS

SCIFACT = EVAL_DATA / "retrieval" / "scifact" / "corpus.jsonl"
THREADS = 8
ROUNDS = 10
#: Slice sizes; the last slice takes the rest of the corpus.
SIZES = (1500, 1200, 700, 600, 500, 400, 200)


@pytest.mark.skipif(not SCIFACT.is_file(), reason=f"SciFact not found at {SCIFACT}")
def test_eight_threads_for_ten_rounds_equal_sequential_calls() -> None:
    docs = [json.loads(line) for line in SCIFACT.read_text(encoding="utf-8").splitlines()]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    cuts = np.cumsum((0, *SIZES, len(texts) - sum(SIZES)))
    slices = [texts[a:b] for a, b in itertools.pairwise(cuts)]
    assert len(slices) == THREADS and sum(len(s) >= PARALLEL_TEXTS for s in slices) == 2
    encoder = Encoder()  # threads: every usable core
    expected = [encoder.encode(part) for part in slices]  # sequential, one call at a time

    results: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(thread: int, round_: int) -> None:
        try:
            start.wait()
            part = (thread + round_) % THREADS
            results[round_, part] = encoder.encode(slices[part])
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    for round_ in range(ROUNDS):
        threads = [threading.Thread(target=work, args=(t, round_)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures[0]

    assert len(results) == ROUNDS * THREADS
    for (round_, part), vectors in sorted(results.items()):
        assert vectors.shape == expected[part].shape, (round_, part)
        message = f"round {round_}, slice {part}"
        np.testing.assert_array_equal(vectors, expected[part], err_msg=message)
