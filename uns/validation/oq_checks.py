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
from uns.validation.checks import Check, run_check, seen
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


_SENT_SQL = """
WITH stored AS (
    SELECT edge_node_id, coalesce(device_id, '') AS device, metric, epoch_ms(ts) AS ts, seq, bdseq,
           count(*) AS n
    FROM measurements WHERE group_id = $group GROUP BY ALL
),
sent AS (SELECT node AS edge_node_id, device, metric, ts, seq, bdseq, count(*) AS n FROM sent GROUP BY ALL)
SELECT
    count(*) FILTER (WHERE s.n IS NULL AND NOT (x.ts >= $lo AND x.ts < $hi)),
    count(*) FILTER (WHERE s.n IS NULL AND x.ts >= $lo AND x.ts < $hi),
    coalesce(sum(s.n - x.n) FILTER (WHERE s.n > x.n), 0),
    count(*) FILTER (WHERE x.n IS NULL),
    count(*) FILTER (WHERE s.n IS NOT NULL),
    any_value(x.metric || '@' || x.edge_node_id || '/' || x.device || ' ts ' || x.ts || ' seq ' || x.seq)
        FILTER (WHERE s.n IS NULL AND NOT (x.ts >= $lo AND x.ts < $hi))
FROM sent x FULL OUTER JOIN stored s USING (edge_node_id, device, metric, ts, seq, bdseq)
"""


def _sent_table(op: Operation) -> Any:
    import pyarrow as pa  # noqa: PLC0415

    samples = [s for s in (op.sim.samples if op.sim else ()) if s.group_id == op.group]
    return pa.table(
        {
            "node": pa.array([s.edge_node_id for s in samples], pa.string()),
            "device": pa.array([s.device_id or "" for s in samples], pa.string()),
            "metric": pa.array([s.metric for s in samples], pa.string()),
            "ts": pa.array([s.ts for s in samples], pa.int64()),
            "seq": pa.array([s.seq for s in samples], pa.int64()),
            "bdseq": pa.array([s.bdseq for s in samples], pa.int64()),
        }
    )


def _ingest(op: Operation) -> Check:
    sent = _sent_table(op)
    lo, hi = op.outage or (0, 0)
    con = lake.connect(op.lake)
    try:
        con.register("sent", sent)
        (missing, tolerated, twice, unsent, matched, example) = con.execute(
            _SENT_SQL, {"group": op.group, "lo": lo, "hi": hi}
        ).fetchone() or (0, 0, 0, 0, 0, None)
        ((unmapped, paths),) = con.execute(
            "SELECT count(*) FILTER (WHERE unmapped AND device_id IS NOT NULL), "
            "count(DISTINCT path) FILTER (WHERE NOT unmapped) FROM measurements WHERE group_id = ?",
            [op.group],
        ).fetchall()
    finally:
        con.close()
    total = sent.num_rows
    window = f"{_iso_ms(lo)}..{_iso_ms(hi)}" if op.outage else "none (the engine was never killed)"
    observed = {
        "missing": seen(
            total > 0 and missing == 0,
            f"{missing} of {total} samples sent missing"
            + (f" (e.g. {example})" if example else "")
            + f"; {tolerated} not received inside the tolerance window {window}",
        ),
        "twice": seen(twice == 0, f"{twice} samples stored more than once"),
        "unsent": seen(unsent == 0, f"{unsent} samples stored that were never sent"),
        "paths": seen(unmapped == 0, f"{unmapped} device samples without a path; {paths} ISA-95 paths"),
    }
    detail = (
        f"{matched} of {total} samples sent stored once ({tolerated} inside the kill's tolerance window, "
        f"{missing} missing), {twice} twice, {unsent} never sent, {paths} ISA-95 paths"
    )
    evidence = {"sent": total, "stored": matched, "missing": missing, "tolerated": tolerated,
                "twice": twice, "unsent": unsent, "device_samples_unmapped": unmapped,
                "tolerance_window_ms": list(op.outage) if op.outage else None}  # fmt: skip
    return Check("OQ-01", detail, observed, evidence)


def _iso_ms(ms: int) -> str:
    import datetime as dt  # noqa: PLC0415

    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _attribution(op: Operation) -> Check:
    ((inside, attributed),) = _rows(
        op,
        "SELECT count(*), count(*) FILTER (WHERE m.batch_id = b.batch_id) FROM measurements_asof m "
        'JOIN batches b ON m.path = b.path AND m.ts >= b.start AND m.ts < b."end" WHERE b.batch_id = ?',
        [BATCH],
    )
    what = f"{attributed} of {inside} samples of {BATCH}'s unit during it carry {BATCH}"
    return Check("OQ-02", what, {"attributed": seen(inside > 0 and inside == attributed, what)})


def _seq_gap(op: Operation) -> Check:
    rows = _rows(
        op, "SELECT event, detail FROM sessions WHERE group_id = ? AND event = 'seq_gap'", [op.gap_group]
    )
    what = f"{len(rows)} seq_gap event(s) of {op.gap_group}" + (f": {rows[0][1]}" if rows else "")
    return Check("OQ-03", what, {"recorded": seen(bool(rows), what)})


def _death_rebirth(op: Operation) -> Check:
    rows = _rows(
        op,
        "SELECT event FROM sessions WHERE group_id = ? AND device_id = 'BR-101' "
        "AND event IN ('death', 'birth') ORDER BY ts",
        [op.group],
    )
    events = [e for (e,) in rows]
    reborn = any(a == "death" and b == "birth" for a, b in itertools.pairwise(events))
    what = f"BR-101 sessions: {', '.join(events) or 'none'}"
    return Check("OQ-04", what, {"order": seen(reborn, what)})


