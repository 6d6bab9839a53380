"""Where audit anchors are kept, write-once: a directory (here) or an S3 bucket under Object
Lock (:mod:`uns.lake.anchors_s3`); the names and the listing both share.  See
:mod:`uns.lake.anchors` for what an anchor is."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from uns.errors import LakeError

__all__ = [
    "DEFAULT_WRITER_DIR",
    "AnchorExists",
    "AnchorStore",
    "DirectoryStore",
    "StoredAnchor",
    "anchor_body",
    "anchor_name",
    "seq_of",
    "writer_dir",
]

DEFAULT_WRITER_DIR: Final = "(default)"  # writer ids are letters, digits, '-' and '_': never this


def writer_dir(writer_id: str) -> str:
    return writer_id or DEFAULT_WRITER_DIR


def anchor_name(writer_id: str, seq: int, suffix: str = ".json") -> str:
    return f"{writer_dir(writer_id)}/{seq:020d}{suffix}"


def anchor_body(writer_id: str, seq: int, hash_: str, time_us: int, host: str, lake: str) -> bytes:
    """The bytes of one anchor (canonical JSON: sorted keys, no spaces)."""
    body = {"v": 1, "writer_id": writer_id, "seq": seq, "hash": hash_, "time_us": time_us, "host": host,
            "lake": lake}  # fmt: skip
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class StoredAnchor:
    """An anchor object as listed: its writer, seq, when the store got it (epoch µs:
    the file's mtime, S3's LastModified) and how many versions of it exist (S3)."""

    writer_id: str
    seq: int
    stored_us: int
    versions: int = 1


class AnchorExists(LakeError):
    """The anchor object is there already (anchors are written once)."""


class AnchorStore(Protocol):
    """A write-once place for anchors."""

    location: str

    def check(self) -> None:
        """LakeError in one line when anchors cannot be written there (no Object Lock, ...)."""

    def put(self, name: str, data: bytes) -> None:
        """Write a new object; :class:`AnchorExists` when it is there already."""

    def get(self, name: str) -> bytes | None:
        """The object's first version (None: there is none)."""

    def listing(self) -> list[StoredAnchor]:
        """Every anchor (``.json``) there."""


def seq_of(name: str) -> int | None:
    stem, _, suffix = name.rpartition(".")
    return int(stem) if suffix == "json" and stem.isdigit() else None


class DirectoryStore:
    """Anchors as files of a directory: created with ``O_EXCL``, synced, then read-only."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.root = Path(location)

    def check(self) -> None:
        if not self.root.is_dir():
            raise LakeError(f"the audit anchor directory {self.root} does not exist (audit.anchor)")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise LakeError(f"the audit anchor directory {self.root} is not writable (audit.anchor)")

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        try:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            raise AnchorExists(f"anchor {name} exists already") from None
        except OSError as exc:
            raise LakeError(f"cannot write the audit anchor {path}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise LakeError(f"cannot write the audit anchor {path}: {exc.strerror or exc}") from exc

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            why = exc.strerror or exc
            raise LakeError(f"cannot read the audit anchor {self.root / name}: {why}") from exc

    def listing(self) -> list[StoredAnchor]:
        out: list[StoredAnchor] = []
        if not self.root.is_dir():
            raise LakeError(f"the audit anchor directory {self.root} does not exist (audit.anchor)")
        for sub in os.scandir(self.root):
            if not sub.is_dir():
                continue
            writer = "" if sub.name == DEFAULT_WRITER_DIR else sub.name
            for item in os.scandir(sub.path):
                seq = seq_of(item.name)
                if seq is not None and item.is_file(follow_symlinks=False):  # the directory's d_type
                    out.append(
                        StoredAnchor(writer, seq, item.stat(follow_symlinks=False).st_mtime_ns // 1000)
                    )
        return out
