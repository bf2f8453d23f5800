"""sse_onnx.corpus on a local Ray with 2 workers: the vectors of one ``Encoder().encode`` call,
in input order with their ids, through a killed worker; errors; the sse-embed command.

One Ray instance serves the module (starting Ray takes seconds). Every expected vector comes
from a single-process ``Encoder`` on the same texts; int8 buckets and binary bits are restated
here with numpy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tokenizers import Tokenizer

from conftest import EVAL_DATA

ray = pytest.importorskip("ray", reason="needs the scale extra: pip install -e '.[scale]'")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from sse_onnx import CorpusError, Encoder, shards  # noqa: E402
from sse_onnx import corpus as corpus_module  # noqa: E402
from sse_onnx.corpus import METADATA_KEY, CorpusEmbedder, embed_corpus  # noqa: E402
from sse_onnx.embed_cli import main  # noqa: E402
from sse_onnx.embeddings import quantize  # noqa: E402
from sse_onnx.encoder import BLOCK_TEXTS, DEFAULT_MODEL  # noqa: E402
from sse_onnx.format import sha256_file  # noqa: E402

SCIFACT = EVAL_DATA / "retrieval" / "scifact" / "corpus.jsonl"
WORDS = [
    "static", "embeddings", "are", "fast", "the", "cat", "sat", "on", "a", "mat", "3.14",
    "x=f(y)", "café", "naïve", "東京", "👩\u200d💻", "https://example.org", "corpus", "",
]  # fmt: skip


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """Two 1-CPU workers, the CPU embed_corpus leaves for re-batching, and one to spare.

    A failed job's actors stay alive until Python collects them, so the test of a failing job
    comes last.
    """
    with ray_temp_dir() as temp:
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", _temp_dir=temp)
        yield
        ray.shutdown()


@contextmanager
def ray_temp_dir() -> Iterator[str]:
    """A folder for Ray's session files (logs, sockets), removed afterwards; Ray would leave
    them in /tmp/ray. Short, as Ray's socket paths must fit in 107 bytes."""
    temp = tempfile.mkdtemp(prefix="sse-ray-")
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def documents() -> list[dict[str, str]]:
    """2,300 documents of 0 to 400 words (seeded), so batches pad to very different widths."""
    rng = np.random.default_rng(7)
    return [
        {"doc": f"d{i:05d}", "text": " ".join(rng.choice(WORDS, size=rng.integers(0, 400)))}
        for i in range(2300)
    ]


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory: pytest.TempPathFactory, documents: list[dict[str, str]]) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(documents: list[dict[str, str]]) -> npt.NDArray[np.float32]:
    """One single-process encode call on every text."""
    embeddings: npt.NDArray[np.float32] = Encoder().encode([d["text"] for d in documents])
    return embeddings


def read_output(path: Path) -> tuple[list[Any], npt.NDArray[Any], dict[str, Any]]:
    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()
    vectors = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
    return table.column("id").to_pylist(), vectors, json.loads(table.schema.metadata[METADATA_KEY])


@pytest.mark.usefixtures("local_ray")
def test_the_embedder_takes_its_threads_from_the_actor_cpus() -> None:
    @ray.remote(num_cpus=2)
    def threads() -> int:
        return CorpusEmbedder().threads

    assert ray.get(threads.remote()) == 2
    assert CorpusEmbedder().threads == 1  # the driver is no Ray worker


@pytest.mark.skipif(not SCIFACT.is_file(), reason=f"SciFact not found at {SCIFACT}")
@pytest.mark.usefixtures("local_ray")
def test_scifact_on_two_workers_equals_one_encode_call(tmp_path: Path) -> None:
    docs = [json.loads(line) for line in SCIFACT.read_text(encoding="utf-8").splitlines()]
    texts = [f"{d['title']} {d['text']}" for d in docs]
    out = tmp_path / "scifact.parquet"

    summary = embed_corpus(
        [SCIFACT], out, text_fields=["title", "text"], id_field="_id", workers=2, progress=False
    )

    ids, vectors, metadata = read_output(out)
    assert ids == [d["_id"] for d in docs]  # order kept, no gap, no duplicate
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, Encoder().encode(texts))
    assert (summary.docs, summary.workers, summary.tokens) == (len(docs), 2, None)
    assert metadata["precision"] == "float32" and metadata["dim"] == 256


