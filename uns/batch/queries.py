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
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # NumPy loads with the samples, not for `uns batch list`
    import numpy as np
    from numpy.typing import NDArray

from uns.errors import BatchError

__all__ = [
    "BatchInfo",
    "BatchSamples",
    "Segment",
    "batch_info",
    "batch_samples",
    "catalog_entries",
    "codes",
    "context_changes",
    "list_batches",
    "rejected_messages",
    "sample_segments",
    "session_events",
    "under",
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
    #: a context change ``batch_status = "aborted"`` is valid from inside the batch
    aborted: bool = False

    @property
    def status(self) -> str:
        """``aborted``, else ``open`` while the batch is in effect, else ``closed``."""
        if self.aborted:
            return "aborted"
        return "open" if self.end is None else "closed"


def under(column: str, paths: tuple[str, ...]) -> tuple[str, list[str]]:
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
        having.append('bool_or("end" IS NULL)')
    cur = con.execute(
        f"""SELECT batch_id, any_value(product) AS product, any_value(recipe) AS recipe,
                   any_value(order_id) AS order_id, string_agg(path, ', ' ORDER BY path) AS units,
                   min(start) AS start,
                   CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end",
                   CASE WHEN bool_or("end" IS NULL) THEN NULL
                        ELSE round((epoch_ms(max("end")) - epoch_ms(min(start))) / 1000.0, 3)
                   END AS duration_s,
                   CASE WHEN bool_or(status = 'aborted') THEN 'aborted'
                        WHEN bool_or("end" IS NULL) THEN 'open' ELSE 'closed' END AS status
            FROM batches WHERE {" AND ".join(where)}
            GROUP BY batch_id HAVING {" AND ".join(having)}
            ORDER BY min(start) DESC, batch_id""",  # noqa: S608 - only our own clauses
        params,
    )
    return [d[0] for d in cur.description or []], cur.fetchall()


def batch_info(con: duckdb.DuckDBPyConnection, batch_id: str) -> BatchInfo:
    """The batch's units, window and segments; BatchError for a batch the lake does not know."""
    rows = con.execute(
        """SELECT path, product, recipe, order_id, start, "end", status = 'aborted' FROM batches
           WHERE batch_id = ? ORDER BY path""",
        [batch_id],
    ).fetchall()
    if not rows:
        raise BatchError(f"unknown batch {batch_id!r}: no context in the lake sets batch_id to it")
    segments = con.execute(
        """SELECT path, phase, start, "end" FROM _uns_batch_segments WHERE batch_id = ?
            ORDER BY start, path""",
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
        aborted=any(r[6] for r in rows),
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
    segments (a sample whose path is in another batch at that time is not the batch's).

    One scan of ``measurements``; the rest is NumPy over its columns: each sample's
    path is mapped to its deepest batch path (what ``measurements_asof`` maps it to),
    its time to that path's segment of the batch, and the samples are ordered by series
    (path, metric) and time."""
    import numpy as np  # noqa: PLC0415

    inside, params = under("path", info.units)
    sql = f"""SELECT path, metric, epoch_ms(ts) AS t, value_double AS v, coalesce(is_historical, false) AS h
              FROM measurements
              WHERE {inside} AND ts >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR ts < ?)
                AND value_double IS NOT NULL"""  # noqa: S608 - only our own clauses
    try:
        table: pa.Table = con.sql(sql, params=[*params, info.start, info.end, info.end]).to_arrow_table()
    except duckdb.Error as exc:
        raise BatchError(f"cannot read the samples of batch {info.batch_id}: {exc}") from exc
    paths, path_code = codes(table.column("path"))
    metrics, metric_code = codes(table.column("metric"))
    ts = table.column("t").to_numpy().astype(np.int64, copy=False)
    segment = sample_segments(con, info, paths, path_code, ts)
    # series ids in (path, metric) order, then every sample ordered by series and time
    pairs = path_code.astype(np.int64) * max(len(metrics), 1) + metric_code
    present = np.flatnonzero(np.bincount(pairs, minlength=len(paths) * len(metrics)))
    named = sorted((paths[p // len(metrics)], metrics[p % len(metrics)], p) for p in present.tolist())
    rank = np.zeros(max(len(paths) * len(metrics), 1), dtype=np.int64)
    rank[[p for _, _, p in named]] = np.arange(len(named))
    sid = rank[pairs]
    keep = np.flatnonzero(segment >= 0)
    order = keep[np.argsort((sid[keep] << 42) | (ts[keep] - (ts.min() if len(ts) else 0)), kind="stable")]
    return BatchSamples(
        series=[(p, m) for p, m, _ in named],
        sid=sid[order].astype(np.int32),
        ts=ts[order],
        value=table.column("v").to_numpy()[order],
        segment=segment[order],
        historical=table.column("h").to_numpy(zero_copy_only=False)[order],
    )


def sample_segments(
    con: duckdb.DuckDBPyConnection, info: BatchInfo, paths: list[str], path_code: Any, ts: Any
) -> NDArray[np.int32]:
    """The batch segment of each sample (its path's code into ``paths``, its ``ts`` in ms),
    -1 for a sample that is not the batch's: per deepest batch path (a context path that
    sets ``batch_id`` or ``phase`` itself) at or above the sample's path, the batch's last
    segment there started at or before it -- what ``measurements_asof`` would give it."""
    import numpy as np  # noqa: PLC0415

    try:
        batch_paths = [r[0] for r in con.execute(
            "SELECT DISTINCT path FROM context WHERE key IN ('batch_id', 'phase')").fetchall()]  # fmt: skip
    except duckdb.Error as exc:
        raise BatchError(f"cannot read the context of batch {info.batch_id}: {exc}") from exc
    segment = np.full(len(ts), -1, dtype=np.int32)
    for code, path in enumerate(paths):
        above = [b for b in batch_paths if path == b or path.startswith(b + "/")]
        mine = [i for i, seg in enumerate(info.segments) if above and seg.path == max(above, key=len)]
        if not mine:
            continue
        rows = np.flatnonzero(path_code == code)
        starts = np.array([_ms(info.segments[i].start) for i in mine], dtype=np.int64)
        ends = np.array([_ms(e) if (e := info.segments[i].end) is not None else 2**62 for i in mine])
        local = np.searchsorted(starts, ts[rows], side="right") - 1
        inside = (local >= 0) & (ts[rows] < ends[np.maximum(local, 0)])
        segment[rows[inside]] = np.array(mine, dtype=np.int32)[local[inside]]
    return segment


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def codes(column: pa.ChunkedArray) -> tuple[list[str], Any]:
    """The distinct values of a string column and each row's index among them."""
    import numpy as np  # noqa: PLC0415

    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def catalog_entries(
    con: duckdb.DuckDBPyConnection, units: tuple[str, ...]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest BIRTH definition of every metric below the units: ``(path, metric)`` ->
    group, node, device, unit and the parsed properties."""
    inside, params = under("path", units)
    rows = con.execute(
        f"""SELECT path, metric, group_id, edge_node_id, device_id, unit, properties FROM metric_catalog
            WHERE {inside}
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
    replaced a change of the same path, key and time that arrived before it with another
    value; the same value again -- a PLC and the MES both saying it -- is no correction,
    nor is a clear where the other said "" (both: no value of the path's own))."""
    below, params = under("path", info.units)
    above = " OR ".join("starts_with(?, path || '/')" for _ in info.units)
    cur = con.execute(
        f"""SELECT * FROM (
                SELECT ts, received_at, path, key, value, source, "user", reason, event_id, ingest_order,
                    coalesce(nullif(value, '') IS DISTINCT FROM nullif(lag(value) OVER (
                        PARTITION BY path, key, ts ORDER BY ingest_order), ''), false)
                    AND row_number() OVER (PARTITION BY path, key, ts ORDER BY ingest_order) > 1 AS corrects
                FROM context)
            WHERE ({below} OR {above}) AND ts >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR ts <= ?)
            ORDER BY ts, ingest_order""",  # noqa: S608
        [*params, *info.units, info.start, info.end, info.end],
    )
    columns = [d[0] for d in cur.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
