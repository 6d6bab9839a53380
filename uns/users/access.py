"""Log-in, lockout, re-authentication and sessions: the rules of 21 CFR Part 11 §11.300.

:class:`AccessControl` is what the web workspace asks (it holds no rule of its own):

- :meth:`~AccessControl.login` checks the lockout *before* the password (a locked
  account is refused with the right password too), then the password (a ``uns users``
  account by its argon2id hash; any other name against the directory of
  ``[web.ldap]``), the account (not disabled, some role), and opens a session.  A wrong
  password is a ``login_failed`` entry; ``web.max_failed_logins`` of them in a row lock
  the account for ``web.lockout_s`` (a ``lockout`` entry; 0: until an administrator
  unlocks it).  A successful log-in is a ``login`` entry and resets the count.
- :meth:`~AccessControl.reauthenticate` asks the password again at every signature
  (§11.200: the signer's password with each signing); a wrong one counts like a failed
  log-in.
- :meth:`~AccessControl.session` finds the session of a request's cookie; one idle for
  ``web.session_idle_s`` has ended (an ``idle_logout`` entry), and so has one whose
  account was disabled or locked meanwhile (by any process over the lake).

Every entry's actor is the user id the attempt was for; its subject the same.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from uns.config_web import WebSection
from uns.errors import AccountLocked, AuthenticationError, PermissionDenied
from uns.users.passwords import hash_password, verify_password
from uns.users.sessions import Identity, Session, Sessions
from uns.users.store import UserStore

if TYPE_CHECKING:
    from uns.users.ldap import LdapDirectory

__all__ = ["AccessControl"]

#: the longest user name looked at (longer ones are refused before any work)
_MAX_NAME = 64
#: how old the users' state may be when a request is checked (seconds): other processes'
#: changes (a disabled account, a lockout) end a session here within this time
STATE_MAX_AGE_S = 2.0


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_NAME else text[:_MAX_NAME] + "…"


class AccessControl:
    """Log-ins and sessions over the users of ``store``, with the rules of ``web``."""

    def __init__(
        self,
        store: UserStore,
        web: WebSection,
        *,
        ldap: LdapDirectory | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.web = web
        self.ldap = ldap
        self._clock = clock
        self.sessions = Sessions(int(web.session_idle_s * 1_000_000))

    def now_us(self) -> int:
        return self._clock() // 1000

    # ---------------------------------------------------------------- log-in
    def login(self, username: str, password: str, *, remote: str = "") -> tuple[str, Session]:
        """A new session (its cookie token and the session) for the right password; else
        AuthenticationError (401), AccountLocked (423), PermissionDenied (no role, 403)."""
        user = _clip(username.strip())
        identity = self._verify(user, password, where="log-in", remote=remote)
        token, session = self.sessions.open(identity, self.now_us())
        detail = {"session": session.id, "source": identity.source, "roles": list(identity.roles)}
        self.store.record("login", user, detail | ({"remote": remote} if remote else {}), actor=user)
        return token, session

    def reauthenticate(self, session: Session, password: str) -> Identity:
        """The session's user, with the roles the account has now, when ``password`` is
        theirs (the password is asked again for every signature)."""
        identity = self._verify(session.identity.user, password, where="signature")
        session.identity = identity
        return identity

    def _verify(self, user: str, password: str, *, where: str, remote: str = "") -> Identity:
        state = self.store.refresh()
        access = state.access_of(user)
        base = {"remote": remote} if remote else {}
        if access.locked_at(self.now_us()):
            self.store.record("login_failed", user, base | {"reason": "locked", "at": where}, actor=user)
            raise AccountLocked(user, access.locked_until_us)
        account = state.accounts.get(user)
        identity: Identity | None = None
        if account is not None:
            stored = self.store.current_hash(account)
            if stored is not None and verify_password(stored, password):
                identity = Identity(user, account.full_name, account.roles, "local")
            reason = "wrong password" if stored is not None else "no password set"
        elif self.ldap is not None and user:
            identity = self.ldap.authenticate(user, password)
            reason = "wrong password"
        else:
            verify_password(_dummy_hash(), password)  # as long as for a real account: names do not leak
            reason = "unknown user"
        if identity is None:
            if where == "signature" and reason == "wrong password":
                reason = "wrong password at signature"
            self.store.record("login_failed", user, base | {"reason": reason, "at": where}, actor=user)
            self._lock_if_due(user)
            raise AuthenticationError(
                "wrong user name or password" if where == "log-in" else "wrong password"
            )
        if account is not None and account.disabled:
            self.store.record("login_failed", user, base | {"reason": "disabled", "at": where}, actor=user)
            raise AuthenticationError(f"the account {user!r} is disabled")
        if not identity.roles:
            self.store.record("login_failed", user, base | {"reason": "no role", "at": where}, actor=user)
            raise PermissionDenied(f"{user} has no role in the review workspace", action="view")
        return identity

    def _lock_if_due(self, user: str) -> None:
        access = self.store.refresh().access_of(user)
        if access.failures < self.web.max_failed_logins or access.locked_at(self.now_us()):
            return
        now = self.now_us()
        until = now + int(self.web.lockout_s * 1_000_000) if self.web.lockout_s > 0 else None
        detail = {"failures": access.failures, "until_us": until}
        self.store.record("lockout", user, detail, actor=user)
        for session in self.sessions.of_user(user):
            self.store.record("logout", user, {"session": session.id, "why": "locked out"}, actor=user)
        raise AccountLocked(user, until)

    # ---------------------------------------------------------------- sessions
    def session(self, token: str | None) -> Session | None:
        """The live session of a request's token (touched), None when there is none; an idle
        one ends here, as does one whose account was disabled or locked meanwhile."""
        session, idle = self.sessions.find(token, self.now_us())
        if idle is not None:
            self._idle_logout(idle)
            return None
        if session is None:
            return None
        user = session.identity.user
        state = self.store.refresh(STATE_MAX_AGE_S)
        account = state.accounts.get(user)
        why = None
        if state.access_of(user).locked_at(self.now_us()):
            why = "locked out"
        elif account is not None and account.disabled:
            why = "account disabled"
        elif account is not None and account.roles != session.identity.roles:
            session.identity = Identity(user, account.full_name, account.roles, "local")
        if why is not None:
            self.sessions.close(session)
            self.store.record("logout", user, {"session": session.id, "why": why}, actor=user)
            return None
        return session

    def logout(self, session: Session) -> None:
        if self.sessions.close(session):
            user = session.identity.user
            self.store.record("logout", user, {"session": session.id}, actor=user)

    def end_idle(self) -> int:
        """End every idle session (an ``idle_logout`` entry each); returns how many."""
        gone = self.sessions.idle(self.now_us())
        for session in gone:
            self._idle_logout(session)
        return len(gone)

    def _idle_logout(self, session: Session) -> None:
        user = session.identity.user
        idle_s = round((self.now_us() - session.last_us) / 1e6, 1)
        self.store.record("idle_logout", user, {"session": session.id, "idle_s": idle_s}, actor=user)
