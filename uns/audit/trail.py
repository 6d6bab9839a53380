"""``uns audit verify`` and ``uns audit log``: the lake's audit trail from the shell."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from uns.clock import parse_time
from uns.config import AuditSection
from uns.errors import UnsError
from uns.lake.storage import LakeStore

if TYPE_CHECKING:
    import duckdb

    from uns.lake.hashing import ChainRow

__all__ = ["LOG_COLUMNS", "audit_log", "signers", "verify_lines"]

LOG_COLUMNS: Final = ("ts", "writer_id", "seq", "kind", "actor", "reason", "subject", "detail")

# The batch filter: context changes and batch records on a path (or below it) while batch B
# ran there, the changes that started or ended B, and entries about B itself (a report's subject).
_SQL: Final = """
WITH spans AS (
    SELECT path, value, ts AS start,
           lead(ts) OVER (PARTITION BY path ORDER BY ts, ingest_order) AS stop
    FROM context WHERE key = 'batch_id'
),
b AS (SELECT path, start, stop FROM spans WHERE value = $batch)
SELECT ts, writer_id, seq, kind, actor, reason, subject, detail
FROM audit a
WHERE ($since IS NULL OR epoch_ms(a.ts) >= $since)
  AND ($until IS NULL OR epoch_ms(a.ts) < $until)
  AND ($kind IS NULL OR a.kind = $kind)
  AND ($user IS NULL OR a.actor = $user)
  AND ($path IS NULL OR a.subject = $path OR starts_with(a.subject, $path || '/'))
  AND ($batch IS NULL OR a.subject = $batch
       OR json_extract_string(a.detail, '$.batch_id') = $batch
       OR (a.kind = 'context_change' AND json_extract_string(a.detail, '$.key') = 'batch_id'
           AND $batch IN (json_extract_string(a.detail, '$.new'), json_extract_string(a.detail, '$.old')))
       OR (a.kind IN ('context_change', 'record') AND EXISTS (
           SELECT 1 FROM b, (SELECT json_extract_string(a.detail, '$.valid_from')::TIMESTAMPTZ AS valid)
           WHERE (a.subject = b.path OR starts_with(a.subject, b.path || '/'))
             AND valid >= b.start AND (b.stop IS NULL OR valid < b.stop))))
ORDER BY a.ts, a.writer_id, a.seq
"""


def verify_lines(
    lake_dir: str | LakeStore,
    trusted_keys: str | None = None,
    *,
    audit: AuditSection | None = None,
    anchor: str | None = None,
    now_us: int | None = None,
) -> tuple[int, list[str]]:
    """``uns audit verify``: (0, [summary, anchored heads...]) when intact, else (1, one line
    per finding).  The digital signatures of the trail are checked against the keys in
    ``trusted_keys`` (audit.trusted_keys); the chains against the anchors at ``anchor``
    (default audit.anchor) and the clock against audit.clock_skew_s."""
    from uns.audit.anchored import anchor_findings, clock_findings  # noqa: PLC0415
    from uns.audit.signatures import signature_findings  # noqa: PLC0415
    from uns.audit.verify import read_chain, verify  # noqa: PLC0415 - deltalake only when asked
    from uns.keyring import load_keyring  # noqa: PLC0415
    from uns.lake.anchors import open_store  # noqa: PLC0415

    audit = audit or AuditSection()
    report = verify(lake_dir)
    chain = read_chain(lake_dir)
    signed, notes, wrong = signature_findings(chain, load_keyring(trusted_keys))
    findings = report.findings + wrong + clock_findings(chain, audit.clock_skew_s)
    heads: list[str] = []
    location = anchor or audit.anchor
    if location:
        check = anchor_findings(
            chain, open_store(location), interval_s=audit.anchor_interval_s, skew_s=audit.clock_skew_s,
            now_us=time.time_ns() // 1000 if now_us is None else now_us, tsa_ca_file=audit.tsa_ca_file,
        )  # fmt: skip
        findings += check.findings
        heads = [f"{check.anchors} anchors at {location}:", *(f"  {line}" for line in check.heads)]
    if findings:
        return 1, findings
    keyless = f" ({notes} keyless note{'s' if notes != 1 else ''}: not signatures)" if notes else ""
    by = ", ".join(signers(chain))
    summary = (
        f"{report.summary()}; {signed} digital signature{'s' if signed != 1 else ''} verified"
        f"{f' (by {by})' if by else ''}{keyless}"
    )
    return 0, [summary, *heads]


def signers(chain: Sequence[ChainRow]) -> list[str]:
    """Who made the digital signatures of ``chain``, once each in the order of their first
    signature: ``user id (printed name)``."""
    from uns.audit.signatures import KIND, BatchSignature  # noqa: PLC0415

    seen: dict[str, None] = {}
    for row in sorted(chain, key=lambda r: (r.ts, r.writer_id, r.seq)):
        if row.kind == KIND:
            sig = BatchSignature.of_row(row)
            if "signature" in sig.detail:
                seen.setdefault(f"{sig.user_id} ({sig.full_name})")
    return list(seen)


def audit_log(
    lake_dir: str | duckdb.DuckDBPyConnection,
    *,
    since: str | None = None,
    until: str | None = None,
    kind: str | None = None,
    path: str | None = None,
    batch: str | None = None,
    user: str | None = None,
    parse_detail: bool = False,
) -> list[list[Any]]:
    """The audit entries matching every filter given, in time order (``detail`` as JSON text,
    or parsed with ``parse_detail``).  ``lake_dir`` may be an open lake connection: the batch
    report reads its batch's entries from the snapshot the rest of the report comes from."""
    from uns import lake  # noqa: PLC0415

    params = {
        "since": None if since is None else parse_time(since),
        "until": None if until is None else parse_time(until),
        "kind": kind,
        "path": path.strip("/") if path else None,
        "batch": batch,
        "user": user,
    }
    import duckdb  # noqa: PLC0415

    con = lake.connect(lake_dir) if isinstance(lake_dir, str) else lake_dir
    try:
        rows = con.execute(_SQL, params).fetchall()
    except duckdb.Error as exc:
        raise UnsError(f"cannot read the audit trail: {exc}") from exc
    finally:
        if con is not lake_dir:
            con.close()
    out = [list(r) for r in rows]
    if parse_detail:
        for r in out:
            r[-1] = json.loads(r[-1])
    return out
