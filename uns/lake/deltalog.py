"""Reading single commits of a Delta table's log (``_delta_log/<version>.json``).

The audit trail records, for each commit the lake makes, the files it added (and,
for a compaction, removed).  Those are the ``add`` and ``remove`` actions of the
commit's JSON file; the commit of one WAL segment is the one whose ``txn`` action
carries the segment's app transaction.  Only the few newest commits are ever read
(the one just made, or the one an interrupted attempt made moments ago), so this
reads the JSON files directly instead of loading the table's whole history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from uns.lake.storage import TableFiles

__all__ = ["AddedFile", "CommitActions", "adding_commit", "commit_actions", "find_txn_commit"]

#: how far back :func:`find_txn_commit` looks (commits of one writer are recent)
MAX_LOOKBACK: Final = 10_000


@dataclass(frozen=True, slots=True)
class AddedFile:
    """A data file a commit added: its path relative to the table, size, rows."""

    path: str
    size: int
    rows: int


@dataclass(slots=True)
class CommitActions:
    """What one commit of a table did."""

    version: int
    operation: str = ""
    adds: list[AddedFile] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    txns: dict[str, int] = field(default_factory=dict)
    #: a repair of the rejected table made it (its commitInfo carries lake.repair's mark)
    repair: bool = False


def _log(version: int) -> str:
    return f"_delta_log/{version:020d}.json"


def commit_actions(table: TableFiles, version: int) -> CommitActions | None:
    """The actions of commit ``version`` (None when its JSON file is not there)."""
    text = table.read_text(_log(version))
    if text is None:
        return None
    out = CommitActions(version)
    for line in text.splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "add" in action:
            add = action["add"]
            stats = json.loads(add.get("stats") or "{}")
            out.adds.append(
                AddedFile(add["path"], int(add.get("size") or 0), int(stats.get("numRecords") or 0))
            )
        elif "remove" in action:
            out.removes.append(action["remove"]["path"])
        elif "txn" in action:
            out.txns[action["txn"]["appId"]] = int(action["txn"]["version"])
        elif "commitInfo" in action:
            info = action["commitInfo"]
            out.operation = str(info.get("operation") or "")
            out.repair = info.get("uns_operation") == "repair"
    return out


def find_txn_commit(table: TableFiles, app: str, number: int, newest: int) -> CommitActions | None:
    """The commit that recorded app transaction ``(app, number)``, looked for from version
    ``newest`` (moved on to the log's real newest, should a cached handle lag) backwards."""
    while table.exists(_log(newest + 1)):
        newest += 1
    for version in range(newest, max(-1, newest - MAX_LOOKBACK), -1):
        actions = commit_actions(table, version)
        if actions is None:
            return None
        if actions.txns.get(app) == number:
            return actions
    return None


def adding_commit(table: TableFiles, path: str) -> CommitActions | None:
    """The commit that added data file ``path`` (as the log names it), looked for from the
    newest commit back (at most :data:`MAX_LOOKBACK`); None when not found."""
    stems = (name.removesuffix(".json") for name in table.names("_delta_log") if name.endswith(".json"))
    versions = sorted((int(s) for s in stems if s.isdigit()), reverse=True)
    for version in versions[:MAX_LOOKBACK]:
        actions = commit_actions(table, version)
        if actions is not None and any(unquote(a.path) == unquote(path) for a in actions.adds):
            return actions
    return None
