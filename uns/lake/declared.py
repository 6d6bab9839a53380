"""The lake's declarative definition, read from the files an analyst can read too.

The top-level ``lake/`` folder of the source tree (shipped inside the package as
``uns/lake/definition/``) holds:

- ``tables.toml``: every table's columns in order with their Arrow types (what
  :mod:`uns.lake.schemas` builds the tables' schemas from);
- ``views/*.sql``: the SQL of the views that are more than a table's columns
  (``measurements_asof``, ``batches``, ``batch_phases``, ``batch_statistics``,
  ``batch_phase_statistics``, the batch records ``materials``, ``results``,
  ``comments`` with their batch context, and the internal ``_uns_*`` views they share),
  over the registered relations ``_uns_<table>``.

Nothing here loads pyarrow or DuckDB.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

__all__ = ["VIEW_ORDER", "table_columns", "time_columns", "view_sql"]

#: the views defined by SQL files, in an order in which each one's sources exist
VIEW_ORDER: Final = (
    "measurements",
    "_uns_context_changes",
    "_uns_context_timeline",
    "measurements_asof",
    "_uns_batch_segments",
    "_uns_batch_windows",
    "batches",
    "batch_phases",
    "_uns_batch_pieces",
    "_uns_batch_series",
    "batch_statistics",
    "batch_phase_statistics",
    "_uns_record_context",
    "materials",
    "results",
    "comments",
)


def _folder() -> Traversable:
    return resources.files("uns.lake").joinpath("definition")


@functools.cache
def _tables() -> dict[str, dict[str, object]]:
    return tomllib.loads(_folder().joinpath("tables.toml").read_text(encoding="utf-8"))


def table_columns() -> dict[str, list[tuple[str, str]]]:
    """table -> its (column, Arrow type name) pairs, in order (``lake/tables.toml``)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for table, spec in _tables().items():
        columns = spec["columns"]
        assert isinstance(columns, list)
        out[table] = [(str(c[0]), str(c[1])) for c in columns]
    return out


def time_columns() -> dict[str, str]:
    """table -> the column its ``date`` partition comes from."""
    return {table: str(spec["time_column"]) for table, spec in _tables().items()}


@functools.cache
def view_sql(name: str) -> str:
    """The ``CREATE VIEW`` statement of view ``name`` (``lake/views/<name>.sql``)."""
    return _folder().joinpath("views", f"{name}.sql").read_text(encoding="utf-8")
