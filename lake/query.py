"""The DuckDB query layer: one connection, the lake's views, one snapshot.

:func:`connect` loads every Delta table once (its newest version, or the
version asked for), registers it in an in-memory DuckDB as a pyarrow dataset
(``_uns_<table>``; DuckDB's delta extension is not available here) and
creates the views over them.  A dataset lists the Parquet files of exactly
that table version, so every query on the connection sees the same snapshot
however much the writer commits or compacts meanwhile; :func:`refresh` (or a
new ``connect``) moves it to the newest versions.  A table that does not exist
yet reads as empty with the right columns.

``measurements_asof`` recomputes the context columns from the ``context``
table by event time, with the inheritance rules of :class:`uns.core.context.ContextStore`:
a key set on a path applies below it unless a deeper path sets it; a clear
(``value`` NULL) removes only that path's own value; an empty value hides the
key; for equal timestamps the later arrival (``ingest_order``) wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lake.batch_views import BATCH_VIEWS, batch_views_sql
from lake.schemas import SCHEMAS
from lake.tables import CONTEXT_COLUMNS, PARTITION_COLUMN, TABLES, WAL_COLUMNS
from lake.timeline import timeline_ctes
from lake.wal import list_segments, read_segment
from uns.errors import LakeError

__all__ = [
    "VIEWS",
    "applied_context_ids",
    "asof_view_sql",
    "connect",
    "create_views",
    "named_queries",
    "refresh",
    "snapshot_versions",
]

VIEWS: Final = (
    "measurements", "measurements_asof", "context", "metric_catalog", "sessions", "rejected", *BATCH_VIEWS,
)  # fmt: skip

_PATH_VARIABLE: Final = "uns_lake_path"


def _source(table: str) -> str:
    return f"_uns_{table}"


def _columns(table: str) -> list[str]:
    return [f.name for f in SCHEMAS[table]]


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def asof_view_sql() -> str:
    """The ``measurements_asof`` view over ``_uns_measurements`` and ``_uns_context``.

    Context changes are few; measurements are many.  So the effective context
    is first computed as a timeline per *context path* (at each instant any of
    its ancestors changes), each measurement path is mapped to its deepest
    context path (all context that can apply to it applies to that path too),
    and measurements meet the timeline in one ASOF join."""
    m, c = _source("measurements"), _source("context")
    outer = ", ".join(
        f't."{name}"' if name in (*CONTEXT_COLUMNS, "context") else f'm."{name}"'
        for name in _columns("measurements")
    )
    # Only our own constant table and column names are interpolated.
    return f"""
CREATE OR REPLACE VIEW measurements_asof AS
WITH {timeline_ctes(c)},
m_paths AS (SELECT DISTINCT path FROM {m}),
m_q AS (  -- the deepest context path at or above each measurement path
    SELECT mp.path, arg_max(cp.path, length(cp.path)) AS q
    FROM m_paths mp JOIN ctx_paths cp ON mp.path = cp.path OR starts_with(mp.path, cp.path || '/')
    GROUP BY mp.path
)
SELECT {outer}
FROM {m} m
LEFT JOIN m_q ON m_q.path = m.path
ASOF LEFT JOIN timeline t ON t.q = m_q.q AND m.ts >= t.ts
"""  # noqa: S608


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create the lake's views over the registered ``_uns_<table>`` relations."""
    # Arrow scans carry no row-count estimates, so DuckDB would plan the ASOF joins as
    # nested loops (fine for 64 rows, minutes for millions).  Always use the real ASOF join.
    con.execute("SET asof_loop_join_threshold = 0")
    for table in TABLES:
        columns = _quoted(_columns(table))
        con.execute(f'CREATE OR REPLACE VIEW "{table}" AS SELECT {columns} FROM {_source(table)}')  # noqa: S608
    con.execute(asof_view_sql())
    for sql in batch_views_sql(_source("context")):
        con.execute(sql)


_HIVE_DATE = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.date32())]), flavor="hive")


