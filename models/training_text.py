"""Training text for the default model: text pairs from sources obtainable offline, with licences.

Every source gives ``(anchor, positive)`` pairs: a short, query-like text and a longer text it
belongs with. No evaluation test split is read, and the default sources all allow commercial
use (permissive or share-alike; :data:`SHARE_ALIKE` lists the share-alike ones).

- the pinned public repositories of :mod:`sources` (Wikipedia, arXiv, MedQuAD, tldr,
  OpenTriviaQA, GSM8K train, PEPs), read from a local folder of git copies;
- ``debian``: package synopsis -> first paragraph of its long description (Debian 12 main,
  Translation-en); each package's DFSG-free licence. Packages of the archive sections in
  :data:`DOMAIN_SECTIONS` come out as the source ``debian-science`` instead: a whole field
  that training never sees, held out for model selection.
- ``wordnet``: lemma(s) -> definition, and definition -> example sentence (Debian's
  ``wordnet-base``); WordNet 3.0 licence (BSD-style, Princeton University).
- ``stsb``: STS Benchmark **train** pairs with a gold score of 4 or more; CC BY-SA 4.0.
- opt-in, for ablations only: ``debian-full`` (synopsis -> the whole description) and
  ``scifact`` (SciFact **train** claims and the corpus; CC BY-NC 2.0, non-commercial, so never
  in the shipped default).

Where a source is absent (no Debian translations downloaded, no data folder, no git copy) it is
skipped with a warning; :func:`fetch_debian_sources` downloads the two Debian inputs with
``apt-get``.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from models import sources as pinned
from sse_export.evaluate import load_retrieval, load_sts

logger = logging.getLogger("corpus")

APT_LISTS = Path("/var/lib/apt/lists")
PINNED = tuple(source.name for source in pinned.SOURCES)
SOURCES = (*PINNED, "debian", "wordnet", "stsb")
#: Sources the recipe can add (``--sources ... scifact``) but leaves out of the default; scifact
#: is non-commercial (CC BY-NC) and may only appear in ablations.
EXTRA = ("debian-full", "scifact")
ALL_SOURCES = SOURCES + EXTRA
NON_COMMERCIAL = ("scifact",)
#: Debian archive sections held out whole (science, mathematics, electronics, radio): their
#: pairs measure how well the model transfers to technical text of a field it was not trained on.
DOMAIN_SECTIONS = ("science", "math", "electronics", "hamradio")
DOMAIN_SOURCE = "debian-science"
LICENCES = {
    **{source.name: source.licence for source in pinned.SOURCES},
    "debian": "Debian main package descriptions: each package's DFSG-free licence",
    "debian-full": "Debian main package descriptions: each package's DFSG-free licence",
    "wordnet": "WordNet 3.0 licence (BSD-style), Princeton University",
    "scifact": "CC BY-NC 2.0 (SciFact train claims and corpus): non-commercial, ablations only",
    "stsb": "CC BY-SA 4.0 (STS Benchmark train split)",
}
SHARE_ALIKE = (*(s.name for s in pinned.SOURCES if s.share_alike), "stsb")


@dataclass(frozen=True)
class Pair:
    """A query-like ``anchor`` and the ``positive`` text it belongs with."""

    source: str
    anchor: str
    positive: str


def fetch_debian_sources(cache: Path) -> Path:
    """Download the English package descriptions and ``wordnet-base``; return the .deb folder.

    Runs ``apt-get -o Acquire::Languages=en update`` (needs root) and ``apt-get download
    wordnet-base`` into ``cache``.
    """
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "-qq", "-o", "Acquire::Languages=en", "update"], check=True)
    if not any(cache.glob("wordnet-base_*.deb")):
        subprocess.run(["apt-get", "-qq", "download", "wordnet-base"], cwd=cache, check=True)
    return cache


def _apt_list(path: Path) -> str:
    """The text of a (compressed) apt list file."""
    return subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def debian_sections() -> dict[str, str]:
    """Package name -> archive section, from the main archive's Packages lists."""
    sections: dict[str, str] = {}
    for path in sorted(APT_LISTS.glob("*_main_binary-*_Packages*")):
        for record in _apt_list(path).split("\n\n"):
            package = re.search(r"^Package: (.*)$", record, re.MULTILINE)
            section = re.search(r"^Section: (.*)$", record, re.MULTILINE)
            if package and section:
                sections.setdefault(package.group(1), section.group(1).split("/")[-1])
    return sections


@functools.cache
def _debian_descriptions() -> tuple[tuple[bool, str, list[str]], ...]:
    """``(in a held-out section, synopsis, paragraphs)`` of every English package description.

    Parsed once per process (about 3 s): the pairs and the context texts both read them.
    """
    files = sorted(APT_LISTS.glob("*_main_i18n_Translation-en*"))
    if not files:
        logger.warning("no Debian Translation-en lists: run fetch_debian_sources (apt-get update)")
        return ()
    sections = debian_sections()
    found = []
    for path in files:
        for record in _apt_list(path).split("\n\n"):
            match = re.search(r"^Description-en: (.*)\n((?: .*\n?)*)", record, re.MULTILINE)
            package = re.search(r"^Package: (.*)$", record, re.MULTILINE)
            if not match or not package:
                continue
            paragraphs = [
                " ".join(line.strip() for line in part.splitlines() if line.strip())
                for part in match.group(2).split("\n .")
            ]
            domain = sections.get(package.group(1)) in DOMAIN_SECTIONS
            found.append((domain, match.group(1).strip(), [p for p in paragraphs if p]))
    return tuple(found)


