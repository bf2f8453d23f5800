"""A 50 MB text embeds with bounded memory and the exact result.

The text repeats one paragraph with spaces between copies, so its token ids are the paragraph's
ids repeated and its mean is the paragraph's mean: the reference is computed on the paragraph.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from conftest import l2, numpy_sse

PARAGRAPH = (
    "Static embeddings map each token to a vector; the text is the mean. Café, naïve, 東京, "
    "https://example.com/x?y=1 and ☃ unknowns stay in the bag! Numbers 3.14 and code f(x)."
)
TARGET_BYTES = 50_000_000
#: Growth of the peak RSS that encoding the 50 MB text may cause. Measured: 243 MiB, about two
#: copies of its 16.2 million token ids as int64 (124 MiB each); never a copy per chunk.
MAX_GROWTH = 256 << 20

SCRIPT = """
import json, sys
from sse_onnx import Encoder

def peak_rss():
    # VmHWM is this process's own peak: ru_maxrss keeps the peak of the parent it was forked
    # from (pytest's, often larger than anything measured here).
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

folder, paragraph, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
encoder = Encoder(folder)
text = " ".join([paragraph] * (target // (len(paragraph.encode()) + 1) + 1))
peak_before = peak_rss()
embedding = encoder.encode(text, normalize_embeddings=False)
peak = peak_rss()
print(json.dumps({"bytes": len(text.encode()), "peak_before": peak_before, "peak": peak,
                  "embedding": embedding.tolist()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_50mb_text_bounded_memory_exact_result(
    bert_checkpoint: Path,
    bert_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    folder = exported(bert_checkpoint, 64)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), PARAGRAPH, str(TARGET_BYTES)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["bytes"] >= TARGET_BYTES
    # What encode adds to the largest RSS the process had before it (the model and the text).
    growth = result["peak"] - result["peak_before"]
    assert growth < MAX_GROWTH, (
        f"encode raised the peak RSS by {growth / 2**20:.0f} MiB over the "
        f"{result['peak_before'] / 2**20:.0f} MiB before it (bound {MAX_GROWTH >> 20} MiB)"
    )
    expected = numpy_sse(bert_tensors, bert_checkpoint / "tokenizer.json", [PARAGRAPH], 64)[0]
    got = np.array(result["embedding"])
    assert np.abs(l2(got) - l2(expected)).max() <= 1e-4
