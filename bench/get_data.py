"""Build the evaluation data folder from the public releases of its four collections.

    python bench/get_data.py DATA_DIR                        # downloads what it lacks
    python bench/get_data.py DATA_DIR --archives DOWNLOADS --offline

The benchmarks, the model recipe and ``sse-export --eval-data`` read this layout (point
``$SSE_DATA`` at DATA_DIR, or pass it with ``--data`` / ``--eval-data``)::

    retrieval/scifact/        corpus.jsonl, queries.jsonl, qrels/test.tsv   (BEIR SciFact test)
    retrieval/scifact_train/  corpus.jsonl, queries.jsonl, qrels/train.tsv  (BEIR SciFact train)
    retrieval/vaswani/        corpus.jsonl, queries.jsonl, qrels/test.tsv   (NPL, Glasgow)
    retrieval/cranfield/      corpus.jsonl, queries.jsonl, qrels/test.tsv   (Cranfield, Glasgow)
    sts/                      sts-train.csv, sts-dev.csv, readme.txt, LICENSE.txt  (STS Benchmark)

Each retrieval folder is in BEIR's layout: ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``; only the queries judged in the split) and
``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a header row). The STS files
are copied as released (tab-separated: genre, file, year, id, score, sentence 1, sentence 2);
the test split is left out.

Each collection comes from one public file (:data:`SOURCES`), looked for in ``--archives``
(default: ``DATA_DIR/downloads``) as the archive itself or as its files already extracted there,
and downloaded into that folder when absent unless ``--offline``. The conversions follow
ir_datasets' readers of the Glasgow files, with whitespace runs and line breaks joined into
single spaces, and Vaswani's upper-case queries in lower case like its documents. Cranfield's
queries are numbered 1 to 225 in file order, as its relevance file numbers them (the ``.I``
numbers of ``cran.qry`` skip values), and its grades (1 = a complete answer ... 4 = minimum
interest; -1 = of no interest) become gains ``5 - grade``, so that 4 is the most relevant; -1
is dropped. Built from the public Cranfield files, the three files are byte for byte those the
project's own measurements used.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("get_data")

QRELS_HEADER = "query-id\tcorpus-id\tscore\n"


@dataclass(frozen=True)
class Source:
    """One public file and the members of it that the layout is built from."""

    archive: str
    url: str
    members: tuple[str, ...]
    licence: str


SOURCES: dict[str, Source] = {
    "scifact": Source(
        "scifact.zip",
        "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip",
        ("corpus.jsonl", "queries.jsonl", "train.tsv", "test.tsv"),
        "CC BY-NC 2.0",
    ),
    "vaswani": Source(
        "npl.tar.gz",
        "http://ir.dcs.gla.ac.uk/resources/test_collections/npl/npl.tar.gz",
        ("doc-text", "query-text", "rlv-ass"),
        "research test collection (University of Glasgow IR group)",
    ),
    "cranfield": Source(
        "cran.tar.gz",
        "http://ir.dcs.gla.ac.uk/resources/test_collections/cran/cran.tar.gz",
        ("cran.all.1400", "cran.qry", "cranqrel"),
        "research test collection (University of Glasgow IR group)",
    ),
    "sts": Source(
        "Stsbenchmark.tar.gz",
        "http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
        ("sts-train.csv", "sts-dev.csv", "readme.txt", "LICENSE.txt"),
        "CC BY-SA 4.0 (scores); the texts keep their own licences (LICENSE.txt)",
    ),
}

#: Sizes of the published files' conversion: (documents, queries, qrels) or (train, dev) pairs.
EXPECTED: dict[str, tuple[int, ...]] = {
    "scifact": (5183, 300, 339),
    "scifact_train": (5183, 809, 919),
    "vaswani": (11429, 93, 2083),
    "cranfield": (1400, 225, 1612),
    "sts": (5749, 1500),
}


class DataError(Exception):
    """A public file is missing or not in the expected format."""


def read_members(source: Source, archives: Path, *, offline: bool) -> dict[str, bytes]:
    """The members of ``source`` by file name: its archive's, or extracted files, in ``archives``.

    Downloads the archive into ``archives`` when neither is there, unless ``offline``.

    Raises:
        DataError: if the files are absent (offline) or the download or archive fails.
    """
    archive = archives / source.archive
    if not archive.is_file():
        loose = {name: archives / name for name in source.members}
        if all(path.is_file() for path in loose.values()):
            return {name: path.read_bytes() for name, path in loose.items()}
        if offline:
            raise DataError(
                f"{archive} is absent: download {source.url} into {archives} (or extract "
                f"{', '.join(source.members)} there), or run without --offline."
            )
        download(source.url, archive)
    found = _archive_members(archive, set(source.members))
    missing = sorted(set(source.members) - set(found))
    if missing:
        raise DataError(f"{archive} has no {', '.join(missing)}; is it the file of {source.url}?")
    return found


def download(url: str, target: Path) -> None:
    """Fetch ``url`` into ``target`` (written under a ``.partial`` name until complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({exc}); fetch it by other means into {target.parent} "
            "and run again with --offline."
        ) from exc
    partial.replace(target)


