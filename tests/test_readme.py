"""The README's (and docs/*.md's) examples run as printed, against the bundled default model.

Every ```python block runs in a fresh interpreter in an empty folder. Where the next fence is a
```text block, with at most one line of prose between, that block is what it prints, and the
output must match it exactly. A ```bash block runs only when an HTML comment right above its
fence says ``<!-- readme-test: run -->``: each command line runs in bash, and the ``# `` lines
after it are its output; ``<!-- readme-test: run after set-up -->`` runs it without its
``python3 -m venv ...`` set-up line (this environment is already set up). ``<!-- readme-test:
skip (why) -->`` leaves a block out (the Spark example has its own test), and ``<!-- readme-test:
leaves notes.db -->`` names the files a python block is meant to leave in its folder. So the
numbers the README shows are the bundled model's: after the model changes, these tests fail
until the README shows what it prints. Every relative link of these pages must lead to a file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT
from sse_onnx import demo

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
COMMENT = re.compile(r"^<!--(.*)-->\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SET_UP = "python3 -m venv "


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    language: str
    code: str
    line: int  # of the opening fence, from 1
    end: int  # of the closing fence, from 1
    directives: tuple[str, ...]  # the HTML comments right above the fence
    output: str | None = None  # the ```text block after it, for a python block
    page: str = "README.md"

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}:{self.language}"

    def directive(self, prefix: str) -> str | None:
        """The rest of the first directive that starts with ``readme-test: <prefix>``."""
        for directive in self.directives:
            if directive.startswith(f"readme-test: {prefix}"):
                return directive[len(f"readme-test: {prefix}") :].strip()
        return None


def blocks(text: str, page: str = "README.md") -> list[Block]:
    """The fenced blocks of ``text``, each python block with the text block that follows it."""
    lines = text.splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        above = index - 1
        directives: list[str] = []
        while above >= 0 and (comment := COMMENT.match(lines[above])):
            directives.insert(0, comment.group(1).strip())
            above -= 1
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        code = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(
            Block(opening.group(1), code, index + 1, end + 1, tuple(directives), page=page)
        )
        index = end + 1
    with_output = []
    for block, after in zip(found, [*found[1:], None][: len(found)], strict=True):
        if block.language == "python" and after is not None and after.language == "text":
            prose = [line for line in lines[block.end : after.line - 1] if line.strip()]
            if len(prose) <= 1:
                block = dataclasses.replace(block, output=after.code)
        with_output.append(block)
    return with_output


def skipped(block: Block) -> bool:
    return block.directive("skip") is not None


def page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


BLOCKS = [b for page in PAGES for b in blocks(page.read_text(encoding="utf-8"), page_name(page))]
README_BLOCKS = [b for b in BLOCKS if b.page == "README.md"]
PYTHON = [b for b in BLOCKS if b.language == "python" and not skipped(b)]
SHELL = [b for b in BLOCKS if b.language == "bash" and b.directive("run") is not None]


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The command lines of a shell block, each with the ``# `` output lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("#") and steps:
            steps[-1][1].append(line[2:] if line.startswith("# ") else "")
        elif line.strip():
            steps.append((line, []))
    return steps


def readme_block(containing: str) -> Block:
    """The one README block whose code contains ``containing``."""
    (block,) = [b for b in README_BLOCKS if containing in b.code]
    return block


def test_the_readme_has_runnable_examples() -> None:
    python = [b for b in PYTHON if b.page == "README.md"]
    assert python and any(b.page == "README.md" for b in SHELL)
    assert any(block.output for block in python), "no python block shows its output"
    assert any(skipped(b) for b in README_BLOCKS if "SparkSession" in b.code), (
        "the Spark block runs"
    )
    assert any("Index(" in b.code for b in python), "the search example does not run"


def test_the_readme_reads_in_five_minutes() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_python_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", block.code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stderr[-3000:]}"
    if block.output is not None:
        assert done.stdout == block.output, f"{block.name} printed other output than shown"
    left = sorted(path.name for path in tmp_path.iterdir())
    meant = sorted((block.directive("leaves") or "").split())
    assert left == meant, f"{block.name} left {left} in its folder, not {meant}"


@pytest.mark.parametrize("block", SHELL, ids=[b.name for b in SHELL])
def test_shell_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    # The commands this environment installed come first (a virtualenv need not be active).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    steps = commands(block)
    if block.directive("run") == "after set-up":
        assert steps[0][0].startswith(SET_UP), f"{block.name} starts with no set-up line"
        steps = steps[1:]
    for command, shown in steps:
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command!r} failed:\n{done.stderr[-3000:]}"
        if shown:
            assert done.stdout.splitlines() == shown, f"{command!r} printed other output"


def test_the_demo_docstring_shows_the_readme_output() -> None:
    (block,) = [b for b in SHELL if "sse-demo" in b.code and b.page == "README.md"]
    ((_, shown),) = commands(block)
    assert demo.__doc__ is not None
    for line in shown:
        assert f"    {line}\n" in demo.__doc__, f"sse_onnx/demo.py's example lacks {line!r}"


def test_the_two_commands_use_two_virtualenvs_and_ci_runs_the_second() -> None:
    """The runtime's set-up and the development one do not share a virtualenv; CI's is the
    README's development set-up and test command, word for word (``--quiet`` aside)."""
    run = readme_block("pip install .\n")
    dev = readme_block("python -m pytest")
    venvs = []
    for block in (run, dev):
        found = re.match(r"python3 -m venv (\S+) && \. \1/bin/activate && ", block.code)
        assert found, f"{block.name} does not start by making and activating a virtualenv"
        venvs.append(found.group(1))
    run_venv, dev_venv = venvs
    assert run_venv != dev_venv
    assert run.directive("run") == "after set-up", "the embed one-liner is not run"
    assert 'cd "$(mktemp -d)"' in commands(run)[1][0], "the one-liner runs in the checkout"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"\npython3 -m venv {dev_venv}\n. {dev_venv}/bin/activate\n" in ci
    dev_lines = [line for line, _ in commands(dev)]
    install = dev_lines[0].split(" && ")[-1]
    assert (
        install.startswith("pip install ")
        and install.replace("pip install ", "pip install --quiet ", 1) in ci
    )
    assert dev_lines[1:] == ["python -m pytest"] and "\npython -m pytest\n" in ci


