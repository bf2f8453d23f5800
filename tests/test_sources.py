"""The recipe's training text: pinned git copies read at their commit, and BM25 hard negatives."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest

from models import sources

WIKI_PAGE = """FOO BAR is a small town on a river. It has a bridge and a mill that were built
long ago.


History

The town was founded in 1200 by monks who came from the north and stayed for centuries.

-   a list item that is dropped


References

-   a reference that is dropped
"""


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def wiki_copy(tmp_path: Path) -> tuple[Path, sources.Source]:
    """A git copy laid out like the Wikipedia source, with two commits."""
    source = sources.BY_NAME["wikipedia"]
    folder = tmp_path / source.repo.replace("/", "+")
    (folder / "Page").mkdir(parents=True)
    git(folder, "init", "-q")
    git(folder, "config", "user.email", "t@example.invalid")
    git(folder, "config", "user.name", "t")
    (folder / "Page" / "Foo_bar.md").write_text(WIKI_PAGE, encoding="utf-8")
    git(folder, "add", ".")
    git(folder, "commit", "-qm", "first")
    pinned = git(folder, "rev-parse", "HEAD")
    (folder / "Page" / "Foo_bar.md").write_text("CHANGED later, never read.\n", encoding="utf-8")
    git(folder, "commit", "-qam", "second")
    return tmp_path, dataclasses.replace(source, commit=pinned)


def test_wikipedia_reader_pairs_title_with_lead_and_heading_with_section(
    wiki_copy: tuple[Path, sources.Source],
) -> None:
    copies, source = wiki_copy
    pairs = list(sources.wikipedia(sources.Copy(copies, source)))
    assert pairs == [
        (
            "Foo bar",
            "FOO BAR is a small town on a river. It has a bridge and a mill that were built "
            "long ago.",
        ),
        (
            "Foo bar: History",
            "The town was founded in 1200 by monks who came from the north and stayed for "
            "centuries.",
        ),
    ]


def test_a_copy_is_read_at_its_pinned_commit_not_its_checkout(
    wiki_copy: tuple[Path, sources.Source],
) -> None:
    copies, source = wiki_copy
    texts = [text for _, text in sources.Copy(copies, source).read(["Page/Foo_bar.md"])]
    assert texts == [WIKI_PAGE]


def test_a_missing_copy_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"git clone --filter=blob:limit=4m .*wikipedia"):
        sources.Copy(tmp_path, sources.BY_NAME["wikipedia"])


def test_every_source_is_pinned_to_a_full_commit_and_has_a_reader() -> None:
    for source in sources.SOURCES:
        assert len(source.commit) == 40 and int(source.commit, 16) >= 0, source.name
        assert source.name in sources.READERS, source.name
        assert source.licence, source.name


def test_bm25_negative_is_a_close_passage_never_the_positive_nor_the_same_subject() -> None:
    pytest.importorskip("scipy", reason="BM25 mining needs scipy: pip install -e '.[train]'")
    from models import negatives

    # Passage 0 is the anchor's positive; 1 matches both of its terms, 2 and 3 one each;
    # 4 matches both but is of the anchor's own subject; the rest share nothing with it.
    passages: list[list[int]] = [[5, 6, 7], [5, 6, 8], [5, 9], [6, 10], [5, 6, 11]]
    passages += [[1000 + n, 2000 + n] for n in range(400)]
    subjects = ["a", "b", "c", "d", "a"] + [f"s{n}" for n in range(400)]
    chosen = set()
    for seed in range(20):
        found = negatives.mine([[5, 6]], [0], passages, subjects, 30522, seed)
        chosen.add(int(found[0]))
    # Rank 1 after the exclusions (passage 1) is skipped as a likely unlabelled positive.
    assert chosen == {2, 3}


def test_bm25_gives_no_negative_when_nothing_matches() -> None:
    pytest.importorskip("scipy", reason="BM25 mining needs scipy: pip install -e '.[train]'")
    from models import negatives

    passages = [[1, 2]] + [[1000 + n] for n in range(200)]
    found = negatives.mine([[7, 8]], [0], passages, [str(n) for n in range(201)], 30522, 0)
    np.testing.assert_array_equal(found, [-1])
