"""The write-ahead log: numbered segment files of CRC-checked records.

Layout: ``<lake>/_wal/<number:016d>.wal``.  A segment starts with the 8-byte
magic ``UNSWAL3\n``; then records, each::

    uint32 LE  payload length
    uint32 LE  CRC-32 of the payload
    payload    uint32 LE  length of the columns
               columns    marshal (format 4) of one TableColumns tuple: per table ``[]``
                          or its columns (lists of plain values, see lake.tables.WAL_COLUMNS)
               blocks     the rest: the record's sample blocks as packed columns
                          (lake.blocks; empty when it has none)

A record holds every row the sink accepted in one event-loop iteration (the
sink writes the rows pending since the last write as one record).  It is
written with one ``write`` on an unbuffered descriptor, so once ``append``
returns the record is in the kernel and survives a process crash; ``fsync``
(run on an interval) makes it survive a power loss.  A crash in the middle
of a write leaves a torn last record: :func:`read_segment` detects it (short
header, short payload or CRC mismatch) and stops there.  A failed write is
cut back off the file, so a torn record is never followed by good ones.

Segments of the previous formats (``UNSWAL2\n``: the payload is the marshalled
columns alone; ``UNSWAL1\n``: one record of row tuples per batch, values rendered)
are still read, so a WAL left by an older version replays after an upgrade.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from uns.errors import LakeError
from uns.lake.tables import (
    OLDER_RECORD_WIDTHS,
    RENDERED,
    SAMPLE_FIELDS,
    TABLES,
    WAL_WIDTHS,
    TableColumns,
    empty_columns,
    extend_columns,
    plain_columns,
)

__all__ = [
    "MAGIC",
    "OS_FILES",
    "CommitResult",
    "FileLayer",
    "SegmentFile",
    "SegmentRead",
    "WalLock",
    "close_segments",
    "encode_columns",
    "encode_record",
    "fsync_dir",
    "fsync_segments",
    "list_segments",
    "open_segment",
    "read_segment",
    "segment_path",
    "sync_filesystem",
    "wal_dir_for",
]

MAGIC: Final = b"UNSWAL3\n"
_MAGIC_V2: Final = b"UNSWAL2\n"
_MAGIC_V1: Final = b"UNSWAL1\n"
_HEADER = struct.Struct("<II")
_COLUMNS_LEN = struct.Struct("<I")
_MARSHAL_VERSION: Final = 4  # stable since Python 3.4; newer Pythons still read it
_SUFFIX: Final = ".wal"


@dataclass(slots=True)
class CommitResult:
    """What committing one segment did (:meth:`lake.writer.DeltaWriter.commit_segment`)."""

    rows_written: int  # rows newly committed (tables skipped as already committed excluded)
    commits: int  # Delta commits made
    torn_bytes: int  # bytes of a torn tail ignored in the segment
    rows_skipped: int = 0  # rows of tables that had the segment already (an interrupted earlier attempt)
    #: the segment's file was already gone: an earlier attempt committed it and deleted it,
    #: and was interrupted before it could say so (a killed commit worker)
    already_retired: bool = False
    #: (table, rows newly committed) for each table that got rows (what ``rows_written`` sums)
    tables: tuple[tuple[str, int], ...] = ()


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


def encode_record(columns: TableColumns, blocks: bytes = b"") -> bytes:
    """One record (header + payload).  Raises ValueError unless the columns hold only
    marshal-able plain values (then see lake.tables.plain_columns)."""
    marshalled = marshal.dumps(columns, _MARSHAL_VERSION)
    payload = b"".join((_COLUMNS_LEN.pack(len(marshalled)), marshalled, blocks))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(slots=True)
class SegmentRead:
    """What :func:`read_segment` found."""

    parts: list[TableColumns]  # the columns of each good record
    records: int
    good_bytes: int  # bytes up to the end of the last good record
    torn_bytes: int  # bytes after it (a torn record from a crash, or damage)
    #: the sample blocks of the records that have them (packed columns, lake.blocks)
    blocks: list[memoryview] = field(default_factory=list)

    @property
    def columns(self) -> TableColumns:
        """Every record's rows merged into one set of columns."""
        merged = empty_columns()
        for part in self.parts:
            extend_columns(merged, part)
        return merged