def debian_pairs() -> Iterator[Pair]:
    """Synopsis -> first paragraph of the long description, one per distinct paragraph."""
    seen: set[str] = set()
    for domain, synopsis, paragraphs in _debian_descriptions():
        paragraph = paragraphs[0] if paragraphs else ""
        if len(paragraph) < 40 or paragraph in seen:
            continue
        seen.add(paragraph)
        yield Pair(DOMAIN_SOURCE if domain else "debian", synopsis, paragraph)


def _long_descriptions() -> Iterator[tuple[str, str]]:
    """``(synopsis, synopsis. all paragraphs)`` of each distinct description of two or more
    paragraphs outside the held-out sections."""
    seen: set[str] = set()
    for domain, synopsis, paragraphs in _debian_descriptions():
        text = f"{synopsis}. {' '.join(paragraphs)}"
        if not domain and len(paragraphs) >= 2 and text not in seen:
            seen.add(text)
            yield synopsis, text


def debian_full_pairs() -> Iterator[Pair]:
    """Synopsis -> the whole description, for descriptions of two or more paragraphs."""
    for synopsis, text in _long_descriptions():
        yield Pair("debian-full", synopsis, text)


def context_texts(pairs: Sequence[Pair], count: int, seed: int, min_chars: int = 300) -> list[str]:
    """Up to ``count`` long positives of ``pairs`` (distinct, seeded sample), for stage 1.

    These are the running texts where each token is seen among many neighbours; the teacher's
    pass over them gives the in-context token vectors and, on the way, their sentence targets.
    """
    long = list(dict.fromkeys(p.positive for p in pairs if len(p.positive) >= min_chars))
    random.Random(f"{seed}-context").shuffle(long)
    return long[:count]


def wordnet_pairs(debs: Path) -> Iterator[Pair]:
    """Lemmas -> definition, and definition -> example, from WordNet's data files."""
    packages = sorted(debs.glob("wordnet-base_*.deb"))
    if not packages:
        logger.warning("no wordnet-base .deb in %s: run fetch_debian_sources", debs)
        return
    with tempfile.TemporaryDirectory(prefix="wordnet-") as root:
        subprocess.run(["dpkg-deb", "-x", str(packages[-1]), root], check=True)
        for part in ("noun", "verb", "adj", "adv"):
            data = Path(root) / "usr/share/wordnet" / f"data.{part}"
            for line in data.read_text(encoding="latin-1").splitlines():
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                fields, gloss = line.split("|", 1)
                tokens = fields.split()
                count = int(tokens[3], 16)
                lemmas = [tokens[4 + 2 * i].replace("_", " ") for i in range(count)]
                lemmas = [re.sub(r"\(.*\)$", "", lemma) for lemma in lemmas]
                definition, *examples = (p.strip(' "') for p in gloss.strip().split(";"))
                if not definition:
                    continue
                yield Pair("wordnet", ", ".join(dict.fromkeys(lemmas)), definition)
                example = next((e for e in examples if len(e.split()) >= 4), None)
                if example:
                    yield Pair("wordnet", definition, example)


def scifact_pairs(data: Path) -> Iterator[Pair]:
    """Title -> abstract for the corpus, and train claim -> each abstract it cites."""
    folder = data / "retrieval" / "scifact_train"
    if not (folder / "qrels" / "train.tsv").is_file():
        logger.warning("no %s: SciFact train pairs skipped", folder)
        return
    for line in (folder / "corpus.jsonl").open(encoding="utf-8"):
        doc = json.loads(line)
        if doc["title"].strip() and doc["text"].strip():
            yield Pair("scifact", doc["title"].strip(), doc["text"].strip())
    train = load_retrieval(folder, "train")
    docs = dict(zip(train.doc_ids, train.doc_texts, strict=True))
    for query_id, claim in zip(train.query_ids, train.query_texts, strict=True):
        for doc_id in train.qrels[query_id]:
            yield Pair("scifact", claim, docs[doc_id])


def stsb_pairs(data: Path) -> Iterator[Pair]:
    """STS-B train pairs scored 4 or more (near paraphrases)."""
    path = data / "sts" / "sts-train.csv"
    if not path.is_file():
        logger.warning("no %s: STS-B pairs skipped", path)
        return
    sts = load_sts(path)
    for first, second, score in zip(sts.sentences1, sts.sentences2, sts.scores, strict=True):
        if score >= 4.0:
            yield Pair("stsb", first, second)


def load_pairs(
    data: Path,
    debs: Path,
    copies: Path,
    sources: Sequence[str],
    limits: dict[str, int],
    seed: int,
) -> list[Pair]:
    """The pairs of ``sources``, each shuffled with ``seed`` and cut to its limit (0 = none)."""
    generators: dict[str, Callable[[], Iterable[Pair]]] = {
        "debian": debian_pairs,
        "debian-full": debian_full_pairs,
        "wordnet": lambda: wordnet_pairs(debs),
        "scifact": lambda: scifact_pairs(data),
        "stsb": lambda: stsb_pairs(data),
    }
    for name in PINNED:
        generators[name] = functools.partial(_pinned_pairs, copies, name)
    pairs: list[Pair] = []
    for name in sources:
        found = list(generators[name]())
        random.Random(f"{seed}-{name}").shuffle(found)
        kept = found[: limits.get(name) or None]
        logger.info("%s: %d pairs (of %d)", name, len(kept), len(found))
        pairs.extend(kept)
    return pairs


def _pinned_pairs(copies: Path, name: str) -> Iterator[Pair]:
    try:
        for anchor, positive in pinned.pairs(copies, name):
            yield Pair(name, anchor, positive)
    except FileNotFoundError as error:
        logger.warning("%s skipped: %s", name, error)
