"""Several writers, one lake: Delta's optimistic concurrency, and each context change once.

Engines that shard a site by Sparkplug group (``engine.groups``) write one lake, each
with its own ``lake.writer_id`` (its own WAL and app transaction ids).  There is no lock
service of ours between them: every Delta commit is an optimistic transaction that
writes the table's next log entry only if no other writer wrote it first (a rename
without replace on a local disk, a conditional put on object storage; docs/scale-out.md
says which stores provide it).

- **Appends** (measurements, the catalog, sessions, rejected): the writers' rows are
  disjoint (their own groups), and a blind append never conflicts with another writer's
  append or compaction; deltalake rebases it on the newer version by itself.
- **Context**: every engine takes every context event, so every writer holds the same
  changes.  :func:`write_rows` commits a segment's context changes together with one Delta
  app transaction per context event, ``(uns-context-<event id>, 1)``, and leaves out the
  events whose app transaction the table already records.  Two writers committing the
  same event at once conflict (Delta lets only one commit set an app transaction id at a
  time): the later one fails with :class:`~deltalake.exceptions.CommitFailedError`, and
  :func:`commit_with_retries` runs it again on the newer version, where the event is
  recorded and left out.  So each context change is stored once, however many engines
  wrote it, by plain appends.  (A change without an event id, from a WAL older than
  event ids, is appended as it is.)  **Batch records** (materials, results, comments) are
  stored once the same way, by ``(uns-record-<record id>, 1)`` in their table.

Every commit carries the writer's app transaction ``(app_id, segment)`` as before, so
a retried or replayed segment is still committed once per writer (:mod:`lake.writer`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Final, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError

__all__ = [
    "CONFLICT_RETRIES",
    "CONTEXT_APP_PREFIX",
    "RECORD_APP_PREFIX",
    "app_id",
    "commit_with_retries",
    "write_rows",
]

log = logging.getLogger("lake.sink")

#: attempts at one table commit that lost its race to another writer (then the error stands
#: and the sink's own backoff retries the segment)
CONFLICT_RETRIES: Final = 20
#: the app transaction that records a context event as stored (whoever stored it)
CONTEXT_APP_PREFIX: Final = "uns-context-"
#: the app transaction that records a batch record as stored (its table's, whoever stored it)
RECORD_APP_PREFIX: Final = "uns-record-"
#: the tables whose rows every engine writes (every engine takes every context event and
#: record): table -> (the id column, its app transaction prefix)
_ONCE: Final = {
    "context": ("event_id", CONTEXT_APP_PREFIX),
    **dict.fromkeys(("materials", "results", "comments"), ("record_id", RECORD_APP_PREFIX)),
}

_T = TypeVar("_T")


def write_rows(table: str, dt: DeltaTable, data: pa.Table, txn: Transaction, props: WriterProperties) -> None:
    """Append ``data`` to ``dt`` in one Delta commit carrying ``txn``; context changes of
    events the table already records are left out, the others carry their events' app
    transactions (see above)."""
    txns = [txn]
    once = _ONCE.get(table)
    if once is not None:
        # every event stored already (by another writer): an empty commit still records
        # this writer's segment (its app transaction; the audit trail's data commit)
        column, prefix = once
        data, events = _unstored(dt, data, column, prefix)
        txns += [Transaction(f"{prefix}{e}", 1) for e in events]
    # schema_mode "merge": a table of an older lake gets the columns added since
    write_deltalake(
        dt,
        data,
        mode="append",
        schema_mode="merge",
        writer_properties=props,
        commit_properties=CommitProperties(app_transactions=txns),
    )


def _unstored(dt: DeltaTable, data: pa.Table, column: str, prefix: str) -> tuple[pa.Table, list[str]]:
    """The rows of events the table does not record yet, and those events' ids."""
    ids = sorted({e for e in data.column(column).to_pylist() if e is not None})
    stored = [e for e in ids if dt.transaction_version(f"{prefix}{e}") is not None]
    if stored:
        keep = pc.invert(pc.fill_null(pc.is_in(data.column(column), pa.array(stored)), False))
        data = data.filter(keep)
    return data, [e for e in ids if e not in set(stored)]


def commit_with_retries(
    attempt: Callable[[], _T],
    on_conflict: Callable[[], object],
    *,
    what: str,
    retries: int = CONFLICT_RETRIES,
) -> _T:
    """Run ``attempt`` (one optimistic commit); when another writer won the race, call
    ``on_conflict`` (drop the stale table state) and try again, after a short random
    pause so that racing writers spread out.  The last conflict is raised."""
    for number in range(1, retries + 1):
        try:
            return attempt()
        except CommitFailedError as exc:
            if number == retries:
                raise
            log.debug("lake: %s lost a commit race to another writer (attempt %d): %s", what, number, exc)
            on_conflict()
            time.sleep(random.uniform(0.0, min(1.0, 0.02 * 2**number)))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def app_id(table: str, writer_id: str = "") -> str:
    """The Delta app transaction id under which a writer records its last segment per table."""
    return f"uns-wal-{writer_id}-{table}" if writer_id else f"uns-wal-{table}"
