"""Managing the users of a lake: what ``uns users`` and the workspace's administrators do.

Each change is one audit entry whose actor is who made it: the authenticated
administrator in the workspace, the operating-system user for ``uns users`` (whoever
can write the lake's directory is its administrator; docs/web.md).  Nothing is ever
deleted: an account is disabled, a password replaced (the old hashes stay, for the
no-reuse rule and the record).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uns.config_web import WebSection
from uns.errors import UserError
from uns.lake.audit_entries import Entry, os_user
from uns.users.credentials import store_credential
from uns.users.passwords import check_policy, hash_password
from uns.users.roles import check_roles
from uns.users.state import Account
from uns.users.store import UserStore, check_full_name, check_user_id

__all__ = [
    "add_user",
    "check_new_user",
    "cli_store",
    "disable_user",
    "enable_user",
    "list_users",
    "set_password",
    "unlock_user",
]


def cli_store(lake: str | Path) -> UserStore:
    """The users of ``lake`` for a command run by hand (entries in the ``uns-cli`` chain)."""
    from uns.lake.manual import cli_recorder  # noqa: PLC0415 - the writer loads deltalake

    root = Path(lake)

    def record(entries: Sequence[Entry]) -> None:
        cli_recorder(root).record(list(entries))

    return UserStore(root, record)


def _existing(store: UserStore, user: str) -> Account:
    account = store.account(user)
    if account is None:
        raise UserError(f"no user {user!r} (uns users list shows them)", field="username")
    return account


def add_user(
    store: UserStore,
    user: str,
    *,
    full_name: str,
    roles: Sequence[str],
    password: str | None,
    web: WebSection,
    actor: str | None = None,
) -> Account:
    """Add an account (with its first password, if given)."""
    name, checked = check_new_user(store, user, full_name=full_name, roles=roles)
    if password is not None:
        check_policy(user, password, min_length=web.password_min_length)
    who = actor or os_user()
    store.record("user_added", user, {"full_name": name, "roles": list(checked)}, actor=who)
    if password is not None:
        _store_password(store, user, password, who)
    return _existing(store, user)


def check_new_user(
    store: UserStore, user: str, *, full_name: str, roles: Sequence[str]
) -> tuple[str, tuple[str, ...]]:
    """UserError unless an account ``user`` can be added: (the full name, the roles) checked."""
    check_user_id(user)
    name = check_full_name(full_name)
    checked = check_roles(roles)
    if store.account(user) is not None:
        raise UserError(
            f"user {user!r} exists already (uns users passwd changes a password)", field="username"
        )
    return name, checked


def _store_password(store: UserStore, user: str, password: str, actor: str) -> None:
    name = store_credential(store.root, hash_password(password))
    store.record("password_set", user, {"credential": name}, actor=actor)


def set_password(
    store: UserStore, user: str, password: str, *, web: WebSection, actor: str | None = None
) -> None:
    """Replace the password of ``user`` (checked against the policy and the last ones)."""
    account = _existing(store, user)
    previous = store.password_hashes(account, web.password_history)
    check_policy(user, password, min_length=web.password_min_length, previous=previous)
    _store_password(store, user, password, actor or os_user())


def disable_user(store: UserStore, user: str, *, reason: str = "", actor: str | None = None) -> None:
    """Disable an account: it can no longer log in; its sessions end."""
    if _existing(store, user).disabled:
        raise UserError(f"user {user!r} is disabled already", field="username")
    store.record("user_disabled", user, {}, actor=actor or os_user(), reason=reason)


def enable_user(store: UserStore, user: str, *, reason: str = "", actor: str | None = None) -> None:
    if not _existing(store, user).disabled:
        raise UserError(f"user {user!r} is not disabled", field="username")
    store.record("user_enabled", user, {}, actor=actor or os_user(), reason=reason)


def unlock_user(store: UserStore, user: str, *, reason: str = "", actor: str | None = None) -> None:
    """End the lockout of ``user`` (a local account or a directory user)."""
    check_user_id(user)
    if not store.refresh().access_of(user).locked:
        raise UserError(f"user {user!r} is not locked", field="username")
    store.record("user_unlocked", user, {}, actor=actor or os_user(), reason=reason)


def list_users(store: UserStore, now_us: int) -> list[dict[str, Any]]:
    """Every account with its access: ``locked`` now, ``failures`` in a row, last log-in."""
    state = store.refresh()
    out = []
    for account in sorted(state.accounts.values(), key=lambda a: a.user):
        access = state.access_of(account.user)
        out.append(
            account.to_dict()
            | {
                "locked": access.locked_at(now_us),
                "failures": access.failures,
                "last_login_us": access.last_login_us,
            }
        )
    return out
