"""The report's review beyond the parameters: equipment readiness, materials, results,
alarms, bad-quality data, operator comments, aborts -- each a section and its exceptions.

Everything is read from the report's connection (one lake snapshot).  The batch
records (materials, results, comments) are the batch's by their path's context at
their time (the lake's views, by event time); alarms and bad-quality samples are the
batch's samples (:func:`uns.batch.queries.sample_segments`).  The rules themselves are
pure (:mod:`uns.batch.rules`); docs/batches.md section 4 lists each exception kind.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa

from uns.batch.exceptions import _exception
from uns.batch.queries import BatchInfo, BatchSamples, codes, sample_segments, under
from uns.batch.rules import (
    EQUIPMENT_KEYS,
    Change,
    alarm_intervals,
    equipment_problems,
    material_problems,
    runs,
)
from uns.batch.times import iso, ms
from uns.core.model import PlantModel
from uns.errors import BatchError

__all__ = ["ALARM_LOOKBACK", "review_findings"]

#: how far before a batch's start the value of an alarm metric is looked for (an alarm
#: already active when the batch started counts from the start)
ALARM_LOOKBACK: Final = timedelta(days=7)
#: the columns of the record sections, per view
_RECORD_COLUMNS: Final = {
    "materials": ("material", "lot", "quantity", "unit", "status", "expiry"),
    "results": ("test", "value_double", "value_text", "unit", "low", "high", "status", "oos"),
    "comments": ("text",),
}
_COMMON: Final = ("ts", "received_at", "path", "record_id", "user", "source", "signer")


def _sql(con: duckdb.DuckDBPyConnection, what: str, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise BatchError(f"cannot read the {what} of the batch: {exc}") from exc


def _has_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = ?", [name]).fetchone())


# ------------------------------------------------------------------ equipment readiness


def _unit_windows(info: BatchInfo) -> dict[str, tuple[int, int | None]]:
    """Per unit, the batch's start and end there (None: open)."""
    out: dict[str, tuple[int, int | None]] = {}
    for unit in info.units:
        mine = [s for s in info.segments if s.path == unit]
        start = min((ms(s.start) for s in mine), default=ms(info.start))
        ends = [s.end for s in mine]
        out[unit] = (
            start,
            None if not ends or any(e is None for e in ends) else max(ms(e) for e in ends if e),
        )
    return out


