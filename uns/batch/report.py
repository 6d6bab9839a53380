"""The batch report: one batch read from one lake snapshot, reviewed by exception.

:func:`generate_report` is the one entry point: it returns the report's bytes
in the asked format (``json``, ``html``, ``pdf``), so whatever must happen for
every generated report (an audit record of its SHA-256, say) is one line there.
:func:`build_report` puts the content together (docs/batches.md lists it; the
JSON form is ``schemas/batch-report.schema.json``); :mod:`uns.batch.parameters`
computes the per-parameter part, :mod:`uns.batch.exceptions` the
completeness and the exceptions, :mod:`uns.batch.findings` equipment readiness, batch
records, alarms and bad-quality data, :mod:`uns.batch.html` renders HTML and PDF.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

import uns
from uns import lake
from uns.audit.trail import LOG_COLUMNS, audit_log
from uns.batch.document import Report, ReportRequest
from uns.batch.envelope import MIN_REFERENCES
from uns.batch.exceptions import completeness_and_exceptions, unique_ids
from uns.batch.findings import review_findings
from uns.batch.golden import envelope_exceptions, envelope_overlay
from uns.batch.parameters import parameters, reference_overlay
from uns.batch.queries import BatchInfo, batch_info, batch_samples, catalog_entries
from uns.batch.review_state import attach_review
from uns.batch.signing import attach_signatures
from uns.batch.times import iso
from uns.errors import BatchError
from uns.keyring import load_keyring
from uns.lake.manual import record_report
from uns.lake.query import snapshot_versions

__all__ = ["FORMATS", "Report", "ReportRequest", "build_report", "generate_report"]

FORMATS = ("html", "json", "pdf")


def build_report(con: duckdb.DuckDBPyConnection, request: ReportRequest) -> Report:
    """Read the batch (and its reference) from ``con``'s snapshot and review it."""
    info = batch_info(con, request.batch_id)
    references = [batch_info(con, b) for b in request.reference_batches]
    if request.envelope_exceptions and len(references) < MIN_REFERENCES:
        raise BatchError(
            f"envelope exceptions need at least {MIN_REFERENCES} reference batches (--reference B1,B2,...)"
        )
    samples = batch_samples(con, info)
    catalog = catalog_entries(con, info.units)
    params = parameters(info, samples, catalog, request.spec, request.model, request.metrics)
    if len(references) == 1:
        reference_overlay(params, info, references[0], batch_samples(con, references[0]))
    elif references:
        envelope_overlay(params, info, samples, [(r, batch_samples(con, r)) for r in references])
    now = request.now or datetime.now(UTC)
    completeness, exceptions, context = completeness_and_exceptions(
        con, info, samples, params, catalog, late_context_s=request.late_context_s
    )
    found, more = review_findings(con, info, samples, request.model, now)
    completeness["bad_quality"] = found.pop("bad_quality")
    exceptions += more
    if request.envelope_exceptions:
        exceptions += envelope_exceptions(params)
    exceptions.sort(key=lambda e: (e["ts"], e["kind"], e["message"], e["id"]))
    unique_ids(exceptions)
    count = len(exceptions)
    document: dict[str, Any] = {
        "batch": _header(info, request, now, snapshot_versions(con)),
        "phases": [
            {"path": s.path, "phase": s.phase, "start": iso(s.start), "end": iso(s.end)}
            for s in info.segments
            if s.phase is not None
        ],
        "parameters": [p.to_dict() for p in params],
        "excursions": [e for p in params for e in p.excursions],
        **found,  # equipment, materials, results, alarms, comments
        "completeness": completeness,
        "context_changes": context,
        "exceptions": exceptions,
        "verdict": "no exceptions" if count == 0 else f"{count} exception{'s' if count != 1 else ''}",
    }
    return Report(document, params, info, references[0] if len(references) == 1 else None)


def _header(
    info: BatchInfo, request: ReportRequest, now: datetime, versions: dict[str, int]
) -> dict[str, Any]:
    duration = None if info.end is None else round((info.end - info.start).total_seconds(), 3)
    spec = request.spec
    return {
        "batch_id": info.batch_id,
        "product": info.product,
        "recipe": info.recipe,
        "order_id": info.order_id,
        "units": list(info.units),
        "start": iso(info.start),
        "end": iso(info.end),
        "duration_s": duration,
        "status": info.status,
        "report_time": iso(now),
        "software_version": f"uns {uns.__version__}",
        "lake_versions": dict(sorted(versions.items())),
        "spec": {"file": spec.file, "name": spec.name, "version": spec.version},
        # several references: "B1, B2, B3" (no new key: the content a signature covers stays as it was)
        "reference_batch": ", ".join(request.reference_batches) or None,
        "late_context_s": request.late_context_s,
    }