@pytest.mark.usefixtures("local_ray")
def test_a_killed_worker_batch_is_run_again_without_gaps_or_duplicates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jsonl: Path,
    documents: list[dict[str, str]],
    reference: npt.NDArray[np.float32],
) -> None:
    marker = tmp_path / "killed"

    class DyingEmbedder(CorpusEmbedder):
        """Kills its own process in the middle of the batch that starts at document 1024."""

        def __call__(self, batch: Any) -> Any:
            if batch.column("doc")[0].as_py() == "d01024":
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass  # the retry
                else:
                    os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(corpus_module, "CorpusEmbedder", DyingEmbedder)
    out = tmp_path / "out.parquet"

    summary = embed_corpus([jsonl], out, id_field="doc", workers=2, progress=False)

    assert marker.exists(), "no worker died: the test did not test a retry"
    ids, vectors, _ = read_output(out)
    assert ids == [d["doc"] for d in documents]
    np.testing.assert_array_equal(vectors, reference)
    assert summary.docs == len(documents)


def buckets(x: npt.NDArray[np.float32], lows: Any, highs: Any) -> npt.NDArray[np.int8]:
    """sentence-transformers' int8 buckets with given ranges, clipped to the end buckets."""
    steps = (highs - lows) / 255
    steps[steps == 0] = 1
    return (np.clip(np.floor((x - lows) / steps), 0, 255) - 128).astype(np.int8)


@pytest.mark.usefixtures("local_ray")
def test_int8_is_calibrated_once_on_the_first_documents(
    tmp_path: Path, jsonl: Path, documents: list[dict[str, str]]
) -> None:
    out = tmp_path / "int8.parquet"
    summary = embed_corpus(
        [jsonl],
        out,
        id_field="doc",
        dim=64,
        precision="int8",
        calibration_docs=500,
        count_tokens=True,
        workers=2,
        progress=False,
    )

    floats = Encoder().encode([d["text"] for d in documents], truncate_dim=64)
    lows, highs = floats[:500].min(axis=0), floats[:500].max(axis=0)
    ids, vectors, metadata = read_output(out)
    assert ids == [d["doc"] for d in documents]
    assert vectors.dtype == np.int8 and vectors.shape == (len(documents), 64)
    np.testing.assert_array_equal(vectors, buckets(floats, lows, highs))
    np.testing.assert_array_equal(np.array(metadata["ranges"], dtype=np.float32), [lows, highs])
    hf = Tokenizer.from_file(str(DEFAULT_MODEL / "tokenizer.json"))
    encodings = hf.encode_batch([d["text"] for d in documents], add_special_tokens=False)
    assert summary.tokens == sum(len(e.ids) for e in encodings)


@pytest.mark.usefixtures("local_ray")
def test_parquet_input_with_row_ids_and_binary_precision(
    tmp_path: Path, documents: list[dict[str, str]]
) -> None:
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [d["text"] for d in documents]}), source)
    out = tmp_path / "bits.parquet"

    embed_corpus([source], out, id_field=None, precision="ubinary", workers=2, progress=False)

    ids, vectors, _ = read_output(out)
    floats = Encoder().encode([d["text"] for d in documents])
    assert ids == list(range(len(documents)))
    np.testing.assert_array_equal(vectors, np.packbits(floats > 0, axis=1))


@pytest.mark.usefixtures("local_ray")
def test_several_parquet_files_read_on_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, documents: list[dict[str, str]]
) -> None:
    """Ray Data lists several files in threads; a racy optional import failed 3 runs in 5.

    Each run starts from a process that has not yet tried to import fsspec's HTTP filesystem.
    """
    chunks = [documents[i : i + 100] for i in range(0, 800, 100)]
    for n, chunk in enumerate(chunks):
        table = pa.table({"doc": [d["doc"] for d in chunk], "text": [d["text"] for d in chunk]})
        pq.write_table(table, tmp_path / f"part{n}.parquet")
    pattern = str(tmp_path / "part*.parquet")  # quoted on a command line: expanded here

    for _ in range(10):
        monkeypatch.delitem(sys.modules, "fsspec.implementations.http", raising=False)
        corpus_module.read_corpus([pattern])

    monkeypatch.delitem(sys.modules, "fsspec.implementations.http", raising=False)
    out = tmp_path / "out.parquet"
    embed_corpus([pattern], out, id_field="doc", workers=2, progress=False)
    ids, vectors, _ = read_output(out)
    assert ids == [d["doc"] for d in documents[:800]]
    np.testing.assert_array_equal(vectors, Encoder().encode([d["text"] for d in documents[:800]]))


