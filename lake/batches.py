"""Lake queries of the batch report and of ``uns batch list|show`` (over a :func:`lake.connect` connection).

Everything a report reads comes from one connection, so from one snapshot of
the lake.  The batch's samples are read from ``measurements`` filtered by the
batch's unit paths and time window (so the filters reach the Parquet files)
and each is given the batch segment it falls in (``_uns_batch_segments`` of
:mod:`lake.batch_views`): the same context ``measurements_asof`` would give it,
without recomputing it for every sample of the lake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from lake.batch_views import SEGMENTS_VIEW
from uns.errors import BatchError

__all__ = [
    "BatchInfo",
    "BatchSamples",
    "Segment",
    "batch_info",
    "batch_samples",
    "catalog_entries",
    "context_changes",
    "list_batches",
    "rejected_messages",
    "session_events",
]

#: session events a batch report lists (births inside a batch are rebirths)
SESSION_EVENTS = ("death", "stale", "seq_gap", "reorder_timeout", "rebirth_requested", "birth")


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of one phase (or of no phase) of the batch on one batch path."""

    path: str
    phase: str | None
    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class BatchInfo:
    batch_id: str
    product: str | None
    recipe: str | None
    order_id: str | None
    units: tuple[str, ...]
    start: datetime
    end: datetime | None
    segments: tuple[Segment, ...]

    @property
    def status(self) -> str:
        return "open" if self.end is None else "closed"


def _under(column: str, paths: tuple[str, ...]) -> tuple[str, list[str]]:
    """SQL: ``column`` is one of ``paths`` or below one; and its parameters."""
    clause = " OR ".join(f"({column} = ? OR starts_with({column}, ? || '/'))" for _ in paths)
    return f"({clause or 'false'})", [p for p in paths for _ in range(2)]


