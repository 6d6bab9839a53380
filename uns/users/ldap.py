"""Log-in against a directory: LDAP simple bind as the user (ldap3), roles from its groups.

The user binds with the DN of ``web.ldap`` ``user_dn`` (``{user}`` replaced, escaped as
an RDN value) and the password typed; the directory says yes or no (and applies its own
password policy).  Bound as the user, the workspace reads the user's printed name
(``name_attribute``) and the groups under ``group_base`` that have the user as a member
(``group_filter`` with ``{dn}`` and ``{user}``, escaped), and maps them to roles with
``[web.ldap.roles]`` (by the group's ``cn`` or its whole DN, case-insensitive).  No
service account and no password are kept.  An empty password is refused before any
bind: LDAP would take it as an anonymous bind and say yes.
"""

from __future__ import annotations

import contextlib
import ssl
import warnings
from typing import Any

with warnings.catch_warnings():
    # ldap3 2.9 uses names that pyasn1 0.6 deprecates (tagMap, typeMap): noise, not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    from ldap3 import BASE, SUBTREE, Connection, Server, Tls
    from ldap3.core.exceptions import LDAPException
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

from uns.config_web import ROLES, LdapSettings
from uns.errors import UnsError
from uns.users.sessions import Identity

__all__ = ["DirectoryUnavailable", "LdapDirectory"]


class DirectoryUnavailable(UnsError):
    """The directory cannot be reached or answered with an error (not a wrong password)."""


class LdapDirectory:
    """The directory of ``[web.ldap]``."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        tls = None
        if settings.url.startswith("ldaps://") or settings.start_tls:
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file)
        self._server = Server(settings.url, connect_timeout=settings.timeout_s, tls=tls, get_info="NO_INFO")

    def dn_of(self, user: str) -> str:
        return self.settings.user_dn.replace("{user}", escape_rdn(user))

    def authenticate(self, user: str, password: str) -> Identity | None:
        """The identity of ``user`` when the directory accepts ``password``, else None;
        DirectoryUnavailable when it cannot be asked."""
        if not password:
            return None
        dn = self.dn_of(user)
        s = self.settings
        conn = Connection(
            self._server, user=dn, password=password, receive_timeout=max(1, round(s.timeout_s)),
            raise_exceptions=False, read_only=True,
        )  # fmt: skip
        try:
            if not _open(conn, s.start_tls):
                raise DirectoryUnavailable(f"the directory {s.url} cannot be reached: {conn.result}")
            if not conn.bind():
                if (conn.result or {}).get("description") == "invalidCredentials":
                    return None
                raise DirectoryUnavailable(f"the directory {s.url} refused the bind: {_said(conn)}")
            return Identity(user, self._full_name(conn, dn, user), self._roles(conn, dn, user), "ldap")
        except LDAPException as exc:
            raise DirectoryUnavailable(f"the directory {s.url} cannot be asked: {exc}") from exc
        finally:
            _close(conn)

    def _full_name(self, conn: Connection, dn: str, user: str) -> str:
        attribute = self.settings.name_attribute
        if conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=[attribute]) and conn.entries:
            values = conn.entries[0].entry_attributes_as_dict.get(attribute) or []
            if values:
                return str(values[0])
        return user

    def _roles(self, conn: Connection, dn: str, user: str) -> tuple[str, ...]:
        s = self.settings
        if not s.group_base:
            return ()
        query = s.group_filter.replace("{dn}", escape_filter_chars(dn)).replace(
            "{user}", escape_filter_chars(user)
        )
        if not conn.search(s.group_base, query, search_scope=SUBTREE, attributes=["cn"]):
            return ()
        mapping = dict(s.roles)
        roles: set[str] = set()
        for found in conn.entries:
            names = [str(found.entry_dn).lower()]
            names += [str(cn).lower() for cn in found.entry_attributes_as_dict.get("cn", [])]
            for name in names:
                roles.update(mapping.get(name, ()))
        return tuple(r for r in ROLES if r in roles)


def _close(conn: Connection) -> None:
    """Unbind and close the socket: ldap3 leaves a socket that failed to connect open."""
    with contextlib.suppress(LDAPException, OSError):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _open(conn: Connection, start_tls: bool) -> bool:
    conn.open()
    if conn.closed:
        return False
    return bool(conn.start_tls()) if start_tls else True


def _said(conn: Connection) -> Any:
    result = conn.result or {}
    return result.get("description") or result.get("message") or result
