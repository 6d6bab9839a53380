"""Completeness, context changes and the exceptions list of a batch report.

Every exception has ``id``, ``kind``, ``severity`` (``high``, ``medium``, ``low``),
``ts`` and ``message``; docs/batches.md lists the kinds.  The ``id`` is stable: the
same for the same batch data in every report (a reviewer's disposition names it), made
of what identifies the exception -- its kind, time and place, not its message (an open
excursion's peak may still grow): :func:`exception_id`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import duckdb

from uns.batch.parameters import Parameter
from uns.batch.queries import BatchInfo, BatchSamples, context_changes, rejected_messages, session_events
from uns.batch.signals import find_gaps
from uns.batch.times import iso, ms

__all__ = ["SESSION_SEVERITY", "completeness_and_exceptions", "exception_id", "unique_ids"]

#: severity of the exception of a sessions event (the others: medium); the kind is the
#: event's name, but a birth inside a batch, after an earlier one, is a ``rebirth`` (the source restarted)
SESSION_SEVERITY: Final = {"death": "high", "birth": "low"}


def exception_id(kind: str, ts: str | None, *where: object) -> str:
    """The stable id of an exception: 16 hex digits of the SHA-256 of its kind, time (ISO
    8601) and place (path, metric, source, event id: what tells it from the others)."""
    text = json.dumps([kind, ts, *where], separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def unique_ids(exceptions: list[dict[str, Any]]) -> None:
    """Make the ids of a sorted exceptions list unique (a second exception with the same
    kind, time and place gets ``-2``, ...): still the same for the same data."""
    seen: dict[str, int] = {}
    for e in exceptions:
        n = seen[e["id"]] = seen.get(e["id"], 0) + 1
        if n > 1:
            e["id"] = f"{e['id']}-{n}"


def _exception(
    kind: str, severity: str, ts: datetime | int | str | None, message: str, *where: object
) -> dict[str, Any]:
    stamp = ts if isinstance(ts, str) else iso(ts)
    return {
        "id": exception_id(kind, stamp, *where),
        "kind": kind,
        "severity": severity,
        "ts": stamp,
        "message": message,
    }


def _metric_completeness(info: BatchInfo, params: list[Parameter], data_end: int) -> list[dict[str, Any]]:
    out = []
    for p in params:
        # windows: how many expected intervals the segments span, summed before rounding
        # down (rounding per phase would lose up to one sample per phase).  It is the least
        # number of samples: a source that samples faster than the interval sends more.
        windows, gaps, intervals = 0.0, [], set()
        received = 0
        for i in p.segments:
            lim = p.limits.get(i)
            if lim is None or lim.expected_interval_s is None:
                continue
            seg = info.segments[i]
            lo, hi = ms(seg.start), ms(seg.end) if seg.end is not None else data_end
            inside = p.ts[(p.ts >= lo) & (p.ts < hi)]
            intervals.add(lim.expected_interval_s)
            windows += max(0, hi - lo) / (lim.expected_interval_s * 1000.0)
            received += len(inside)
            gaps += find_gaps(inside, lo, hi, lim.expected_interval_s)
        if not intervals:
            continue
        out.append(
            {
                "path": p.path,
                "metric": p.metric,
                "expected_interval_s": min(intervals),
                "expected": int(windows + 1e-9),
                "received": received,
                "gaps": [
                    {"start": iso(a), "end": iso(b), "duration_s": (b - a) / 1000.0} for a, b in _merge(gaps)
                ],
            }
        )
    return out


def _merge(gaps: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Gaps of adjacent segments that touch are one gap."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(gaps):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _sessions(events: list[tuple[Any, ...]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sessions rows, and one exception per event of one node at one instant (a node's
    NDEATH is recorded for the node and for each device: one death)."""
    rows: list[dict[str, Any]] = []
    grouped: dict[tuple[Any, ...], list[str | None]] = {}
    for ts, group, node, device, event, detail in events:
        rows.append(
            {"ts": iso(ts), "group": group, "node": node, "device": device, "event": event, "detail": detail}
        )
        grouped.setdefault((ts, group, node, event), []).append(device)
    exceptions = []
    deaths = {(ts, group, node) for ts, group, node, event in grouped if event == "death"}
    for (ts, group, node, event), devices in grouped.items():
        if event == "stale" and (ts, group, node) in deaths:
            continue  # the death marked its data stale: one exception, the death
        kind, severity = "rebirth" if event == "birth" else event, SESSION_SEVERITY.get(event, "medium")
        named = [d for d in devices if d is not None]
        what = f"{group}/{node}" + (f" ({', '.join(named)})" if named else "")
        exceptions.append(_exception(kind, severity, ts, f"{event.replace('_', ' ')}: {what}", group, node))
    return rows, exceptions


