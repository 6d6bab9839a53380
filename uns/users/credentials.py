"""The password hashes of the users, beside the lake: ``<lake>/_credentials/<sha256>``.

The audit trail says which hash is a user's password (its ``password_set`` entry names
the hash's SHA-256, ``credential``); the hash itself is not in the trail, which is
listed, exported and printed.  Each file holds one argon2id hash and is named by the
SHA-256 of its content: written once (a new name for every new password, so writers
never race), checked on every read (a file edited or swapped for another user's hash
does not match its name, and the trail names the name).  Mode 0600 in a 0700
directory: only the account that runs ``uns serve`` and ``uns users`` reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Final

from uns.errors import UserError

__all__ = ["DIRECTORY", "credential_id", "read_credential", "store_credential"]

DIRECTORY: Final = "_credentials"
_MAX_BYTES: Final = 4096  # an argon2 PHC string is about 100 bytes


def _dir(lake: str | Path) -> Path:
    return Path(lake) / DIRECTORY


def credential_id(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("ascii")).hexdigest()


def store_credential(lake: str | Path, password_hash: str) -> str:
    """Keep ``password_hash``; returns its SHA-256 (the name the audit entry gives)."""
    name = credential_id(password_hash)
    directory = _dir(lake)
    path, tmp = directory / name, directory / f".{name}.{os.getpid()}.tmp"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        if path.exists():
            return name  # the same hash again (its salt makes that all but impossible)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(password_hash)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"cannot store the password hash in {directory}: {exc.strerror or exc}") from exc
    return name


def read_credential(lake: str | Path, name: str) -> str | None:
    """The hash named ``name``, None when it is missing or does not match its name."""
    if len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
        return None
    try:
        with (_dir(lake) / name).open("rb") as f:
            data = f.read(_MAX_BYTES)
    except OSError:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if credential_id(text) == name else None
