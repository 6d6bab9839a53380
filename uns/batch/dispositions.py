"""Dispositions of a batch's exceptions, as entries of the audit trail.

A disposition is one audit entry (``kind = disposition``): ``subject`` the batch id,
``actor`` the reviewer's user id, ``reason`` the comment, ``ts`` when it was made, and
``detail``::

    {"batch_id", "exception_id", "decision": "accepted" | "deviation", "comment",
     "deviation_ref": <the deviation's reference, or null>, "full_name",
     "exception": {"kind", "ts", "message"},  # what the reviewer saw
     "report_sha256": <the report content it was made on>}

The newest disposition of an exception counts (:func:`uns.batch.review.current_dispositions`);
the older ones stay in the trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from uns.batch.review import Disposition
from uns.lake.audit_entries import Entry, entry
from uns.lake.hashing import ChainRow

__all__ = ["KIND", "disposition_entry", "dispositions_of"]

KIND: Final = "disposition"


def disposition_entry(
    ts_us: int,
    batch_id: str,
    exception: Mapping[str, Any],
    *,
    decision: str,
    comment: str,
    deviation_ref: str | None,
    user: str,
    full_name: str,
    report_sha256: str,
) -> Entry:
    """The audit entry of one disposition (checked already: :func:`uns.batch.review.check_disposition`)."""
    detail = {
        "batch_id": batch_id,
        "exception_id": exception["id"],
        "decision": decision,
        "comment": comment,
        "deviation_ref": deviation_ref,
        "full_name": full_name,
        "exception": {k: exception.get(k) for k in ("kind", "ts", "message")},
        "report_sha256": report_sha256,
    }
    return entry(ts_us, KIND, batch_id, detail, actor=user, reason=comment)


def dispositions_of(rows: Iterable[ChainRow]) -> list[Disposition]:
    """The dispositions among ``rows`` (other kinds and unreadable details are skipped)."""
    out = []
    for row in rows:
        if row.kind != KIND:
            continue
        try:
            detail = json.loads(row.detail)
        except ValueError:
            continue
        if not isinstance(detail, dict) or not isinstance(detail.get("exception_id"), str):
            continue
        ref = detail.get("deviation_ref")
        out.append(
            Disposition(
                exception_id=detail["exception_id"],
                decision=str(detail.get("decision")),
                comment=str(detail.get("comment") or row.reason),
                deviation_ref=ref if isinstance(ref, str) else None,
                user=row.actor,
                full_name=str(detail.get("full_name") or row.actor),
                ts_us=row.ts,
            )
        )
    return out
