"""The workspace's batch list: ``uns batch list`` with each batch's review state and open
exceptions, filtered by them too.

The batches come from the ``batches`` view, which reads the ``context`` table only: the
rows are kept per version of that table.  The review state of each batch comes from its
review entries in the trail; how many of its exceptions are still open needs its report,
so it is known (and the state checked against the data as it is now) for the batches
whose report this server has made -- the others say ``null`` (``checked`` false) until
someone opens them.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from uns import lake
from uns.audit.signatures import BatchSignature
from uns.batch.api import parse_since
from uns.batch.queries import list_batches
from uns.batch.review import STATES, Signed
from uns.batch.review import review_state as state_of
from uns.batch.review_state import review_of
from uns.batch.times import iso
from uns.errors import UserError

if TYPE_CHECKING:
    from uns.review.workspace import Workspace

__all__ = ["batch_list"]

_ROWS: dict[str, tuple[int | None, list[str], list[tuple[Any, ...]]]] = {}
_ROWS_LOCK = threading.Lock()


def _rows(ws: Workspace) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every batch (``uns batch list``), kept per version of the context table."""
    version = ws.reports.versions.current().get("context")
    key = str(ws.root)
    with _ROWS_LOCK:
        found = _ROWS.get(key)
        if found is not None and found[0] == version and version is not None:
            return found[1], found[2]
    con = lake.connect(ws.root)
    try:
        columns, rows = list_batches(con)
    finally:
        con.close()
    rows = [tuple(iso(v) if isinstance(v, datetime) else v for v in row) for row in rows]
    with _ROWS_LOCK:
        _ROWS[key] = (version, columns, rows)
    return columns, rows


def batch_list(
    ws: Workspace,
    *,
    since: str | None = None,
    product: str | None = None,
    status: str | None = None,
    review_state: str | None = None,
    open_exceptions: bool | None = None,
) -> list[dict[str, Any]]:
    """The batches, newest first, filtered; each with ``review_state``, ``exceptions``,
    ``open_exceptions`` (null: its report not made yet) and ``checked``."""
    if status not in (None, "open", "closed"):
        raise UserError("status must be open or closed", field="status")
    if review_state is not None and review_state not in STATES:
        raise UserError(f"review state must be one of {', '.join(STATES)}", field="review_state")
    moment = parse_since(since)
    columns, rows = _rows(ws)
    trail = ws.trail.batches()
    current = ws.reports.versions.current()
    keyring = ws.signing.keyring()
    revoked = ws.trail.revocations()
    out = []
    for row in rows:
        item = dict(zip(columns, row, strict=True))
        if product is not None and item["product"] != product:
            continue
        if status is not None and item["status"] != status:
            continue
        if moment is not None and datetime.fromisoformat(str(item["start"]).replace("Z", "+00:00")) < moment:
            continue
        entries = trail.get(item["batch_id"], [])
        cached = ws.reports.peek(item["batch_id"])
        if cached is not None:
            review = review_of(cached[1], entries, keyring, revocations=revoked, spec=ws.spec)
            item |= {
                "review_state": review.state,
                "exceptions": len(cached[1]["exceptions"]),
                "open_exceptions": len(cached[1]["exceptions"]) - len(review.dispositions),
                "checked": dict(cached[0]) == current,
            }
        else:
            signed = [
                Signed(s.user_id, s.meaning, True, True)
                for s in (BatchSignature.of_row(r) for r in entries if r.kind == "signature")
            ]
            state = state_of(signed, bool(entries))
            item |= {"review_state": state, "exceptions": None, "open_exceptions": None, "checked": False}
        if review_state is not None and item["review_state"] != review_state:
            continue
        known = item["open_exceptions"]
        if open_exceptions is not None and known is not None and (known > 0) != open_exceptions:
            continue
        out.append(item)
    return out
