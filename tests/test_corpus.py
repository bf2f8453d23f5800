"""sse_onnx.corpus on a local Ray with 2 workers: the vectors of one ``Encoder().encode`` call,
in input order with their ids, through a killed worker; errors; the sse-embed command.

One Ray instance serves the module (starting Ray takes seconds). Every expected vector comes
from a single-process ``Encoder`` on the same texts; int8 buckets and binary bits are restated
here with numpy.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import re
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

import sse_onnx.corpus as sse_onnx_corpus  # noqa: E402
from sse_onnx import CorpusError, Encoder  # noqa: E402
from sse_onnx.corpus import (  # noqa: E402
    METADATA_KEY,
    CorpusEmbedder,
    embed_corpus,
    read_corpus,
    shards,
)
from sse_onnx.corpus import job as job_module  # noqa: E402
from sse_onnx.corpus.cli import main  # noqa: E402
from sse_onnx.embeddings import quantize  # noqa: E402
from sse_onnx.encoder import BLOCK_TEXTS, DEFAULT_MODEL  # noqa: E402
from sse_onnx.folder import sha256_file  # noqa: E402

SCIFACT = EVAL_DATA / "retrieval" / "scifact" / "corpus.jsonl"
WORDS = [
    "static", "embeddings", "are", "fast", "the", "cat", "sat", "on", "a", "mat", "3.14",
    "x=f(y)", "café", "naïve", "東京", "👩\u200d💻", "https://example.org", "corpus", "",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _release_failed_jobs() -> Iterator[None]:
    """A failed job's actors hold their CPUs until Python collects them: collect after each
    test, so that a test of a failing job leaves the next test its workers."""
    yield
    gc.collect()


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

    monkeypatch.setattr(job_module, "CorpusEmbedder", DyingEmbedder)
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
        read_corpus([pattern])

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
        "import sys, ray; from sse_onnx.corpus import cluster\n"
        "cluster.start_ray(ray, None, 1, 1)\n"
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
    with pytest.raises(CorpusError, match=r"not empty \(1 file: folder\.parquet\); pass resume=T"):
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


# ------------------------------------------------------------------ what a new user hits


def last_line(err: str) -> str:
    """The last line of a command's stderr, after checking it printed no traceback."""
    assert "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


def test_an_empty_input_is_one_error_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    out = tmp_path / "out.parquet"

    assert main([str(empty), "--output", str(out), "--no-progress"]) == 1

    line = last_line(capsys.readouterr().err)
    assert line == f"sse-embed: error: input {empty} is empty: there is no document to embed."
    assert not out.exists()


@pytest.mark.usefixtures("local_ray")
def test_an_input_of_no_documents_leaves_no_output(tmp_path: Path) -> None:
    source = tmp_path / "none.parquet"
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), source
    )
    said = rf"input {re.escape(str(source))} holds no document: there is nothing to embed\.$"

    with pytest.raises(CorpusError, match=said):
        embed_corpus(source, tmp_path / "out.parquet", workers=2, progress=False)
    with pytest.raises(CorpusError, match=said):
        embed_corpus(source, tmp_path / "out", workers=2, progress=False)

    assert not (tmp_path / "out.parquet").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["_job.json"]  # counts as empty


@pytest.mark.usefixtures("local_ray")
def test_jsonl_that_is_not_utf8_is_one_line_naming_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "latin1.jsonl"
    bad = '{"id": "b", "text": "café au lait"}\n'.encode("latin-1")
    source.write_bytes(b'{"id": "a", "text": "a cat"}\n' + bad)
    out = tmp_path / "out.parquet"

    assert main([str(source), "--output", str(out), "--workers", "2", "--no-progress"]) == 1

    assert last_line(capsys.readouterr().err) == (
        f"sse-embed: error: {source} line 2 is not UTF-8 (byte 0xe9 at column "
        f"{bad.index(0xE9) + 1}); re-encode it as UTF-8 (for example: iconv -f latin1 -t utf-8 "
        "IN > OUT) and embed that."
    )
    assert not out.exists()
    with pytest.raises(CorpusError, match=r"the 'text' of document id='b' is not UTF-8 \("):
        CorpusEmbedder()(
            pa.table({"id": ["b"], "text": pa.array([bad[21:30]], pa.binary())}).cast(
                pa.schema([("id", pa.string()), ("text", pa.string())]), safe=False
            )
        )


@pytest.mark.usefixtures("local_ray")
def test_a_utf8_bom_at_the_start_of_a_jsonl_file_is_skipped(tmp_path: Path) -> None:
    source = tmp_path / "bom.jsonl"
    lines = '{"id": "a", "text": "a cat"}\n{"id": "b", "text": "a dog"}\n'
    source.write_bytes(b"\xef\xbb\xbf" + lines.encode())
    out = tmp_path / "out.parquet"

    embed_corpus(source, out, workers=2, progress=False)

    ids, vectors, _ = read_output(out)
    assert ids == ["a", "b"]
    np.testing.assert_array_equal(vectors, Encoder().encode(["a cat", "a dog"]))