def _dataset(root: Path, table: str, version: int | None) -> tuple[object, int | None]:
    """The table's pyarrow dataset at ``version`` (newest if None), or an empty table.

    Built from the version's file list and the table schema: no file is opened
    here.  (``DeltaTable.to_pyarrow_dataset`` does the same but costs ~7 ms per
    file in Python, too slow for tables of thousands of small files.)  The
    ``date`` partition value comes from the hive-style directory the writer
    put each file in."""
    path = root / table
    try:
        dt = DeltaTable(path) if version is None else DeltaTable(path, version=version)
        schema = pa.schema(dt.schema().to_arrow())
        # A table of an older lake lacks the columns added since: they read as NULL.
        for field in SCHEMAS[table]:
            if field.name not in schema.names:
                schema = schema.append(field)
        dataset = ds.dataset(
            dt.file_uris(),
            schema=schema,
            format="parquet",
            partitioning=_HIVE_DATE,
            partition_base_dir=str(path),
        )
    except TableNotFoundError:
        if version is not None:
            raise LakeError(f"table {table} does not exist in {root}", table=table) from None
        return SCHEMAS[table].empty_table(), None
    except Exception as exc:
        raise LakeError(f"cannot read table {table}: {exc}", table=table) from exc
    return dataset, dt.version()


def _register(con: duckdb.DuckDBPyConnection, root: Path, versions: Mapping[str, int] | None) -> None:
    pinned: dict[str, int] = {}
    for table in TABLES:
        data, version = _dataset(root, table, (versions or {}).get(table))
        con.register(_source(table), data)
        if version is not None:
            pinned[table] = version
    con.execute("SET VARIABLE uns_lake_versions = ?", [pinned])


def connect(path: str | Path, *, versions: Mapping[str, int] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (see docs/lake.md).

    ``versions`` pins tables to older Delta versions (time travel), e.g.
    ``{"measurements": 12}``.  Timestamps display in UTC."""
    root = Path(path)
    if not root.is_dir():
        raise LakeError(f"no lake at {root}")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET VARIABLE {_PATH_VARIABLE} = ?", [str(root.resolve())])
        _register(con, root, versions)
        create_views(con)
    except BaseException:
        con.close()
        raise
    return con


def refresh(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Move a :func:`connect` connection to the newest version of every table;
    returns the versions now pinned.  A result still being fetched is completed first."""
    con.complete()
    rows = con.execute(f"SELECT getvariable('{_PATH_VARIABLE}')").fetchall()
    if not rows or rows[0][0] is None:
        raise LakeError("not a lake connection (use lake.connect)")
    _register(con, Path(rows[0][0]), None)
    return snapshot_versions(con)


def snapshot_versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The Delta version each view of the connection reads (tables not created yet are absent)."""
    rows = con.execute("SELECT getvariable('uns_lake_versions')").fetchall()
    return dict(rows[0][0]) if rows and rows[0][0] else {}


def applied_context_ids(path: str | Path) -> set[str]:
    """The ids of the context events the lake holds (its context table's distinct
    ``event_id``, also of rows still in any writer's write-ahead log): what an engine
    starting on this lake must not apply again.  Empty for a lake without a context table."""
    root = Path(path)
    ids: set[str] = set()
    if not root.is_dir():
        return ids
    data, _version = _dataset(root, "context", None)
    table = data if isinstance(data, pa.Table) else data.to_table(columns=["event_id"])  # type: ignore[attr-defined]
    column = table.column("event_id")
    ids.update(v for v in pc.unique(column).to_pylist() if v is not None)
    ids.update(_wal_context_ids(root))
    return ids


def _wal_context_ids(root: Path) -> set[str]:
    """Context event ids in the write-ahead logs (``_wal``, ``_wal-<writer id>``): rows
    accepted before a crash and committed only when their writer starts again."""
    ids: set[str] = set()
    index = TABLES.index("context")
    field = WAL_COLUMNS["context"].index("event_id")
    for wal_dir in sorted(root.glob("_wal*")):
        if not wal_dir.is_dir():
            continue
        for _number, segment in list_segments(wal_dir):
            try:
                parts = read_segment(segment).parts
            except OSError:  # committed and deleted meanwhile: then it is in the table
                continue
            for part in parts:
                cols = part[index]
                if len(cols) > field:
                    ids.update(v for v in cols[field] if isinstance(v, str))
    return ids


_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


def named_queries(text: str) -> dict[str, str]:
    """Split a SQL file into ``{name: query}`` at ``-- name: <name>`` lines
    (the format of examples/queries.sql); text before the first name is ignored."""
    marks = list(_NAME_LINE.finditer(text))
    out: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : following.start() if following else len(text)]
        out[mark.group(1)] = body.strip().rstrip(";").strip()
    return out
