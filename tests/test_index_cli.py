"""The ``sse-index`` command (sse_onnx.index.cli): add, search, info, delete, reembed; its
errors in one line; ``--embeddings`` from a real ``sse-embed`` run.

Commands run in-process through ``main()``, and through the installed console script once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sse_onnx.index import store
from sse_onnx.index.cli import main

DOCS: list[dict[str, Any]] = [
    {"_id": "db", "title": "SQLite", "text": "SQLite keeps a whole database in one file.",
     "lang": "en", "year": 2020},
    {"_id": "cat", "title": "Cats", "text": "Cats sleep most of the day and hunt at night.",
     "lang": "en", "year": 2021},
    {"_id": "chat", "title": "Chats", "text": "Les chats dorment presque toute la journée.",
     "lang": "fr", "year": 2021},
    {"_id": "rust", "title": "Rust", "text": "Rust is a programming language with memory safety.",
     "lang": "en", "year": 2019},
    {"_id": "tea", "title": "Tea", "text": "Green tea is brewed cooler than black tea.",
     "lang": "en", "year": 2020},
    {"_id": "tokyo", "title": "東京", "text": "Tokyo is the capital city of Japan.",
     "lang": "ja", "year": 2018},
]  # fmt: skip
BEIR = ["--text-field", "title", "--text-field", "text", "--id-field", "_id"]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", DOCS)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``main(argv)`` in this process: its exit code, stdout and stderr."""

    def call(*argv: object) -> tuple[int, str, str]:
        code = main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def one_error(err: str) -> str:
    """The single line an expected failure prints."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sse-index: error: ")
    return lines[0]


@pytest.fixture
def built(tmp_path: Path, corpus: Path, run: Callable[..., tuple[int, str, str]]) -> Path:
    """An index of DOCS (title + text), with lang and year as metadata."""
    index = tmp_path / "notes.db"
    code, _, err = run(
        "add", index, corpus, *BEIR, "--metadata-field", "lang", "--metadata-field", "year"
    )
    assert code == 0, err
    return index


# ---------------------------------------------------------------------- add and search


def test_add_beir_fields_then_search_as_text_and_json(
    tmp_path: Path, corpus: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"_id": 7, "title": "Seven", "text": "x"}])
    index = tmp_path / "notes.db"
    code, out, err = run("add", index, corpus, extra, *BEIR, "--metadata-field", "lang")
    assert (code, err) == (0, "")
    assert out.startswith(f"added 7 documents, replaced 0, 0 unchanged; {index} holds 7 (")

    code, out, _ = run("search", index, "where is a database stored?", "-k", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    rank, score, id_, snippet = lines[0].split(maxsplit=3)
    assert (rank, id_) == ("1", "db") and float(score) > 0
    assert snippet == "SQLite SQLite keeps a whole database in one file."

    code, out, _ = run("search", index, "seven", "-k", "2", "--json", "--mode", "keyword")
    hits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(hits) == 1  # keyword: only documents holding a query word
    assert hits[0] == {
        "rank": 1,
        "id": "7",
        "score": hits[0]["score"],
        "text": "Seven x",
        "metadata": None,
    }
    code, out, _ = run("search", index, "cats", "--json", "--mode", "dense", "-k", "1")
    assert json.loads(out)["metadata"] == {"lang": "en"}


def test_search_snippets_fit_the_terminal(
    built: Path, run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    code, out, _ = run("search", built, "programming language", "-k", "6", "--alpha", "0.3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 6 and lines[0].split()[2] == "rust"
    assert all(len(line) < 50 for line in lines) and lines[0].endswith("…")


def test_a_rerun_skips_unchanged_documents_and_replace_updates(
    tmp_path: Path, built: Path, corpus: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    meta = ["--metadata-field", "lang", "--metadata-field", "year"]
    code, out, _ = run("add", built, corpus, *BEIR, *meta)
    assert code == 0 and out.startswith("added 0 documents, replaced 0, 6 unchanged;")

    changed = [dict(doc, text="Tea is brewed.") if doc["_id"] == "tea" else doc for doc in DOCS]
    write_jsonl(corpus, changed)
    code, _, err = run("add", built, corpus, *BEIR, *meta, "--quiet")
    line = one_error(err)
    assert code == 1 and "1 id(s) are already in" in line and "('tea')" in line
    assert line.endswith("(sse-index add: --replace)")

    code, out, _ = run("add", built, corpus, *BEIR, *meta, "--replace")
    assert code == 0 and out.startswith("added 0 documents, replaced 1, 5 unchanged;")
    code, out, _ = run("search", built, "tea", "--json", "--mode", "keyword", "-k", "1")
    assert json.loads(out)["text"] == "Tea Tea is brewed."


def test_where_filters_on_metadata(built: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    def ids(*where: str) -> list[str]:
        argv = [x for item in where for x in ("--where", item)]
        code, out, _ = run("search", built, "the day", "--json", *argv)
        assert code == 0
        return sorted(json.loads(line)["id"] for line in out.splitlines())

    assert ids("lang=fr") == ["chat"]
    assert ids("year=2020") == ["db", "tea"]  # a number, as JSON reads it
    assert ids("year=2021", "lang=en") == ["cat"]
    assert ids('year="2020"') == []  # the string "2020" is not the number
    code, out, _ = run("search", built, "x", "--where", "lang=de")
    assert (code, out) == (0, "no documents match\n")


def test_info_and_delete(built: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run("info", built, "--json")
    info = json.loads(out)
    assert code == 0 and info["documents"] == 6
    assert info["model_name"] == "sse-minilm-l6-trained" and info["dim"] == "256"
    code, out, _ = run("info", built)
    assert code == 0 and "documents           6\n" in out and "vector_type         int8" in out

    code, out, _ = run("delete", built, "db", "tea")
    assert (code, out) == (0, f"deleted 2 document(s) from {built}; it holds 4\n")
    code, _, err = run("delete", built, "cat", "nope")
    line = one_error(err)
    assert code == 1 and "1 id(s) are not in" in line and "('nope'); nothing was deleted" in line
    code, out, _ = run("delete", built, "cat", "nope", "--missing-ok")
    assert (code, out) == (0, f"deleted 1 document(s) from {built}; it holds 3\n")


def test_reembed_with_another_model(
    built: Path,
    run: Callable[..., tuple[int, str, str]],
    exported: Callable[..., Path],
    tiny_checkpoint: Path,
) -> None:
    tiny = exported(tiny_checkpoint)
    code, _, err = run("search", built, "cats", "--model", tiny)
    line = one_error(err)
    assert code == 1 and "was built with model 'sse-minilm-l6-trained'" in line
    assert line.endswith("(sse-index: --model FOLDER, --variant NAME)")

    code, out, _ = run("reembed", built, "--model", tiny)
    assert code == 0
    assert out.startswith(f"embedded the 6 documents of {built} again with 'tiny-ckpt")
    code, out, _ = run("search", built, "cats", "--model", tiny, "--json", "-k", "1")
    assert code == 0 and json.loads(out)["id"] == "cat"
    code, out, _ = run("reembed", built, "--model", tiny)
    assert code == 0 and out.endswith("(fp32, 16 dims); nothing to embed\n")
    code, _, err = run("reembed", built, "--model", built.parent / "no-model")
    assert code == 1 and "no-model" in one_error(err)


def test_parquet_input(tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    columns = {key: [doc[key] for doc in DOCS] for key in ("_id", "title", "text", "year")}
    source = tmp_path / "corpus.parquet"
    pq.write_table(pa.table(columns), source)
    index = tmp_path / "notes.db"
    code, out, _ = run("add", index, source, *BEIR, "--metadata-field", "year", "--batch-size", 4)
    assert code == 0 and out.startswith("added 6 documents, replaced 0, 0 unchanged;")
    code, out, _ = run("search", index, "Japan", "--json", "-k", "1", "--where", "year=2018")
    assert json.loads(out)["id"] == "tokyo"

    code, _, err = run("add", index, source, "--text-field", "body", "--id-field", "_id")
    assert code == 1
    assert one_error(err) == (
        f"sse-index: error: {source} has no column 'body' (it has ['_id', 'title', 'text', "
        "'year']); name the columns with --text-field and --id-field"
    )


def test_parquet_without_pyarrow_says_which_extra(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "corpus.parquet"
    source.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code, _, err = run("add", tmp_path / "notes.db", source)
    assert code == 1
    assert one_error(err) == (
        'sse-index: error: reading Parquet needs pyarrow: pip install "sse-onnx[scale]"'
    )
    assert not (tmp_path / "notes.db").exists()


# ---------------------------------------------------------------------- errors


BAD_INPUTS = {
    "non-utf8": (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n',
                 r"bad.jsonl:2: not UTF-8 (byte 0xe9 at byte 25 of the line); convert"),
    "bad json": (b'{"id": "a", "text": "ok"}\n\n{"id": "b", "text": }\n',
                 "bad.jsonl:3: not valid JSON (Expecting value); each line must be one JSON"),
    "missing field": (b'{"id": "a", "body": "no text", "lang": "en"}\n',
                      "bad.jsonl:1: no field 'text' (it has ['id', 'body', 'lang']); name the "
                      "fields with --text-field and --id-field"),
    "null text": (b'{"id": "a", "text": null}\n',
                  "bad.jsonl:1: field 'text' is null, not a string; fill it"),
    "not an object": (b'["a", "b"]\n', "bad.jsonl:1: a JSON list, not an object"),
    "float id": (b'{"id": 1.5, "text": "x"}\n',
                 "bad.jsonl:1: id field 'id' is float 1.5; ids are strings or integers"),
    "repeated id": (b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n'
                    b'{"id": "a", "text": "z"}\n',
                    "bad.jsonl:3: id 'a' is repeated (first at {folder}/bad.jsonl:1); each"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_is_one_line_naming_file_and_line(
    case: str, tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    content, expected = BAD_INPUTS[case]
    source = tmp_path / "bad.jsonl"
    source.write_bytes(content)
    code, _, err = run("add", tmp_path / "notes.db", source)
    assert code == 1
    assert one_error(err).startswith(
        f"sse-index: error: {tmp_path}/" + expected.format(folder=tmp_path)
    )
    assert not (tmp_path / "notes.db").exists()  # the first batch failed before the file was made


def test_missing_input_damaged_index_and_usage_errors(
    tmp_path: Path,
    corpus: Path,
    run: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = tmp_path / "notes.db"
    code, _, err = run("add", index, tmp_path / "missing.jsonl")
    assert (
        code == 1
        and one_error(err) == f"sse-index: error: input {tmp_path}/missing.jsonl does not exist"
    )
    code, _, err = run("add", index, tmp_path)
    assert code == 1 and "is a folder; pass its files" in one_error(err)
    code, _, err = run("search", index, "x")
    assert code == 1 and one_error(err).endswith(f"create it with: sse-index add {index} FILE")
    assert not index.exists()

    index.write_bytes(b"this is not an SQLite file" * 100)
    for argv in (("info", index), ("add", index, corpus, *BEIR), ("search", index, "x")):
        code, _, err = run(*argv)
        assert code == 1
        assert f"{index} is not an SQLite file, so not an sse-onnx index" in one_error(err)

    for argv, expected in (
        (["search", index, "x", "-k", "0"], "argument -k: '0' is not a positive integer"),
        (["search", index, "x", "--alpha", "2"], "'2' is not a number from 0 (keyword) to 1"),
        (["search", index, "x", "--where", "lang"], "argument --where: 'lang' is not KEY=VALUE"),
        (["search", index, "x", "--mode", "bm25"], "argument --mode: invalid choice: 'bm25'"),
        (["compact", index], "argument COMMAND: invalid choice: 'compact'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([str(arg) for arg in argv])
        assert exit_info.value.code == 2
        assert expected in one_error(capsys.readouterr().err)


def test_an_error_in_a_later_batch_keeps_the_finished_ones(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    lines = [json.dumps({"id": f"d{i}", "text": f"document {i}"}) for i in range(7)]
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join([*lines[:5], "{oops", *lines[5:]]) + "\n", encoding="utf-8")
    index = tmp_path / "notes.db"
    code, _, err = run("add", index, source, "--batch-size", 2, "--quiet")
    assert code == 1
    assert one_error(err) == (
        f"sse-index: error: {source}:6: not valid JSON (Expecting property name enclosed in "
        f"double quotes); each line must be one JSON object; the 4 documents of the finished "
        f"batches are kept in {index}: fix this and run the same command again, which skips them"
    )
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, _ = run("add", index, source, "--batch-size", 2)
    assert code == 0 and out.startswith("added 3 documents, replaced 0, 4 unchanged;")


def test_ctrl_c_during_add_keeps_finished_batches_and_a_rerun_continues(
    tmp_path: Path,
    corpus: Path,
    run: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add = store.Index.add
    calls = []

    def interrupted(self: store.Index, *args: Any, **kwargs: Any) -> store.AddResult:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return add(self, *args, **kwargs)

    monkeypatch.setattr(store.Index, "add", interrupted)
    index = tmp_path / "notes.db"
    code, _, err = run("add", index, corpus, *BEIR, "--batch-size", 2, "--quiet")
    assert code == 130
    assert one_error(err) == (
        f"sse-index: error: interrupted; the 2 documents of the finished batches are kept in "
        f"{index}; running the same command again skips them and continues"
    )
    monkeypatch.setattr(store.Index, "add", add)
    code, out, _ = run("add", index, corpus, *BEIR, "--batch-size", 2)
    assert code == 0 and out.startswith("added 4 documents, replaced 0, 2 unchanged;")


# ---------------------------------------------------------------------- the installed command


def installed() -> str:
    script = Path(sys.executable).parent / "sse-index"
    return str(script) if script.exists() else shutil.which("sse-index") or "sse-index"


def test_the_installed_command(tmp_path: Path, corpus: Path) -> None:
    index = tmp_path / "notes.db"
    done = subprocess.run(
        [installed(), "add", str(index), str(corpus), *BEIR], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [installed(), "search", str(index), "capital of Japan", "-k", "1", "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["id"] == "tokyo"
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"id": "a", "text": "café"}\n'.encode("latin-1"))
    done = subprocess.run(
        [installed(), "add", str(index), str(bad)], capture_output=True, text=True
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"sse-index: error: {bad}:1: not UTF-8 (byte 0xe9")
    assert done.stderr.count("\n") == 1


def test_the_command_module_loads_neither_pyarrow_nor_ray() -> None:
    code = "import sys, sse_onnx.index.cli; print(sorted({'pyarrow', 'ray'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------- --embeddings


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """DOCS embedded by sse-embed's own main() into a file and a folder of shards, on one
    local Ray (started once: it takes most of the 15 s). Yields the input, file and folder."""
    pytest.importorskip("ray", reason="needs the scale extra: pip install -e '.[scale]'")
    folder = tmp_path_factory.mktemp("embedded")
    source = write_jsonl(folder / "corpus.jsonl", DOCS)
    file, shards = folder / "corpus.parquet", folder / "shards"
    script = (
        "import sys, ray\n"
        "ray.init(num_cpus=2, include_dashboard=False, logging_level='WARNING', "
        "_temp_dir=sys.argv[1])\n"
        "from sse_onnx.corpus.cli import main\n"
        f"argv = [sys.argv[2], *{BEIR!r}, '--workers', '1', '--no-progress']\n"
        "codes = [main([*argv, '--output', out]) for out in sys.argv[3:]]\n"
        "ray.shutdown()\n"
        "sys.exit(max(codes))\n"
    )
    ray_temp = tempfile.mkdtemp(prefix="sse-ray-")  # short: Ray's socket paths are limited
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, ray_temp, str(source), str(file), str(shards)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (shards / "_SUCCESS").exists()
    yield source, file, shards


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_add_takes_the_vectors_of_an_sse_embed_output(
    kind: str,
    tmp_path: Path,
    embedded: tuple[Path, Path, Path],
    run: Callable[..., tuple[int, str, str]],
) -> None:
    source, file, shards = embedded
    index = tmp_path / "notes.db"
    output = file if kind == "file" else shards
    code, out, err = run("add", index, source, *BEIR, "--embeddings", output, "--batch-size", 4)
    assert (code, err) == (0, "")
    assert out.startswith("added 6 documents, replaced 0, 0 unchanged;")
    code, out, _ = run("search", index, "SQLite database file", "--mode", "dense", "--json")
    assert json.loads(out.splitlines()[0])["id"] == "db"


def test_the_given_vectors_are_stored_matched_by_id_in_any_order(
    tmp_path: Path, embedded: tuple[Path, Path, Path], run: Callable[..., tuple[int, str, str]]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, file, _ = embedded
    table = pq.read_table(file)
    ids = table.column("id").to_pylist()
    vectors = table.column("embedding").to_pylist()
    db, rust = ids.index("db"), ids.index("rust")
    vectors[db], vectors[rust] = vectors[rust], vectors[db]  # db gets rust's vector
    order = list(reversed(range(len(ids))))  # and the rows come in another order than the input
    swapped = pa.Table.from_pydict(
        {"id": [ids[i] for i in order], "embedding": [vectors[i] for i in order]},
        schema=table.schema,  # with sse-embed's metadata
    )
    pq.write_table(swapped, tmp_path / "swapped.parquet")
    index = tmp_path / "notes.db"
    code, _, err = run("add", index, source, *BEIR, "--embeddings", tmp_path / "swapped.parquet")
    assert code == 0, err
    query = "Rust Rust is a programming language with memory safety."
    code, out, _ = run("search", index, query, "--mode", "dense", "--json", "-k", "1")
    assert json.loads(out)["id"] == "db"  # the file's vector, not an encoding of the text


def test_embeddings_of_another_model_or_texts_are_refused(
    tmp_path: Path,
    embedded: tuple[Path, Path, Path],
    run: Callable[..., tuple[int, str, str]],
    exported: Callable[..., Path],
    tiny_checkpoint: Path,
) -> None:
    import pyarrow.parquet as pq

    from sse_onnx.outputs import METADATA_KEY

    source, file, shards = embedded
    index = tmp_path / "notes.db"
    tiny = exported(tiny_checkpoint)

    def refused(*argv: object) -> str:
        code, _, err = run("add", index, source, *argv)
        assert code == 1 and not index.exists()
        return one_error(err)

    line = refused(*BEIR, "--model", tiny, "--embeddings", file)
    assert f"embeddings {file} do not match this index's model: model 'sse-minilm-l6-" in line
    assert "-trained' there, 'tiny-ckpt" in line
    assert "variant 'int8' there, 'fp32' here; dim 256 there, 16 here" in line
    line = refused("--id-field", "_id", "--embeddings", shards)
    assert "text_fields ['title', 'text'] there, ['text'] here" in line

    table = pq.read_table(file)
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    quantized = table.replace_schema_metadata(
        {METADATA_KEY: json.dumps({**meta, "precision": "int8", "dim": 128})}
    )
    pq.write_table(quantized, tmp_path / "int8.parquet")
    line = refused(*BEIR, "--embeddings", tmp_path / "int8.parquet")
    assert "dim 128 there, 256 here; precision 'int8' there, 'float32' here" in line

    other = tmp_path / "other"
    shutil.copytree(shards, other)
    manifest = json.loads((other / "_manifest.json").read_text(encoding="utf-8"))
    (other / "_manifest.json").write_text(json.dumps({**manifest, "model_sha256": "0" * 64}))
    assert "another model file (sha256)" in refused(*BEIR, "--embeddings", other)
    (other / "_SUCCESS").unlink()
    assert "is not a finished sse-embed folder (no _SUCCESS)" in refused(
        *BEIR, "--embeddings", other
    )


def test_a_document_missing_from_the_embeddings_is_named(
    tmp_path: Path, embedded: tuple[Path, Path, Path], run: Callable[..., tuple[int, str, str]]
) -> None:
    _, file, _ = embedded
    source = write_jsonl(tmp_path / "more.jsonl", [*DOCS, {"_id": "new", "title": "", "text": "x"}])
    index = tmp_path / "notes.db"
    code, _, err = run("add", index, source, *BEIR, "--embeddings", file, "--batch-size", 4)
    assert code == 1
    assert one_error(err) == (
        f"sse-index: error: {source}:7: id 'new' is not in the embeddings {file}; pass the "
        "sse-embed output of these same inputs (with the same --id-field); the 4 documents of "
        f"the finished batches are kept in {index}: fix this and run the same command again, "
        "which skips them"
    )