def _archive_members(archive: Path, names: set[str]) -> dict[str, bytes]:
    """The archive's files whose base name is in ``names`` (a zip or a tar file)."""
    found: dict[str, bytes] = {}
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    name = Path(info.filename).name
                    if name in names and not info.is_dir():
                        found[name] = bundle.read(info)
        else:
            with tarfile.open(archive) as bundle:
                for member in bundle.getmembers():
                    name = Path(member.name).name
                    handle = bundle.extractfile(member) if member.isfile() else None
                    if name in names and handle is not None:
                        found[name] = handle.read()
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"{archive} is not a readable zip or tar archive: {exc}") from exc
    return found


def _text(raw: bytes) -> str:
    # The Glasgow files are ASCII apart from a few Latin-1 bytes.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _squeeze(lines: Iterable[str]) -> str:
    """The lines as one text, whitespace runs and line breaks as single spaces."""
    return " ".join(" ".join(lines).split())


def _blocks(text: str) -> Iterator[list[str]]:
    """The line groups of a Glasgow file between its ``/`` separator lines."""
    block: list[str] = []
    for line in text.splitlines():
        if line.strip() == "/":
            if block:
                yield block
            block = []
        elif block or line.strip():
            block.append(line)
    if block:
        yield block


def _dot_records(text: str) -> Iterator[dict[str, list[str]]]:
    """The records of a SMART-style file (``.I n`` then ``.T``/``.A``/``.B``/``.W`` fields)."""
    record: dict[str, list[str]] | None = None
    field = "I"
    for line in text.splitlines():
        if line.startswith(".I"):
            if record is not None:
                yield record
            record = {"I": [line[2:]]}
            field = "I"
        elif record is None:
            continue
        elif len(line) >= 2 and line[0] == "." and line[1] in "TABW" and not line[2:].strip():
            field = line[1]
        else:
            record.setdefault(field, []).append(line)
    if record is not None:
        yield record


def convert_scifact(files: Mapping[str, bytes]) -> dict[str, tuple[list[dict[str, str]], ...]]:
    """BEIR SciFact as two folders: ``scifact`` (test qrels) and ``scifact_train`` (train).

    Returns:
        Per folder: corpus, judged queries and qrels rows ``(query-id, corpus-id, score)``.
    """
    corpus = [
        {"_id": str(doc["_id"]), "title": doc.get("title", ""), "text": doc.get("text", "")}
        for doc in _jsonl(files["corpus.jsonl"])
    ]
    queries = [{"_id": str(q["_id"]), "text": q["text"]} for q in _jsonl(files["queries.jsonl"])]
    folders: dict[str, tuple[list[dict[str, str]], ...]] = {}
    for folder, split in (("scifact", "test.tsv"), ("scifact_train", "train.tsv")):
        qrels = _tsv_qrels(files[split])
        judged = {row["query-id"] for row in qrels}
        folders[folder] = (corpus, [q for q in queries if q["_id"] in judged], qrels)
    return folders


def convert_vaswani(files: Mapping[str, bytes]) -> tuple[list[dict[str, str]], ...]:
    """The NPL (Vaswani) collection: documents, queries and binary qrels."""
    corpus = [
        {"_id": block[0].strip(), "title": "", "text": _squeeze(block[1:])}
        for block in _blocks(_text(files["doc-text"]))
    ]
    queries = [  # upper case in the release, lower case like the documents here
        {"_id": block[0].strip(), "text": _squeeze(block[1:]).lower()}
        for block in _blocks(_text(files["query-text"]))
    ]
    qrels = [
        {"query-id": block[0].strip(), "corpus-id": doc, "score": "1"}
        for block in _blocks(_text(files["rlv-ass"]))
        for line in block[1:]
        for doc in line.split()
    ]
    return corpus, queries, qrels