def list_batches(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    product: str | None = None,
    open_only: bool = False,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One row per batch (its units together), newest first: columns and rows."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if product is not None:
        where.append("product = ?")
        params.append(product)
    having = ["true"]
    if since is not None:
        having.append("min(start) >= ?")
        params.append(since)
    if open_only:
        having.append("bool_or(status = 'open')")
    cur = con.execute(
        f"""SELECT batch_id, any_value(product) AS product, any_value(recipe) AS recipe,
                   any_value(order_id) AS order_id, string_agg(path, ', ' ORDER BY path) AS units,
                   min(start) AS start,
                   CASE WHEN bool_or(status = 'open') THEN NULL ELSE max("end") END AS "end",
                   CASE WHEN bool_or(status = 'open') THEN NULL
                        ELSE round((epoch_ms(max("end")) - epoch_ms(min(start))) / 1000.0, 3)
                   END AS duration_s,
                   CASE WHEN bool_or(status = 'open') THEN 'open' ELSE 'closed' END AS status
            FROM batches WHERE {" AND ".join(where)}
            GROUP BY batch_id HAVING {" AND ".join(having)}
            ORDER BY min(start) DESC, batch_id""",  # noqa: S608 - only our own clauses
        params,
    )
    return [d[0] for d in cur.description or []], cur.fetchall()


def batch_info(con: duckdb.DuckDBPyConnection, batch_id: str) -> BatchInfo:
    """The batch's units, window and segments; BatchError for a batch the lake does not know."""
    rows = con.execute(
        """SELECT path, product, recipe, order_id, start, "end" FROM batches WHERE batch_id = ?
           ORDER BY path""",
        [batch_id],
    ).fetchall()
    if not rows:
        raise BatchError(f"unknown batch {batch_id!r}: no context in the lake sets batch_id to it")
    segments = con.execute(
        f"""SELECT path, phase, start, "end" FROM {SEGMENTS_VIEW} WHERE batch_id = ?
            ORDER BY start, path""",  # noqa: S608
        [batch_id],
    ).fetchall()
    ends = [r[5] for r in rows]

    def last(index: int) -> str | None:
        values = [r[index] for r in sorted(rows, key=lambda r: r[4]) if r[index] is not None]
        return values[-1] if values else None

    return BatchInfo(
        batch_id=batch_id,
        product=last(1),
        recipe=last(2),
        order_id=last(3),
        units=tuple(r[0] for r in rows),
        start=min(r[4] for r in rows),
        end=None if any(e is None for e in ends) else max(ends),
        segments=tuple(Segment(*s) for s in segments),
    )


@dataclass(frozen=True, slots=True)
class BatchSamples:
    """Every numeric sample of the batch, ordered by series and time, as NumPy columns."""

    series: list[tuple[str, str]]  # (path, metric) per series id
    sid: NDArray[np.int32]
    ts: NDArray[np.int64]  # ms UTC
    value: NDArray[np.float64]
    segment: NDArray[np.int32]  # index into BatchInfo.segments
    historical: NDArray[np.bool_]


def batch_samples(con: duckdb.DuckDBPyConnection, info: BatchInfo) -> BatchSamples:
    """The batch's numeric samples: below its units, inside its window, and in one of its
    segments (a sample whose path is in another batch at that time is not the batch's)."""
    under, params = _under("m.path", info.units)
    window = "m.ts >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR m.ts < ?)"
    window_params = [info.start, info.end, info.end]
    # Only our own clauses are interpolated; values are parameters.
    sql = f"""
WITH seg AS (
    SELECT (row_number() OVER (ORDER BY start, path) - 1)::INTEGER AS seg_id, path AS q, start, "end"
    FROM {SEGMENTS_VIEW} WHERE batch_id = ?
),
batch_paths AS (SELECT DISTINCT path FROM context WHERE key IN ('batch_id', 'phase')),
win AS (
    SELECT m.path, m.metric, m.ts, m.value_double, m.is_historical FROM measurements m
    WHERE {under} AND {window} AND m.value_double IS NOT NULL
),
series AS (
    SELECT path, metric, (row_number() OVER (ORDER BY path, metric) - 1)::INTEGER AS sid
    FROM (SELECT DISTINCT path, metric FROM win)
),
mq AS (
    SELECT s.path, arg_max(b.path, length(b.path)) AS q
    FROM (SELECT DISTINCT path FROM series) s
    JOIN batch_paths b ON s.path = b.path OR starts_with(s.path, b.path || '/')
    GROUP BY s.path
)
SELECT sr.sid, epoch_ms(w.ts) AS t, w.value_double AS v, sg.seg_id, coalesce(w.is_historical, false) AS h
FROM win w
JOIN series sr ON sr.path = w.path AND sr.metric = w.metric
JOIN mq ON mq.path = w.path
ASOF JOIN seg sg ON sg.q = mq.q AND w.ts >= sg.start
WHERE sg."end" IS NULL OR w.ts < sg."end"
ORDER BY sr.sid, w.ts
"""  # noqa: S608
    try:
        table: pa.Table = con.sql(sql, params=[info.batch_id, *params, *window_params]).to_arrow_table()
        names = con.execute(
            f"""SELECT DISTINCT m.path, m.metric FROM measurements m
                WHERE {under} AND {window} AND m.value_double IS NOT NULL ORDER BY 1, 2""",  # noqa: S608
            [*params, *window_params],
        ).fetchall()
    except duckdb.Error as exc:
        raise BatchError(f"cannot read the samples of batch {info.batch_id}: {exc}") from exc

    def column(name: str, dtype: Any) -> Any:
        return table.column(name).to_numpy().astype(dtype, copy=False)

    return BatchSamples(
        series=[(p, m) for p, m in names],
        sid=column("sid", np.int32),
        ts=column("t", np.int64),
        value=column("v", np.float64),
        segment=column("seg_id", np.int32),
        historical=column("h", np.bool_),
    )


def catalog_entries(
    con: duckdb.DuckDBPyConnection, units: tuple[str, ...]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest BIRTH definition of every metric below the units: ``(path, metric)`` ->
    group, node, device, unit and the parsed properties."""
    under, params = _under("path", units)
    rows = con.execute(
        f"""SELECT path, metric, group_id, edge_node_id, device_id, unit, properties FROM metric_catalog
            WHERE {under}
            QUALIFY row_number() OVER (PARTITION BY path, metric ORDER BY birth_ts DESC) = 1""",  # noqa: S608
        params,
    ).fetchall()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path, metric, group, node, device, unit, properties in rows:
        try:
            props = json.loads(properties) if properties else {}
        except ValueError:
            props = {}
        out[(path, metric)] = {
            "group": group,
            "node": node,
            "device": device,
            "unit": unit,
            "properties": props if isinstance(props, dict) else {},
        }
    return out


def session_events(
    con: duckdb.DuckDBPyConnection, sources: set[tuple[str, str, str | None]], info: BatchInfo
) -> list[tuple[datetime, str, str, str | None, str, str | None]]:
    """Lifecycle events of the batch's sources inside its window: ``(ts, group, node,
    device, event, detail)``; a node's own row counts for all its devices.  A birth is
    listed only when the source was born before (a rebirth, not its first birth)."""
    nodes = {(g, n) for g, n, _ in sources}
    rows = con.execute(
        f"""SELECT ts, group_id, edge_node_id, device_id, event, detail FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY group_id, edge_node_id, device_id, event ORDER BY ts) > 1 AS again
                FROM sessions)
            WHERE event IN ({", ".join("?" for _ in SESSION_EVENTS)}) AND (event <> 'birth' OR again)
              AND ts >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR ts <= ?)
            ORDER BY ts, group_id, edge_node_id, device_id NULLS FIRST""",  # noqa: S608
        [*SESSION_EVENTS, info.start, info.end, info.end],
    ).fetchall()
    return [r for r in rows if (r[1], r[2], r[3]) in sources or (r[3] is None and (r[1], r[2]) in nodes)]


def rejected_messages(
    con: duckdb.DuckDBPyConnection, sources: set[tuple[str, str, str | None]], info: BatchInfo
) -> list[tuple[datetime, str, str]]:
    """Rejected messages on the batch's sources' Sparkplug topics inside its window:
    ``(received_at, topic, error)``."""
    nodes = {(g, n) for g, n, _ in sources}
    rows = con.execute(
        """SELECT received_at, topic, error FROM rejected
           WHERE received_at >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR received_at <= ?)
           ORDER BY received_at""",
        [info.start, info.end, info.end],
    ).fetchall()
    out = []
    for received_at, topic, error in rows:
        parts = (topic or "").split("/")
        if len(parts) < 4 or parts[0] != "spBv1.0" or (parts[1], parts[3]) not in nodes:
            continue
        device = parts[4] if len(parts) > 4 else None
        if device is None or (parts[1], parts[3], device) in sources:
            out.append((received_at, topic, error or ""))
    return out


def context_changes(con: duckdb.DuckDBPyConnection, info: BatchInfo) -> list[dict[str, Any]]:
    """Context changes on the batch's units, below them or above them, valid from inside
    its window (its end included: the change that ends it): each with ``corrects`` (it
    replaced a change of the same path, key and time that arrived before it)."""
    below, params = _under("path", info.units)
    above = " OR ".join("starts_with(?, path || '/')" for _ in info.units)
    cur = con.execute(
        f"""SELECT * FROM (
                SELECT ts, received_at, path, key, value, source, "user", reason, event_id, ingest_order,
                    row_number() OVER (PARTITION BY path, key, ts ORDER BY ingest_order) > 1 AS corrects
                FROM context)
            WHERE ({below} OR {above}) AND ts >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR ts <= ?)
            ORDER BY ts, ingest_order""",  # noqa: S608
        [*params, *info.units, info.start, info.end, info.end],
    )
    columns = [d[0] for d in cur.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
