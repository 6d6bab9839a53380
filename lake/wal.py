"""The write-ahead log: numbered segment files of CRC-checked records.

Layout: ``<lake>/_wal/<number:016d>.wal``.  A segment starts with the 8-byte
magic ``UNSWAL1\\n``; then records, each::

    uint32 LE  payload length
    uint32 LE  CRC-32 of the payload
    payload    marshal (format 4) of one TableRows tuple (one per Batch)

A record is written with one ``write`` on an unbuffered descriptor, so once
``append`` returns the record is in the kernel and survives a process crash;
``fsync`` (run on an interval) makes it survive a power loss.  A crash in the
middle of a write leaves a torn last record: :func:`read_segment` detects it
(short header, short payload or CRC mismatch) and stops there.  A failed
write is cut back off the file, so a torn record is never followed by good ones.

The segment number is the commit unit: a segment's rows go to each Delta table
in one commit carrying an app transaction ``(app_id, number)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import marshal
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lake.tables import TABLES, TableRows, empty_rows
from uns.errors import LakeError

__all__ = [
    "MAGIC",
    "SegmentFile",
    "SegmentRead",
    "WalLock",
    "encode_record",
    "fsync_dir",
    "list_segments",
    "read_segment",
    "segment_path",
    "sync_filesystem",
]

MAGIC: Final = b"UNSWAL1\n"
_HEADER = struct.Struct("<II")
_MARSHAL_VERSION: Final = 4  # stable since Python 3.4; newer Pythons still read it
_SUFFIX: Final = ".wal"


def segment_path(wal_dir: Path, number: int) -> Path:
    return wal_dir / f"{number:016d}{_SUFFIX}"


def list_segments(wal_dir: Path) -> list[tuple[int, Path]]:
    """Segment files in number order."""
    found: list[tuple[int, Path]] = []
    if not wal_dir.is_dir():
        return found
    for entry in wal_dir.iterdir():
        stem, suffix = entry.stem, entry.suffix
        if suffix == _SUFFIX and stem.isdigit():
            found.append((int(stem), entry))
    found.sort()
    return found


def encode_record(rows: TableRows) -> bytes:
    """One record (header + payload).  Rows hold only marshal-able plain values."""
    payload = marshal.dumps(rows, _MARSHAL_VERSION)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(slots=True)
class SegmentRead:
    """What :func:`read_segment` found."""

    rows: TableRows
    records: int
    good_bytes: int  # bytes up to the end of the last good record
    torn_bytes: int  # bytes after it (a torn record from a crash, or damage)


def read_segment(path: Path) -> SegmentRead:
    """All good records of a segment, merged per table; a torn tail is ignored."""
    data = path.read_bytes()
    rows = empty_rows()
    if not data.startswith(MAGIC):
        # Crashed between creating the file and writing the magic: nothing was accepted.
        return SegmentRead(rows, 0, 0, len(data))
    pos, records, end = len(MAGIC), 0, len(data)
    while pos + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            record = marshal.loads(payload)  # noqa: S302 - our own CRC-checked file, not foreign input
        except (ValueError, EOFError, TypeError):
            break
        if not isinstance(record, tuple) or len(record) != len(TABLES):
            break
        for table_rows, more in zip(rows, record, strict=True):
            table_rows.extend(more)
        pos = start + length
        records += 1
    return SegmentRead(rows, records, pos, end - pos)


class SegmentFile:
    """The active segment: appended to by the event loop, fsynced by a worker thread."""

    def __init__(self, wal_dir: Path, number: int) -> None:
        self.number = number
        # fsync runs in worker threads while the loop may seal and close: never on a closed fd.
        self._lock = threading.Lock()
        self.path = segment_path(wal_dir, number)
        self.rows = 0
        self.opened_at = time.monotonic()
        self.unsynced = False
        # O_EXCL: a number is never reused, even after a crash left its file behind.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.size = 0
        self.broken = False
        self.append(MAGIC, 0)

    def append(self, record: bytes, rows: int) -> None:
        """Write one record; on failure cut it back off and raise LakeError."""
        view = memoryview(record)
        start = self.size
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self.broken = True  # a torn record would hide later ones: never append again
            raise LakeError(f"write-ahead log write failed: {exc.strerror or exc}") from exc
        self.size = start + len(record)
        self.rows += rows
        self.unsynced = True

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fsync(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            self.unsynced = False
            os.fsync(self._fd)

    def close(self, *, sync: bool = True) -> None:
        """Close (after an fsync unless ``sync`` is False); safe to call twice."""
        with self._lock:
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
            try:
                if sync and self.unsynced:
                    os.fsync(fd)
                    self.unsynced = False
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make new or removed directory entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> object | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs: object = libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    return syncfs


_SYNCFS = _load_syncfs()


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path`` (Delta files
    are written without fsync; before a segment is deleted its commit must be
    on disk).  Linux ``syncfs``; elsewhere a global ``sync``."""
    if _SYNCFS is None:  # pragma: no cover - not Linux
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:  # type: ignore[operator]
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class WalLock:
    """An exclusive lock on a WAL directory: two writers on one WAL would
    interleave segment numbers and corrupt exactly-once replay."""

    def __init__(self, wal_dir: Path) -> None:
        self._path = wal_dir / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise LakeError(f"another writer holds the write-ahead log {self._path.parent}") from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
