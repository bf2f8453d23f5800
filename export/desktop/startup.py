"""Start-up time of a built sse-demo bundle: fresh processes, empty environment, three lines in.

Warm runs find the bundle in the page cache; with ``--drop-caches`` (root, Linux) the cache is
dropped before each of the cold runs, as after a reboot. Prints median, min and max.

Example::

    python export/desktop/startup.py dist/sse-demo/sse-demo --drop-caches
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SAMPLE = b"how fast are static embeddings?\nThe cat sat on the mat.\nStatic embeddings are fast.\n"


def run_once(exe: Path, cwd: str) -> float:
    """Seconds from starting the bundle to its exit."""
    start = time.perf_counter()
    subprocess.run(
        [str(exe)], input=SAMPLE, env={"PATH": "/usr/bin:/bin"}, cwd=cwd, check=True,
        capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def summary(label: str, times: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}, {len(times)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exe", type=Path, help="the bundle's executable")
    parser.add_argument("--runs", type=int, default=10, help="warm runs (cold: half as many)")
    parser.add_argument("--drop-caches", action="store_true", help="also time cold runs (root)")
    args = parser.parse_args()
    exe = args.exe.resolve()
    with tempfile.TemporaryDirectory() as outside:  # away from the repository
        run_once(exe, outside)
        print(summary("warm", [run_once(exe, outside) for _ in range(args.runs)]))
        if args.drop_caches:
            cold = []
            for _ in range(max(1, args.runs // 2)):
                drop_page_cache()
                cold.append(run_once(exe, outside))
            print(summary("cold", cold))


if __name__ == "__main__":
    main()
