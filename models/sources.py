"""Public text of recipe v3: each source pinned to a commit, read from a local folder of git copies.

Every source is one row of :data:`SOURCES`: the repository and commit it is read at, the files
read there, what it gives and its licence. The recipe never downloads: ``--copies DIR`` points at
a folder holding one git clone per repository, named ``owner+name`` (so
``DIR/chinapedia+wikipedia.abstract.en``). Where the internet is reachable, each clone is made
with the command :meth:`Source.clone_command` prints (``python -m models.sources --print-git``
prints them all). Files are read at the pinned commit with ``git cat-file``, whatever the
clone's checked-out branch, so two copies give the same text. Files of 4 MiB or more may be
absent from a copy (partial clones skip them); the readers count only what they find and the
card records the counts.

Each reader yields ``(anchor, positive)`` pairs: a short, query-like text and the passage it
belongs with. Texts are cleaned of markup but not otherwise changed.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("sources")

#: Passages are cut to about what the teacher reads (256 tokens, ~1,000 characters of English).
MAX_PASSAGE_CHARS = 1500
MIN_PASSAGE_CHARS = 80


@dataclass(frozen=True)
class Source:
    """One pinned public repository and the files of it the recipe reads."""

    name: str
    repo: str
    commit: str
    paths: str
    what: str
    licence: str
    share_alike: bool = False
    branch: str | None = None

    def clone_command(self, copies: str = "COPIES") -> str:
        """The shell command that makes this source's copy where the internet is reachable."""
        folder = f"{copies}/{self.repo.replace('/', '+')}"
        branch = f" --branch {self.branch}" if self.branch else ""
        return (
            f"git clone --filter=blob:limit=4m{branch} https://github.com/{self.repo} {folder}"
            f" && git -C {folder} cat-file -e {self.commit}"
        )


SOURCES: tuple[Source, ...] = (
    Source(
        "wikipedia",
        "chinapedia/wikipedia.abstract.en",
        "4f3e897da088cbe89a4f1d4cba3fa2e439c3721b",
        "Page/*.md",
        "English Wikipedia (2019): title -> lead, title + heading -> section",
        "CC BY-SA 3.0 (Wikipedia text)",
        share_alike=True,
    ),
    Source(
        "arxiv-cs",
        "dw-dengwei/daily-arXiv-ai-enhanced",
        "b4c542b7d61bff39f8b999b45b43f62b2bb94f75",
        "data/*.jsonl (not *Chinese*)",
        "arXiv cs.* title -> abstract",
        "CC0 1.0 (arXiv metadata)",
        branch="data",
    ),
    Source(
        "arxiv-astro",
        "Straw674/daily-arXiv-astro-ph",
        "fbcd8074604dadf5b2e67803004f76ea94dd245f",
        "data/*.jsonl",
        "arXiv astro-ph title -> abstract",
        "CC0 1.0 (arXiv metadata)",
        branch="data",
    ),
    Source(
        "arxiv-quant",
        "rocksonchang/arXiv-metadata",
        "1e11549bd027ffc952a05c7fde4297266d346290",
        "data/arXiv-meta-*.xml",
        "arXiv quant-ph title -> abstract",
        "CC0 1.0 (arXiv metadata)",
    ),
    Source(
        "medquad",
        "abachaa/MedQuAD",
        "577bd37b96c02d1833b2c9eed2de9f96964e96cb",
        "*/*.xml",
        "NIH consumer-health question -> answer",
        "CC BY 4.0",
    ),
    Source(
        "tldr",
        "tldr-pages/tldr",
        "08e345f42639f67d99282813247ac670dc6e87cb",
        "pages/*/*.md",
        "task description -> command example; command -> its summary",
        "CC BY 4.0",
    ),
    Source(
        "trivia",
        "uberspot/OpenTriviaQA",
        "dd31530bfbb19f9505b160b89c9df4b1127e3c70",
        "categories/*",
        "trivia question -> its answer",
        "CC BY-SA 4.0",
        share_alike=True,
    ),
    Source(
        "gsm8k",
        "openai/grade-school-math",
        "3101c7d5072418e28b9008a6636bde82a006892c",
        "grade_school_math/data/train.jsonl (never test.jsonl)",
        "maths word problem -> worked solution",
        "MIT",
    ),
    Source(
        "peps",
        "python/peps",
        "ba4deeb7969588d937da609008d05bb83a47b1ab",
        "peps/*.rst",
        "PEP title + heading -> section",
        "public domain / CC0 1.0 (each PEP's own notice)",
    ),
)
BY_NAME = {source.name: source for source in SOURCES}


