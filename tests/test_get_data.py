"""bench/get_data.py on tiny files in the formats of the four public releases.

Each archive below copies the layout of the real one (member paths, separators, numbering,
grades, stray whitespace) with a few records, so the conversion is checked without a download.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT

# BEIR's scifact.zip: a scifact/ folder; documents and queries carry a metadata object.
BEIR_CORPUS = [
    {"_id": "4983", "title": "Microstructural development", "text": "Alterations…", "metadata": {}},
    {"_id": "5836", "title": "Induction of myelodysplasia", "text": "Myelodysplas", "metadata": {}},
    {"_id": "7912", "title": "BC1 RNA", "text": "ID elements are", "metadata": {}},
]
BEIR_QUERIES = [
    {"_id": "0", "text": "0-dimensional biomaterials lack inductive properties.", "metadata": {}},
    {"_id": "1", "text": "0-dimensional biomaterials show inductive properties.", "metadata": {}},
    {"_id": "2", "text": "1 in 5 million in UK have abnormal PrP positivity.", "metadata": {}},
    {"_id": "3", "text": "Not judged anywhere.", "metadata": {}},
]
BEIR_TRAIN = "query-id\tcorpus-id\tscore\n0\t4983\t1\n2\t7912\t1\n"
BEIR_TEST = "query-id\tcorpus-id\tscore\n1\t5836\t1\n"

# Glasgow's npl.tar.gz: blocks separated by a line of "   /" (queries: "/"); lower-case
# documents and upper-case queries with double spaces, one judgement block per query.
NPL_DOCS = (
    "1\ncompact memories have flexible capacities  a digital data storage\n"
    "system with capacity up to bits\n   /\n"
    "2\nan electronic analogue computer for solving systems\n   /\n"
    "3\nhighspeed microwave switching of semiconductors part\n   /\n"
)
NPL_QUERIES = "1\nMEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS\n/\n2\nanalogue  computers\n/\n"
NPL_QRELS = "1\n 1 3\n   /\n2\n 2\n   /\n"

# Glasgow's cran.tar.gz: SMART records; the query numbers in cran.qry skip values while
# cranqrel numbers queries 1, 2, 3 in file order; grades 1 (best) to 4, and -1.
CRAN_DOCS = (
    ".I 1\n.T\nexperimental investigation of the aerodynamics of a\nwing in a slipstream .\n"
    ".A\nbrenckman,m.\n.B\nj. ae. scs. 25, 1958, 324.\n.W\nexperimental investigation of the\n"
    "aerodynamics of a wing in a slipstream .\n  an experimental study of a wing .\n"
    ".I 2\n.T\nsimple shear flow past a flat plate .\n.A\nting-yili\n.B\ndept. aero.\n.W\n"
    "simple shear flow past a flat plate .\n"
    ".I 3\n.T\n.A\n.B\n.W\n"
)
CRAN_QUERIES = (
    ".I 001\n.W\nwhat similarity laws must be obeyed when constructing aeroelastic models\n"
    "of heated high speed aircraft .\n.I 002\n.W\nwhat are the structural and aeroelastic "
    "problems .\n.I 004\n.W\nis it possible to find an analytical,  similar solution .\n"
)
CRAN_QRELS = "1 2 2 \n1 1 4 \n1 3 -1\n\n\n2 1 1 \n2 3 -1\n3 2  3 \n3 1 -1\n"

# The STS Benchmark tarball: a stsbenchmark/ folder; the test split must stay out.
STS_TRAIN = "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane.\n"
STS_DEV = (
    "main-captions\tMSRvid\t2012test\t0000\t5.000\tA man.\tA man is dancing.\n"
    'main-news\theadlines\t2013\t0001\t1.200\t"Quoted" text\tOther\tsource-a\tsource-b\n'
)
STS_FILES = {
    "sts-train.csv": STS_TRAIN,
    "sts-dev.csv": STS_DEV,
    "sts-test.csv": "withheld\n",
    "readme.txt": "STS Benchmark\n",
    "LICENSE.txt": "CC BY-SA 4.0\n",
    "correlation.pl": "#!/usr/bin/perl\n",
}


@pytest.fixture(scope="module")
def get_data() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("get_data", ROOT / "bench" / "get_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["get_data"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["get_data"]


def write_tar(path: Path, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as bundle:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))


def write_archives(folder: Path) -> Path:
    folder.mkdir()
    with zipfile.ZipFile(folder / "scifact.zip", "w") as bundle:
        bundle.writestr("scifact/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in BEIR_CORPUS))
        bundle.writestr(
            "scifact/queries.jsonl", "".join(json.dumps(q) + "\n" for q in BEIR_QUERIES)
        )
        bundle.writestr("scifact/qrels/train.tsv", BEIR_TRAIN)
        bundle.writestr("scifact/qrels/test.tsv", BEIR_TEST)
    npl = {"doc-text": NPL_DOCS, "query-text": NPL_QUERIES, "rlv-ass": NPL_QRELS, "term-vocab": ""}
    write_tar(folder / "npl.tar.gz", npl)
    cran = {"cran.all.1400": CRAN_DOCS, "cran.qry": CRAN_QUERIES, "cranqrel": CRAN_QRELS}
    write_tar(folder / "cran.tar.gz", cran)
    sts = {f"stsbenchmark/{name}": text for name, text in STS_FILES.items()}
    write_tar(folder / "Stsbenchmark.tar.gz", sts)
    return folder


def jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_builds_the_layout_from_the_public_archives(
    get_data: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archives = write_archives(tmp_path / "downloads")
    out = tmp_path / "data"
    caplog.set_level(logging.INFO, logger="get_data")

    assert get_data.main([str(out), "--archives", str(archives), "--offline"]) == 0

    # Tiny files: every size differs from the published release's, and the log says so.
    assert "cranfield: (3, 3, 4); licence: research" in caplog.text
    assert "cranfield: the published files give (1400, 225, 1612)" in caplog.text

    retrieval = out / "retrieval"
    assert sorted(p.name for p in retrieval.iterdir()) == [
        "cranfield", "scifact", "scifact_train", "vaswani",
    ]  # fmt: skip
    corpus = [{k: d[k] for k in ("_id", "title", "text")} for d in BEIR_CORPUS]
    assert jsonl(retrieval / "scifact" / "corpus.jsonl") == corpus
    assert jsonl(retrieval / "scifact_train" / "corpus.jsonl") == corpus
    test_queries = [{"_id": "1", "text": BEIR_QUERIES[1]["text"]}]
    assert jsonl(retrieval / "scifact" / "queries.jsonl") == test_queries
    assert [q["_id"] for q in jsonl(retrieval / "scifact_train" / "queries.jsonl")] == ["0", "2"]
    assert (retrieval / "scifact" / "qrels" / "test.tsv").read_text() == BEIR_TEST
    assert (retrieval / "scifact_train" / "qrels" / "train.tsv").read_text() == BEIR_TRAIN

    assert jsonl(retrieval / "vaswani" / "corpus.jsonl") == [
        {"_id": "1", "title": "", "text": "compact memories have flexible capacities a digital "
         "data storage system with capacity up to bits"},
        {"_id": "2", "title": "", "text": "an electronic analogue computer for solving systems"},
        {"_id": "3", "title": "", "text": "highspeed microwave switching of semiconductors part"},
    ]  # fmt: skip
    assert jsonl(retrieval / "vaswani" / "queries.jsonl") == [
        {"_id": "1", "text": "measurement of dielectric constant of liquids"},
        {"_id": "2", "text": "analogue computers"},
    ]
    assert (retrieval / "vaswani" / "qrels" / "test.tsv").read_text() == (
        "query-id\tcorpus-id\tscore\n1\t1\t1\n1\t3\t1\n2\t2\t1\n"
    )

    docs = jsonl(retrieval / "cranfield" / "corpus.jsonl")
    assert docs[0] == {
        "_id": "1",
        "title": "experimental investigation of the aerodynamics of a wing in a slipstream .",
        "text": "experimental investigation of the aerodynamics of a wing in a slipstream . "
        "an experimental study of a wing .",
    }
    assert docs[2] == {"_id": "3", "title": "", "text": ""}
    queries = jsonl(retrieval / "cranfield" / "queries.jsonl")
    assert [q["_id"] for q in queries] == ["1", "2", "3"]  # file order, not the .I numbers
    assert queries[2]["text"] == "is it possible to find an analytical, similar solution ."
    assert (retrieval / "cranfield" / "qrels" / "test.tsv").read_text() == (
        "query-id\tcorpus-id\tscore\n1\t2\t3\n1\t1\t1\n2\t1\t4\n3\t2\t2\n"
    )  # gain = 5 - grade; -1 dropped

    assert sorted(p.name for p in (out / "sts").iterdir()) == [
        "LICENSE.txt", "readme.txt", "sts-dev.csv", "sts-train.csv",
    ]  # fmt: skip
    assert (out / "sts" / "sts-dev.csv").read_text(encoding="utf-8") == STS_DEV


def test_the_evaluation_code_reads_what_it_wrote(get_data: ModuleType, tmp_path: Path) -> None:
    evaluate = pytest.importorskip("sse_export.evaluate")
    out = tmp_path / "data"
    get_data.main([str(out), "--archives", str(write_archives(tmp_path / "a")), "--offline"])

    cranfield = evaluate.load_retrieval(out / "retrieval" / "cranfield", "test")
    assert cranfield.qrels == {"1": {"2": 3, "1": 1}, "2": {"1": 4}, "3": {"2": 2}}
    plate = "simple shear flow past a flat plate ."
    assert cranfield.doc_texts[1] == f"{plate} {plate}"  # title + " " + text
    sts = evaluate.load_sts(out / "sts" / "sts-dev.csv")
    assert list(sts.scores) == [5.0, 1.2]


def test_extracted_files_serve_as_well(get_data: ModuleType, tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "cran.all.1400").write_text(CRAN_DOCS)
    (loose / "cran.qry").write_text(CRAN_QUERIES)
    (loose / "cranqrel").write_text(CRAN_QRELS)
    out = tmp_path / "data"

    args = [str(out), "--archives", str(loose), "--offline", "--only", "cranfield"]
    assert get_data.main(args) == 0
    assert len(jsonl(out / "retrieval" / "cranfield" / "corpus.jsonl")) == 3
    assert not (out / "retrieval" / "vaswani").exists()


def test_a_missing_file_offline_names_where_to_get_it(
    get_data: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(tmp_path / "data"), "--archives", str(tmp_path), "--offline", "--only", "vaswani"]
    assert get_data.main(args) == 1
    err = capsys.readouterr().err
    assert "npl.tar.gz is absent: download http://ir.dcs.gla.ac.uk/" in err
    assert "doc-text, query-text, rlv-ass" in err


def test_an_archive_without_its_files_is_named(get_data: ModuleType, tmp_path: Path) -> None:
    write_tar(tmp_path / "cran.tar.gz", {"cran.all.1400": CRAN_DOCS})
    with pytest.raises(get_data.DataError, match=r"cran\.tar\.gz has no cran\.qry, cranqrel"):
        get_data.read_members(get_data.SOURCES["cranfield"], tmp_path, offline=True)
