"""The web folder in Node and in a real browser, beside Python: same ids, same vectors, speed.

Embeds the adversarial set and the SciFact queries, and times SciFact documents (texts per
second, batches of 32 after a warm-up) and single queries (the median over queries of the
mean of ten one-text calls each), with

- the Python ``sse_onnx.Encoder`` on the folder (onnxruntime's CPU provider, one thread);
- ``sse-onnx.mjs`` in Node on onnxruntime-node and on onnxruntime-web (WebAssembly, one
  thread), through ``web/node_run.mjs``;
- ``sse-onnx.mjs`` in headless Chromium on onnxruntime-web (WebAssembly, one thread), on a page
  (``web/embed.html``) served from 127.0.0.1, driven over the DevTools protocol on a pipe.
- INTEGRATION.md's web worker (``web/embed-worker.mjs``) in Chromium, whose vectors must be
  the page's.

Every run's ids must equal HF's and its vectors the Python Encoder's within 1e-5, and
Chromium's must equal Node's onnxruntime-web results; a mismatch exits with status 1. With
``--screenshot`` it also renders the search demo (``web/demo.html``: a few hundred SciFact
abstracts embedded in the page, a query box) into a PNG. Usage::

    sse-export --dim 256 --variants int8 --target web --output sse-web
    (cd tests/web && npm ci --ignore-scripts)
    python bench/web.py --folder sse-web --screenshot bench/results/web_demo.png

Writes ``web.json`` and ``web.md`` into ``--out`` (default bench/results).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
PAGES = Path(__file__).resolve().parent / "web"
TOLERANCE = 1e-5
#: Calls per query timed (as web/run.mjs does: browsers coarsen their clock to 0.1 ms).
REPEATS = 10
DEMO_DOCS = 300
DEMO_QUERY = "Do statins lower the risk of heart attacks?"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, executable: str, timeout: float = 600.0) -> None:
        self._profile = tempfile.mkdtemp(prefix="sse-chromium-")
        to_browser, self._writer = os.pipe()
        self._reader, from_browser = os.pipe()

        def plumb() -> None:  # in the child: the pipe ends where Chromium expects them
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            preexec_fn=plumb,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._timeout = timeout
        self._buffer = b""
        self._next_id = 0
        self.version = self.send("Browser.getVersion")["product"]

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command and return its result (events on the way are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._writer, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._reader], [], [], left)[0]:
                    raise TimeoutError(f"Chromium did not answer {method} in {self._timeout} s")
                chunk = os.read(self._reader, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited while running {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str, width: int = 1000, height: int = 800) -> str:
        """Open ``url`` in a new tab; returns the session id of the tab."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session: str = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        self.send("Page.navigate", {"url": url}, session)
        return session

    def wait_done(self, session: str) -> Any:
        """The value ``window.done`` (a promise the page sets) resolves to."""
        expression = (
            "new Promise((ok) => { const poll = () => window.done ? ok(window.done) : "
            "setTimeout(poll, 50); poll(); })"
        )
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"the page failed: {reply['exceptionDetails']}")
        return reply["result"]["value"]

    def screenshot(self, session: str, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._writer)
        os.close(self._reader)
        shutil.rmtree(self._profile, ignore_errors=True)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def guess_type(self, path: str | os.PathLike[str]) -> str:
            types = {".mjs": "text/javascript", ".wasm": "application/wasm"}
            return types.get(Path(path).suffix) or super().guess_type(path)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def load_texts(data: Path, smoke: bool) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """SciFact queries, documents ("title text") and the demo's abstracts; empty without data."""
    scifact = data / "retrieval" / "scifact"
    if not scifact.is_dir():
        return [], [], []
    with (scifact / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in handle]
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle]
    docs = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in corpus]
    demo = [{"title": d.get("title", ""), "text": d.get("text", "")} for d in corpus[:DEMO_DOCS]]
    if smoke:
        queries, docs = queries[:50], docs[:300]
    return queries, docs, demo


def python_run(
    folder: Path, texts: list[str], docs: list[str], queries: list[str]
) -> dict[str, Any]:
    """The Python Encoder, measured as run.mjs measures the JavaScript one."""
    from sse_onnx import Encoder

    started = time.perf_counter()
    encoder = Encoder(folder, threads=1)
    load_ms = (time.perf_counter() - started) * 1e3
    embeddings = encoder.encode(texts, show_progress_bar=False)
    docs_per_second = None
    if docs:
        encoder.encode(docs[:64], show_progress_bar=False)
        t0 = time.perf_counter()
        encoder.encode(docs, show_progress_bar=False)
        docs_per_second = len(docs) / (time.perf_counter() - t0)
    p50 = None
    if queries:
        for query in queries[:20]:
            encoder.encode(query)
        times = []
        for query in queries:
            t0 = time.perf_counter()
            for _ in range(REPEATS):
                encoder.encode(query)
            times.append((time.perf_counter() - t0) * 1e3 / REPEATS)
        p50 = statistics.median_low(times)
    return {
        "embeddings": embeddings.tolist(),
        "loadMs": load_ms,
        "docsPerSecond": docs_per_second,
        "queryP50Ms": p50,
        "version": ort.__version__,
    }


