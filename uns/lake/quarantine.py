"""WAL segments the commit worker cannot commit: moved aside, so the lake goes on.

Segments are committed strictly in number order (exactly-once, :mod:`lake.writer`),
so one segment whose commit always fails -- rows no table takes, or more rows than
the worker's memory holds -- would stop every later row from reaching the lake,
at every start again.  When the commit of the same segment fails
``lake.quarantine_after`` times in a row with the same error, and that error is
not a fault of the environment (a full or read-only disk, a vanished table, an
unreachable object store: those are waited out, the segment is fine), the sink
moves the segment to ``<wal dir>/quarantine/`` with a JSON note beside it (why,
how often, when), counts it (``segments_quarantined`` in the status), records a
``wal_quarantine`` entry in the audit trail and commits the segments after it.
Nothing is deleted: ``uns lake quarantine`` lists the segments moved aside and
``uns lake quarantine --show N`` prints the rows of one (docs/lake.md section 5).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from uns.errors import LakeError
from uns.lake.health import fault_cause
from uns.lake.tables import SAMPLE_FIELDS, TABLES, WAL_COLUMNS, column_count
from uns.lake.wal import SegmentRead, fsync_dir, list_segments, read_segment

__all__ = [
    "QUARANTINE_DIR",
    "FailureStreak",
    "Quarantined",
    "move_aside",
    "quarantinable",
    "quarantined",
    "quarantined_rows",
]

#: the directory, inside a WAL directory, of the segments moved aside
QUARANTINE_DIR: Final = "quarantine"
#: words of errors of the environment -- the network, the machine, the lake's directory or
#: bucket -- that come and go, or are healed by someone: never the segment's fault
_ENVIRONMENT: Final = (
    "timed out", "timeout", "connection", "temporarily", "network", "dns error", "not a directory",
    "no such file", "does not exist", "permission denied", "access denied", "read-only", "os error",
    "errno", "cannot open table", "bucket",
)  # fmt: skip


def quarantinable(error: str) -> bool:
    """True when ``error`` may be the segment's own fault (see the module doc)."""
    lowered = error.lower()
    return fault_cause(error) is None and not any(word in lowered for word in _ENVIRONMENT)


@dataclass(slots=True)
class FailureStreak:
    """Consecutive failed commits of one segment with one error (no I/O)."""

    number: int = -1
    error: str = ""
    count: int = 0

    def failed(self, number: int, error: str) -> int:
        """Record a failed commit of segment ``number``; how often in a row it failed so."""
        if number == self.number and error == self.error:
            self.count += 1
        else:
            self.number, self.error, self.count = number, error, 1
        return self.count

    def reset(self) -> None:
        self.number, self.error, self.count = -1, "", 0


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A segment moved aside: its file and what its note says."""

    number: int
    path: Path
    size: int
    note: dict[str, Any]


def _note_path(segment: Path) -> Path:
    return segment.with_suffix(".json")


def move_aside(segment: Path, wal_dir: Path, note: dict[str, Any]) -> Path:
    """Move ``segment`` into ``<wal_dir>/quarantine/`` with its ``note`` (JSON) beside it;
    the new path.  Blocking (call it in a thread); LakeError when it cannot be moved."""
    target_dir = wal_dir / QUARANTINE_DIR
    target = target_dir / segment.name
    try:
        target_dir.mkdir(exist_ok=True)
        body = json.dumps({**note, "moved_at_ms": int(time.time() * 1000)}, indent=2, sort_keys=True)
        tmp = _note_path(target).with_suffix(".json.tmp")
        tmp.write_text(body + "\n", encoding="utf-8")
        os.replace(tmp, _note_path(target))
        os.replace(segment, target)
        fsync_dir(target_dir)
        fsync_dir(wal_dir)
    except OSError as exc:
        raise LakeError(f"cannot move WAL segment {segment.name} to {target_dir}: {exc}") from exc
    return target


def quarantined(wal_dir: Path) -> list[Quarantined]:
    """The segments moved aside in ``wal_dir``, in number order."""
    out: list[Quarantined] = []
    for number, path in list_segments(wal_dir / QUARANTINE_DIR):
        try:
            note = json.loads(_note_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            note = {}
        out.append(Quarantined(number, path, path.stat().st_size, note if isinstance(note, dict) else {}))
    return out


def quarantined_rows(wal_dir: Path, number: int) -> dict[str, list[dict[str, Any]]]:
    """The rows of quarantined segment ``number``, per table (as dicts of the WAL's columns;
    a payload as hex).  LakeError when there is no such segment."""
    for entry in quarantined(wal_dir):
        if entry.number == number:
            return _rows(read_segment(entry.path))
    raise LakeError(f"no quarantined WAL segment {number} in {wal_dir / QUARANTINE_DIR}")


def _rows(read: SegmentRead) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for index, table in enumerate(TABLES):
        names = list(WAL_COLUMNS[table])
        for part in read.parts:
            cols = part[index]
            if not cols:
                continue
            if table == "measurements":
                cols = _expanded(cols)
            for row in range(column_count(cols)):
                values = [_plain(col[row]) for col in cols[: len(names)]]
                out.setdefault(table, []).append(dict(zip(names, values, strict=False)))
    return out


def _expanded(cols: Any) -> list[Sequence[Any]]:
    """Measurement columns with each run's values repeated per row (run_length dropped)."""
    per_row = len(SAMPLE_FIELDS)
    lengths = cols[-1]
    runs = [[v for v, n in zip(col, lengths, strict=True) for _ in range(n)] for col in cols[per_row:-1]]
    return [*(list(c) for c in cols[:per_row]), *runs]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
