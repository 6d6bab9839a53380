"""Helpers of the lake tests: faults that stop root too, and a one-shot query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lake

__all__ = ["break_table", "query", "repair_table"]


def break_table(root: Path, table: str) -> Path:
    """A fault that stops root too (chmod does not): the table directory is moved away
    and a regular file takes its place, so every write below it fails (ENOTDIR)."""
    aside = root / f".{table}.aside"
    (root / table).rename(aside)
    (root / table).write_bytes(b"not a directory")
    return aside


def repair_table(root: Path, table: str, aside: Path) -> None:
    (root / table).unlink()
    aside.rename(root / table)


def query(root: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """``sql`` over the lake's views, on a connection of its own."""
    con = lake.connect(root)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
