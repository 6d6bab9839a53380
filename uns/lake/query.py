"""The DuckDB query layer: one connection, the lake's views, one snapshot.

:func:`connect` loads every Delta table once (its newest version, or the
version asked for), registers it in an in-memory DuckDB as a pyarrow dataset
(``_uns_<table>``; DuckDB's delta extension is not available here) and
creates the views over them.  A dataset lists the Parquet files of exactly
that table version, so every query on the connection sees the same snapshot
however much the writer commits or compacts meanwhile; :func:`refresh` (or a
new ``connect``) moves it to the newest versions.  A table that does not exist
yet reads as empty with the right columns.

The views beyond a table's columns are SQL files of the lake's declarative
definition (``lake/views/*.sql``, :mod:`uns.lake.declared`): ``measurements_asof``
recomputes the context columns from the ``context`` table by event time, with the
inheritance rules of :class:`uns.core.context.ContextStore`; ``batches`` and
``batch_phases`` come from the same context timeline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from uns.core.context import change_fingerprint
from uns.core.events import ContextChange
from uns.errors import LakeError
from uns.lake.declared import VIEW_ORDER, view_sql
from uns.lake.repair import readable_rejected
from uns.lake.schemas import SCHEMAS
from uns.lake.storage import LakeStore, as_store
from uns.lake.tables import PARTITION_COLUMN, RECORD_TABLES, TABLES, WAL_COLUMNS
from uns.lake.wal import list_segments, read_segment

__all__ = [
    "MAX_SQL_FILE_BYTES",
    "VIEWS",
    "QueryResult",
    "applied_context_fingerprints",
    "applied_context_ids",
    "applied_records",
    "connect",
    "context_seed",
    "create_views",
    "named_queries",
    "queries_from_file",
    "read_bounded",
    "refresh",
    "run_queries",
    "run_sql",
    "select_queries",
    "snapshot_versions",
]

#: the views an analyst queries (the ``_uns_*`` ones are internal)
VIEWS: Final = (
    "measurements", "measurements_asof", "context", "metric_catalog", "sessions", "rejected", "batches",
    "batch_phases", "batch_statistics", "batch_phase_statistics", "materials", "results", "comments",
)  # fmt: skip

_PATH_VARIABLE: Final = "uns_lake_path"
#: the store (with its options) of each lake URL connected in this process, for refresh()
_STORES: dict[str, LakeStore] = {}


def _source(table: str) -> str:
    return f"_uns_{table}"


def _columns(table: str) -> list[str]:
    return [f.name for f in SCHEMAS[table]]


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create the lake's views over the registered ``_uns_<table>`` relations."""
    # Arrow scans carry no row-count estimates, so DuckDB would plan the ASOF joins as
    # nested loops (fine for 64 rows, minutes for millions).  Always use the real ASOF join.
    con.execute("SET asof_loop_join_threshold = 0")
    for table in TABLES:
        if table in VIEW_ORDER:  # more than its columns: a SQL file of the definition
            continue
        columns = _quoted(_columns(table))
        con.execute(f'CREATE OR REPLACE VIEW "{table}" AS SELECT {columns} FROM {_source(table)}')  # noqa: S608
    for view in VIEW_ORDER:
        con.execute(view_sql(view))


_HIVE_DATE = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.date32())]), flavor="hive")
#: text columns of few distinct values, read as the dictionaries they are stored as in the
#: Parquet files: decoding each row's text costs more than the query (3-4x a scan of ten
#: million samples); DuckDB sees VARCHAR either way
_DICTIONARY_COLUMNS: Final = {
    "measurements": frozenset({
        "path", "metric", "datatype", "unit", "quality", "group_id", "edge_node_id", "device_id", "batch_id",
        "order_id", "product", "recipe", "phase", "wal_writer",
    }),
}  # fmt: skip


def _parquet_format(table: str, schema: pa.Schema) -> tuple[pa.Schema, ds.ParquetFileFormat]:
    """The schema and Parquet reading of ``table``: its low-cardinality text as dictionaries."""
    wanted = _DICTIONARY_COLUMNS.get(table, frozenset())
    columns = {f.name for f in schema if f.name in wanted and f.type == pa.string()}
    dictionary = pa.dictionary(pa.int32(), pa.string())
    schema = pa.schema([f.with_type(dictionary) if f.name in columns else f for f in schema])
    return schema, ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=columns))