def convert_cranfield(files: Mapping[str, bytes]) -> tuple[list[dict[str, str]], ...]:
    """The Cranfield collection: documents, queries numbered in file order, graded qrels."""
    corpus = [
        {
            "_id": record["I"][0].strip(),
            "title": _squeeze(record.get("T", [])),
            "text": _squeeze(record.get("W", [])),
        }
        for record in _dot_records(_text(files["cran.all.1400"]))
    ]
    queries = [
        {"_id": str(number), "text": _squeeze(record.get("W", []))}
        for number, record in enumerate(_dot_records(_text(files["cran.qry"])), start=1)
    ]
    qrels = []
    for line in _text(files["cranqrel"]).splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DataError(f"cranqrel: expected 'query document grade', found {line!r}")
        query, doc, grade = fields[0], fields[1], int(fields[2])
        if 1 <= grade <= 4:
            qrels.append({"query-id": query, "corpus-id": doc, "score": str(5 - grade)})
    return corpus, queries, qrels


def _jsonl(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def _tsv_qrels(raw: bytes) -> list[dict[str, str]]:
    lines = raw.decode("utf-8").splitlines()
    return [
        dict(zip(("query-id", "corpus-id", "score"), line.split("\t"), strict=True))
        for line in lines[1:]
        if line.strip()
    ]


def write_retrieval(
    folder: Path,
    split: str,
    corpus: Sequence[Mapping[str, str]],
    queries: Sequence[Mapping[str, str]],
    qrels: Sequence[Mapping[str, str]],
) -> None:
    """Write one BEIR-layout folder; the queries kept are those judged in ``qrels``."""
    judged = {row["query-id"] for row in qrels}
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps(dict(doc)) + "\n" for doc in corpus), encoding="utf-8"
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps(dict(q)) + "\n" for q in queries if q["_id"] in judged),
        encoding="utf-8",
    )
    (folder / "qrels" / f"{split}.tsv").write_text(
        QRELS_HEADER
        + "".join(f"{row['query-id']}\t{row['corpus-id']}\t{row['score']}\n" for row in qrels),
        encoding="utf-8",
    )


def build(name: str, files: Mapping[str, bytes], out: Path) -> dict[str, tuple[int, ...]]:
    """Write the folders of collection ``name``; returns their sizes as :data:`EXPECTED` has."""
    sizes: dict[str, tuple[int, ...]] = {}
    if name == "sts":
        (out / "sts").mkdir(parents=True, exist_ok=True)
        for member in SOURCES["sts"].members:
            (out / "sts" / member).write_bytes(files[member])
        sizes["sts"] = tuple(
            sum(1 for line in _text(files[f"sts-{split}.csv"]).splitlines() if line.strip())
            for split in ("train", "dev")
        )
        return sizes
    if name == "scifact":
        collections = dict(convert_scifact(files))
    elif name == "vaswani":
        collections = {"vaswani": convert_vaswani(files)}
    else:
        collections = {"cranfield": convert_cranfield(files)}
    for folder, (corpus, queries, qrels) in collections.items():
        split = "train" if folder == "scifact_train" else "test"
        write_retrieval(out / "retrieval" / folder, split, corpus, queries, qrels)
        judged = {row["query-id"] for row in qrels}
        sizes[folder] = (len(corpus), sum(q["_id"] in judged for q in queries), len(qrels))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Build the layout; returns 0, or 1 when a public file is missing or malformed."""
    parser = argparse.ArgumentParser(
        description="Build the evaluation data folder (BEIR layout + STS Benchmark) from the "
        "public releases of SciFact, Vaswani, Cranfield and STS Benchmark.",
    )
    parser.add_argument("out", type=Path, metavar="DATA_DIR", help="folder to write")
    parser.add_argument(
        "--archives",
        type=Path,
        metavar="DIR",
        help="where the public files are, or are downloaded to (default: DATA_DIR/downloads)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="never download; read only --archives"
    )
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SOURCES), metavar="NAME", help="collections to build"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    archives: Path = args.archives or args.out / "downloads"
    try:
        for name in args.only or SOURCES:
            source = SOURCES[name]
            files = read_members(source, archives, offline=args.offline)
            for folder, size in build(name, files, args.out).items():
                logger.info("%s: %s; licence: %s", folder, size, source.licence)
                if size != EXPECTED[folder]:
                    logger.warning(
                        "%s: the published files give %s; is %s another release?",
                        folder,
                        EXPECTED[folder],
                        source.archive,
                    )
    except DataError as exc:
        print(f"get_data: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
