"""Why a connection attempt failed, and whether trying again can help.

The one place that maps socket, TLS and CONNACK failures to the error tree:
:class:`~uns.errors.BrokerRefused` for the answers a broker gives again on
every attempt (bad credentials, not authorized, identifier rejected, a
certificate that does not verify, TLS settings that cannot work), plain
:class:`~uns.errors.BrokerError` for what may heal (nobody listening yet, a
timeout, "server unavailable", a connection cut short).  A reconnect loop
retries the latter and stops at the former.

The messages do not name the broker: the caller knows which one it dialled
and says so once.
"""

from __future__ import annotations

import ssl

from uns.errors import BrokerClosedEarly, BrokerError, BrokerRefused, ConfigError
from uns.mqtt.wire import CONNACK_REASONS, ConnAck, reason_text

__all__ = [
    "FINAL_CONNACK_CODES",
    "TLS_HINT",
    "TRANSIENT_REASON_CODES",
    "answered_with_tls",
    "closed_early",
    "connack_failure",
    "refusal",
    "socket_failure",
    "suback_failure",
    "tls_settings_failure",
]

#: what a plain connection closed before CONNACK suggests (mosquitto resets it, others alert)
TLS_HINT = "a port that speaks TLS answers plain MQTT so: if it does, use mqtts://"
#: the first bytes of a TLS record: an alert (0x15) or a handshake (0x16) of TLS 1.0-1.3
_TLS_RECORD = (b"\x15\x03", b"\x16\x03")

#: CONNACK return codes that a retry gets again.  3 ("server unavailable") is
#: the broker saying "not now"; 1 means it does not speak MQTT 3.1.1, which no
#: retry changes either.
FINAL_CONNACK_CODES = frozenset({1, 2, 4, 5})
#: MQTT 5 reason codes that say "not now" (unspecified, implementation specific, server
#: unavailable or busy, quota exceeded, connection rate exceeded, server shutting down):
#: every other refusal -- bad user name or password, not authorized, banned, a filter or
#: a protocol version the broker does not take, "use another server" -- comes back the
#: same on every attempt
TRANSIENT_REASON_CODES = frozenset({0x80, 0x83, 0x88, 0x89, 0x8B, 0x97, 0x9F})

# A TLS session cut short (EOF, reset mid-handshake) says nothing about the
# settings; any other TLS error is a verdict on them (certificate, protocol
# version, cipher) and comes back the same every time.
_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def connack_failure(code: int | ConnAck, *, v5: bool = False) -> BrokerError:
    """The error for a CONNACK that did not accept the connection (``code`` > 0): a 3.1.1
    return code, or with ``v5`` an MQTT 5 reason code (a :class:`ConnAck` carries the
    broker's reason string and, for "use another server", where to)."""
    ack = code if isinstance(code, ConnAck) else ConnAck(False, code)
    if not v5:
        reason = CONNACK_REASONS.get(ack.code, f"return code {ack.code}")
        cls = BrokerRefused if ack.code in FINAL_CONNACK_CODES else BrokerError
        return cls(f"broker refused the connection: {reason}")
    text = reason_text(ack.code, ack.reason_string)
    if ack.server_reference:
        text += f" (server reference: {ack.server_reference})"
    return refusal(ack.code, f"broker refused the connection: {text}")


def suback_failure(
    topic_filter: str, code: int, reason: str | None = None, *, v5: bool = False
) -> BrokerError:
    """The error for a SUBACK that refused ``topic_filter``: in 3.1.1 a bare 0x80 (it may be
    anything: a plain BrokerError), in MQTT 5 a reason code (not authorized: BrokerRefused)."""
    if not v5:
        return BrokerError(f"broker refused the subscription to {topic_filter!r}")
    return refusal(code, f"broker refused the subscription to {topic_filter!r}: {reason_text(code, reason)}")


def refusal(code: int, text: str) -> BrokerError:
    """:class:`BrokerRefused` for an MQTT 5 reason code a retry gets again, else BrokerError."""
    return (BrokerError if code in TRANSIENT_REASON_CODES else BrokerRefused)(text)


def socket_failure(
    exc: BaseException, *, before_connack: bool = False, tls_without_certificate: bool = False
) -> BrokerError:
    """The error for an exception from opening the connection, or, with
    ``before_connack``, for the connection ending before the broker answered.

    With TLS 1.3 a broker checks the client certificate after the handshake; one
    that wants a certificate we do not have sends an alert and closes, and as our
    CONNECT is still unread there, the close is a reset that may overtake the alert.
    A reset alone proves nothing (a restarting broker resets too), so it stays a
    BrokerError, with a hint when we came without a certificate."""
    if isinstance(exc, ssl.SSLError):
        text = str(exc.reason or exc)
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
            text += f" ({exc.verify_message})"
        # after the handshake: e.g. TLS 1.3, where the broker rejects our certificate afterwards
        text = f"TLS error before CONNACK: {text}" if before_connack else f"TLS handshake failed: {text}"
        return (BrokerError if isinstance(exc, _CUT_SHORT) else BrokerRefused)(text)
    if isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    else:
        text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    if not before_connack:
        return BrokerError(text)
    hint = ""
    if tls_without_certificate and isinstance(exc, ConnectionResetError):
        hint = " (a broker that requires a client certificate resets the connection of a client without one)"
    return BrokerError(f"connection lost before CONNACK: {text}{hint}")


def answered_with_tls(first: bytes) -> BrokerRefused | None:
    """The refusal for a plain connection whose broker answered with a TLS record; None when
    ``first`` (the first bytes received) is not one."""
    if first[:2] in _TLS_RECORD:
        return BrokerRefused("the broker answered with TLS, not MQTT: the port speaks TLS; use mqtts://")
    return None


def closed_early(text: str) -> BrokerClosedEarly:
    """The error for a plain connection closed before CONNACK (``text``: how)."""
    return BrokerClosedEarly(f"connection lost before CONNACK: {text} ({TLS_HINT})")


def tls_settings_failure(exc: ConfigError) -> BrokerRefused:
    """TLS files that cannot be loaded: no attempt can succeed until the settings change."""
    return BrokerRefused(f"bad TLS settings: {exc}")
