"""The ``[broker]`` section of the config: where the brokers are and how to talk to them.

Part of :mod:`uns.config` (which re-exports :class:`BrokerSection`): one broker
(``url``) or several (``urls``, one Sparkplug host session each; the first is
the home broker), credentials, TLS files, keepalive, reconnect backoff and the
MQTT protocol version (``protocol``: "3.1.1" or "5").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from uns.config_options import MASK as _MASK
from uns.config_options import require as _require
from uns.errors import ConfigError
from uns.mqtt.settings import BrokerSettings, parse_broker_url

__all__ = ["PROTOCOLS", "BrokerSection"]

#: ``broker.protocol`` -> the protocol level of CONNECT
PROTOCOLS: Final[Mapping[str, int]] = {"3.1.1": 4, "5": 5}


@dataclass(frozen=True, slots=True)
class BrokerSection:
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    reconnect_min: float = 0.5  # seconds, first reconnect delay
    reconnect_max: float = 30.0  # seconds, backoff cap
    connect_retries: int = -1  # attempts at start-up before giving up; -1 = forever
    #: "3.1.1" or "5" (MQTT 5.0: reason codes, session expiry, receive maximum)
    protocol: str = "3.1.1"
    #: several brokers, each with its own Sparkplug host session (empty: ``url`` alone);
    #: the first is the home broker (context, republish, ``uns cmd``)
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require("broker.protocol", self.protocol, self.protocol in PROTOCOLS, "'3.1.1' or '5'")
        self.all_settings()  # raises ConfigError(key="broker.url"/"broker.urls") for a bad URL
        hosts = [(s.host, s.port) for s in self.all_settings()]
        _require("broker.urls", list(self.urls), len(set(hosts)) == len(hosts), "distinct brokers")

    def __repr__(self) -> str:  # neither the password nor one in the URL shows
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["url"] = parse_broker_url(self.url).masked_url()
        shown["urls"] = tuple(parse_broker_url(u).masked_url() for u in self.urls)
        if self.password is not None:
            shown["password"] = _MASK
        return f"BrokerSection({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def settings(self) -> BrokerSettings:
        """The home broker: the first of ``urls``, else ``url``."""
        return self._settings(self.urls[0] if self.urls else self.url)

    def all_settings(self) -> tuple[BrokerSettings, ...]:
        """Every broker the host connects to, the home broker first."""
        return tuple(self._settings(u) for u in self.urls) if self.urls else (self._settings(self.url),)

    def _settings(self, url: str) -> BrokerSettings:
        try:
            b = parse_broker_url(url).with_credentials(self.username, self.password)
        except ConfigError as exc:
            if self.urls:
                raise ConfigError(
                    str(exc).replace("broker URL", "broker.urls entry"), key="broker.urls"
                ) from exc
            raise
        return dataclasses.replace(
            b,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            tls_insecure=self.tls_insecure,
            keepalive=self.keepalive,
            protocol=PROTOCOLS[self.protocol],
        )