def _dataset(store: LakeStore, table: str, version: int | None) -> tuple[object, int | None]:
    """The table's pyarrow dataset at ``version`` (newest if None), or an empty table.

    Built from the version's file list and the table schema: no file is opened
    here.  (``DeltaTable.to_pyarrow_dataset`` does the same but costs ~7 ms per
    file in Python, too slow for tables of thousands of small files.)  The
    ``date`` partition value comes from the hive-style directory the writer
    put each file in.  A remote lake's files are read through the pyarrow filesystem of
    its store (:meth:`lake.storage.LakeStore.arrow_filesystem`)."""
    path = store.table_uri(table)
    try:
        dt = DeltaTable(path, version=version, storage_options=store.delta_options())
        schema = pa.schema(dt.schema().to_arrow())
        # A table of an older lake lacks the columns added since: they read as NULL.
        for field in SCHEMAS[table]:
            if field.name not in schema.names:
                schema = schema.append(field)
        uris = dt.file_uris()
        if table == "rejected":  # rows stored whole by older versions may be unreadable (lake.repair)
            sizes = pa.table(dt.get_add_actions(flatten=True)).column("size_bytes").to_pylist()
            uris = readable_rejected(store, uris, sizes)
        schema, parquet = _parquet_format(table, schema)
        dataset = ds.dataset(
            [store.arrow_path(uri) for uri in uris],
            schema=schema,
            format=parquet,
            partitioning=_HIVE_DATE,
            partition_base_dir=store.arrow_path(path),
            filesystem=store.arrow_filesystem() if store.remote else None,
        )
    except TableNotFoundError:
        if version is not None:
            raise LakeError(f"table {table} does not exist in {store}", table=table) from None
        return SCHEMAS[table].empty_table(), None
    except Exception as exc:
        raise LakeError(f"cannot read table {table}: {exc}", table=table) from exc
    return dataset, dt.version()


def _register(con: duckdb.DuckDBPyConnection, store: LakeStore, versions: Mapping[str, int] | None) -> None:
    pinned: dict[str, int] = {}
    for table in TABLES:
        data, version = _dataset(store, table, (versions or {}).get(table))
        con.register(_source(table), data)
        if version is not None:
            pinned[table] = version
    con.execute("SET VARIABLE uns_lake_versions = ?", [pinned])


def connect(
    path: str | Path | LakeStore, *, versions: Mapping[str, int] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (see docs/lake.md).

    ``path`` is the lake's directory or URL (``s3://bucket/prefix``; a
    :class:`lake.storage.LakeStore` carries store options).  ``versions`` pins tables to
    older Delta versions (time travel), e.g. ``{"measurements": 12}``.  Timestamps
    display in UTC."""
    store = as_store(path)
    if not store.exists():
        raise LakeError(f"no lake at {store}")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        url = store.url if store.remote else str(store.local.resolve())
        con.execute(f"SET VARIABLE {_PATH_VARIABLE} = ?", [url])
        _STORES[url] = store
        _register(con, store, versions)
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
    url = rows[0][0]
    _register(con, _STORES.get(url) or as_store(url), None)
    return snapshot_versions(con)


def snapshot_versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The Delta version each view of the connection reads (tables not created yet are absent)."""
    rows = con.execute("SELECT getvariable('uns_lake_versions')").fetchall()
    return dict(rows[0][0]) if rows and rows[0][0] else {}


def applied_context_ids(path: str | Path | LakeStore, wal_dir: Path | None = None) -> set[str]:
    """The ids of the context events the lake holds (its context table's distinct
    ``event_id``, also of rows still in any writer's write-ahead log under the lake's
    directory, and in ``wal_dir``): what an engine starting on this lake must not apply
    again.  Empty for a lake without a context table."""
    store = as_store(path)
    ids: set[str] = set()
    if not store.exists():
        return ids
    data, _version = _dataset(store, "context", None)
    table = data if isinstance(data, pa.Table) else data.to_table(columns=["event_id"])  # type: ignore[attr-defined]
    column = table.column("event_id")
    ids.update(v for v in pc.unique(column).to_pylist() if v is not None)
    wal_dirs = [] if store.remote else sorted(store.local.glob("_wal*"))
    ids.update(_wal_context_ids([*wal_dirs, *([wal_dir] if wal_dir else [])]))
    return ids


def _wal_table_columns(wal_dirs: list[Path], table: str, width: int) -> Iterator[Sequence[Sequence[Any]]]:
    """The columns of ``table`` of every record in the write-ahead logs (``_wal``,
    ``_wal-<writer id>``, a ``lake.wal_dir``) with at least ``width`` of them: rows accepted
    before a crash and committed only when their writer starts again."""
    index = TABLES.index(table)
    for wal_dir in wal_dirs:
        if not wal_dir.is_dir():
            continue
        for _number, segment in list_segments(wal_dir):
            try:
                parts = read_segment(segment).parts
            except OSError:  # committed and deleted meanwhile: then it is in the table
                continue
            for part in parts:
                if part[index] and len(part[index]) >= width:
                    yield part[index]