class Copy:
    """A git copy of one source, read at its pinned commit."""

    def __init__(self, copies: Path, source: Source) -> None:
        self.source = source
        self.folder = copies / source.repo.replace("/", "+")
        if not (self.folder / ".git").exists() and not (self.folder / "HEAD").exists():
            raise FileNotFoundError(
                f"no git copy of {source.repo} at {self.folder}; make it with: "
                f"{source.clone_command(str(copies))}"
            )

    def files(self, keep: Callable[[str], bool]) -> list[str]:
        """Paths at the pinned commit that ``keep`` accepts, sorted."""
        listing = subprocess.run(
            ["git", "-C", str(self.folder), "ls-tree", "-r", "--name-only", self.source.commit],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        return sorted(path for path in listing if keep(path))

    def read(self, paths: list[str]) -> Iterator[tuple[str, str]]:
        """``(path, text)`` of each path present in the copy (absent blobs are skipped)."""
        process = subprocess.Popen(
            ["git", "-C", str(self.folder), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        missing = 0
        for path in paths:
            process.stdin.write(f"{self.source.commit}:{path}\n".encode())
            process.stdin.flush()
            header = process.stdout.readline().split()
            if len(header) < 3:  # "<object> missing" (a blob a partial copy lacks)
                missing += 1
                continue
            body = process.stdout.read(int(header[2]))
            process.stdout.read(1)
            yield path, body.decode("utf-8", errors="replace")
        process.stdin.close()
        process.wait()
        if missing:
            logger.info(
                "%s: %d of %d files absent from the copy", self.source.name, missing, len(paths)
            )


def _clean(text: str) -> str:
    """One line of plain text: markup, reference marks and runs of space removed."""
    text = re.sub(r"\[\d+\]|'''|''|_", "", text)
    return re.sub(r"\s+", " ", text).strip()


def _passage(text: str) -> str | None:
    text = _clean(text)
    if len(text) < MIN_PASSAGE_CHARS:
        return None
    if len(text) > MAX_PASSAGE_CHARS:
        text = text[:MAX_PASSAGE_CHARS].rsplit(" ", 1)[0]
    return text


_WIKI_SKIP = {"references", "external links", "see also", "notes", "further reading", "sources"}


def _prose(block: str) -> str:
    """The running-text paragraphs of a Wikipedia block (lists, tables, categories dropped)."""
    kept = []
    for paragraph in block.split("\n\n"):
        lines = paragraph.strip().splitlines()
        if not lines or lines[0].lstrip().startswith(("-", "+", "|", "Category:", "#", "!", "=")):
            continue
        kept.append(" ".join(line.strip() for line in lines))
    return " ".join(kept)


def wikipedia(copy: Copy) -> Iterator[tuple[str, str]]:
    """Title -> lead section, and ``title: heading`` -> that section's prose."""
    paths = copy.files(lambda p: p.startswith("Page/") and p.endswith(".md"))
    for path, text in copy.read(paths):
        title = _clean(path[len("Page/") : -len(".md")].replace("_", " "))
        blocks = text.split("\n\n\n")
        lead = _passage(_prose(blocks[0]))
        if lead:
            yield title, lead
        for block in blocks[1:]:
            heading, _, body = block.strip().partition("\n")
            heading = _clean(heading)
            if not heading or heading.lower() in _WIKI_SKIP or len(heading) > 80:
                continue
            section = _passage(_prose(body))
            if section:
                yield f"{title}: {heading}", section


def arxiv_jsonl(copy: Copy) -> Iterator[tuple[str, str]]:
    """Title -> abstract, from the daily arXiv JSONL files."""
    paths = copy.files(
        lambda p: p.startswith("data/") and p.endswith(".jsonl") and "Chinese" not in p
    )
    for _, text in copy.read(paths):
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            title, abstract = (
                _clean(record.get("title") or ""),
                _passage(record.get("summary") or ""),
            )
            if title and abstract:
                yield title, abstract


def _xml_pairs(
    copy: Copy, keep: Callable[[str], bool], record: str, anchor: str, positive: str
) -> Iterator[tuple[str, str]]:
    """``(anchor, positive)`` texts of each ``record`` element in the XML files ``keep`` accepts."""
    for _, text in copy.read(copy.files(keep)):
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            continue
        for node in root.iter(record):
            first = _clean(node.findtext(anchor) or "")
            second = _passage(node.findtext(positive) or "")
            if first and second:
                yield first, second


def arxiv_xml(copy: Copy) -> Iterator[tuple[str, str]]:
    """Title -> abstract, from the OAI-PMH XML files of quant-ph."""
    return _xml_pairs(
        copy,
        lambda p: p.startswith("data/arXiv-meta-") and p.endswith(".xml"),
        "metadata",
        "title",
        "description",
    )


def medquad(copy: Copy) -> Iterator[tuple[str, str]]:
    """Question -> answer, for the documents whose answers are kept."""
    return _xml_pairs(
        copy, lambda p: p.count("/") == 1 and p.endswith(".xml"), "QAPair", "Question", "Answer"
    )


def tldr(copy: Copy) -> Iterator[tuple[str, str]]:
    """Each example's task -> ``command: task`` line with its code, and command -> its summary."""
    paths = copy.files(lambda p: p.startswith("pages/") and p.endswith(".md"))
    for _, text in copy.read(paths):
        command = re.search(r"^# (.+)$", text, re.MULTILINE)
        if not command:
            continue
        name = command.group(1).strip()
        summary = " ".join(
            re.sub(r"<[^>]*>|`", "", line[2:]).strip()
            for line in text.splitlines()
            if line.startswith("> ") and "More information" not in line
        )
        if len(summary) >= 20:
            yield name, f"{name}: {summary}"
        for task, code in re.findall(r"^- (.+):\n\n`(.+)`$", text, re.MULTILINE):
            code = re.sub(r"\{\{|\}\}", "", code)
            yield _clean(task.replace("[", "").replace("]", "")), f"{name}: {task} {code}"


def trivia(copy: Copy) -> Iterator[tuple[str, str]]:
    """Question -> its answer (true/false questions skipped)."""
    for _, text in copy.read(copy.files(lambda p: p.startswith("categories/"))):
        for block in text.split("#Q ")[1:]:
            question, _, rest = block.partition("\n^ ")
            answer = rest.split("\n", 1)[0].strip()
            question = _clean(question)
            if question and answer and answer not in ("True", "False"):
                yield question, answer


def gsm8k(copy: Copy) -> Iterator[tuple[str, str]]:
    """Word problem -> its worked solution (the train split only)."""
    for _, text in copy.read(["grade_school_math/data/train.jsonl"]):
        for line in text.splitlines():
            record = json.loads(line)
            solution = re.sub(r"<<[^>]*>>", "", record["answer"]).replace("####", "Answer:")
            yield _clean(record["question"]), _clean(solution)


def peps(copy: Copy) -> Iterator[tuple[str, str]]:
    """``PEP title: heading`` -> the section's prose (code blocks and directives dropped)."""
    paths = copy.files(lambda p: re.fullmatch(r"peps/pep-\d+\.rst", p) is not None)
    for _, text in copy.read(paths):
        title = re.search(r"^Title: (.+)$", text, re.MULTILINE)
        if not title:
            continue
        lines = text.splitlines()
        sections: list[tuple[str, list[str]]] = []
        for n, line in enumerate(lines):
            if n + 1 < len(lines) and re.fullmatch(r"([=\-~^])\1{2,}", lines[n + 1].strip()):
                if line.strip():
                    sections.append((line.strip(), []))
            elif (
                sections
                and not line.startswith((" ", "..", "::"))
                and not re.fullmatch(r"([=\-~^])\1{2,}", line.strip())
            ):
                sections[-1][1].append(line)
        for heading, body in sections:
            section = _passage(re.sub(r"[`*]", "", " ".join(body)))
            if section and heading.lower() not in ("copyright", "references", "footnotes"):
                yield f"{title.group(1).strip()}: {heading}", section


READERS: dict[str, Callable[[Copy], Iterator[tuple[str, str]]]] = {
    "wikipedia": wikipedia,
    "arxiv-cs": arxiv_jsonl,
    "arxiv-astro": arxiv_jsonl,
    "arxiv-quant": arxiv_xml,
    "medquad": medquad,
    "tldr": tldr,
    "trivia": trivia,
    "gsm8k": gsm8k,
    "peps": peps,
}


def pairs(copies: Path, name: str) -> Iterator[tuple[str, str]]:
    """The deduplicated ``(anchor, positive)`` pairs of source ``name``.

    A passage is kept once (with its first anchor); a short positive (a trivia answer) once per
    anchor.
    """
    seen: set[object] = set()
    for anchor, positive in READERS[name](Copy(copies, BY_NAME[name])):
        key = positive if len(positive) >= MIN_PASSAGE_CHARS else (anchor, positive)
        if anchor and positive and key not in seen and anchor != positive:
            seen.add(key)
            yield anchor, positive


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The pinned sources of recipe v3.")
    parser.add_argument("--print-git", action="store_true", help="print a clone command per source")
    parser.add_argument("--copies", type=Path, help="count the pairs of each source in DIR")
    args = parser.parse_args()
    for source in SOURCES:
        if args.print_git:
            print(source.clone_command())
        if args.copies:
            print(source.name, sum(1 for _ in pairs(args.copies, source.name)))