def _context(
    changes: list[dict[str, Any]], late_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's context changes, the late or correcting ones, and one exception per
    context event (``event_id``) among those."""
    listed: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    by_event: dict[str, dict[str, Any]] = {}
    for c in changes:
        row = {k: c[k] for k in ("path", "key", "value", "source", "user", "reason")}
        listed.append({"ts": iso(c["ts"]), "received_at": iso(c["received_at"]), **row})
        delay = (c["received_at"] - c["ts"]).total_seconds()
        late, corrects = delay > late_s, bool(c["corrects"])
        if not (late or corrects):
            continue
        flagged.append(
            {"ts": iso(c["ts"]), "received_at": iso(c["received_at"]), **row, "delay_s": round(delay, 3),
             "late": late, "corrects": corrects}
        )  # fmt: skip
        key = c["event_id"] or f"{c['path']}@{c['received_at']}"
        event = by_event.setdefault(key, {"c": c, "keys": [], "corrects": False, "delay": delay})
        event["keys"].append(
            f"{c['key']}={c['value']!r}" if c["value"] is not None else f"{c['key']} cleared"
        )
        event["corrects"] |= corrects
    exceptions = []
    for key, event in by_event.items():
        c = event["c"]
        kind = "context_correction" if event["corrects"] else "late_context"
        verb = "corrected" if event["corrects"] else "arrived late"
        message = (
            f"context on {c['path']} ({', '.join(event['keys'])}) {verb}: received {event['delay']:.1f} s "
            f"after its time, by {c['user'] or '?'} ({c['reason'] or 'no reason given'})"
        )
        exceptions.append(_exception(kind, "medium", c["ts"], message, key))
    return listed, flagged, exceptions


def completeness_and_exceptions(
    con: duckdb.DuckDBPyConnection,
    info: BatchInfo,
    samples: BatchSamples,
    params: list[Parameter],
    catalog: dict[tuple[str, str], dict[str, Any]],
    *,
    late_context_s: float,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(completeness, exceptions, context_changes)`` of the report."""
    data_end = (
        ms(info.end)
        if info.end is not None
        else (int(samples.ts.max()) + 1 if len(samples.ts) else ms(info.start))
    )
    sources = {(e["group"], e["node"], e["device"]) for e in catalog.values()}
    metrics = _metric_completeness(info, params, data_end)
    session_rows, exceptions = _sessions(session_events(con, sources, info))
    rejected = [
        {"received_at": iso(r), "topic": t, "error": err}
        for r, t, err in rejected_messages(con, sources, info)
    ]
    historical = [
        {"path": p.path, "metric": p.metric, "samples": p.historical, "first": iso(p.first_historical)}
        for p in params
        if p.historical
    ]
    listed, flagged, context_exceptions = _context(context_changes(con, info), late_context_s)
    for p in params:
        for e in p.excursions:
            severity = "high" if e["level"] == "action" else "medium"
            message = (
                f"{e['level']} excursion of {e['metric']} on {e['path']} ({e['phase'] or 'no phase'}): "
                f"{e['samples']} sample{'s' if e['samples'] != 1 else ''} "
                f"{'above' if e['direction'] == 'high' else 'below'} {e['limit']:g}, "
                f"peak {e['peak']:g}"
            )
            where = (e["path"], e["metric"], e["phase"], e["level"], e["direction"])
            exceptions.append(_exception("excursion", severity, e["start"], message, *where))
    for m in metrics:
        for gap in m["gaps"]:
            message = (
                f"no {m['metric']} sample on {m['path']} for {gap['duration_s']:.1f} s "
                f"(expected every {m['expected_interval_s']:g} s)"
            )
            exceptions.append(_exception("gap", "medium", gap["start"], message, m["path"], m["metric"]))
    for r in rejected:
        message = f"rejected message on {r['topic']}: {r['error']}"
        exceptions.append(_exception("rejected", "medium", r["received_at"], message, r["topic"]))
    by_path: dict[str, list[dict[str, Any]]] = {}
    for h in historical:
        by_path.setdefault(str(h["path"]), []).append(h)
    for path, rows in by_path.items():
        count, names = sum(h["samples"] for h in rows), ", ".join(h["metric"] for h in rows)
        message = f"{count} historical (store-and-forward) samples on {path} ({names})"
        exceptions.append(_exception("historical", "low", min(h["first"] for h in rows), message, path))
    exceptions += context_exceptions
    completeness = {
        "metrics": metrics,
        "session_events": session_rows,
        "rejected": rejected,
        "historical": historical,
        "late_context": flagged,
    }
    return completeness, exceptions, listed
