"""Passwords: argon2id hashes (argon2-cffi) and the password policy.

A password is never stored: only its argon2id hash (the PHC string, with its salt and
parameters), in the credential store beside the lake (:mod:`uns.users.credentials`).
The policy (21 CFR Part 11 §11.300): at least ``web.password_min_length`` characters,
at most 1024, not containing the user id, different from the last ``web.password_history``
passwords of the user.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from uns.errors import UserError

__all__ = ["MAX_PASSWORD", "check_policy", "hash_password", "verify_password"]

#: the longest password accepted (untrusted input is bounded; argon2 would take any length)
MAX_PASSWORD: Final = 1024
#: argon2-cffi's defaults are RFC 9106's second recommendation: argon2id, t=3, m=64 MiB, p=4
_HASHER: Final = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (a PHC string: ``$argon2id$v=19$m=...``)."""
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` (an argon2 hash) was made of."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_policy(user: str, password: str, *, min_length: int, previous: Iterable[str] = ()) -> None:
    """UserError (field ``password``) naming the rule a new password breaks; ``previous``
    are the hashes of the passwords it must differ from."""

    def refuse(message: str) -> UserError:
        return UserError(message, field="password")

    if len(password) < min_length:
        raise refuse(f"the password must have at least {min_length} characters")
    if len(password) > MAX_PASSWORD:
        raise refuse(f"the password must have at most {MAX_PASSWORD} characters")
    if user.lower() in password.lower():
        raise refuse("the password must not contain the user id")
    if any(verify_password(old, password) for old in previous):
        raise refuse("the password must differ from the previous ones")