@pytest.mark.usefixtures("local_ray")
def test_one_input_and_one_text_field_may_be_given_as_strings(
    tmp_path: Path,
    jsonl: Path,
    documents: list[dict[str, str]],
    reference: npt.NDArray[np.float32],
) -> None:
    out = tmp_path / "out.parquet"

    embed_corpus(str(jsonl), out, text_fields="text", id_field="doc", workers=2, progress=False)

    ids, vectors, metadata = read_output(out)
    assert ids == [d["doc"] for d in documents]
    np.testing.assert_array_equal(vectors, reference)
    assert metadata["text_fields"] == ["text"]
    assert CorpusEmbedder(text_fields="text").text_fields == ("text",)
    with pytest.raises(ValueError, match=r"text_fields=\[\] must be a column name or a non-empty"):
        CorpusEmbedder(text_fields=[])


def test_python_errors_name_parameters_and_the_command_names_its_flags(
    tmp_path: Path, jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(CorpusError) as caught:
        CorpusEmbedder(text_fields="body")(pa.table({"id": ["a"], "text": ["x"]}))
    assert str(caught.value) == (
        "the input has no column 'body' (it has ['id', 'text']); name the text column with "
        "text_fields."
    )
    with pytest.raises(CorpusError, match=r"instead \(id_field=None\)\.$"):
        CorpusEmbedder()(pa.table({"id": [1, None], "text": ["a", "b"]}))
    (tmp_path / "notes.txt").write_text("notes")
    with pytest.raises(CorpusError, match=r"pass resume=True to finish the job it holds"):
        embed_corpus(jsonl, tmp_path)
    with pytest.raises(CorpusError, match=r'pass input_format="jsonl" or input_format="parquet"'):
        embed_corpus(tmp_path / "notes.txt", tmp_path / "out.parquet")

    assert main([str(jsonl), "--output", str(tmp_path)]) == 1
    assert "; pass --resume to finish the job it holds" in last_line(capsys.readouterr().err)
    assert main([str(tmp_path / "notes.txt"), "--output", str(tmp_path / "out.parquet")]) == 1
    assert last_line(capsys.readouterr().err).endswith("pass --format jsonl or --format parquet.")


@pytest.mark.usefixtures("local_ray")
def test_an_existing_parquet_file_is_replaced_only_when_asked(
    tmp_path: Path, jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"precious")
    argv = [
        str(jsonl),
        "--output",
        str(out),
        "--id-field",
        "doc",
        "--workers",
        "2",
        "--no-progress",
    ]

    with pytest.raises(CorpusError, match=r"out\.parquet exists; pass overwrite=True to replace"):
        embed_corpus(jsonl, out, id_field="doc")
    assert main(argv) == 1
    assert last_line(capsys.readouterr().err) == (
        f"sse-embed: error: output {out} exists; pass --overwrite to replace it, or choose "
        "another name."
    )
    assert out.read_bytes() == b"precious"

    assert main([*argv, "--overwrite"]) == 0
    assert pq.read_table(out).num_rows == 2300
    with pytest.raises(ValueError, match=r"overwrite=True replaces a \.parquet file; a folder"):
        embed_corpus(jsonl, tmp_path / "folder", overwrite=True)


# ------------------------------------------------------------------------- import order

#: The corpus package's modules, each importing (at load or on use) only those before it.
LAYERS = ("options", "records", "progress", "cluster", "inputs", "embedder", "parquet", "shards",
          "job", "cli")  # fmt: skip


def imports(path: Path) -> set[str]:
    """Every module a file imports, at load or in a function (``from a import b`` as ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }


def test_every_corpus_module_imports_only_the_modules_below_it() -> None:
    package = Path(sse_onnx_corpus.__file__).parent
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*LAYERS, "__init__"])
    for level, name in enumerate(LAYERS):
        found = imports(package / f"{name}.py")
        inside = {m.split(".")[2] for m in found if m.startswith("sse_onnx.corpus.")}
        assert inside <= set(LAYERS[:level]), f"{name} imports {inside - set(LAYERS[:level])}"


def test_the_core_imports_no_application_nor_pyarrow_nor_ray() -> None:
    core = Path(sse_onnx_corpus.__file__).parents[1]
    for path in sorted(core.glob("*.py")):
        found = {m.split(".")[0] if m.startswith(("pyarrow", "ray")) else m for m in imports(path)}
        # The package's face names Index for users (loaded on first use: test_imports.py).
        allowed = (
            {"sse_onnx.index.Hit", "sse_onnx.index.Index"} if path.name == "__init__.py" else set()
        )
        wrong = {m for m in found - allowed if m.startswith(("sse_onnx.corpus", "sse_onnx.index"))}
        assert not wrong | (found & {"pyarrow", "ray"}), f"{path.name} imports {wrong}"


def test_the_corpus_modules_import_in_any_order() -> None:
    """A circle shows when one of its modules is imported first: each is, in a fresh package."""
    code = (
        "import importlib, sys\n"
        f"layers = {LAYERS!r}\n"
        "for first in layers:\n"
        "    for name in [m for m in sys.modules if m.startswith('sse_onnx.corpus')]:\n"
        "        del sys.modules[name]\n"
        "    for name in (first, *reversed(layers)):\n"
        "        importlib.import_module('sse_onnx.corpus.' + name)\n"
        "import sse_onnx.corpus as c\n"
        "print(sorted(n for n in c.__all__ if getattr(c, n) is None))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr[-3000:]


def test_the_command_helps_without_pyarrow_or_ray() -> None:
    code = (
        "import sys\n"
        "from sse_onnx.corpus import cli\n"
        "cli.build_parser().format_help()\n"
        "print(sorted({'ray', 'pyarrow'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
