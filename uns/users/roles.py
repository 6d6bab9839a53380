"""Who may do what in the review workspace: one table, checked in one place (pure).

| role | may |
|---|---|
| ``viewer`` | see the batches, their reports, review state and audit trail |
| ``operator`` | also set or correct a batch's context (``set_context``) |
| ``reviewer`` | also disposition exceptions and sign ``reviewed`` or ``rejected`` |
| ``approver`` | also sign ``approved`` or ``rejected`` |
| ``admin`` | also list users and unlock accounts (``manage_users``) |

Every role may ``view``.  Roles do not imply each other: an approver who is to review
needs ``reviewer`` too (and still may not approve a batch they reviewed: four eyes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from uns.config_web import ROLES
from uns.errors import PermissionDenied, UserError

__all__ = ["ACTIONS", "ROLES", "allowed", "check_roles", "require"]

#: action -> the roles that may do it
ACTIONS: Final[dict[str, frozenset[str]]] = {
    "view": frozenset(ROLES),
    "set_context": frozenset({"operator"}),
    "dispose": frozenset({"reviewer"}),
    "sign:reviewed": frozenset({"reviewer"}),
    "sign:approved": frozenset({"approver"}),
    "sign:rejected": frozenset({"reviewer", "approver"}),
    "manage_users": frozenset({"admin"}),
}


def allowed(roles: Iterable[str], action: str) -> bool:
    """Whether any of ``roles`` may do ``action``."""
    return not ACTIONS[action].isdisjoint(roles)


def require(user: str, roles: Iterable[str], action: str) -> None:
    """PermissionDenied unless ``roles`` allow ``action``."""
    roles = tuple(roles)
    if not allowed(roles, action):
        who = " or ".join(sorted(ACTIONS[action]))
        raise PermissionDenied(
            f"{user} ({', '.join(roles) or 'no role'}) may not {action.replace('_', ' ').replace(':', ' ')}: "
            f"that needs the role {who}",
            action=action,
        )


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles, known and without repeats, in the table's order; UserError otherwise."""
    given = [r.strip() for r in roles if r.strip()]
    unknown = [r for r in given if r not in ROLES]
    if unknown or not given:
        raise UserError(
            f"roles must be some of {', '.join(ROLES)}, got {', '.join(given) or 'none'}", field="roles"
        )
    return tuple(r for r in ROLES if r in given)
