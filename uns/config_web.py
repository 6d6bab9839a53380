"""The review workspace's configuration (``uns serve``, docs/web.md): ``[web]`` and its
directory ``[web.ldap]`` with the group-to-role map ``[web.ldap.roles]``.

Part of :mod:`uns.config` (which imports :class:`WebSection` as the section ``web``);
kept apart so the two stay short.  ``[web.ldap]`` is a table of text options (as
``[lake.storage]``): :func:`ldap_settings` checks and reads it, and the section's
validation runs it, so a wrong directory setting stops ``uns serve`` before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import uns.config_options as opts
from uns.config_options import require as _require
from uns.errors import ConfigError

__all__ = ["LDAP_OPTIONS", "ROLES", "LdapSettings", "WebSection", "ldap_settings", "parse_listen"]

#: the roles of the review workspace (docs/web.md says what each may do)
ROLES: Final = ("viewer", "operator", "reviewer", "approver", "admin")
#: the options of [web.ldap] and their defaults ("" = none)
LDAP_OPTIONS: Final = {
    "url": "",  # ldap://host:389 or ldaps://host:636; empty: no directory
    "user_dn": "",  # the DN to bind as, with {user}: uid={user},ou=people,dc=plant,dc=example
    "group_base": "",  # where the groups are searched (empty: no group lookup, no roles)
    "group_filter": "(|(member={dn})(uniqueMember={dn})(memberUid={user}))",
    "name_attribute": "cn",  # the user entry's attribute that holds the printed full name
    "start_tls": "false",  # upgrade an ldap:// connection with StartTLS
    "ca_file": "",  # CA certificates for ldaps:// or StartTLS (empty: the system's)
    "timeout_s": "5",
}
#: the group-to-role map: [web.ldap.roles] <group cn or DN> = "role[,role]"
ROLES_PREFIX: Final = "roles."


def parse_listen(text: str, key: str = "engine.http_listen") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host listens on every interface) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    _require(
        key,
        text,
        bool(sep) and port.isdigit() and int(port) <= 65535 and not any(c in host for c in "[]/ "),
        "host:port (e.g. 127.0.0.1:9464)",
    )
    return host, int(port)


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """``[web.ldap]`` read and checked."""

    url: str
    user_dn: str
    group_base: str
    group_filter: str
    name_attribute: str
    start_tls: bool
    ca_file: str | None
    timeout_s: float
    roles: tuple[tuple[str, tuple[str, ...]], ...]  # group (cn or DN, lower case) -> roles


def ldap_settings(options: tuple[tuple[str, str], ...]) -> LdapSettings | None:
    """The directory of ``[web.ldap]``, None when it has no ``url``; ConfigError naming the
    option for anything wrong."""
    given = dict(options)
    values = dict(LDAP_OPTIONS)
    roles: list[tuple[str, tuple[str, ...]]] = []
    for name, value in given.items():
        if name.startswith(ROLES_PREFIX):
            group = name[len(ROLES_PREFIX) :]
            wanted = tuple(r.strip() for r in value.split(",") if r.strip())
            bad = [r for r in wanted if r not in ROLES]
            _require(
                f"web.ldap.roles.{group}", value, bool(wanted) and not bad, f"roles of {', '.join(ROLES)}"
            )
            roles.append((group.lower(), wanted))
        elif name in LDAP_OPTIONS:
            values[name] = value
        else:
            known = ", ".join([*LDAP_OPTIONS, "roles.<group>"])
            raise ConfigError(f"unknown setting web.ldap.{name} (known: {known})", key=f"web.ldap.{name}")
    if not values["url"]:
        _require("web.ldap.url", "", not given, "set when [web.ldap] has other options")
        return None
    url = values["url"]
    _require(
        "web.ldap.url", url, url.startswith(("ldap://", "ldaps://")), "ldap://host[:port] or ldaps://..."
    )
    _require("web.ldap.user_dn", values["user_dn"], "{user}" in values["user_dn"], "a DN with {user}")
    start_tls = values["start_tls"].lower()
    _require("web.ldap.start_tls", start_tls, start_tls in ("true", "false"), "true or false")
    try:
        timeout = float(values["timeout_s"])
    except ValueError:
        timeout = -1.0
    _require("web.ldap.timeout_s", values["timeout_s"], timeout > 0, "a number of seconds > 0")
    return LdapSettings(
        url=url,
        user_dn=values["user_dn"],
        group_base=values["group_base"],
        group_filter=values["group_filter"],
        name_attribute=values["name_attribute"],
        start_tls=start_tls == "true",
        ca_file=values["ca_file"] or None,
        timeout_s=timeout,
        roles=tuple(sorted(roles)),
    )


@dataclass(frozen=True, slots=True)
class WebSection:
    """``uns serve``: the review workspace (docs/web.md)."""

    #: host:port the workspace listens on
    listen: str = "127.0.0.1:8080"
    #: TLS certificate and key files (PEM); without them serve plain HTTP on loopback or
    #: behind a reverse proxy that ends TLS (docs/web.md)
    tls_cert: str | None = None
    tls_key: str | None = None
    #: TLS ends at a reverse proxy on this host: trust its X-Forwarded-* headers, mark cookies Secure
    behind_proxy: bool = False
    #: the server's Ed25519 private key (uns keys new): it signs what the users sign (env UNS_WEB_SIGNING_KEY)
    signing_key: str | None = None
    #: a session without a request for this long ends (an idle log-out)
    session_idle_s: float = 900.0
    #: failed log-ins in a row that lock an account
    max_failed_logins: int = 5
    #: how long a locked account waits (0: until an administrator unlocks it)
    lockout_s: float = 900.0
    #: the shortest password accepted
    password_min_length: int = 12
    #: a new password must differ from this many previous ones
    password_history: int = 5
    #: this server's chain in the audit trail: each uns serve process over a lake needs its own
    writer_id: str = "uns-web"
    #: the directory (LDAP): a table of options, with a [web.ldap.roles] group-to-role map
    ldap: tuple[tuple[str, str], ...] = opts.option_table(nested=True)

    def __post_init__(self) -> None:
        parse_listen(self.listen, "web.listen")
        _require("web.tls_key", self.tls_key, (self.tls_cert is None) == (self.tls_key is None),
                 "given together with web.tls_cert")  # fmt: skip
        for name, ok, rule in (
            ("session_idle_s", self.session_idle_s > 0, "> 0"),
            ("max_failed_logins", self.max_failed_logins >= 1, ">= 1"),
            ("lockout_s", self.lockout_s >= 0, ">= 0 (0: until an administrator unlocks)"),
            ("password_min_length", 8 <= self.password_min_length <= 1024, "8-1024"),
            ("password_history", 0 <= self.password_history <= 100, "0-100"),
            (
                "writer_id",
                bool(self.writer_id) and self.writer_id.replace("-", "").replace("_", "").isalnum(),
                "letters, digits, '-' and '_'",
            ),
        ):
            _require(f"web.{name}", getattr(self, name), ok, rule)
        ldap_settings(self.ldap)  # raises ConfigError naming the option
