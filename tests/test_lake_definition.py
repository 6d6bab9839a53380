"""The lake's declarative definition (lake/tables.toml, lake/views/*.sql) agrees with the code
that writes the tables, and is what an installed uns reads."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from uns.lake.declared import VIEW_ORDER, table_columns, time_columns, view_sql
from uns.lake.query import create_views
from uns.lake.schemas import SCHEMAS
from uns.lake.tables import CONTEXT_COLUMNS, TABLES, TIME_COLUMN, WAL_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def test_every_table_is_declared_in_order_with_its_time_column() -> None:
    assert tuple(table_columns()) == TABLES
    assert time_columns() == TIME_COLUMN
    for table, columns in table_columns().items():
        names = [name for name, _ in columns]
        assert names[-1] == "date", table
        if table not in ("measurements", "audit", "results"):  # their WAL columns are raw forms
            assert set(WAL_COLUMNS[table]) <= set(names), table


def test_every_view_file_is_loaded_and_every_file_is_a_view() -> None:
    files = {p.stem for p in (ROOT / "lake" / "views").glob("*.sql")}
    assert files == set(VIEW_ORDER)
    for name in VIEW_ORDER:
        assert re.search(rf"CREATE OR REPLACE VIEW {name} AS", view_sql(name)), name


def test_the_timeline_pivots_every_context_column_and_asof_keeps_every_measurement_column() -> None:
    timeline = view_sql("_uns_context_timeline")
    pivots = re.findall(r"FILTER \(WHERE e\.key = '(\w+)'\) AS \"(\w+)\"", timeline)
    assert [a for a, b in pivots if a == b] == list(CONTEXT_COLUMNS)
    con = duckdb.connect()
    for table, schema in SCHEMAS.items():
        con.register(f"_uns_{table}", schema.empty_table())
    create_views(con)
    asof = [d[0] for d in con.execute("SELECT * FROM measurements_asof").description]
    assert asof == SCHEMAS["measurements"].names


def test_the_definition_ships_inside_the_package() -> None:
    link = ROOT / "uns" / "lake" / "definition"
    assert link.is_symlink() and link.resolve() == (ROOT / "lake").resolve()
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"uns.lake" = ["definition/*.toml", "definition/views/*.sql"]' in text
