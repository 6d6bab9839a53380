"""The code blocks of README.md and docs/*.md, and what tests do with each (tests/test_docs.py).

Every code block is fenced and says what it is (```sh, ```python, ```sql, ```text,
```toml, ...).  A block of a runnable language (:data:`RUNNABLE`) is run by a test in a
prepared setting, unless the line right above it says why not::

    <!-- not run by tests: runs until stopped, on the plant's broker -->

(an HTML comment: the rendered page does not show it).  So a new command in the docs is
either run or excused, never silently untested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUNNABLE", "TEXT", "Block", "code_blocks", "indented_code"]

#: languages whose blocks are run: a shell script, a Python program, a query of the lake
RUNNABLE = frozenset({"sh", "python", "sql"})
#: languages of blocks that are shown, not run (output, diagrams, file formats)
TEXT = frozenset({"text", "toml", "json", "yaml", "promql", "ini"})

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
_EXCUSE = re.compile(r"^\s*<!--\s*not run by tests:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: str  # the file, relative to the checkout
    line: int  # of the opening fence, 1-based
    lang: str  # "" when the fence names none
    text: str  # the block's lines, the fence's indentation removed
    excuse: str | None  # why it is not run, from the comment above it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def code_blocks(path: Path, root: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = len(opening["indent"])
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1 : end]]
        above = lines[i - 1] if i > 0 else ""
        excuse = _EXCUSE.match(above)
        blocks.append(
            Block(
                doc=str(path.relative_to(root)),
                line=i + 1,
                lang=opening["lang"],
                text="\n".join(body) + "\n",
                excuse=excuse["reason"] if excuse else None,
            )
        )
        i = end + 1
    return blocks


def indented_code(path: Path) -> list[int]:
    """Lines that start an indented (unfenced) code block: four spaces after a blank line
    that follows a paragraph, not a list item (whose continuation is indented too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[int] = []
    in_fence = False
    last_text = ""
    for n, line in enumerate(lines):
        if _FENCE.match(line) or (in_fence and line.strip() == "```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if line.startswith("    ") and line.strip() and n > 0 and not lines[n - 1].strip():
            in_list = re.match(r"\s*([-*+]|\d+\.)\s", last_text) or last_text.startswith(" ")
            if not in_list:
                found.append(n + 1)
        if line.strip():
            last_text = line
    return found