def _wal_context_columns(wal_dirs: list[Path]) -> Iterator[Sequence[Sequence[Any]]]:
    """The context columns of every record with the ``event_id`` column in the write-ahead logs."""
    return _wal_table_columns(wal_dirs, "context", WAL_COLUMNS["context"].index("event_id") + 1)


def applied_records(path: str | Path | LakeStore, wal_dir: Path | None = None) -> dict[str, str]:
    """``{record id: content SHA-256}`` of the batch records the lake holds (the materials,
    results and comments tables, and rows still in any writer's write-ahead log): what an
    engine starting on this lake must not apply again, and what each id stands for."""
    store = as_store(path)
    out: dict[str, str] = {}
    if not store.exists():
        return out
    wal_dirs = [] if store.remote else sorted(store.local.glob("_wal*"))
    for table in RECORD_TABLES:
        data, _version = _dataset(store, table, None)
        columns = ["record_id", "content_sha256"]
        rows = data if isinstance(data, pa.Table) else data.to_table(columns=columns)  # type: ignore[attr-defined]
        out.update(
            zip(rows.column("record_id").to_pylist(), rows.column("content_sha256").to_pylist(), strict=True)
        )
        ident, content = (WAL_COLUMNS[table].index(c) for c in columns)
        for cols in _wal_table_columns([*wal_dirs, *([wal_dir] if wal_dir else [])], table, content + 1):
            out.update(zip(cols[ident], cols[content], strict=True))
    return out


def _wal_context_ids(wal_dirs: list[Path]) -> set[str]:
    """Context event ids in the write-ahead logs."""
    field = WAL_COLUMNS["context"].index("event_id")
    return {v for cols in _wal_context_columns(wal_dirs) for v in cols[field] if isinstance(v, str)}


def applied_context_fingerprints(
    path: str | Path | LakeStore, wal_dir: Path | None = None
) -> dict[str, str | None]:
    """:func:`applied_context_ids` with what each id stands for: the fingerprint of its
    event's content (:func:`uns.core.context.change_fingerprint`), computed from its rows,
    so an engine starting on the lake knows an id reused with other content (a conflict)."""
    store = as_store(path)
    rows: list[dict[str, Any]] = []
    if store.exists():
        data, _version = _dataset(store, "context", None)
        columns = ["event_id", "path", "ts", "key", "value", "source", "user", "reason"]
        table = data if isinstance(data, pa.Table) else data.to_table(columns=columns)  # type: ignore[attr-defined]
        table = table.select(columns).filter(pc.is_valid(table.column("event_id")))
        ts = table.column("ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        rows = table.set_column(columns.index("ts"), "ts", ts).to_pylist()
        wal_dirs = [] if store.remote else sorted(store.local.glob("_wal*"))
        rows += _wal_context_rows([*wal_dirs, *([wal_dir] if wal_dir else [])])
    events: dict[str, list[ContextChange]] = {}
    for row in rows:
        change = ContextChange(
            int(row["ts"]),
            0,
            row["path"],
            row["key"],
            row["value"],
            row["source"] or "",
            row["user"],
            row["reason"],
        )
        events.setdefault(str(row["event_id"]), []).append(change)
    return {ident: change_fingerprint(changes) for ident, changes in events.items()}


#: the context columns an engine rebuilds its in-memory context store from
SEED_COLUMNS: Final = ("ts", "received_at", "path", "key", "value", "source", "user", "reason", "event_id")


def context_seed(
    path: str | Path | LakeStore, wal_dir: Path | None = None, *, since_ms: int = 0
) -> list[list[Any]]:
    """The context changes an engine starting on the lake applies to its in-memory store,
    so that its live enrichment (the ``measurements`` table's context columns, republished
    events) is right from the first sample after a restart, not only once new context
    arrives: every change at or after ``since_ms`` (the store's window) and, per path and
    key, the newest one before it.  Rows in :data:`SEED_COLUMNS` order, oldest first (for
    equal times in arrival order; rows still in a write-ahead log last)."""
    store = as_store(path)
    rows: list[list[Any]] = []
    if not store.exists():
        return rows
    data, _version = _dataset(store, "context", None)
    columns = [*SEED_COLUMNS, "ingest_order"]
    table = data if isinstance(data, pa.Table) else data.to_table(columns=columns)  # type: ignore[attr-defined]
    table = table.select(columns)
    for name in ("ts", "received_at"):
        millis = table.column(name).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        table = table.set_column(columns.index(name), name, millis)
    lake_rows = sorted(
        (list(r.values()) for r in table.to_pylist()), key=lambda r: (r[0], r[-1] if r[-1] is not None else 0)
    )
    wal_dirs = [] if store.remote else sorted(store.local.glob("_wal*"))
    names = WAL_COLUMNS["context"]
    wal_rows: list[list[Any]] = [
        [dict(zip(names, values, strict=False)).get(c) for c in SEED_COLUMNS]
        for cols in _wal_context_columns([*wal_dirs, *([wal_dir] if wal_dir else [])])
        for values in zip(*cols, strict=True)
    ]
    ordered = [r[: len(SEED_COLUMNS)] for r in lake_rows] + sorted(wal_rows, key=lambda r: int(r[0]))
    before: dict[tuple[str, str], list[Any]] = {}
    recent: list[list[Any]] = []
    for row in ordered:
        if row[0] >= since_ms:
            recent.append(row)
        else:
            before[(row[2], row[3])] = row  # the newest before the window wins (rows are in order)
    return sorted(before.values(), key=lambda r: int(r[0])) + recent


def _wal_context_rows(wal_dirs: list[Path]) -> list[dict[str, Any]]:
    """The context rows with an event id in the write-ahead logs."""
    names = WAL_COLUMNS["context"]
    rows = (
        dict(zip(names, values, strict=False))
        for cols in _wal_context_columns(wal_dirs)
        for values in zip(*cols, strict=True)
    )
    return [row for row in rows if isinstance(row.get("event_id"), str)]


_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)
#: a SQL file read by :func:`queries_from_file` (a file of queries, not data)
MAX_SQL_FILE_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class QueryResult:
    """One query's answer: its name in the file (``""`` for a query given as text), its
    column names and rows."""

    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