def check(name: str, run: dict[str, Any], ids: list[list[int]], reference: np.ndarray) -> float:
    """Raise if ``run``'s ids differ from HF's; return the max abs diff from ``reference``."""
    if "ids" in run and run["ids"] != ids:
        bad = sum(a != b for a, b in zip(run["ids"], ids, strict=True))
        raise SystemExit(f"{name}: ids of {bad} texts differ from HF's")
    return float(np.abs(np.asarray(run["embeddings"]) - reference).max())


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, out=harness.RESULTS, data=True)
    parser.add_argument("--folder", type=Path, required=True, help="a web folder")
    parser.add_argument("--packages", type=Path, default=ROOT / "tests" / "web",
                        help="folder whose node_modules holds onnxruntime-node/-web")  # fmt: skip
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--screenshot", type=Path, help="write the search demo's PNG here")
    parser.add_argument("--smoke", action="store_true", help="50 queries, 300 documents")
    args = parser.parse_args(argv)

    from sse_export.adversarial import adversarial_texts

    queries, docs, demo = load_texts(harness.data_dir(args.data), args.smoke)
    texts = [text for _, text in adversarial_texts()] + queries
    tokenizer = Tokenizer.from_file(str(args.folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    job = {"texts": texts, "docs": docs, "queries": queries}
    runs: dict[str, dict[str, Any]] = {"python": python_run(args.folder, texts, docs, queries)}
    reference = np.asarray(runs["python"]["embeddings"])

    with tempfile.TemporaryDirectory(prefix="sse-web-bench-") as tmp:
        root = Path(tmp)
        (root / "job.json").write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        (root / "demo_docs.json").write_text(json.dumps(demo, ensure_ascii=False), "utf-8")
        os.symlink(args.folder.resolve(), root / "sse-web")
        dist = args.packages.resolve() / "node_modules" / "onnxruntime-web" / "dist"
        os.symlink(dist, root / "ort")
        for page in PAGES.iterdir():
            shutil.copyfile(page, root / page.name)
        for runtime in ("onnxruntime-node", "onnxruntime-web"):
            out = root / f"{runtime}.json"
            subprocess.run(
                ["node", str(PAGES / "node_run.mjs"), str(args.packages.resolve()), runtime,
                 str(args.folder.resolve()), str(root / "job.json"), str(out)],
                check=True,
            )  # fmt: skip
            runs[f"node {runtime}"] = json.loads(out.read_text(encoding="utf-8"))
        browser = Chromium(args.chromium)
        try:
            with serve(root) as base:
                runs["chromium onnxruntime-web"] = browser.wait_done(
                    browser.open(f"{base}/embed.html")
                )
                runs["chromium onnxruntime-web"]["version"] = runs["chromium onnxruntime-web"][
                    "ortVersion"
                ]
                worker = browser.wait_done(browser.open(f"{base}/worker.html"))
                if args.screenshot and demo:
                    from urllib.parse import quote

                    tab = browser.open(f"{base}/demo.html?q={quote(DEMO_QUERY)}", 900, 600)
                    browser.wait_done(tab)
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    browser.screenshot(tab, args.screenshot)
        finally:
            chromium_version = browser.version
            browser.close()

    diffs = {name: check(name, run, ids, reference) for name, run in runs.items()}
    chromium, node_web = runs["chromium onnxruntime-web"], runs["node onnxruntime-web"]
    browser_vs_node = float(
        np.abs(np.asarray(chromium["embeddings"]) - np.asarray(node_web["embeddings"])).max()
    )
    summary = {
        "texts": len(texts),
        "docs": len(docs),
        "queries": len(queries),
        "chromium": chromium_version,
        "node": runs["node onnxruntime-node"]["node"],
        "cpu": harness.cpu_name(),
        "browser_vs_node_web_max_abs_diff": browser_vs_node,
        "browser_ids_equal_node_ids": chromium["ids"] == node_web["ids"],
        "worker_equals_page": worker["embeddings"] == chromium["embeddings"],
        "runs": {
            name: {
                "version": run.get("version"),
                "max_abs_diff_vs_python": diffs[name],
                "load_ms": run["loadMs"],
                "docs_per_second": run["docsPerSecond"],
                "query_p50_ms": run["queryP50Ms"],
            }
            for name, run in runs.items()
        },
    }
    harness.write_results(args.out, "web", summary, markdown(summary))
    print(markdown(summary))
    failed = [name for name, diff in diffs.items() if diff > TOLERANCE]
    if (
        failed
        or browser_vs_node > TOLERANCE
        or not summary["browser_ids_equal_node_ids"]
        or not summary["worker_equals_page"]
    ):
        print(f"MISMATCH: {failed or 'Chromium vs Node'}", file=sys.stderr)
        return 1
    return 0


def markdown(summary: dict[str, Any]) -> str:
    """The results as a markdown table."""

    def number(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:,.{digits}f}"

    rows = "\n".join(
        f"| {name} | {run['version']} | {run['max_abs_diff_vs_python']:.1e} | "
        f"{number(run['load_ms'], 0)} | {number(run['docs_per_second'], 0)} | "
        f"{number(run['query_p50_ms'], 3)} |"
        for name, run in summary["runs"].items()
    )
    return (
        f"{summary['texts']} texts compared (the adversarial set and the SciFact queries); "
        f"{summary['docs']} SciFact documents timed in batches of 32, {summary['queries']} "
        f"queries one at a time; one thread everywhere. {summary['chromium']}, Node "
        f"{summary['node']}, CPU {summary['cpu']}. Token ids equal HF's in every run; Chromium "
        f"vs Node (both onnxruntime-web): max abs diff "
        f"{summary['browser_vs_node_web_max_abs_diff']:.1e}; INTEGRATION.md's web worker gives "
        f"the page's vectors: {summary['worker_equals_page']}.\n\n"
        "| run | onnxruntime | max abs diff vs Python | load ms | docs/s | one query p50 ms |\n"
        "|---|---|---|---|---|---|\n"
        f"{rows}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
