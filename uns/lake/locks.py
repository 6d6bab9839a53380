"""One compaction of a lake at a time, and one creation of its tables, across processes on this machine.

Two compactions of one table that overlap in time keep rows twice: each plans on
the files it saw, and Delta accepts an OPTIMIZE that removes files another
OPTIMIZE has already removed (its removes carry no data change, so they are no
conflict), so both merged files stay.  That happens with two writers of one lake
(each compacts the recent partitions, the other's files too) and with
``uns lake compact`` beside a running engine.  So every compaction holds an
exclusive lock on ``<lake>/.uns-compaction.lock`` and plans on the table as it is
once it holds it.  The writer's own compaction does not wait: when another holds
the lock it skips that round (``Lake.compact`` waits).  ``flock`` serializes the
processes of one machine; writers on several machines (object storage) need
compaction from one place only (docs/lake.md).

Creating the tables of a new lake is serialized too (:func:`tables_lock`): delta-rs's
create is no atomic "create if absent".  A create that loses version 0 to another
writer's is committed again on top of it (a second CREATE TABLE), and one that meets
such a second create fails ("Protocol changed since last commit"), so engines started
together on a new lake failed to start (lake.writer.DeltaWriter.ensure_tables).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from uns.errors import LakeError

__all__ = ["LOCK_NAME", "TABLES_LOCK_NAME", "audit_lock", "compaction_lock", "tables_lock", "writer_lock"]

LOCK_NAME = ".uns-compaction.lock"
TABLES_LOCK_NAME = ".uns-tables.lock"


def compaction_lock(root: Path, *, wait: bool) -> contextlib.AbstractContextManager[bool]:
    """Hold the lake's compaction lock: yields True once held, or False at once when
    ``wait`` is false and another process holds it.  Released on exit (and by the
    kernel when the holder dies, so a killed compaction never leaves it taken)."""
    return _flock(root / LOCK_NAME, wait=wait, what="compaction")


def tables_lock(root: Path) -> contextlib.AbstractContextManager[bool]:
    """Hold the lock under which the writers of this machine create the lake's missing
    tables (waits; ``root`` must exist)."""
    return _flock(root / TABLES_LOCK_NAME, wait=True, what="table creation")


def audit_lock(root: Path, writer_id: str) -> contextlib.AbstractContextManager[bool]:
    """Hold the lock of one writer's audit chain (waits): reading its tail and appending
    to it is one step, also when a replaced commit worker is not quite dead yet or two
    ``uns`` commands record at once."""
    return _flock(root / f".uns-audit-{writer_id or 'default'}.lock", wait=True, what="audit")


def writer_lock(root: Path, writer_id: str) -> contextlib.AbstractContextManager[bool]:
    """Hold a long-lived writer's claim on its id (does not wait): yields False at once when
    another process of this machine holds it.  A writer that caches its chain's tail (a
    ``uns serve`` process) must be the only one writing under its id."""
    return _flock(root / f".uns-writer-{writer_id}.lock", wait=False, what="writer")


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool, what: str) -> Iterator[bool]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LakeError(f"cannot open the {what} lock of {path.parent}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
