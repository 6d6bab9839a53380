"""The periodic review of a lake (``uns audit review``; EU GMP Annex 11 §11).

Annex 11 §11 asks that computerised systems be evaluated periodically to confirm
they remain in a valid state.  :func:`periodic_review` gathers, for a period, what a
reviewer needs to judge that from the lake itself:

- configuration changes with their reasons, and the engine starts;
- user and key changes (enrolments, role changes, revocations, failed log-ins,
  lockouts) where the installation records them -- and says so where it does not;
- signatures (batches, protocols, reviews) and dispositions of exceptions;
- per batch of the period: its status, the exceptions of its report by kind, its
  deviations (dispositions as deviation) and signatures;
- ``uns audit verify`` of the whole lake, and the anchors' status;
- the gaps in the engine's running time;
- the qualifications sealed in the lake (``uns validate``), and entries per kind;
- a list of findings: what needs the reviewer's attention.

The document (``schemas/audit-review.schema.json``) carries ``content_sha256``, the
SHA-256 of its canonical JSON without that field: a reviewer signs it with ``uns audit
sign review.json`` as a batch report is signed (:mod:`uns.validation.documents`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import uns
from uns import lake as lakes
from uns.audit import periodic
from uns.errors import UnsError

if TYPE_CHECKING:
    import duckdb

    from uns.config import Config

__all__ = ["DOCUMENT", "FORMATS", "periodic_review", "render_review", "review_bytes"]

DOCUMENT: Final = "uns periodic review"
FORMATS: Final = ("html", "pdf", "json")


def _iso(ms: int | None) -> str | None:
    from uns.batch.times import iso  # noqa: PLC0415

    return iso(ms) if ms is not None else None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _batches(con: duckdb.DuckDBPyConnection, since: int, until: int) -> list[tuple[str, Any, Any, str]]:
    rows = con.execute(
        "SELECT batch_id, min(start), max(\"end\"), CASE WHEN bool_or(status = 'open') THEN 'open' "
        "ELSE 'closed' END FROM batches GROUP BY batch_id "
        'HAVING epoch_ms(min(start)) < ? AND (bool_or("end" IS NULL) OR epoch_ms(max("end")) >= ?) '
        "ORDER BY min(start), batch_id",
        [until, since],
    ).fetchall()
    return [(str(b), s, e, str(st)) for b, s, e, st in rows]


def _batch_rows(
    con: duckdb.DuckDBPyConnection, config: Config, since: int, until: int, disposed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    from uns.batch.api import load_spec  # noqa: PLC0415
    from uns.batch.report import ReportRequest, build_report  # noqa: PLC0415
    from uns.batch.signing import report_content_sha256  # noqa: PLC0415
    from uns.batch.times import iso  # noqa: PLC0415
    from uns.engine.plant import load_model  # noqa: PLC0415

    spec = load_spec(config.batch.spec)
    model = load_model(config.engine.model) if config.engine.model else None
    sigs = {str(s["subject"]) for s in periodic.signatures(con, 0, 1 << 62, config.audit.trusted_keys)
            if s["verified"]}  # fmt: skip
    out = []
    for batch_id, start, end, status in _batches(con, since, until):
        row: dict[str, Any] = {"batch_id": batch_id, "start": iso(start), "end": iso(end), "status": status}
        try:
            request = ReportRequest(
                batch_id, spec=spec, model=model, late_context_s=config.batch.late_context_s
            )
            doc = build_report(con, request).document
        except UnsError as exc:
            row.update(verdict=None, exceptions={}, error=str(exc))
        else:
            row.update(verdict=doc["verdict"], exceptions=dict(Counter(e["kind"] for e in doc["exceptions"])),
                       content_sha256=report_content_sha256(doc))  # fmt: skip
        mine = [d for d in disposed if d["detail"].get("batch_id") == batch_id]
        row["deviations"] = [
            {"exception_id": d["detail"].get("exception_id"), "reference": d["detail"].get("deviation_ref"),
             "by": d["actor"], "at": _iso(d["ts"])}
            for d in mine if d["detail"].get("decision") == "deviation"
        ]  # fmt: skip
        row["accepted"] = sum(1 for d in mine if d["detail"].get("decision") == "accepted")
        row["signed"] = batch_id in sigs  # by a verified signature
        out.append(row)
    return out


def _verify(lake_dir: str, config: Config) -> dict[str, Any]:
    from uns.audit.trail import verify_lines  # noqa: PLC0415

    code, lines = verify_lines(lake_dir, config.audit.trusted_keys, audit=config.audit)
    anchor = config.audit.anchor
    anchors = (
        {"configured": True, "location": str(anchor), "checked": code == 0}
        if anchor
        else {
            "configured": False,
            "status": "audit.anchor is not configured: the chain heads are not anchored",
        }
    )
    return {"intact": code == 0, "lines": lines, "anchors": anchors}


def _validations(con: duckdb.DuckDBPyConnection, since: int, until: int) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT epoch_ms(ts), actor, detail FROM audit WHERE kind = 'report' AND subject = 'uns validate' "
        "AND epoch_ms(ts) >= ? AND epoch_ms(ts) < ? ORDER BY ts",
        [since, until],
    ).fetchall()
    import json  # noqa: PLC0415

    out = []
    for ts, actor, detail in rows:
        d = json.loads(detail)
        out.append({"at": _iso(int(ts)), "by": actor, "result": d.get("result"), "summary": d.get("summary"),
                    "sha256": d.get("sha256"), "out": d.get("out")})  # fmt: skip
    return out


def _findings(doc: dict[str, Any]) -> list[str]:
    found = []
    for c in doc["configuration_changes"]:
        if not c["reason"]:
            found.append(f"configuration change at {c['at']} has no reason recorded")
    people = doc["people_and_keys"]
    for e in people["lockouts"]:
        found.append(
            f"account {e['subject']} locked out at {e['at']} after {e['detail'].get('failures')} failures"
        )
    if people["failed_logins"]:
        found.append(f"{people['failed_logins']} failed log-in(s)")
    for s in doc["signatures"]:
        if not s["verified"]:
            found.append(
                f"signature of {s['subject']} by {s['user']} at {s['at']} is not verified: {s['why']}"
            )
    if not doc["audit_verify"]["intact"]:
        found.append(f"uns audit verify found {len(doc['audit_verify']['lines'])} finding(s)")
    if not doc["audit_verify"]["anchors"]["configured"]:
        found.append("the audit trail is not anchored outside the lake (audit.anchor)")
    for writer, w in doc["engine_running"]["writers"].items():
        for g in w["gaps"]:
            found.append(
                f"engine {writer} not running {g['from']}..{g['to']} ({g['seconds']} s: {g['cause']})"
            )
    for b in doc["batches"]:
        if b["status"] == "closed" and not b["signed"]:
            found.append(f"batch {b['batch_id']} is closed and has no verified signature")
    return found


def _dated(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "at": _iso(e["ts"])} for e in entries]


def periodic_review(lake_dir: str, config: Config, *, since: int, until: int) -> dict[str, Any]:
    """The review document of ``lake_dir`` for ``[since, until)`` (epoch ms); see the module doc."""
    from uns.validation.protocol import content_sha256  # noqa: PLC0415

    if until <= since:
        raise UnsError("--until must be after --since")
    if not Path(lake_dir).is_dir():
        raise UnsError(f"no lake at {lake_dir}")
    con = lakes.connect(lake_dir)
    try:
        disposed = _dated(periodic.dispositions(con, since, until))
        people = periodic.people_and_keys(con, since, until)
        people["entries"] = _dated(people["entries"])
        people["lockouts"] = _dated(people["lockouts"])
        gaps = periodic.running_gaps(con, since, until)
        for w in gaps["writers"].values():
            for g in w["gaps"]:
                g["from"], g["to"] = _iso(g["from"]), _iso(g["to"])
        doc: dict[str, Any] = {
            "document": DOCUMENT,
            "format": 1,
            "title": f"Periodic review of {Path(lake_dir).resolve()}",
            "lake": str(Path(lake_dir).resolve()),
            "period": {"since": _iso(since), "until": _iso(until)},
            "uns_version": uns.__version__,
            "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "generated_by": _user(),
            "configuration_changes": [
                {"at": _iso(c["ts"]), "reason": c["reason"], "changes": c["detail"], "seq": c["seq"]}
                for c in periodic.configuration_changes(con, since, until)
            ],
            "engine_starts": sum(w["starts"] for w in gaps["writers"].values()),
            "people_and_keys": people,
            "signatures": [
                _signature(s) for s in periodic.signatures(con, since, until, config.audit.trusted_keys)
            ],
            "dispositions": disposed,
            "batches": _batch_rows(con, config, since, until, disposed),
            "engine_running": gaps,
            "validations": _validations(con, since, until),
            "entries_per_kind": periodic.counts(con, since, until),
        }
    finally:
        con.close()
    doc["audit_verify"] = _verify(lake_dir, config)
    doc["findings"] = _findings(doc)
    doc["content_sha256"] = content_sha256(doc, "content_sha256")
    return doc


def _signature(s: dict[str, Any]) -> dict[str, Any]:
    kinds = {"protocol": "validation protocol", "review": "periodic review"}
    prefix = str(s["subject"]).split(":", 1)[0] if ":" in str(s["subject"]) else ""
    return {
        "at": _iso(s["ts"]), "subject": s["subject"], "document": kinds.get(prefix, "batch report"),
        "user": s["full_name"], "user_id": s["user_id"], "role": s["role"], "meaning": s["meaning"],
        "reason": s["reason"], "key": s["key"], "verified": s["verified"], "why": s["why"],
        "seq": s["seq"], "writer_id": s["writer_id"],
    }  # fmt: skip


def render_review(doc: dict[str, Any], fmt: str) -> bytes:
    """The review as JSON, self-contained HTML, or PDF (headless Chromium)."""
    import json  # noqa: PLC0415

    from uns.validation.evidence import render_html  # noqa: PLC0415

    if fmt not in FORMATS:
        raise UnsError(f"--format must be html, pdf or json, not {fmt!r}")
    if fmt == "json":
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    html = render_html("review.html.j2", doc=doc)
    if fmt == "html":
        return html.encode()
    from uns.pdf import render_pdf  # noqa: PLC0415

    return render_pdf(html)


def review_bytes(
    lake_dir: str, config: Config, *, since: str, until: str | None, fmt: str
) -> tuple[bytes, dict[str, Any]]:
    """``uns audit review``: the review of ``lake_dir`` from ``since`` to ``until`` (ISO 8601
    or epoch ms; default now) in ``fmt``, recorded in the lake's trail (``kind = report``,
    subject ``periodic review``) with its SHA-256 like every report; returns the bytes and
    the document."""
    import hashlib  # noqa: PLC0415

    from uns.clock import parse_time  # noqa: PLC0415
    from uns.lake.manual import record_report  # noqa: PLC0415

    if fmt not in FORMATS:
        raise UnsError(f"--format must be html, pdf or json, not {fmt!r}")
    start = parse_time(since)
    end = parse_time(until)
    doc = periodic_review(lake_dir, config, since=start, until=end)
    data = render_review(doc, fmt)
    detail = {"format": fmt, "since": doc["period"]["since"], "until": doc["period"]["until"],
              "content_sha256": doc["content_sha256"], "findings": len(doc["findings"])}  # fmt: skip
    record_report(lake_dir, hashlib.sha256(data).hexdigest(), "periodic review", detail=detail)
    return data, doc
