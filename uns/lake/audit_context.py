"""The audit trail's ``context_change`` entries: what a change replaced, at its own time.

The **old value** of a context change is the value that was in effect on its path and
key *at the change's valid-from time*, as known when the change arrived: among the
changes that arrived before it (lower ``ingest_order``), the one with the latest
``ts`` not after the change's own (of equal ``ts``, the later arrival) -- the same
rule by which ``measurements_asof`` applies context.  A back-dated change thus names
what it corrects, and a change valid from before anything was set names nothing
(``old`` null).  Only changes that change the value are recorded: an event that
re-asserts every key at each phase change records only the keys that moved.

:class:`ContextHistory` keeps, per path and key, the newest :data:`KEEP` changes in
memory; a change older than all of them asks ``lookup`` (the commit worker reads the
lake's ``context`` table) -- rare, as it takes a correction reaching far back.
Pure: no lake, no clock (standard library only).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from uns.lake.audit_entries import SYSTEM, Entry, entry

__all__ = ["KEEP", "ContextHistory", "context_entries"]

#: changes kept in memory per (path, key)
KEEP: Final = 64

Key = tuple[str, str]
#: (ts, ingest_order, value), ``ts`` comparable (epoch ms or datetimes, one kind per history)
Change = tuple[Any, int, str | None]
#: ``lookup(path, key, ts, before_order)``: the value in effect at ``ts`` among changes that
#: arrived before ``before_order`` (None: none was)
Lookup = Callable[[str, str, Any, int], str | None]


class ContextHistory:
    """The recent changes of each context key, to tell what a change replaced."""

    def __init__(self, lookup: Lookup, keep: int = KEEP) -> None:
        self._lookup = lookup
        self._keep = keep
        self._changes: dict[Key, list[Change]] = {}
        #: keys whose older changes were dropped from memory (they are asked of ``lookup``)
        self._trimmed: set[Key] = set()

    @classmethod
    def of(cls, changes: Iterable[tuple[str, str, Any, int, str | None]], lookup: Lookup,
           keep: int = KEEP) -> ContextHistory:  # fmt: skip
        """A history from known changes ``(path, key, ts, ingest_order, value)``, any order."""
        history = cls(lookup, keep)
        grouped: dict[Key, list[Change]] = {}
        for path, key, ts, order, value in changes:
            grouped.setdefault((path, key), []).append((ts, order, value))
        for name, items in grouped.items():
            items.sort(key=lambda c: (c[0], c[1]))
            history._changes[name] = items[-keep:]
            if len(items) > keep:
                history._trimmed.add(name)
        return history

    def value_at(self, path: str, key: str, ts: Any, order: int) -> str | None:
        """The value in effect at ``ts`` among the changes that arrived before ``order``."""
        items = self._changes.get((path, key), [])
        # every change kept arrived before ``order`` (changes are added in arrival order)
        at = bisect.bisect_right(items, (ts, order), key=lambda c: (c[0], c[1]))
        if at:
            return items[at - 1][2]
        if (path, key) in self._trimmed:
            return self._lookup(path, key, ts, order)
        return None

    def add(self, path: str, key: str, ts: Any, order: int, value: str | None) -> None:
        items = self._changes.setdefault((path, key), [])
        bisect.insort(items, (ts, order, value), key=lambda c: (c[0], c[1]))
        if len(items) > self._keep:
            del items[: len(items) - self._keep]
            self._trimmed.add((path, key))


def context_entries(rows: Iterable[Mapping[str, Any]], history: ContextHistory, ts_us: int) -> list[Entry]:
    """One ``context_change`` entry per context row (in arrival order) that changes the value
    in effect at its own valid-from time, with that value as ``old`` (``history`` updated)."""
    out: list[Entry] = []
    for row in rows:
        path, key = str(row["path"]), str(row["key"])
        order = int(row["ingest_order"])
        old = history.value_at(path, key, row["ts"], order)
        history.add(path, key, row["ts"], order, row["value"])
        if old == row["value"]:
            continue  # re-asserted, not changed
        detail = {
            "path": path,
            "key": key,
            "old": old,
            "new": row["value"],
            "user": row["user"],
            "source": row["source"],
            "event_id": row["event_id"],
            "signer": row.get("signer"),  # the trusted key that signed the event (issue 18)
            "valid_from": row["ts"],
            "received_at": row["received_at"],
            "ingest_order": order,
        }
        actor = str(row["user"] or row["source"] or SYSTEM)
        out.append(entry(ts_us, "context_change", path, detail, actor=actor, reason=str(row["reason"] or "")))
    return out
