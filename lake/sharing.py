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
  changes.  :func:`write_rows` stores them with a Delta MERGE that inserts only the
  changes whose ``(event_id, path, key)`` the table does not hold yet.  Two writers
  merging the same event at once conflict (the later one's MERGE read files the earlier
  one added): the later one fails with :class:`~deltalake.exceptions.CommitFailedError`,
  and :func:`commit_with_retries` runs it again on the newer version, where it finds
  the rows and inserts nothing.  So each context change is stored once, however many
  engines wrote it.  (A change without an event id, from a WAL older than event ids,
  is inserted as it is.)

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
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError

__all__ = ["CONFLICT_RETRIES", "CONTEXT_KEY", "commit_with_retries", "write_rows"]

log = logging.getLogger("lake.sink")

#: attempts at one table commit that lost its race to another writer (then the error stands
#: and the sink's own backoff retries the segment)
CONFLICT_RETRIES: Final = 20
#: what makes a context change the same change whoever wrote it (``date`` lets the
#: merge read only the partition of the change's own day)
CONTEXT_KEY: Final = ("event_id", "path", "key", "date")

_T = TypeVar("_T")


def write_rows(table: str, dt: DeltaTable, data: pa.Table, txn: Transaction, props: WriterProperties) -> None:
    """Commit ``data`` to ``dt`` in one Delta commit carrying ``txn``: context by a MERGE
    that skips the changes already stored, every other table by an append."""
    commit = CommitProperties(app_transactions=[txn])
    # A context table of a lake older than event ids has no event_id column to match on:
    # its first commit appends (and so adds the column); it holds no id to skip yet.
    if table != "context" or "event_id" not in {f.name for f in dt.schema().fields}:
        # schema_mode "merge": a table of an older lake gets the columns added since
        write_deltalake(
            dt, data, mode="append", schema_mode="merge", writer_properties=props, commit_properties=commit
        )
        return
    predicate = " AND ".join(f"t.{c} = s.{c}" for c in CONTEXT_KEY)
    merger = dt.merge(
        data,
        predicate,
        source_alias="s",
        target_alias="t",
        merge_schema=True,
        writer_properties=props,
        commit_properties=commit,
    )
    merger.when_not_matched_insert_all().execute()


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
