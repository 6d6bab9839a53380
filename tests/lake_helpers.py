"""Helpers of the lake tests: faults that stop root too, and a one-shot query."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from uns import lake
from uns.core.events import Batch, ContextChange, Sample
from uns.core.records import Record
from uns.lake.query import create_views
from uns.lake.schemas import SCHEMAS
from uns.lake.tables import TABLES, batch_columns
from uns.lake.to_arrow import arrow_table

__all__ = [
    "FlockState",
    "break_table",
    "flock_state",
    "load_tables",
    "query",
    "repair_table",
    "views_connection",
]


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


def load_tables(
    con: duckdb.DuckDBPyConnection,
    samples: list[Sample],
    changes: list[ContextChange],
    records: Sequence[Record] = (),
) -> None:
    """Register in-memory tables under the names the views read (replacing earlier ones)."""
    columns = batch_columns(Batch(samples=samples, context=changes, records=records))
    for table, table_cols in zip(TABLES, columns, strict=True):
        built = arrow_table(table, table_cols, segment=0) if table_cols else SCHEMAS[table].empty_table()
        con.register(f"_uns_{table}", built)


def views_connection(
    samples: list[Sample], changes: list[ContextChange], records: Sequence[Record] = ()
) -> duckdb.DuckDBPyConnection:
    """The real view SQL over in-memory tables (no Delta): fast enough for hypothesis."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    load_tables(con, samples, changes, records)
    create_views(con)
    return con


class FlockState(NamedTuple):
    held: int  # processes holding the lock (0 or 1 for an exclusive lock)
    waiting: int  # processes blocked in flock() for it


def flock_state(path: Path) -> FlockState:
    """Who holds and who waits for the ``flock`` on ``path``, from Linux's /proc/locks:
    seen from outside, without taking the lock (a probe that took it would change what
    the holders do)."""
    st = path.stat()
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    held = waiting = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and file_id in fields:
            if fields[1] == "->":
                waiting += 1
            else:
                held += 1
    return FlockState(held, waiting)
