"""The users of the review workspace, as their audit entries say (pure: no I/O, no clock).

Every user change and every log-in is an entry of the lake's audit trail
(docs/web.md lists the kinds); the state here is those entries folded in the
trail's order (time, writer, seq).  Several ``uns serve`` processes and ``uns users``
commands write the entries; each folds the same entries to the same state.

- an **account** (``user_added``, ``user_changed``, ``user_disabled``, ``user_enabled``,
  ``password_set``): user id, printed full name, roles, disabled or not, and the
  SHA-256 of each password hash it had (the hashes themselves are kept beside the lake,
  :mod:`uns.users.credentials`), newest last;
- **access** per user name (``login``, ``login_failed``, ``lockout``, ``user_unlocked``):
  failed log-ins in a row and the lockout.  A name without an account has access too
  (a directory user, or a name someone tries).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ACCESS_KINDS",
    "ACCOUNT_KINDS",
    "KINDS",
    "Access",
    "Account",
    "Directory",
]

ACCOUNT_KINDS: Final = ("user_added", "user_changed", "user_disabled", "user_enabled", "password_set")
#: ``logout`` and ``idle_logout`` change nothing here, but they are the trail's record of sessions
ACCESS_KINDS: Final = ("login", "login_failed", "lockout", "user_unlocked", "logout", "idle_logout")
KINDS: Final = ACCOUNT_KINDS + ACCESS_KINDS
#: the reasons of a ``login_failed`` entry that count towards a lockout (a log-in refused
#: because the account is locked or disabled does not: the password was not even tried)
COUNTED: Final = ("wrong password", "wrong password at signature")


@dataclass(slots=True)
class Account:
    """A user of ``uns users`` (a directory user has none)."""

    user: str
    full_name: str
    roles: tuple[str, ...]
    disabled: bool = False
    credentials: list[str] = field(default_factory=list)  # SHA-256 of each password hash, newest last
    added_us: int = 0
    added_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "full_name": self.full_name,
            "roles": list(self.roles),
            "disabled": self.disabled,
            "has_password": bool(self.credentials),
            "added_us": self.added_us,
            "added_by": self.added_by,
        }


@dataclass(slots=True)
class Access:
    """Log-in attempts of one user name."""

    failures: int = 0  # failed log-ins in a row (since the last success, lockout or unlock)
    locked: bool = False
    locked_until_us: int | None = None  # None while locked: until an administrator unlocks
    last_login_us: int | None = None

    def locked_at(self, now_us: int) -> bool:
        """Whether the account is locked at ``now_us``."""
        return self.locked and (self.locked_until_us is None or now_us < self.locked_until_us)


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(slots=True)
class Directory:
    """Accounts and access, folded from the entries in the trail's order."""

    accounts: dict[str, Account] = field(default_factory=dict)
    access: dict[str, Access] = field(default_factory=dict)
    last: tuple[int, str, int] = (0, "", 0)  # the order of the newest entry folded in

    def access_of(self, user: str) -> Access:
        return self.access.get(user) or Access()

    def apply(self, ts_us: int, kind: str, actor: str, subject: str, detail_text: str) -> None:
        """Fold one entry in (entries must come in the trail's order)."""
        detail = _detail(detail_text)
        user = str(detail.get("user") or subject)
        if kind in ACCOUNT_KINDS:
            self._account(ts_us, kind, actor, user, detail)
        elif kind in ACCESS_KINDS:
            self._access(ts_us, kind, user, detail)

    def _account(self, ts_us: int, kind: str, actor: str, user: str, detail: dict[str, Any]) -> None:
        account = self.accounts.get(user)
        if kind == "user_added":
            self.accounts[user] = Account(
                user, str(detail.get("full_name", "")), _roles(detail), added_us=ts_us, added_by=actor
            )
            return
        if account is None:
            return  # a change of an account the trail never added: nothing to change
        if kind == "user_changed":
            if "full_name" in detail:
                account.full_name = str(detail["full_name"])
            if "roles" in detail:
                account.roles = _roles(detail)
        elif kind == "user_disabled":
            account.disabled = True
        elif kind == "user_enabled":
            account.disabled = False
        elif kind == "password_set" and isinstance(detail.get("credential"), str):
            account.credentials.append(detail["credential"])

    def _access(self, ts_us: int, kind: str, user: str, detail: dict[str, Any]) -> None:
        access = self.access.setdefault(user, Access())
        if kind == "login":
            access.failures = 0
            access.last_login_us = ts_us
        elif kind == "login_failed" and detail.get("reason") in COUNTED:
            access.failures += 1
        elif kind == "lockout":
            access.failures = 0
            access.locked = True
            until = detail.get("until_us")
            access.locked_until_us = int(until) if isinstance(until, int) else None
        elif kind == "user_unlocked":
            access.failures = 0
            access.locked = False
            access.locked_until_us = None

    def fold(self, rows: Iterable[tuple[int, str, int, str, str, str, str]]) -> None:
        """Fold ``(ts_us, writer_id, seq, kind, actor, subject, detail)`` rows in, in order."""
        for ts_us, writer, seq, kind, actor, subject, detail in rows:
            self.apply(ts_us, kind, actor, subject, detail)
            self.last = max(self.last, (ts_us, writer, seq))


def _roles(detail: dict[str, Any]) -> tuple[str, ...]:
    roles = detail.get("roles")
    return tuple(str(r) for r in roles) if isinstance(roles, list) else ()