def read_segment(path: Path) -> SegmentRead:
    """All good records of a segment, merged per table; a torn tail is ignored."""
    data = path.read_bytes()
    parts: list[TableColumns] = []
    blocks: list[memoryview] = []
    version = {MAGIC: 3, _MAGIC_V2: 2, _MAGIC_V1: 1}.get(data[: len(MAGIC)], 0)
    if not version:
        # Crashed between creating the file and writing the magic: nothing was accepted.
        return SegmentRead(parts, 0, 0, len(data))
    view = memoryview(data)
    pos, records, end = len(MAGIC), 0, len(data)
    while pos + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = view[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        columns, block = payload, payload[:0]
        if version == 3:
            if length < _COLUMNS_LEN.size:
                break
            (size,) = _COLUMNS_LEN.unpack_from(payload)
            columns = payload[_COLUMNS_LEN.size : _COLUMNS_LEN.size + size]
            block = payload[_COLUMNS_LEN.size + size :]
        try:
            record = marshal.loads(columns)  # noqa: S302 - our own CRC-checked file, not foreign input
        except (ValueError, EOFError, TypeError):
            break
        more = _record_columns(record, version)
        if more is None:
            break
        parts.append(more)
        if block:
            blocks.append(block)
        pos = start + length
        records += 1
    return SegmentRead(parts, records, pos, end - pos, blocks)


def _record_columns(record: object, version: int) -> TableColumns | None:
    """A record's columns (converted from the row tuples of format 1); None if malformed."""
    if isinstance(record, tuple) and len(record) in OLDER_RECORD_WIDTHS:  # before later tables
        record = (*record, *([] for _ in range(len(TABLES) - len(record))))
    if not isinstance(record, tuple) or len(record) != len(TABLES):
        return None
    if version == 1:
        if not all(isinstance(rows, list) for rows in record):
            return None
        try:
            record = tuple(_v1_columns(index, rows) for index, rows in enumerate(record))
        except (TypeError, ValueError):  # rows of different lengths: not ours
            return None
    for table, cols in zip(TABLES, record, strict=True):
        if not isinstance(cols, list | tuple):
            return None
        if cols and not _well_formed(table, cols):
            return None
    return cast("TableColumns", record)


def _well_formed(table: str, cols: Sequence[Any]) -> bool:
    if len(cols) not in WAL_WIDTHS[table] or not all(isinstance(c, list | tuple) for c in cols):
        return False
    lengths = [len(c) for c in cols]
    if table != "measurements":
        return len(set(lengths)) == 1
    rows = len(SAMPLE_FIELDS)
    run_lengths = cols[-1]
    return (
        len(set(lengths[:rows])) == 1
        and len(set(lengths[rows:])) == 1
        and all(type(n) is int and n > 0 for n in run_lengths)
        and sum(run_lengths) == lengths[0]
    )


def _v1_columns(index: int, rows: list[tuple[object, ...]]) -> list[Sequence[object]]:
    if not rows:
        return []
    cols: list[Sequence[object]] = list(zip(*rows, strict=True))
    if index != 0:
        return cols
    # Format 1 measurement rows: ts, received_at, path, metric, datatype, value_double,
    # value_text, unit, quality, is_historical, is_transient, group_id, edge_node_id,
    # device_id, seq, bdseq, alias, unmapped, context -- rendered values, one run per row.
    (ts, rec, path, metric, dtype, doubles, texts, unit, quality, hist, trans, group, node, device, seq,
     bdseq, alias, unmapped, ctx) = cols  # fmt: skip
    value = [(RENDERED, t, d) for d, t in zip(doubles, texts, strict=True)]
    per_row = [ts, metric, dtype, value, unit, quality, hist, trans, alias]
    per_run = [rec, path, group, node, device, seq, bdseq, unmapped, ctx]
    return [*per_row, *per_run, [1] * len(rows)]


class FileLayer:
    """The system calls a segment file makes, one object so tests can inject faults
    (tests/test_lake_faults.py); :data:`OS_FILES` is the real one."""

    # each looks ``os`` up when called, so a test that patches ``os`` is seen too

    def open(self, path: Path, flags: int, mode: int) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def unlink(self, path: Path) -> None:
        os.unlink(path)


OS_FILES: Final = FileLayer()


class SegmentFile:
    """The active segment: appended to by the event loop, fsynced by a worker thread.

    Created with ``O_EXCL``: FileExistsError when ``number``'s file exists (never reuse a
    number, see :func:`open_segment`).  When the magic cannot be written (disk full) the
    file is removed again and LakeError raised."""

    def __init__(self, wal_dir: Path, number: int, files: FileLayer = OS_FILES) -> None:
        self.number = number
        # fsync runs in worker threads while the loop may seal and close: never on a closed fd.
        self._lock = threading.Lock()
        self._files = files
        self.path = segment_path(wal_dir, number)
        self.rows = 0
        self.opened_at = time.monotonic()
        self.unsynced = False
        self._fd = files.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.size = 0
        self.broken = False
        try:
            self.append(MAGIC, 0)
        except LakeError:
            self.close(sync=False)
            with contextlib.suppress(OSError):  # if it stays, it holds no record: replayed as empty
                files.unlink(self.path)
            raise

    def append(self, record: bytes, rows: int) -> None:
        """Write one record; on failure cut it back off and raise LakeError."""
        view = memoryview(record)
        start = self.size
        files = self._files
        try:
            while view:
                n = files.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            try:
                files.ftruncate(self._fd, start)
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
            self._files.fsync(self._fd)

    def close(self, *, sync: bool = True) -> None:
        """Close (after an fsync unless ``sync`` is False); safe to call twice."""
        with self._lock:
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
            try:
                if sync and self.unsynced:
                    self._files.fsync(fd)
                    self.unsynced = False
            finally:
                with contextlib.suppress(OSError):
                    self._files.close(fd)


#: numbers tried past files that exist before open_segment gives up
_MAX_SKIPS: Final = 1000


def open_segment(wal_dir: Path, number: int, files: FileLayer = OS_FILES) -> SegmentFile:
    """A new segment at ``number`` or, when a file of that number exists (left by a failed
    attempt or a crash), at the next free number: a number whose file exists is never
    reused, so a record can never land in a file an earlier run or attempt began.

    Raises LakeError (the disk is full, read-only, failing); the caller then burns
    ``number`` and asks for the next one on its retry."""
    for candidate in range(number, number + _MAX_SKIPS):
        try:
            return SegmentFile(wal_dir, candidate, files)
        except FileExistsError:
            continue
        except OSError as exc:
            name = segment_path(wal_dir, candidate).name
            raise LakeError(f"cannot create WAL segment {name}: {exc}") from exc
    raise LakeError(f"no free WAL segment number from {number} to {number + _MAX_SKIPS - 1} in {wal_dir}")


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
        # read-only: flock needs no write access, and a descriptor open for writing would
        # keep the file system from being remounted read-only (tests/test_lake_disk.py)
        fd = os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o644)
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


def wal_dir_for(root: Path, writer_id: str = "") -> Path:
    """The write-ahead log directory of one writer of the lake at ``root``."""
    return root / (f"_wal-{writer_id}" if writer_id else "_wal")


def encode_columns(columns: TableColumns, blocks: bytes = b"") -> tuple[bytes, TableColumns]:
    """The record, and the columns it holds (coerced to builtins if marshal refused them)."""
    try:
        return encode_record(columns, blocks), columns
    except ValueError:  # a str/int subclass, a DataSet, a stray object: marshal takes only builtins
        plain = plain_columns(columns)
        return encode_record(plain, blocks), plain


def fsync_segments(files: list[SegmentFile], wal_dir: Path | None) -> None:
    """fsync each segment file, then ``wal_dir`` (when a segment was created in it)."""
    for f in files:
        f.fsync()
    if wal_dir is not None:
        fsync_dir(wal_dir)


def close_segments(files: list[SegmentFile]) -> None:
    """Close segment files at shutdown; a failure to close one never stops the others."""
    for f in files:
        with contextlib.suppress(OSError):
            f.close()