def test_the_node_example_leaves_no_npm_files() -> None:
    """onnxruntime-node's install script downloads binaries (and fails offline); ``--no-save``
    keeps npm from writing package.json and package-lock.json where the example runs."""
    section = README.read_text(encoding="utf-8").split("## Web and Node", 1)[1]
    npm = [line for line in section.splitlines() if line.startswith("npm install")]
    assert npm, "the Node example lost its npm line"
    for line in npm:
        assert "--ignore-scripts" in line.split() and "--no-save" in line.split(), line


def test_the_bench_extra_keeps_the_exporters_huggingface_hub() -> None:
    """``pip install -e ".[bench]"`` must not move huggingface-hub past what transformers (the
    exporter's, for ``--variants int8_dynamic``) accepts: model2vec 0.10 asks for hub >= 1."""
    pytest.importorskip("transformers", reason="needs the exporter: pip install -e ./export")
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and newer")
    wanted = [
        Requirement(r)
        for r in metadata.requires("transformers") or []
        if Requirement(r).name == "huggingface-hub" and Requirement(r).marker is None
    ]
    assert wanted, "transformers no longer names huggingface-hub"
    bench = [
        Requirement(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "optional-dependencies"
        ]["bench"]
    ]
    hub = [r.specifier for r in bench if r.name == "huggingface-hub"]
    for version in ("0.36.2", "1.0.0", "1.33.0", "2.3.0"):
        refused = not all(version in r.specifier for r in wanted)
        if refused:
            assert hub and not all(version in s for s in hub), (
                f"the bench extra admits huggingface-hub {version}, which transformers refuses"
            )


def links(page: Path) -> list[str]:
    """The relative link targets of a page, outside code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", PAGES, ids=[page_name(p) for p in PAGES])
def test_every_relative_link_leads_to_a_file(page: Path) -> None:
    missing = [t for t in links(page) if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{page_name(page)} links to missing files: {missing}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in links(README)}
    orphans = [page_name(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"the README links to none of {orphans}"


def test_the_parser_reads_directives_outputs_and_links(tmp_path: Path) -> None:
    text = (
        "intro\n<!-- readme-test: skip (elsewhere) -->\n<!-- other:begin -->\n```python\nx = 1\n"
        "```\n\n```python\nprint(2)\n```\n\nprints\n\n```text\n2\n```\n"
        "<!-- readme-test: run after set-up -->\n```bash\necho a\n# a\ntrue\n```\n"
    )
    first, second, output, shell = blocks(text)
    assert first.directives == ("readme-test: skip (elsewhere)", "other:begin") and skipped(first)
    assert (second.code, second.output, second.line) == ("print(2)\n", "2\n", 8)
    assert output.language == "text" and not skipped(second)
    assert commands(shell) == [("echo a", ["a"]), ("true", [])]
    assert shell.directive("run") == "after set-up" and second.directive("leaves") is None
    page = tmp_path / "page.md"
    page.write_text(
        "[a](docs/a.md#x) ![b](b.png) [c](https://x.org) [d](#top) `[e](e.md)`\n"
        "```\n[f](f.md)\n```\n",
        encoding="utf-8",
    )
    assert links(page) == ["docs/a.md#x", "b.png"]
    assert blocks("no code here\n") == []
