"""`uns batch list|show|report|sign|trend`: print what :mod:`uns.batch.api` returns (their
parsing is :mod:`uns.cli.batch_cli`)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from uns.batch import api
from uns.batch.signing import report_content_sha256
from uns.errors import BatchError
from uns.output import render_rows

__all__ = ["batch_list", "batch_report", "batch_show", "batch_sign", "batch_trend"]

Echo = Callable[[str], Any]


def batch_list(
    lake_dir: str | None, *, since: str | None, product: str | None, open_only: bool, fmt: str, echo: Echo
) -> None:
    columns, rows = api.batch_rows(lake_dir, since=since, product=product, open_only=open_only)
    echo(render_rows(columns, rows, fmt))


def batch_show(lake_dir: str | None, batch_id: str, *, spec: str | None, echo: Echo) -> None:
    """A terminal summary: units, phases with durations, exceptions, completeness."""
    doc = api.batch_document(lake_dir, batch_id, spec=spec)
    b = doc["batch"]
    product, recipe, order = (b[k] or "-" for k in ("product", "recipe", "order_id"))
    echo(f"batch {b['batch_id']}  {product} / {recipe}  order {order}  [{b['status']}]")
    duration = "-" if b["duration_s"] is None else f"{b['duration_s']:g} s"
    echo(f"  start {b['start']}  end {b['end'] or 'open'}  duration {duration}")
    echo(f"  units {', '.join(b['units'])}")
    rows = [(p["path"], p["phase"], p["start"], p["end"] or "open", _seconds(p)) for p in doc["phases"]]
    echo(render_rows(["path", "phase", "start", "end", "duration_s"], rows, "table"))
    metrics = doc["completeness"]["metrics"]
    received = sum(m["received"] for m in metrics)
    expected = sum(m["expected"] for m in metrics)
    kinds: dict[str, int] = {}
    for e in doc["exceptions"]:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    echo(f"  parameters {len(doc['parameters'])}, excursions {len(doc['excursions'])}")
    ready = [u for u in doc["equipment"] if u["ready"] is not None]
    echo(
        f"  equipment {sum(1 for u in ready if u['ready'])} of {len(ready)} units ready"
        if ready
        else "  equipment: no status recorded"
    )
    oos = sum(1 for r in doc["results"] if r["oos"])
    unfit = sum(1 for m in doc["materials"] if m["problems"])
    echo(
        f"  materials {len(doc['materials'])} ({unfit} not fit for use), results {len(doc['results'])} "
        f"({oos} OOS), alarms {len(doc['alarms'])}, comments {len(doc['comments'])}"
    )
    echo(
        f"  completeness {received} samples received, at least {expected} expected (one per interval), "
        f"{sum(len(m['gaps']) for m in metrics)} gaps"
        if metrics
        else "  completeness: no expected interval in the spec"
    )
    echo(
        f"  exceptions {len(doc['exceptions'])}"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if kinds else "")
    )
    echo(f"  verdict: {doc['verdict']}")
    # what `uns batch sign --expect-sha256` takes: the content the reader saw here
    echo(f"  content sha256 {report_content_sha256(doc)}")


def _seconds(phase: dict[str, Any]) -> float | None:
    if phase["end"] is None:
        return None
    start, end = (datetime.fromisoformat(phase[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return round((end - start).total_seconds(), 3)


def batch_report(
    lake_dir: str | None,
    batch_id: str,
    *,
    spec: str | None,
    fmt: str,
    output: str | None,
    reference: str | None,
    metrics: tuple[str, ...],
    echo: Echo,
    envelope_exceptions: bool = False,
) -> Path:
    """Write the report (default file: ``<batch>.<format>`` in the current directory, the batch
    id made a safe file name: :func:`uns.batch.api.report_file_name`); prints its path and verdict."""
    data, verdict = api.report_bytes(
        lake_dir, batch_id, fmt=fmt, spec=spec, reference=reference, metrics=metrics,
        envelope_exceptions=envelope_exceptions,
    )  # fmt: skip
    target = Path(output or api.report_file_name(batch_id, fmt))
    _write(target, data, "report")
    echo(f"{target}: {verdict}")
    return target


def _write(target: Path, data: bytes, what: str) -> None:
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise BatchError(f"cannot write the {what} to {target}: {exc.strerror or exc}") from exc


def batch_trend(
    lake_dir: str | None, metric: str, *, fmt: str, output: str | None, options: dict[str, Any], echo: Echo
) -> Path | None:
    """Write the trend (default file: ``<metric>-trend.<format>``, ``-``: standard output);
    prints the file and the summary (to standard error when the trend went to standard output)."""
    data, summary = api.trend_bytes(lake_dir, metric, fmt=fmt, **options)
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        print(f"{metric}: {summary}", file=sys.stderr)
        return None
    target = Path(output or f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric)}-trend.{fmt}")
    _write(target, data, "trend")
    echo(f"{target}: {summary}")
    return target


def batch_sign(
    lake_dir: str | None,
    batch_id: str,
    *,
    spec: str | None,
    meaning: str,
    user: str | None,
    reason: str | None,
    key: str,
    expect_sha256: str | None,
    passphrase: bytes | None,
    echo: Echo,
) -> int:
    """Sign the batch's report in the audit trail; prints what was signed.  Returns the
    signature entry's seq."""
    done = api.sign(
        lake_dir, batch_id, spec=spec, meaning=meaning, user=user, reason=reason, key=key,
        expect_sha256=expect_sha256, passphrase=passphrase,
    )  # fmt: skip
    who = done.signer
    assert who is not None
    echo(
        f"{batch_id}: {meaning} by {who.full_name} ({who.user_id}) at {done.signed_at}, key {done.key}; "
        f"report content sha256 {done.report_sha256}; audit entry {done.writer_id} #{done.seq}"
    )
    return done.seq
