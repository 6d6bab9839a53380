"""The users of the review workspace: accounts, passwords, roles, log-ins and sessions.

Accounts and every log-in live in the lake's audit trail (:mod:`uns.users.state`,
:mod:`uns.users.store`), password hashes beside it (:mod:`uns.users.credentials`,
argon2id: :mod:`uns.users.passwords`); :mod:`uns.users.roles` says who may do what,
:mod:`uns.users.access` holds the log-in and lockout rules and the sessions,
:mod:`uns.users.ldap` asks a directory, :mod:`uns.users.manage` changes accounts.
Both faces (``uns users``, ``uns serve``) call these; docs/web.md describes them.
"""

from __future__ import annotations

from uns.users.access import AccessControl
from uns.users.manage import (
    add_user,
    cli_store,
    disable_user,
    enable_user,
    list_users,
    set_password,
    unlock_user,
)
from uns.users.roles import ACTIONS, ROLES, allowed, require
from uns.users.sessions import Identity, Session
from uns.users.store import UserStore

__all__ = [
    "ACTIONS",
    "ROLES",
    "AccessControl",
    "Identity",
    "Session",
    "UserStore",
    "add_user",
    "allowed",
    "cli_store",
    "disable_user",
    "enable_user",
    "list_users",
    "require",
    "set_password",
    "unlock_user",
]