def audit_trail(con: duckdb.DuckDBPyConnection, batch_id: str) -> list[dict[str, Any]]:
    """The batch's entries of the lake's audit trail (``uns audit log --batch``), oldest first:
    the context changes that set or ran inside the batch, its reports and signatures."""
    if not con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'audit'").fetchone():
        return []  # a lake written before the audit trail existed
    rows = audit_log(con, batch=batch_id, parse_detail=True)
    entries = [dict(zip(LOG_COLUMNS, row, strict=True)) for row in rows]
    for entry in entries:
        entry["ts"] = iso(entry["ts"])
    return entries


_UNRECORDED = {"source": "unrecorded", "synchronized": None, "detail": "an engine older than its record"}


def time_sync(con: duckdb.DuckDBPyConnection, batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The host clock's synchronisation state at each engine start that recorded the batch:
    per writer the last start before the batch began and every start while it ran (from
    the ``engine_start`` entries; ``source`` ``unrecorded`` for an engine older than that)."""
    if not con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'audit'").fetchone():
        return []
    rows = con.execute(
        "SELECT writer_id, ts, detail FROM audit WHERE kind = 'engine_start' "
        "AND ($end IS NULL OR ts <= $end::TIMESTAMPTZ) ORDER BY writer_id, ts",
        {"end": batch["end"]},
    ).fetchall()
    start = datetime.fromisoformat(str(batch["start"]).replace("Z", "+00:00"))
    chosen: dict[str, list[tuple[datetime, str]]] = {}
    for writer, ts, detail in rows:
        kept = chosen.setdefault(str(writer), [])
        if ts <= start:
            kept[:] = [(ts, detail)]  # the newest start before the batch
        else:
            kept.append((ts, detail))
    out = []
    for writer, starts in sorted(chosen.items()):
        for ts, detail in starts:
            state = json.loads(detail).get("time_sync") or _UNRECORDED
            out.append({"writer_id": writer, "engine_start": iso(ts), **state})
    return out


def generate_report(
    lake_path: str | Path,
    request: ReportRequest,
    fmt: str = "html",
    *,
    actor: str | None = None,
    audit: Any = None,
) -> tuple[bytes, str]:
    """The report of ``request.batch_id`` in ``fmt`` (html, json or pdf) and its verdict,
    recorded in the audit trail as made by ``actor`` (default: the OS user; the web
    workspace: the authenticated user); ``audit``: the ``[audit]`` section (its anchor).

    Every report the command line and the web workspace make comes from here."""
    if fmt not in FORMATS:
        raise BatchError(f"unknown report format {fmt!r} (html, json or pdf)")
    con = lake.connect(lake_path)
    try:
        report = build_report(con, request)
        # each judged: verified against the trusted keys, and whether it still covers the report
        keyring = load_keyring(request.trusted_keys)
        attach_signatures(con, report.document, keyring=keyring, spec=request.spec.identity())
        attach_review(con, report.document, keyring, request.spec.identity())  # state, dispositions
        report.document["audit_trail"] = audit_trail(con, request.batch_id)
        report.document["time_sync"] = time_sync(con, report.document["batch"])
    finally:
        con.close()
    verdict = str(report.document["verdict"])
    if fmt == "json":
        data = (json.dumps(report.document, indent=2, ensure_ascii=False) + "\n").encode()
    else:
        from uns.batch.html import render_html  # noqa: PLC0415 - matplotlib/jinja2 load here
        from uns.pdf import render_pdf  # noqa: PLC0415

        html = render_html(report)
        document = report.document
        data = (
            html.encode()
            if fmt == "html"
            else render_pdf(
                html,
                header=f"Batch report {request.batch_id} (times in UTC)",
                footer=f"Batch {request.batch_id} \u00b7 report content SHA-256 {document['content_sha256']}",
            )
        )
    # the audit trail records every report made, by its SHA-256 (docs/gxp.md)
    detail = {"batch_id": request.batch_id, "format": fmt, "verdict": verdict}
    record_report(
        lake_path, hashlib.sha256(data).hexdigest(), request.batch_id, actor=actor, detail=detail, audit=audit
    )
    return data, verdict
