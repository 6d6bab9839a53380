"""What the audit trail says about a period, for the periodic review (EU GMP Annex 11 §11).

Each function reads one aspect of the trail between ``since`` and ``until`` (epoch
milliseconds) from an open lake connection and returns plain data:

- :func:`configuration_changes`: every ``config_changed`` entry with what changed and
  its reason, and the engine starts;
- :func:`people_and_keys`: user and key changes (enrolments, role changes, disabling,
  unlocking, passwords, keys trusted and revoked), failed log-ins and lockouts --
  entries of the web workspace and of ``uns keys``, read by kind, so the review lists
  them wherever an installation records them and says so where it does not;
- :func:`signatures` and :func:`dispositions`: who signed what, with which meaning;
  the exceptions dispositioned (accepted, or a deviation with its reference);
- :func:`running_gaps`: the stretches in which an engine that writes the lake was not
  running (from its stop, or its last entry before a start without a stop, to its next
  start), per writer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "KEY_KINDS",
    "PEOPLE_KINDS",
    "configuration_changes",
    "counts",
    "dispositions",
    "people_and_keys",
    "running_gaps",
    "signatures",
]

#: entries about people: accounts and their changes (the web workspace, uns users)
PEOPLE_KINDS: Final = (
    "user_added", "user_changed", "user_disabled", "user_enabled", "user_unlocked", "password_set",
    "login_failed", "lockout",
)  # fmt: skip
#: entries about keys: trusted and revoked (uns keys)
KEY_KINDS: Final = ("key_trusted", "key_revoked")

_ENTRIES: Final = """
SELECT epoch_ms(ts), writer_id, seq, kind, actor, reason, subject, detail
FROM audit WHERE kind IN (SELECT unnest($kinds)) AND epoch_ms(ts) >= $since AND epoch_ms(ts) < $until
ORDER BY ts, writer_id, seq
"""


def _entries(
    con: duckdb.DuckDBPyConnection, kinds: Sequence[str], since: int, until: int
) -> list[dict[str, Any]]:
    rows = con.execute(_ENTRIES, {"kinds": list(kinds), "since": since, "until": until}).fetchall()
    out = []
    for ts, writer, seq, kind, actor, reason, subject, detail in rows:
        try:
            parsed = json.loads(detail) if detail else {}
        except ValueError:
            parsed = {"unreadable": detail}
        out.append({"ts": int(ts), "writer_id": writer, "seq": int(seq), "kind": kind, "actor": actor,
                    "reason": reason or "", "subject": subject, "detail": parsed})  # fmt: skip
    return out


def counts(con: duckdb.DuckDBPyConnection, since: int, until: int) -> dict[str, int]:
    """Entries per kind in the period."""
    rows = con.execute(
        "SELECT kind, count(*) FROM audit WHERE epoch_ms(ts) >= ? AND epoch_ms(ts) < ? "
        "GROUP BY kind ORDER BY kind",
        [since, until],
    ).fetchall()
    return {str(k): int(n) for k, n in rows}


def configuration_changes(con: duckdb.DuckDBPyConnection, since: int, until: int) -> list[dict[str, Any]]:
    """Every ``config_changed`` entry (what changed, old and new, and the reason given)."""
    return _entries(con, ["config_changed"], since, until)


def people_and_keys(con: duckdb.DuckDBPyConnection, since: int, until: int) -> dict[str, Any]:
    """The user and key changes of the period and whether the lake records them at all
    (an installation without the web workspace or the key life cycle has none)."""
    kinds = (*PEOPLE_KINDS, *KEY_KINDS)
    ever = {
        str(k)
        for (k,) in con.execute(
            "SELECT DISTINCT kind FROM audit WHERE kind IN (SELECT unnest(?))", [list(kinds)]
        ).fetchall()
    }
    found = _entries(con, kinds, since, until)
    return {
        "users_recorded": bool(ever & set(PEOPLE_KINDS)),
        "keys_recorded": bool(ever & set(KEY_KINDS)),
        "entries": found,
        "lockouts": [e for e in found if e["kind"] == "lockout"],
        "failed_logins": sum(1 for e in found if e["kind"] == "login_failed"),
    }


def signatures(
    con: duckdb.DuckDBPyConnection, since: int, until: int, trusted_keys: str | None = None
) -> list[dict[str, Any]]:
    """Every signature entry of the period (batches, protocols, reviews), each judged as a
    batch report judges it (``verified``, and ``why`` not) against the trusted keys of
    ``trusted_keys`` with the revocations the trail holds."""
    from uns.audit.signatures import BatchSignature, check_signature, trail_revocations, with_revocations  # noqa: PLC0415
    from uns.keyring import load_keyring  # noqa: PLC0415
    from uns.lake.hashing import ChainRow  # noqa: PLC0415

    keys = with_revocations(load_keyring(trusted_keys), trail_revocations(con))
    rows = con.execute(
        "SELECT writer_id, seq, epoch_us(ts), kind, actor, reason, subject, detail, prev_hash, hash "
        "FROM audit WHERE kind = 'signature' AND epoch_ms(ts) >= ? AND epoch_ms(ts) < ? "
        "ORDER BY ts, writer_id, seq",
        [since, until],
    ).fetchall()
    out = []
    for values in rows:
        sig = BatchSignature.of_row(ChainRow(*values))
        judged = check_signature(sig, keys)
        out.append({"ts": sig.ts_us // 1000, "writer_id": sig.writer_id, "seq": sig.seq,
                    "subject": str(values[6]), "user_id": sig.user_id, "full_name": sig.full_name,
                    "role": sig.detail.get("role"), "meaning": sig.meaning, "reason": sig.reason,
                    "key": sig.key, "verified": judged.verified, "why": judged.why})  # fmt: skip
    return out


def dispositions(con: duckdb.DuckDBPyConnection, since: int, until: int) -> list[dict[str, Any]]:
    """Every disposition of an exception in the period (the web workspace's review)."""
    return _entries(con, ["disposition"], since, until)


def running_gaps(con: duckdb.DuckDBPyConnection, since: int, until: int) -> dict[str, Any]:
    """Per engine writer, its starts and stops in the period and the gaps in its running
    time: ``{"writers": {writer: {"starts", "stops", "gaps": [{"from", "to", "seconds",
    "cause"}]}}}`` (times in epoch ms; a gap still open at ``until`` ends there)."""
    rows = con.execute(
        "SELECT writer_id, epoch_ms(ts), kind FROM audit WHERE kind IN ('engine_start', 'engine_stop') "
        "AND epoch_ms(ts) < ? ORDER BY writer_id, ts, seq",
        [until],
    ).fetchall()
    writers: dict[str, list[tuple[int, str]]] = {}
    for writer, ts, kind in rows:
        writers.setdefault(str(writer), []).append((int(ts), str(kind)))
    out: dict[str, Any] = {}
    for writer, events in writers.items():
        out[writer or "(default)"] = _gaps(con, writer, events, since, until)
    return {"writers": out}


def _last_sign_of_life(con: duckdb.DuckDBPyConnection, writer: str, before: int) -> int | None:
    (found,) = con.execute(
        "SELECT max(epoch_ms(ts)) FROM audit WHERE writer_id = ? AND epoch_ms(ts) < ?", [writer, before]
    ).fetchone() or (None,)
    return int(found) if found is not None else None


def _gaps(
    con: duckdb.DuckDBPyConnection, writer: str, events: Sequence[tuple[int, str]], since: int, until: int
) -> dict[str, Any]:
    gaps: list[dict[str, Any]] = []
    running = False
    down_from: int | None = None  # before its first start the engine's record has not begun
    down_cause = ""
    starts = stops = 0
    for ts, kind in events:
        inside = ts >= since
        if kind == "engine_stop":
            stops += inside
            running, down_from, down_cause = False, max(ts, since), "stopped"
            continue
        starts += inside
        if running:  # a start without a stop: the engine was killed or crashed
            last = _last_sign_of_life(con, writer, ts)
            down_from, down_cause = max(last if last is not None else ts, since), "no stop recorded (killed?)"
        if down_from is not None and inside and ts > down_from:
            gaps.append(_gap(down_from, ts, down_cause))
        running, down_from = True, None
    if not running and down_from is not None and events:
        gaps.append(_gap(down_from, until, f"{down_cause}; not running at the end of the period"))
    return {"starts": starts, "stops": stops, "gaps": gaps}


def _gap(start: int, end: int, cause: str) -> dict[str, Any]:
    return {"from": start, "to": end, "seconds": round((end - start) / 1000.0, 3), "cause": cause}
