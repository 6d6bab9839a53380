"""Operational qualification, the checks: what the OQ run (:mod:`uns.validation.oq`)
left in the lake, the batch report and the audit trail, one requirement each."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from uns import lake
from uns.core.context import event_id
from uns.validation.checks import Check, run_check
from uns.validation.oq import BATCH, REVIEWER, SIGNER, UNIT, Operation, report_request

__all__ = ["oq_checks", "report_html"]


def _rows(op: Operation, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = lake.connect(op.lake)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _report(op: Operation) -> dict[str, Any]:
    from uns.batch.report import generate_report  # noqa: PLC0415

    data, _verdict = generate_report(op.lake, report_request(op), "json")
    doc: dict[str, Any] = json.loads(data)
    return doc


def report_html(op: Operation) -> Path | None:
    """The batch report the OQ checked, as HTML in the work directory (None if it cannot be made)."""
    from uns.batch.report import generate_report  # noqa: PLC0415

    try:
        data, _verdict = generate_report(op.lake, report_request(op), "html")
    except Exception:  # the checks say what is wrong with the report
        return None
    path = op.work / f"{BATCH}.html"
    path.write_bytes(data)
    return path


def _ingest(op: Operation) -> Check:
    ((samples, unmapped, paths),) = _rows(
        op,
        "SELECT count(*), count(*) FILTER (WHERE unmapped AND device_id IS NOT NULL), "
        "count(DISTINCT path) FILTER (WHERE NOT unmapped) FROM measurements WHERE group_id = ?",
        [op.group],
    )
    sent = op.sim.metrics if op.sim else 0
    ok = samples > 0 and unmapped == 0 and paths > 0
    detail = (
        f"{samples} samples of {sent} sent (the killed engine's outage not counted), {paths} ISA-95 paths"
    )
    if unmapped:
        detail += f"; {unmapped} device samples without a path of the plant model"
    return Check("OQ-01", ok, detail, {"samples": samples, "sent": sent, "device_samples_unmapped": unmapped})


def _attribution(op: Operation) -> Check:
    ((inside, attributed),) = _rows(
        op,
        "SELECT count(*), count(*) FILTER (WHERE m.batch_id = b.batch_id) FROM measurements_asof m "
        'JOIN batches b ON m.path = b.path AND m.ts >= b.start AND m.ts < b."end" WHERE b.batch_id = ?',
        [BATCH],
    )
    ok = inside > 0 and inside == attributed
    return Check("OQ-02", ok, f"{attributed} of {inside} samples of {BATCH}'s unit during it carry {BATCH}")


def _seq_gap(op: Operation) -> Check:
    rows = _rows(
        op, "SELECT event, detail FROM sessions WHERE group_id = ? AND event = 'seq_gap'", [op.gap_group]
    )
    detail = f"{len(rows)} seq_gap event(s) of {op.gap_group}" + (f": {rows[0][1]}" if rows else "")
    return Check("OQ-03", bool(rows), detail)


def _death_rebirth(op: Operation) -> Check:
    rows = _rows(
        op,
        "SELECT event FROM sessions WHERE group_id = ? AND device_id = 'BR-101' "
        "AND event IN ('death', 'birth') ORDER BY ts",
        [op.group],
    )
    events = [e for (e,) in rows]
    reborn = any(a == "death" and b == "birth" for a, b in itertools.pairwise(events))
    return Check("OQ-04", reborn, f"BR-101 sessions: {', '.join(events) or 'none'}")


def _rejected(op: Operation) -> Check:
    rows = _rows(
        op, "SELECT topic, error FROM rejected WHERE starts_with(topic, ?)", [f"spBv1.0/{op.gap_group}/"]
    )
    ok = any(error.startswith("undecodable") for _topic, error in rows)
    return Check("OQ-05", ok, "; ".join(f"{t}: {e}" for t, e in rows) or "nothing rejected")


def _late_context(op: Operation) -> Check:
    rows = _rows(
        op,
        "SELECT value, \"user\", reason FROM context WHERE path = ? AND key = 'recipe' ORDER BY received_at",
        [UNIT],
    )
    doc = _report(op)
    corrected = [r for r in rows if r[1] == "qa.reviewer" and r[2]]
    late = [c for c in doc["completeness"].get("late_context", []) if c.get("corrects")]
    ok = (
        bool(corrected)
        and len({r[0] for r in rows}) > 1
        and doc["batch"]["recipe"] == corrected[0][0]
        and bool(late)
    )
    detail = (
        f"recipe changes of {UNIT}: {[r[0] for r in rows]}; the report's recipe {doc['batch']['recipe']!r}"
    )
    return Check("OQ-06", ok, detail, {"corrections": [list(r) for r in corrected]})


def _report_exceptions(op: Operation) -> Check:
    doc = _report(op)
    kinds = sorted({e["kind"] for e in doc["exceptions"]})
    excursions = [e for e in doc["excursions"] if e.get("metric") == "Temperature"]
    ok = bool(excursions) and "death" in kinds
    return Check("OQ-07", ok, f"{doc['verdict']}: {', '.join(kinds)}", {"exception_kinds": kinds})


def _killed_engine(op: Operation) -> Check:
    sent = {event_id(ev.path, json.loads(ev.to_json())) for ev in (op.sim.contexts if op.sim else ())}
    stored = {i for (i,) in _rows(op, "SELECT DISTINCT event_id FROM context")}
    ((twice,),) = _rows(
        op,
        "SELECT count(*) FROM (SELECT event_id, key FROM context WHERE event_id IS NOT NULL "
        "GROUP BY ALL HAVING count(*) > 1)",
    )
    ((samples_twice,),) = _rows(
        op,
        "SELECT count(*) FROM (SELECT edge_node_id, device_id, metric, ts, seq, bdseq FROM measurements "
        "WHERE group_id = ? GROUP BY ALL HAVING count(*) > 1)",
        [op.group],
    )
    missing = sent - stored
    killed = bool(op.exits) and op.exits[0] == -9
    clean = op.exits[1:] == [0, 0]
    ok = bool(sent) and not missing and twice == 0 and samples_twice == 0 and killed and clean
    detail = (
        f"{len(sent)} context events sent, {len(missing)} missing, {twice} stored twice; "
        f"{samples_twice} samples stored twice; engine exits {op.exits} (-9: killed)"
    )
    return Check("OQ-08", ok, detail, {"missing_context_events": sorted(missing)})


def _verify(op: Operation, root: Path) -> tuple[int, list[str]]:
    from uns.audit.trail import verify_lines  # noqa: PLC0415

    return verify_lines(str(root), str(op.trusted))


def _audit_intact(op: Operation) -> Check:
    code, lines = _verify(op, op.lake)
    return Check("OQ-09", code == 0, "; ".join(lines[:10]))


def _audit_tamper(op: Operation) -> Check:
    copy = op.work / "lake-tampered"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(op.lake, copy, ignore=shutil.ignore_patterns("_wal*"))
    victim = sorted((copy / "measurements").rglob("*.parquet"))[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte, as a disk error or a hand edit would change it
    victim.write_bytes(bytes(data))
    code, lines = _verify(op, copy)
    name = victim.name
    named = [line for line in lines if name in line]
    ok = code == 1 and bool(named)
    return Check(
        "OQ-10", ok, named[0] if named else f"not named: exit {code}, {lines[:3]}", {"changed": name}
    )


def _signature(op: Operation) -> Check:
    code, lines = _verify(op, op.lake)
    doc = _report(op)
    sigs = doc.get("signatures", [])
    ours = [
        s
        for s in sigs
        if s["key"] == SIGNER and s["meaning"] == "approved" and s["full_name"] == REVIEWER and s["verified"]
    ]
    # after the signature, a signed back-dated context change inside the batch changed the report
    flagged = bool(ours) and not ours[0]["covers_current"]
    verified = code == 0 and "; 1 digital signature verified" in lines[0]  # (by whom follows)
    ok = op.signature_seq is not None and verified and flagged
    said = lines[0].rsplit(";", 1)[-1].strip() if lines else "-"
    detail = (
        f"signature uns-cli #{op.signature_seq} of {BATCH} (approved, key {SIGNER}); audit verify: {said}; "
        f"after a signed back-dated context change the report says it no longer covers the report: {flagged}"
    )
    return Check("OQ-11", ok, detail, {"signatures": sigs})


def _signed_context(op: Operation) -> Check:
    acks = op.signed_context
    status = {what: (a.status, a.reason) if a else ("unanswered", None) for what, a in acks.items()}
    signer = _rows(op, "SELECT signer FROM context WHERE event_id = ?", [f"oq-{op.tag}-signed"])
    rejected = {
        e for (e,) in _rows(op, "SELECT error FROM rejected WHERE NOT starts_with(topic, 'spBv1.0/')")
    }
    ok = (
        status.get("signed", ("",))[0] == "applied"
        and status.get("unsigned", ("",))[0] == "rejected"
        and status.get("untrusted", ("",))[0] == "rejected"
        and signer == [(SIGNER,)]
        and {status["unsigned"][1], status["untrusted"][1]} <= rejected
    )
    return Check("OQ-12", ok, "; ".join(f"{k}: {s} ({r or 'ok'})" for k, (s, r) in status.items()))


CHECKS: list[tuple[str, Callable[[Operation], Check]]] = [
    ("OQ-01", _ingest),
    ("OQ-02", _attribution),
    ("OQ-03", _seq_gap),
    ("OQ-04", _death_rebirth),
    ("OQ-05", _rejected),
    ("OQ-06", _late_context),
    ("OQ-07", _report_exceptions),
    ("OQ-08", _killed_engine),
    ("OQ-09", _audit_intact),
    ("OQ-10", _audit_tamper),
    ("OQ-11", _signature),
    ("OQ-12", _signed_context),
]


def oq_checks(op: Operation) -> list[Check]:
    """Every operational check of ``op``, in requirement order; a problem of the run
    itself is in every check's detail."""
    checks = [run_check(req, partial(fn, op)) for req, fn in CHECKS]
    if op.problems:
        for check in checks:
            check.passed = False
            check.detail = f"{'; '.join(op.problems)} -- {check.detail}"
    return checks
