"""Log-in sessions of one ``uns serve`` process (no I/O; times are arguments).

A session is known by a random token (256 bits; the browser keeps it in an HttpOnly,
SameSite=Strict cookie); this table keeps only the token's SHA-256, so a memory dump
does not hand out live sessions.  Each session has its own CSRF token, which every
state-changing request must carry.  A session ends by a log-out, by
``web.session_idle_s`` without a request (an idle log-out), or when its user is
locked out or disabled.  Sessions live in the process: behind a load balancer, route a
client to one server (docs/web.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

__all__ = ["Identity", "Session", "Sessions"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is logged in: user id, printed full name, roles, and where the account is."""

    user: str
    full_name: str
    roles: tuple[str, ...]
    source: str  # "local" (uns users) or "ldap"


@dataclass(slots=True)
class Session:
    key: str  # SHA-256 of the token (hex)
    identity: Identity
    csrf: str
    created_us: int
    last_us: int

    @property
    def id(self) -> str:
        """A short id of the session for the audit trail (not enough to use it)."""
        return self.key[:16]

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The live sessions; ``idle_us`` without a request ends one."""

    def __init__(self, idle_us: int) -> None:
        self.idle_us = idle_us
        self._by_key: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, identity: Identity, now_us: int) -> tuple[str, Session]:
        """A new session of ``identity``: its token (for the cookie) and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(_key(token), identity, secrets.token_urlsafe(32), now_us, now_us)
        with self._lock:
            self._by_key[session.key] = session
        return token, session

    def find(self, token: str | None, now_us: int) -> tuple[Session | None, Session | None]:
        """(the live session of ``token``, touched; or None) and the session that ``token``
        had if it has just ended by idling (removed; the caller records the idle log-out)."""
        if not token or len(token) > 200:
            return None, None
        with self._lock:
            session = self._by_key.get(_key(token))
            if session is None:
                return None, None
            if now_us - session.last_us >= self.idle_us:
                del self._by_key[session.key]
                return None, session
            session.last_us = now_us
            return session, None

    def close(self, session: Session) -> bool:
        """End ``session``; False when it had ended already."""
        with self._lock:
            return self._by_key.pop(session.key, None) is not None

    def idle(self, now_us: int) -> list[Session]:
        """Remove and return the sessions idle for ``idle_us`` or longer."""
        with self._lock:
            gone = [s for s in self._by_key.values() if now_us - s.last_us >= self.idle_us]
            for s in gone:
                del self._by_key[s.key]
        return gone

    def of_user(self, user: str) -> list[Session]:
        """Remove and return every session of ``user`` (locked out, disabled)."""
        with self._lock:
            gone = [s for s in self._by_key.values() if s.identity.user == user]
            for s in gone:
                del self._by_key[s.key]
        return gone

    def __len__(self) -> int:
        return len(self._by_key)