def _rejected(op: Operation) -> Check:
    rows = _rows(
        op, "SELECT topic, error FROM rejected WHERE starts_with(topic, ?)", [f"spBv1.0/{op.gap_group}/"]
    )
    ok = any(error.startswith("undecodable") for _topic, error in rows)
    what = "; ".join(f"{t}: {e}" for t, e in rows) or "nothing rejected"
    return Check("OQ-05", what, {"kept": seen(ok, what)})


def _late_context(op: Operation) -> Check:
    rows = _rows(
        op,
        "SELECT value, \"user\", reason FROM context WHERE path = ? AND key = 'recipe' ORDER BY received_at",
        [UNIT],
    )
    doc = _report(op)
    corrected = [r for r in rows if r[1] == "qa.reviewer" and r[2]]
    late = [c for c in doc["completeness"].get("late_context", []) if c.get("corrects")]
    kept = bool(corrected) and len({r[0] for r in rows}) > 1
    recipe = doc["batch"]["recipe"]
    observed = {
        "kept": seen(kept, f"recipe rows of {UNIT}: {[list(r) for r in rows]}"),
        "report": seen(
            bool(corrected) and recipe == corrected[0][0] and bool(late),
            f"the report's recipe {recipe!r}; {len(late)} late correction(s) listed",
        ),
    }
    detail = f"recipe changes of {UNIT}: {[r[0] for r in rows]}; the report's recipe {recipe!r}"
    return Check("OQ-06", detail, observed, {"corrections": [list(r) for r in corrected]})


def _report_exceptions(op: Operation) -> Check:
    doc = _report(op)
    kinds = sorted({e["kind"] for e in doc["exceptions"]})
    excursions = [e for e in doc["excursions"] if e.get("metric") == "Temperature"]
    what = f"{doc['verdict']}: {', '.join(kinds)}; {len(excursions)} Temperature excursion(s)"
    observed = {"exceptions": seen(bool(excursions) and "death" in kinds, what)}
    return Check("OQ-07", what, observed, {"exception_kinds": kinds})


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
    observed = {
        "kill": seen(op.exits == [-9, 0, 0], f"exit codes {op.exits} (-9: killed)"),
        "context": seen(
            bool(sent) and not missing and twice == 0,
            f"{len(sent)} context events sent, {len(missing)} missing, {twice} stored twice",
        ),
        "samples": seen(samples_twice == 0, f"{samples_twice} samples stored twice"),
    }
    detail = (
        f"{len(sent)} context events sent, {len(missing)} missing, {twice} stored twice; "
        f"{samples_twice} samples stored twice; engine exits {op.exits} (-9: killed)"
    )
    return Check("OQ-08", detail, observed, {"missing_context_events": sorted(missing)})


def _verify(op: Operation, root: Path) -> tuple[int, list[str]]:
    from uns.audit.trail import verify_lines  # noqa: PLC0415

    return verify_lines(str(root), str(op.trusted))


def _audit_intact(op: Operation) -> Check:
    code, lines = _verify(op, op.lake)
    what = f"exit {code}: " + "; ".join(lines[:10])
    return Check("OQ-09", "; ".join(lines[:10]), {"verify": seen(code == 0, what)})


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
    what = f"exit {code}: {named[0]}" if named else f"not named: exit {code}, {lines[:3]}"
    return Check("OQ-10", what, {"named": seen(code == 1 and bool(named), what)}, {"changed": name})


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
    said = lines[0].rsplit(";", 1)[-1].strip() if lines else "-"
    observed = {
        "sign": seen(
            op.signature_seq is not None,
            f"signature entry uns-cli #{op.signature_seq} of {BATCH} (approved, key {SIGNER})"
            if op.signature_seq is not None
            else "no signature entry",
        ),
        "verified": seen(verified, f"audit verify exit {code}: {said}"),
        "flagged": seen(
            flagged,
            f"{len(ours)} signature(s) of OQ Reviewer listed; covers the current report: {not flagged}",
        ),
    }
    detail = (
        f"signature uns-cli #{op.signature_seq} of {BATCH} (approved, key {SIGNER}); audit verify: {said}; "
        f"after a signed back-dated context change the report says it no longer covers the report: {flagged}"
    )
    return Check("OQ-11", detail, observed, {"signatures": sigs})


def _signed_context(op: Operation) -> Check:
    acks = op.signed_context
    status = {what: (a.status, a.reason) if a else ("unanswered", None) for what, a in acks.items()}
    signer = _rows(op, "SELECT signer FROM context WHERE event_id = ?", [f"oq-{op.tag}-signed"])
    rejected = {
        e for (e,) in _rows(op, "SELECT error FROM rejected WHERE NOT starts_with(topic, 'spBv1.0/')")
    }
    said = {k: f"{k}: {s} ({r or 'ok'})" for k, (s, r) in status.items()}
    reasons = {status.get("unsigned", ("", None))[1], status.get("untrusted", ("", None))[1]}
    observed = {
        "applied": seen(
            status.get("signed", ("",))[0] == "applied" and signer == [(SIGNER,)],
            f"{said.get('signed', 'signed: not sent')}; signer stored: {[s for (s,) in signer]}",
        ),
        "rejected": seen(
            status.get("unsigned", ("",))[0] == "rejected"
            and status.get("untrusted", ("",))[0] == "rejected"
            and reasons <= rejected,
            f"{said.get('unsigned', 'unsigned: not sent')}; {said.get('untrusted', 'untrusted: not sent')}; "
            f"reasons in rejected: {sorted(str(r) for r in reasons if r in rejected)}",
        ),
    }
    return Check("OQ-12", "; ".join(said.values()), observed)


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
            check.fail_all("; ".join(op.problems))
    return checks
