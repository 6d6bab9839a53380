"""Batch report contents for the workspace, made once per lake version.

A report over ten million samples takes seconds; a reviewer opens the same batch
again and again.  :class:`ReportCache` keeps the report document of each batch with
the Delta versions of the data tables it was read from (the audit table aside: the
review part is read apart, see :mod:`uns.review.trail`) and makes it again only when
a table the report reads has a new version.  The versions come from Delta table
handles kept open and brought up to date incrementally (:class:`LakeVersions`): asking
costs a look at each table's log, not a read of the lake.  The document is built from
a connection pinned to exactly those versions, so the cache key says what it holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from uns import lake
from uns.batch.document import ReportRequest
from uns.batch.queries import batch_info
from uns.batch.report import build_report
from uns.errors import LakeError
from uns.lake.audit import DATA_TABLES

__all__ = ["LakeVersions", "ReportCache"]

#: reports kept (a report's document is some hundred kB; its samples are not kept)
MAX_REPORTS: Final = 64


class LakeVersions:
    """The current Delta version of each data table of the lake at ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._tables: dict[str, DeltaTable] = {}
        self._lock = threading.Lock()

    def current(self) -> dict[str, int]:
        """table -> its newest version (tables not created yet are absent)."""
        out: dict[str, int] = {}
        with self._lock:
            for name in DATA_TABLES:
                table = self._tables.get(name)
                try:
                    if table is None:
                        table = self._tables[name] = DeltaTable(self.root / name)
                    else:
                        table.update_incremental()
                except TableNotFoundError:
                    continue
                except Exception as exc:
                    self._tables.pop(name, None)
                    raise LakeError(f"cannot read table {name}: {exc}", table=name) from exc
                out[name] = table.version()
        return out


class ReportCache:
    """Report documents by batch, each valid for the table versions it was read from."""

    def __init__(self, root: str | Path, request: Callable[[str], ReportRequest]) -> None:
        self.root = Path(root)
        self.versions = LakeVersions(root)
        self._request = request
        self._entries: OrderedDict[str, tuple[dict[str, int], dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def document(self, batch_id: str) -> tuple[dict[str, Any], Mapping[str, int]]:
        """The report document of ``batch_id`` as the lake is now, and the versions it was
        read from (BatchError for an unknown batch).  The caller must not change it."""
        versions = self.versions.current()
        with self._lock:
            making = self._making.setdefault(batch_id, threading.Lock())
        with making:  # one report of a batch at a time: the second request waits and reuses it
            with self._lock:
                found = self._entries.get(batch_id)
                if found is not None and found[0] == versions:
                    self._entries.move_to_end(batch_id)
                    self.hits += 1
                    return found[1], found[0]
            document = self._build(batch_id, versions)
            with self._lock:
                self.misses += 1
                self._entries[batch_id] = (versions, document)
                self._entries.move_to_end(batch_id)
                while len(self._entries) > MAX_REPORTS:
                    self._entries.popitem(last=False)
        return document, versions

    def peek(self, batch_id: str) -> tuple[Mapping[str, int], dict[str, Any]] | None:
        """The newest report document of ``batch_id`` made (its versions may be old), if any."""
        with self._lock:
            found = self._entries.get(batch_id)
        return None if found is None else (found[0], found[1])

    def _build(self, batch_id: str, versions: Mapping[str, int]) -> dict[str, Any]:
        con = lake.connect(self.root, versions=versions)
        try:
            batch_info(con, batch_id)  # an unknown batch: one line, before any other work
            return build_report(con, self._request(batch_id)).document
        finally:
            con.close()