def read_folder(folder: Path) -> tuple[list[Any], npt.NDArray[Any], dict[str, Any]]:
    """The shards of a folder output as one table (Parquet readers skip its "_" files), and
    its manifest, after checking every shard against the manifest."""
    manifest = json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))
    assert (folder / "_SUCCESS").is_file()
    names = sorted(p.name for p in folder.glob("part-*.parquet"))
    assert [entry["file"] for entry in manifest["shards"]] == names
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        assert (entry["bytes"], entry["sha256"]) == (path.stat().st_size, sha256_file(path))
        assert pq.ParquetFile(path).metadata.num_rows == entry["rows"]
    ids, vectors, metadata = read_output(folder)
    assert len(ids) == manifest["rows"] == sum(e["rows"] for e in manifest["shards"])
    return ids, vectors, {**metadata, "manifest": manifest}


@pytest.mark.usefixtures("local_ray")
def test_a_folder_of_shards_written_by_the_workers_equals_one_encode_call(
    tmp_path: Path, jsonl: Path, documents: list[dict[str, str]]
) -> None:
    out = tmp_path / "out"
    summary = embed_corpus(
        [jsonl], out, id_field="doc", dim=64, precision="int8", calibration_docs=500,
        batch_size=512, workers=2, progress=False,
    )  # fmt: skip

    ids, vectors, metadata = read_folder(out)
    floats = Encoder().encode([d["text"] for d in documents], truncate_dim=64)
    lows, highs = floats[:500].min(axis=0), floats[:500].max(axis=0)
    assert ids == [d["doc"] for d in documents]  # shard names give the input order
    np.testing.assert_array_equal(vectors, buckets(floats, lows, highs))
    manifest = metadata["manifest"]
    assert [e["rows"] for e in manifest["shards"]] == [512] * 4 + [252]
    assert [e["first_row"] for e in manifest["shards"]] == [0, 512, 1024, 1536, 2048]
    assert (manifest["dim"], manifest["precision"], manifest["variant"]) == (64, "int8", "int8")
    np.testing.assert_array_equal(np.array(manifest["ranges"], dtype=np.float32), [lows, highs])
    assert metadata["ranges"] == manifest["ranges"]  # every shard carries them too
    assert manifest["model_sha256"] == Encoder().manifest.variants["int8"].sha256
    assert (summary.docs, summary.resumed_docs, summary.output) == (2300, 0, out.absolute())
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == [
        "_SUCCESS", "_job.json", "_manifest.json",
    ]  # fmt: skip


@pytest.mark.usefixtures("local_ray")
def test_a_killed_shard_writer_is_run_again_and_row_ids_follow_the_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    documents: list[dict[str, str]],
    reference: npt.NDArray[np.float32],
) -> None:
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [d["text"] for d in documents]}), source)
    marker = tmp_path / "killed"

    class DyingWriter(shards.ShardWriter):
        """Kills its own process in the middle of shard 2, once."""

        def write(self, pieces: Any, index: int, start: int) -> Any:
            if index == 2:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass  # the retry
                else:
                    os._exit(1)
            return super().write(pieces, index, start)

    monkeypatch.setattr(shards, "ShardWriter", DyingWriter)
    out = tmp_path / "out"
    embed_corpus([source], out, id_field=None, batch_size=512, workers=2, progress=False)

    assert marker.exists(), "no worker died: the test did not test a retry"
    ids, vectors, _ = read_folder(out)
    assert ids == list(range(len(documents)))
    np.testing.assert_array_equal(vectors, reference)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file


