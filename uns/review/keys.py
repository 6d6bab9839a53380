"""The workspace's own signing key (``web.signing_key``): it signs what the users sign.

It must be an Ed25519 key trusted as a *service* key (``uns keys trust ... --service``),
so :func:`uns.batch.signing.sign_report` lets it sign for the users the workspace
authenticates; ``uns serve`` refuses to start without it, in one line saying how to make one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from uns.audit.signatures import SigningKey
from uns.batch.signing import signing_key
from uns.config import Config
from uns.errors import SignatureError, UnsError
from uns.keyring import TrustedKey, load_keyring

__all__ = ["HOW", "ServerKey", "server_key"]

#: how to make the server's key, said when there is none (one line)
HOW: str = (
    "make one with `uns keys new uns-web --dir /etc/uns/keys`, trust it with `uns keys trust "
    "/etc/uns/keys/uns-web.pub --name uns-web --full-name 'uns review workspace' --service --reason ...`, "
    "and set web.signing_key (UNS_WEB_SIGNING_KEY=/etc/uns/keys/uns-web.key)"
)


@dataclass(slots=True)
class ServerKey:
    """The server's signing key, and the trusted keys (read again when their directory changes)."""

    key: SigningKey
    trusted_dir: str | None
    _keyring: dict[str, TrustedKey] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keyring(self) -> Mapping[str, TrustedKey]:
        with self._lock:
            if not self._keyring:
                self._keyring = load_keyring(self.trusted_dir)
            return self._keyring

    def reload(self) -> None:
        with self._lock:
            self._keyring = {}


def server_key(cfg: Config) -> ServerKey:
    """The key of ``web.signing_key``, trusted as a service key; UnsError saying how to
    make one when it is missing or cannot sign."""
    if not cfg.web.signing_key:
        raise UnsError(f"uns serve needs its signing key: {HOW}")
    keyring = load_keyring(cfg.audit.trusted_keys)
    try:
        key, trusted = signing_key(cfg.web.signing_key, keyring)
    except SignatureError as exc:
        raise UnsError(f"uns serve cannot sign with web.signing_key: {exc.reason}; {HOW}") from exc
    if trusted.owner is None or trusted.owner.signs_for != "users":
        raise UnsError(
            f"web.signing_key {key.name!r} is not trusted as a service key (it would sign only for "
            f"its owner): trust it with `uns keys trust ... --name {key.name} --service`"
        )
    return ServerKey(key, cfg.audit.trusted_keys, keyring)
