"""Where and how to reach the broker: its URL, credentials, TLS, keepalive; reconnect backoff.

``mqtt://[user[:pass]@]host[:port]`` (default port 1883) or ``mqtts://...``
(TLS, default port 8883).  Username and password may also come from the config;
a password is never printed: :meth:`BrokerSettings.masked_url` hides it.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit

from uns.errors import ConfigError

__all__ = [
    "Backoff",
    "BrokerSettings",
    "parse_broker_url",
    "tls_context",
]


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to connect.  ``repr`` masks the password."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    #: the MQTT protocol level: 4 (MQTT 3.1.1) or 5 (MQTT 5.0)
    protocol: int = 4

    def __repr__(self) -> str:
        url = self.masked_url()
        return f"BrokerSettings({url!r}, ca_file={self.ca_file!r}, cert_file={self.cert_file!r})"

    def masked_url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username is not None:
            auth = self.username + (":***" if self.password is not None else "") + "@"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    def with_credentials(self, username: str | None, password: str | None) -> BrokerSettings:
        return replace(
            self,
            username=username if username is not None else self.username,
            password=password if password is not None else self.password,
        )


def parse_broker_url(url: str) -> BrokerSettings:
    """Parse ``mqtt://[user[:pass]@]host[:port]`` / ``mqtts://...``; raise ConfigError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad broker URL {_mask(url)!r}: {exc}", key="broker.url") from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            f"bad broker URL {_mask(url)!r}: scheme must be mqtt:// or mqtts://", key="broker.url"
        )
    if not parts.hostname:
        raise ConfigError(f"bad broker URL {_mask(url)!r}: no host", key="broker.url")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"bad broker URL {_mask(url)!r}: no path or query allowed", key="broker.url")
    tls = parts.scheme == "mqtts"
    return BrokerSettings(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _mask(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    auth, _, rest = tail.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{head}://{user}:***@{rest}" if ":" in auth else url


def tls_context(b: BrokerSettings) -> ssl.SSLContext:
    """The TLS context for ``b``: its CA file (else the system's), its client certificate.

    ConfigError when a file cannot be loaded."""
    try:
        ctx = ssl.create_default_context(cafile=b.ca_file)
        if b.cert_file:
            ctx.load_cert_chain(b.cert_file, b.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}", key="broker.ca_file") from exc
    if b.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Backoff:
    """Capped exponential backoff with full jitter (seconds)."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        cap = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0