def equipment(
    con: duckdb.DuckDBPyConnection, info: BatchInfo, now: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per unit: its equipment status when the batch started there, and an
    ``equipment_not_ready`` exception for a unit that was not ready."""
    above = " OR ".join("(path = ? OR starts_with(?, path || '/'))" for _ in info.units)
    rows = _sql(
        con,
        "equipment status",
        f"""SELECT path, key, epoch_ms(ts), value, ingest_order FROM context
            WHERE key IN ({", ".join("?" for _ in EQUIPMENT_KEYS)}) AND ({above})""",  # noqa: S608
        [*EQUIPMENT_KEYS, *[u for u in info.units for _ in range(2)]],
    )
    changes = [Change(p, k, int(t), v, int(o or 0)) for p, k, t, v, o in rows]
    section, exceptions = [], []
    for unit, (start, end) in _unit_windows(info).items():
        found = equipment_problems(changes, unit, start, end if end is not None else now, iso)
        section.append(
            {
                "path": unit,
                "start": iso(start),
                "status": found.status,
                "status_since": iso(found.since),
                "clean_expires": found.clean_expires,
                "calibration_due": found.calibration_due,
                "ready": None if not found.recorded else not found.problems,
                "problems": list(found.problems),
            }
        )
        if found.problems:
            message = f"equipment {unit} not ready for use at the batch start: {'; '.join(found.problems)}"
            exceptions.append(_exception("equipment_not_ready", "high", start, message, unit))
    return section, exceptions


# ------------------------------------------------------------------ batch records


def _records(con: duckdb.DuckDBPyConnection, view: str, batch_id: str) -> list[dict[str, Any]]:
    if not _has_view(con, view):  # a lake connection made before the records views
        return []
    columns = (*_COMMON, *_RECORD_COLUMNS[view])
    names = ", ".join(f'"{c}"' for c in columns)
    rows = _sql(
        con,
        view,
        f"SELECT {names} FROM {view} WHERE batch_id = ? ORDER BY ts, record_id",  # noqa: S608
        [batch_id],
    )
    out = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        for key in ("ts", "received_at", "expiry"):
            if isinstance(record.get(key), datetime):
                record[key] = iso(record[key])
        out.append(record)
    return out


def _epoch(stamp: str) -> int:
    """Epoch ms of a report time (ISO 8601 UTC)."""
    return ms(datetime.fromisoformat(stamp.replace("Z", "+00:00")))


def materials(
    con: duckdb.DuckDBPyConnection, info: BatchInfo
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lots charged to the batch, and a ``material`` exception per lot not released or
    expired when it was charged."""
    section, exceptions = [], []
    for m in _records(con, "materials", info.batch_id):
        expiry = None if m["expiry"] is None else _epoch(m["expiry"])
        problems = material_problems(m["status"], expiry, _epoch(m["ts"]), iso)
        section.append({**m, "problems": problems})
        if problems:
            message = (
                f"material {m['material']} lot {m['lot']} charged on {m['path']} "
                f"({m['quantity']:g}{' ' + m['unit'] if m['unit'] else ''}, by {m['user'] or '?'}): "
                f"{'; '.join(problems)}"
            )
            exceptions.append(_exception("material", "high", m["ts"], message, m["record_id"]))
    return section, exceptions


def results(
    con: duckdb.DuckDBPyConnection, info: BatchInfo
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's quality results (OOS marked), and an ``oos_result`` exception per
    result out of specification."""
    section, exceptions = [], []
    for r in _records(con, "results", info.batch_id):
        value = r.pop("value_double")
        text = r.pop("value_text")
        row = {**r, "value": value if value is not None else text, "oos": bool(r["oos"])}
        section.append(row)
        if row["oos"]:
            limits = f"{_limit(r['low'])} .. {_limit(r['high'])}"
            verdict = f", lab verdict {r['status']}" if r["status"] else ""
            message = (
                f"out of specification: {r['test']} = {text}{' ' + r['unit'] if r['unit'] else ''} "
                f"on {r['path']} (limits {limits}{verdict})"
            )
            exceptions.append(_exception("oos_result", "high", r["ts"], message, r["record_id"]))
    return section, exceptions


def _limit(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def comments(
    con: duckdb.DuckDBPyConnection, info: BatchInfo
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's operator comments and manual entries, each an ``operator_comment``."""
    section = _records(con, "comments", info.batch_id)
    exceptions = [
        _exception(
            "operator_comment", "low", c["ts"], f"comment by {c['user'] or '?'} on {c['path']}: {c['text']}",
            c["record_id"],
        )
        for c in section
    ]  # fmt: skip
    return section, exceptions


# ------------------------------------------------------------------ alarms and quality


def alarms(
    con: duckdb.DuckDBPyConnection, info: BatchInfo, samples: BatchSamples, model: PlantModel | None, now: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every interval in which a metric the model marks ``alarm = true`` was active during
    the batch, each an ``alarm`` exception with its duration."""
    wanted = model.alarm_metrics() if model is not None else frozenset()
    series = [(sid, key) for sid, key in enumerate(samples.series) if key in wanted]
    if not series:
        return [], []
    before = _values_before(con, info, [key for _, key in series])
    bounds = np.searchsorted(samples.sid, np.arange(len(samples.series) + 1))
    section, exceptions = [], []
    for sid, (path, metric) in series:
        lo, hi = int(bounds[sid]), int(bounds[sid + 1])
        segs = sorted(set(samples.segment[lo:hi].tolist())) or [0]
        start = min(ms(info.segments[i].start) for i in segs)
        ends = [info.segments[i].end for i in segs]
        end = now if any(e is None for e in ends) else max(ms(e) for e in ends if e is not None)
        was = before.get((path, metric))
        active = was is not None and not np.isnan(was) and was != 0
        found = alarm_intervals(samples.ts[lo:hi], samples.value[lo:hi], start, end, active_before=active)
        for a, b, still in found:
            duration = (b - a) / 1000.0
            section.append(
                {"path": path, "metric": metric, "start": iso(a), "end": iso(b),
                 "duration_s": duration, "active_at_end": still}
            )  # fmt: skip
            message = f"alarm {metric} on {path} active for {duration:.1f} s" + (
                " (still active at the end of the batch)" if still else ""
            )
            exceptions.append(_exception("alarm", "medium", a, message, path, metric))
    return section, exceptions


def _values_before(
    con: duckdb.DuckDBPyConnection, info: BatchInfo, series: list[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    """The last value of each series before the batch started (looked up to ALARM_LOOKBACK back)."""
    pairs = " OR ".join("(path = ? AND metric = ?)" for _ in series)
    rows = _sql(
        con,
        "alarm values",
        f"""SELECT path, metric, arg_max(value_double, ts) FROM measurements
            WHERE ({pairs}) AND ts < ? AND ts >= ? AND value_double IS NOT NULL
            GROUP BY path, metric""",  # noqa: S608
        [*[v for pair in series for v in pair], info.start, info.start - ALARM_LOOKBACK],
    )
    return {(p, m): float(v) for p, m, v in rows}


def _rows_in_batch(
    con: duckdb.DuckDBPyConnection, info: BatchInfo, sql: str, params: list[Any]
) -> dict[tuple[str, str], tuple[Any, pa.Array]]:
    """``(path, metric) -> (ms, quality)`` of the rows of ``sql`` (path, metric, t, q) that
    are the batch's samples, each series in time order."""
    try:
        table = con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as exc:
        raise BatchError(f"cannot read the sample quality of the batch: {exc}") from exc
    if table.num_rows == 0:
        return {}
    paths, path_code = codes(table.column("path"))
    metrics, metric_code = codes(table.column("metric"))
    ts = table.column("t").to_numpy().astype(np.int64, copy=False)
    keep = sample_segments(con, info, paths, path_code, ts) >= 0
    out = {}
    for p, path in enumerate(paths):
        for m, metric in enumerate(metrics):
            rows = np.flatnonzero(keep & (path_code == p) & (metric_code == m))
            if len(rows):
                rows = rows[np.argsort(ts[rows], kind="stable")]
                out[(path, metric)] = (ts[rows], table.column("q").take(pa.array(rows)))
    return out


def bad_quality(
    con: duckdb.DuckDBPyConnection, info: BatchInfo, samples: BatchSamples
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs of consecutive samples of one series whose Sparkplug quality is not good
    (instrument failures), each a ``bad_quality`` exception.

    Not a second pass over the batch's samples: the samples that are not good (a filter
    the Parquet statistics answer without reading the files where every sample is good),
    placed among the series' numeric samples the report holds anyway and its samples
    without a number (a filter the statistics answer too); a run ends at a good one."""
    where, params = under("path", info.units)
    window = "ts >= ? AND (CAST(? AS TIMESTAMPTZ) IS NULL OR ts < ?)"
    times = [info.start, info.end, info.end]
    bad = _rows_in_batch(
        con, info,
        f"""SELECT path, metric, epoch_ms(ts) AS t, quality AS q FROM measurements
            WHERE {where} AND {window} AND quality IS NOT NULL AND quality <> 'good'""",  # noqa: S608
        [*params, *times],
    )  # fmt: skip
    if not bad:
        return [], []
    pairs = " OR ".join("(path = ? AND metric = ?)" for _ in bad)
    valueless = _rows_in_batch(
        con, info,
        f"""SELECT path, metric, epoch_ms(ts) AS t, NULL AS q FROM measurements
            WHERE ({pairs}) AND {window} AND value_double IS NULL""",  # noqa: S608
        [*[v for pair in bad for v in pair], *times],
    )  # fmt: skip
    bounds = np.searchsorted(samples.sid, np.arange(len(samples.series) + 1))
    sid = {key: i for i, key in enumerate(samples.series)}
    section, exceptions = [], []
    for (path, metric), (bad_ts, kinds_of) in sorted(bad.items()):
        i = sid.get((path, metric))
        numeric = samples.ts[int(bounds[i]) : int(bounds[i + 1])] if i is not None else bad_ts[:0]
        others = valueless.get((path, metric), (bad_ts[:0], None))[0]
        every = np.sort(np.concatenate((numeric, others, bad_ts)))  # the series' samples, in time order
        every = every[np.concatenate(([True], every[1:] != every[:-1]))]  # (np.union1d hashes: 30x slower)
        flags = np.isin(every, bad_ts)
        for first, last in runs(flags):
            a, b = int(every[first]), int(every[last])
            inside = (bad_ts >= a) & (bad_ts <= b)
            kinds = ", ".join(sorted(set(kinds_of.filter(pa.array(inside)).to_pylist())))
            count = last - first + 1
            section.append(
                {
                    "path": path,
                    "metric": metric,
                    "quality": kinds,
                    "start": iso(a),
                    "end": iso(b),
                    "samples": count,
                }
            )
            message = (
                f"{count} sample{'s' if count != 1 else ''} of {metric} on {path} with quality {kinds} "
                f"({(b - a) / 1000.0:.1f} s)"
            )
            exceptions.append(_exception("bad_quality", "medium", a, message, path, metric))
    return section, exceptions


# ------------------------------------------------------------------ aborts


def aborts(con: duckdb.DuckDBPyConnection, info: BatchInfo) -> list[dict[str, Any]]:
    """An ``aborted`` exception per context change ``batch_status = "aborted"`` inside the
    batch (the lake's ``_uns_batch_windows``: what makes its status ``aborted``)."""
    if not _has_view(con, "_uns_batch_windows"):
        return []
    rows = _sql(
        con,
        "aborts",
        """WITH a AS (
               SELECT DISTINCT unnest(aborts, recursive := true) FROM _uns_batch_windows WHERE batch_id = ?)
           SELECT a.path, a.ts, arg_max(c."user", c.ingest_order), arg_max(c.reason, c.ingest_order)
           FROM a JOIN context c
             ON c.path = a.path AND c.ts = a.ts AND c.key = 'batch_status' AND c.value = 'aborted'
           GROUP BY a.path, a.ts ORDER BY a.ts, a.path""",
        [info.batch_id],
    )
    out = []
    for path, ts, user, reason in rows:
        message = f"batch aborted on {path} by {user or '?'} ({reason or 'no reason given'})"
        out.append(_exception("aborted", "high", ts, message, path))
    return out


def review_findings(
    con: duckdb.DuckDBPyConnection,
    info: BatchInfo,
    samples: BatchSamples,
    model: PlantModel | None,
    now: datetime,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report's sections ``equipment``, ``materials``, ``results``, ``alarms``,
    ``comments`` and ``bad_quality`` (for completeness), and their exceptions."""
    at = ms(now)
    sections: dict[str, Any] = {}
    exceptions: list[dict[str, Any]] = []
    for name, (section, found) in (
        ("equipment", equipment(con, info, at)),
        ("materials", materials(con, info)),
        ("results", results(con, info)),
        ("alarms", alarms(con, info, samples, model, at)),
        ("comments", comments(con, info)),
        ("bad_quality", bad_quality(con, info, samples)),
    ):
        sections[name] = section
        exceptions += found
    exceptions += aborts(con, info)
    return sections, exceptions