def test_ray_workers_settle_the_import_before_they_list_files() -> None:
    """Over 200 inputs, Ray lists several per task in its workers' threads: the same race."""
    code = (
        "import sys, ray; from sse_onnx import corpus\n"
        "corpus._start_ray(ray, None, 1, 1)\n"
        "probe = ray.remote(lambda: 'fsspec.implementations.http' in sys.modules)\n"
        "print(ray.get(probe.options(num_cpus=0).remote())); ray.shutdown()\n"
    )
    with ray_temp_dir() as temp:
        env = {**os.environ, "RAY_TMPDIR": temp}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.stdout.strip().splitlines()[-1:] == ["True"], done.stderr[-2000:]


@pytest.mark.usefixtures("local_ray")
def test_cli_writes_the_file_and_prints_a_summary(
    tmp_path: Path, jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.parquet"
    argv = [str(jsonl), "--output", str(out), "--id-field", "doc", "--dim", "32"]
    assert main([*argv, "--workers", "2", "--count-tokens", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "embedded 2,300 docs (" in printed and " tokens) in " in printed
    assert "docs/s" in printed and "2 workers" in printed
    assert pq.read_table(out).num_rows == 2300


def test_bad_options_fail_before_ray_starts(tmp_path: Path, jsonl: Path) -> None:
    with pytest.raises(ValueError, match="needs ranges"):
        CorpusEmbedder(precision="int8")
    with pytest.raises(ValueError, match=r"ranges has shape \(2, 3\); .* needs \(2, 4\)"):
        quantize(np.zeros((2, 4), np.float32), "int8", ranges=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=f"multiple of {BLOCK_TEXTS}"):
        embed_corpus([jsonl], tmp_path / "x.parquet", batch_size=1000)
    with pytest.raises(ValueError, match="between 1 and the model's 256"):
        embed_corpus([jsonl], tmp_path / "x.parquet", dim=300)
    with pytest.raises(CorpusError, match=r"is in .*nowhere, which does not exist"):
        embed_corpus([jsonl], tmp_path / "nowhere" / "x.parquet")
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(CorpusError, match=r"is a folder; pass a \.parquet file"):
        embed_corpus([jsonl], tmp_path / "folder.parquet")
    with pytest.raises(CorpusError, match=r"not empty \(1 file: folder\.parquet\); pass --resume"):
        embed_corpus([jsonl], tmp_path)
    with pytest.raises(ValueError, match="resume=True needs a folder output"):
        embed_corpus([jsonl], tmp_path / "x.parquet", resume=True)
    with pytest.raises(CorpusError, match=r"holds no _job\.json, so no job sse-embed started"):
        embed_corpus([jsonl], tmp_path, resume=True)
    (tmp_path / "_job.json").write_text("{", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"_job\.json is not a job sse-embed wrote \(JSONDecode"):
        embed_corpus([jsonl], tmp_path, resume=True)
    with pytest.raises(CorpusError, match="column 'body' holds int64, not strings"):
        CorpusEmbedder(text_fields=["body"])(pa.table({"id": [1], "body": [3]}))
    with pytest.raises(CorpusError, match=r"no column 'body' \(it has \['id', 'text'\]\)"):
        CorpusEmbedder(text_fields=["body"])(pa.table({"id": [1], "text": ["a"]}))
    with pytest.raises(CorpusError, match="has 1 null ids"):
        CorpusEmbedder()(pa.table({"id": [1, None], "text": ["a", "b"]}))


def test_the_command_states_the_shard_size_of_the_module() -> None:
    from sse_onnx import embed_cli

    assert embed_cli.SHARD_DOCS == corpus_module.SHARD_DOCS


def test_import_sse_onnx_does_not_import_ray_or_pyarrow() -> None:
    code = "import sys, sse_onnx; print(sorted({'ray', 'pyarrow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.usefixtures("local_ray")
def test_a_null_text_stops_the_job_naming_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.jsonl"
    lines = [{"id": "a", "text": "fine"}, {"id": "b", "text": None}, {"id": "c", "text": "x"}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "bad.parquet"

    # Through the command: the actor's CorpusError reaches the driver as text and is raised
    # again as itself, which main() reports.
    assert main([str(source), "--output", str(out), "--workers", "2", "--no-progress"]) == 1
    assert "sse-embed: error: document id='b' has no 'text' (null)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bad.parquet.partial").exists()
