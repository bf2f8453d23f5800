"""The README's examples run as printed, against the bundled default model.

Every ```python block runs in a fresh interpreter in an empty folder. Where the next fence is a
```text block, with at most one line of prose between, that block is what it prints, and the
output must match it exactly. A ```bash block runs only when an HTML comment right above its
fence says ``<!-- readme-test: run -->``: each command line runs in bash, and the ``# `` lines
after it are its output. ``<!-- readme-test: skip (why) -->`` leaves a block out (the Spark
example has its own test). So the numbers the README shows are the bundled model's: after the
model changes, these tests fail until the README shows what it prints.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from sse_onnx import demo

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
COMMENT = re.compile(r"^<!--(.*)-->\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    language: str
    code: str
    line: int  # of the opening fence, from 1
    end: int  # of the closing fence, from 1
    directives: tuple[str, ...]  # the HTML comments right above the fence
    output: str | None = None  # the ```text block after it, for a python block

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language}"


def blocks(text: str) -> list[Block]:
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
        found.append(Block(opening.group(1), code, index + 1, end + 1, tuple(directives)))
        index = end + 1
    with_output = []
    for block, after in zip(found, [*found[1:], None], strict=True):
        if block.language == "python" and after is not None and after.language == "text":
            prose = [line for line in lines[block.end : after.line - 1] if line.strip()]
            if len(prose) <= 1:
                block = dataclasses.replace(block, output=after.code)
        with_output.append(block)
    return with_output


def skipped(block: Block) -> bool:
    return any(d.startswith("readme-test: skip") for d in block.directives)


BLOCKS = blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b.language == "python" and not skipped(b)]
SHELL = [
    b
    for b in BLOCKS
    if b.language == "bash" and any(d.startswith("readme-test: run") for d in b.directives)
]


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The command lines of a shell block, each with the ``# `` output lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("#") and steps:
            steps[-1][1].append(line[2:] if line.startswith("# ") else "")
        elif line.strip():
            steps.append((line, []))
    return steps


def test_the_readme_has_runnable_examples() -> None:
    assert PYTHON and SHELL
    assert any(block.output for block in PYTHON), "no python block shows its output"
    assert any(skipped(b) for b in BLOCKS if "SparkSession" in b.code), "the Spark block runs"


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
    assert not list(tmp_path.iterdir()), "the example left files behind"


@pytest.mark.parametrize("block", SHELL, ids=[b.name for b in SHELL])
def test_shell_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    # The commands this environment installed come first (a virtualenv need not be active).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command, shown in commands(block):
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command!r} failed:\n{done.stderr[-3000:]}"
        if shown:
            assert done.stdout.splitlines() == shown, f"{command!r} printed other output"


def test_the_demo_docstring_shows_the_readme_output() -> None:
    (block,) = [b for b in SHELL if "sse-demo" in b.code]
    ((_, shown),) = commands(block)
    assert demo.__doc__ is not None
    for line in shown:
        assert f"    {line}\n" in demo.__doc__, f"sse_onnx/demo.py's example lacks {line!r}"


def test_the_parser_reads_directives_and_outputs() -> None:
    text = (
        "intro\n<!-- readme-test: skip (elsewhere) -->\n<!-- other:begin -->\n```python\nx = 1\n"
        "```\n\n```python\nprint(2)\n```\n\nprints\n\n```text\n2\n```\n"
        "<!-- readme-test: run -->\n```bash\necho a\n# a\ntrue\n```\n"
    )
    first, second, output, shell = blocks(text)
    assert first.directives == ("readme-test: skip (elsewhere)", "other:begin") and skipped(first)
    assert (second.code, second.output, second.line) == ("print(2)\n", "2\n", 8)
    assert output.language == "text" and not skipped(second)
    assert commands(shell) == [("echo a", ["a"]), ("true", [])]
