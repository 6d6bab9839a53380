"""The audit trail's hashes: the canonical form of an audit row, its chain, file digests.

Pure functions (no lake, no clock), so the chain can be recomputed by anyone from
the rows alone (docs/gxp.md, "The hash chain"):

``hash = SHA-256( canonical(row) )`` in lowercase hex, where ``canonical(row)`` is the
UTF-8 encoding of the JSON array::

    [writer_id, seq, ts_us, kind, actor, reason, subject, detail, prev_hash]

with no whitespace (``separators=(",", ":")``), non-ASCII characters as themselves
(``ensure_ascii=False``), ``ts_us`` the integer microseconds since 1970-01-01 UTC and
``detail`` the JSON text exactly as stored.  ``prev_hash`` is the ``hash`` of the
writer's previous row, :data:`GENESIS` (64 zeros) for its first (``seq`` 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

__all__ = [
    "AUDIT_FIELDS",
    "GENESIS",
    "ChainRow",
    "canonical",
    "chain_findings",
    "detail_json",
    "file_sha256",
    "link",
    "row_hash",
    "stream_sha256",
    "ts_micros",
]

#: ``prev_hash`` of a writer's first row
GENESIS: Final = "0" * 64
#: the hashed fields, in the canonical order (``hash`` itself excluded)
AUDIT_FIELDS: Final = ("writer_id", "seq", "ts", "kind", "actor", "reason", "subject", "detail", "prev_hash")
_CHUNK: Final = 1 << 20
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One audit row as stored (``ts`` in integer microseconds since the epoch, UTC)."""

    writer_id: str
    seq: int
    ts: int
    kind: str
    actor: str
    reason: str
    subject: str
    detail: str
    prev_hash: str
    hash: str


def ts_micros(value: dt.datetime | int) -> int:
    """Integer microseconds since the epoch of a timezone-aware datetime (an int passes)."""
    if isinstance(value, int):
        return value
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def detail_json(detail: Mapping[str, Any]) -> str:
    """The stored form of an entry's detail: JSON with sorted keys and no whitespace."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical(
    writer_id: str,
    seq: int,
    ts_us: int,
    kind: str,
    actor: str,
    reason: str,
    subject: str,
    detail: str,
    prev: str,
) -> bytes:
    """The bytes a row's hash is taken over (see the module docstring)."""
    fields = [writer_id, seq, ts_us, kind, actor, reason, subject, detail, prev]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def row_hash(row: ChainRow) -> str:
    """The hash a row must carry, recomputed from its other fields."""
    data = canonical(
        row.writer_id,
        row.seq,
        row.ts,
        row.kind,
        row.actor,
        row.reason,
        row.subject,
        row.detail,
        row.prev_hash,
    )
    return hashlib.sha256(data).hexdigest()


def link(
    writer_id: str,
    prev: tuple[int, str],
    entries: Iterable[tuple[int, str, str, str, str, str]],
) -> list[ChainRow]:
    """Chain new entries ``(ts_us, kind, actor, reason, subject, detail)`` after ``prev``
    (the writer's last ``(seq, hash)``; ``(0, GENESIS)`` for none)."""
    seq, last = prev
    rows: list[ChainRow] = []
    for ts_us, kind, actor, reason, subject, detail in entries:
        seq += 1
        data = canonical(writer_id, seq, ts_us, kind, actor, reason, subject, detail, last)
        digest = hashlib.sha256(data).hexdigest()
        rows.append(ChainRow(writer_id, seq, ts_us, kind, actor, reason, subject, detail, last, digest))
        last = digest
    return rows


def chain_findings(rows: Sequence[ChainRow]) -> list[str]:
    """What is wrong with the chains of ``rows`` (any order, several writers): one line per
    finding naming the writer and seq -- a gap, a duplicate, a broken link, an altered row."""
    findings: list[str] = []
    by_writer: dict[str, list[ChainRow]] = {}
    for row in rows:
        by_writer.setdefault(row.writer_id, []).append(row)
    for writer, chain in sorted(by_writer.items()):
        chain.sort(key=lambda r: r.seq)
        name = writer or "(default)"
        expected_seq, expected_prev = 1, GENESIS
        for row in chain:
            if row.seq < expected_seq:
                findings.append(f"audit: writer {name} seq {row.seq} appears more than once")
                continue
            if row.seq > expected_seq:
                missing = (
                    f"{expected_seq}" if row.seq == expected_seq + 1 else f"{expected_seq}-{row.seq - 1}"
                )
                findings.append(f"audit: writer {name} seq {missing} missing (row deleted?)")
                expected_prev = row.prev_hash  # judge the rest on their own links
            if row.prev_hash != expected_prev:
                findings.append(
                    f"audit: writer {name} seq {row.seq} prev_hash does not link to seq {row.seq - 1}"
                )
            if row_hash(row) != row.hash:
                findings.append(
                    f"audit: writer {name} seq {row.seq} altered (its hash does not match its content)"
                )
            expected_seq, expected_prev = row.seq + 1, row.hash
    return findings


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, in lowercase hex (read in 1 MiB chunks; the GIL is released)."""
    with path.open("rb") as f:
        return stream_sha256(f)


def stream_sha256(stream: BinaryIO) -> str:
    """SHA-256 of what ``stream`` holds from here to its end (a file, an object store's stream)."""
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