def named_queries(text: str) -> dict[str, str]:
    """Split a SQL file into ``{name: query}`` at ``-- name: <name>`` lines
    (the format of examples/queries.sql); text before the first name is ignored."""
    marks = list(_NAME_LINE.finditer(text))
    out: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : following.start() if following else len(text)]
        out[mark.group(1)] = body.strip().rstrip(";").strip()
    return out


def select_queries(text: str, name: str | None = None, *, source: str = "the file") -> dict[str, str]:
    """The queries of a SQL file to run, in file order: every ``-- name: NAME`` query, or
    only ``name``.  A file without such headers is one query (named ``""``).  A
    :class:`~uns.errors.LakeError` for a name the file lacks (listing its names), a name
    given twice, or SQL before the first header (it would be skipped silently)."""
    marks = list(_NAME_LINE.finditer(text))
    if not marks:
        if name is not None:
            raise LakeError(f"{source} has no named queries (no `-- name: NAME` line); run it without --name")
        return {"": text}
    if _strip_comments(text[: marks[0].start()]).strip():
        raise LakeError(f"{source}: SQL before the first `-- name:` line would not run; give it a name")
    names = [m.group(1) for m in marks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LakeError(f"{source} names more than one query {', '.join(twice)}")
    queries = named_queries(text)
    if name is None:
        return queries
    if name not in queries:
        raise LakeError(f"{source} has no query named {name!r}; its queries: {', '.join(queries)}")
    return {name: queries[name]}


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them (untrusted bytes are bounded);
    LakeError when it cannot be read or is larger, saying it is not ``what``."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise LakeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
        raise LakeError(f"{path} is larger than {size}: not {what}")
    return raw


def queries_from_file(file: str | Path, name: str | None = None) -> dict[str, str]:
    """:func:`select_queries` of a SQL file (at most :data:`MAX_SQL_FILE_BYTES`)."""
    path = Path(file)
    raw = read_bounded(path, MAX_SQL_FILE_BYTES, "a file of queries")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LakeError(f"{path} is not UTF-8 text") from None
    return select_queries(text, name, source=str(path))


def run_queries(path: str | Path | LakeStore, queries: Mapping[str, str]) -> list[QueryResult]:
    """Run named queries over the lake's views on one connection (so all of them see one
    snapshot), in order.  An empty query, or one DuckDB refuses, is a
    :class:`~uns.errors.LakeError` naming the query, with DuckDB's message."""
    for name, query in queries.items():
        if not _strip_comments(query).strip().strip(";").strip():
            raise LakeError(f"query {name}: the query is empty" if name else "the query is empty")
    if not queries:
        raise LakeError("no query to run")
    con = connect(path)
    results: list[QueryResult] = []
    try:
        for name, query in queries.items():
            try:
                cur = con.execute(query)
                columns = [d[0] for d in cur.description or []]
                results.append(QueryResult(name, columns, cur.fetchall()))
            except duckdb.Error as exc:
                raise LakeError(f"query {name}: {exc}" if name else str(exc)) from None
    finally:
        con.close()
    return results


def run_sql(path: str | Path | LakeStore, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query over the lake's views: its column names and rows.  An empty query or
    one DuckDB refuses is a :class:`~uns.errors.LakeError` with DuckDB's message."""
    (result,) = run_queries(path, {"": query})
    return result.columns, result.rows


_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def _strip_comments(query: str) -> str:
    return _COMMENT.sub("", query)
