"""The users of a lake: read from its audit trail, changed by appending to it.

:class:`UserStore` folds the user entries of the trail (:mod:`uns.users.state`) and
keeps up with it (:class:`uns.audit.follow.AuditFollower`); every change it makes is one
audit entry, written to the chain of whoever makes it (``uns users`` commands: the
``uns-cli`` chain; a ``uns serve`` process: its ``web.writer_id``), then read back like
anyone else's.  So several servers and commands over one lake agree on the users.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from uns.audit.follow import AuditFollower, order
from uns.errors import UserError
from uns.lake.audit_entries import Entry, entry
from uns.lake.hashing import ChainRow
from uns.users.credentials import read_credential
from uns.users.state import KINDS, Account, Directory

__all__ = ["Recorder", "UserStore", "check_full_name", "check_user_id"]

#: appends entries to a chain of the audit trail
Recorder = Callable[[Sequence[Entry]], object]

_USER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MAX_NAME: Final = 200


def check_user_id(user: str) -> str:
    """A user id: 1-64 of letters, digits, ``.``, ``_``, ``@``, ``-`` (first a letter or digit)."""
    if not _USER_ID.match(user):
        raise UserError(
            f"bad user id {user[:80]!r}: 1-64 letters, digits, '.', '_', '@', '-' (first a letter or digit)",
            field="username",
        )
    return user


def check_full_name(name: str) -> str:
    """A printed full name: 1-200 characters, no control characters, trimmed."""
    name = name.strip()
    if not name or len(name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"the full name must be 1-{_MAX_NAME} printable characters", field="full_name")
    return name


def _rows(rows: list[ChainRow]) -> list[tuple[int, str, int, str, str, str, str]]:
    return [(r.ts, r.writer_id, r.seq, r.kind, r.actor, r.subject, r.detail) for r in rows]


def _now_us() -> int:
    return time.time_ns() // 1000


class UserStore:
    """The users of the lake at ``root``; ``record`` appends to this process's chain."""

    def __init__(self, root: str | Path, record: Recorder) -> None:
        self.root = Path(root)
        self._record = record
        self._follower = AuditFollower(self.root, KINDS)
        self._state = Directory()
        self._all: list[ChainRow] = []  # every entry folded in, in order (to fold anew)
        self._lock = threading.RLock()
        self._refreshed = 0.0

    # ---------------------------------------------------------------- reading
    def refresh(self, max_age_s: float = 0.0) -> Directory:
        """The state with every entry of the trail folded in (at most ``max_age_s`` old)."""
        with self._lock:
            if max_age_s and time.monotonic() - self._refreshed < max_age_s:
                return self._state
            rows = self._follower.refresh()
            self._refreshed = time.monotonic()
            if rows and order(rows[0]) < self._state.last:
                # another writer's entry older than one folded already: fold it all anew
                everything = self._all + rows
                everything.sort(key=order)
                self._state = Directory()
                self._state.fold(_rows(everything))
                self._all = everything
            else:
                self._state.fold(_rows(rows))
                self._all.extend(rows)
            return self._state

    def account(self, user: str) -> Account | None:
        return self.refresh().accounts.get(user)

    def accounts(self) -> list[Account]:
        return sorted(self.refresh().accounts.values(), key=lambda a: a.user)

    def password_hashes(self, account: Account, newest: int) -> list[str]:
        """The hashes of the ``newest`` passwords of ``account`` that can be read, newest first."""
        names = account.credentials[::-1][:newest]
        return [h for h in (read_credential(self.root, n) for n in names) if h is not None]

    def current_hash(self, account: Account) -> str | None:
        """The hash of the account's password, None when it has none (or it cannot be read:
        missing, or not the one its audit entry names)."""
        if not account.credentials:
            return None
        return read_credential(self.root, account.credentials[-1])

    # ---------------------------------------------------------------- writing
    def record(
        self,
        kind: str,
        user: str,
        detail: Mapping[str, Any],
        *,
        actor: str,
        reason: str = "",
        ts_us: int | None = None,
    ) -> None:
        """Append one entry about ``user`` (its ``subject``) and fold it in."""
        with self._lock:
            self._record([entry(ts_us or _now_us(), kind, user, {"user": user, **detail}, actor=actor,
                                reason=reason)])  # fmt: skip
            self.refresh()
