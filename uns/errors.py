"""Errors raised by uns.

Every error derives from :class:`UnsError`, so callers can catch one type.
Errors carry the data that explains them (topic, path, seq, file, ...).

::

    UnsError
    ├── ConfigError                 bad config file, env var, flag or broker URL
    ├── SparkplugError
    │   ├── SparkplugTopicError     a topic that is not a Sparkplug topic (.topic)
    │   ├── SparkplugDecodeError    bytes that are not a usable payload (.reason)
    │   │   └── SparkplugLimitError a message over a per-message limit (.limit, .value)
    │   ├── SparkplugEncodeError    a Payload that cannot be put on the wire
    │   └── SparkplugStateError     a STATE payload that is neither 3.0 JSON nor legacy
    ├── ModelError                  a plant model that cannot be loaded (.file, .key)
    ├── IntakeError                 an MQTT event that breaks the intake rules (.reason;
    │                               uns.core.intake_rules: path, JSON, time, identity)
    ├── ContextError                a context event that cannot be applied (.reason)
    │   └── RecordError             a batch record (material, result, comment) that cannot be applied
    ├── SignatureError              a signature missing, malformed, untrusted or not
    │                               verifying, or a key file unusable (.reason)
    ├── LakeError                   the lake cannot be read or written (.table)
    │   └── LakeBackpressure        the write-ahead log is full (.retry_after)
    ├── EngineError                 the engine cannot start or run (broker, lake path)
    ├── BatchError                  an unknown batch, a bad spec file, a report that cannot be made
    ├── CommandError                a command to an edge node that is refused (commands off,
    │                               never born, unknown metric, a value of the wrong type)
    ├── UserError                   a user, password or review input that cannot be used (.field)
    ├── AuthenticationError         a wrong user name or password, no session, or an expired one
    ├── AccountLocked               too many failed log-ins: the account waits (.user, .until_us)
    ├── PermissionDenied            the user's roles do not allow it (.action)
    ├── ReviewRefused               a review rule forbids the step now (.rule: its name)
    └── BrokerError                 the MQTT connection failed, was refused or was lost
        ├── BrokerRefused           a refusal that retrying cannot heal (credentials, not
        │                           authorized, identifier rejected, TLS certificate)
        ├── BrokerClosedEarly       a plain connection closed before CONNACK (what a TLS port
        │                           does to plain MQTT; a restarting broker too)
        └── MqttProtocolError       bytes that break MQTT 3.1.1 or 5.0 (uns.mqtt.wire; .reason)

Foreign exceptions (protobuf, sockets and TLS, deltalake, duckdb) are mapped to these
in the one module that talks to that library, with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AccountLocked",
    "AuthenticationError",
    "BatchError",
    "BrokerClosedEarly",
    "BrokerError",
    "BrokerRefused",
    "CommandError",
    "ConfigError",
    "ContextError",
    "EngineError",
    "IntakeError",
    "LakeBackpressure",
    "LakeError",
    "ModelError",
    "PermissionDenied",
    "RecordError",
    "ReviewRefused",
    "SignatureError",
    "SparkplugDecodeError",
    "SparkplugEncodeError",
    "SparkplugError",
    "SparkplugLimitError",
    "SparkplugStateError",
    "SparkplugTopicError",
    "UnsError",
    "UserError",
]


class UnsError(Exception):
    """Root of every error uns raises on purpose."""


class ConfigError(UnsError):
    """A configuration value is missing, malformed or contradictory."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SparkplugError(UnsError):
    """Something about Sparkplug B topics or payloads is wrong."""


class SparkplugTopicError(SparkplugError):
    """The topic is not one of the Sparkplug B 3.0 topic forms."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"not a Sparkplug topic: {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class SparkplugDecodeError(SparkplugError):
    """Bytes could not be decoded into a usable Sparkplug B payload."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"undecodable Sparkplug payload: {reason}")
        self.reason = reason


class SparkplugLimitError(SparkplugDecodeError):
    """A message over one of the per-message limits (``limit``: the config key, e.g.
    ``sparkplug.max_payload_bytes``; ``value``: what the message has, ``maximum``: the
    limit).  The whole message is refused: no metric of it is used."""

    def __init__(self, limit: str, value: int, maximum: int, what: str) -> None:
        super().__init__(f"over limit: {value:,} {what}, more than {limit} = {maximum:,}")
        self.limit = limit
        self.value = value
        self.maximum = maximum


class SparkplugEncodeError(SparkplugError):
    """A payload object cannot be encoded (value does not fit its datatype)."""


class SparkplugStateError(SparkplugError):
    """A STATE payload is neither Sparkplug 3.0 JSON nor legacy ONLINE/OFFLINE."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad STATE payload: {reason}")
        self.reason = reason


class ModelError(UnsError):
    """The plant model file cannot be loaded; nothing of it is used."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ":".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key


class IntakeError(UnsError):
    """An event from MQTT (context, records) breaks a rule every intake applies
    (uns.core.intake_rules); ``reason`` is the plain explanation its rejection records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContextError(UnsError):
    """A context event is malformed; it is rejected whole, never half-applied."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(f"bad context event{f' for {path}' if path else ''}: {reason}")
        self.reason = reason
        self.path = path


class RecordError(ContextError):
    """A batch record (material, result, comment) is malformed; it is rejected whole.
    A kind of :class:`ContextError`: records come in beside context, under the same rules."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        UnsError.__init__(self, f"bad record{f' for {path}' if path else ''}: {reason}")
        self.reason = reason
        self.path = path


class SignatureError(UnsError):
    """A signature is missing where one is required, malformed, by a key that is not
    trusted, or does not verify; or a key file cannot be used (uns.core.signing,
    uns.keyring).  ``reason`` is the plain explanation a rejection records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LakeError(UnsError):
    """The lake cannot be read or written."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class LakeBackpressure(LakeError):
    """The write-ahead log reached its bound; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineError(UnsError):
    """The engine cannot start or keep running (broker unreachable, lake unwritable)."""


class BatchError(UnsError):
    """A batch is unknown, a specification file is wrong, or a report cannot be made."""

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(f"{file}: {message}" if file else message)
        self.file = file


class CommandError(UnsError):
    """A command to an edge node (``uns cmd``) is refused before anything is sent: commands
    are disabled, the node or device was never born, a metric is not in its birth, or a
    value does not fit the metric's datatype."""


class UserError(UnsError):
    """A user change, a password or a review input that cannot be used; ``field`` names the
    input at fault (the web page shows the message next to it)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AuthenticationError(UnsError):
    """Not authenticated: a wrong user name or password, no session, or one that expired."""


class AccountLocked(UnsError):
    """The account is locked after too many failed log-ins, until ``until_us`` (epoch
    microseconds; None: until an administrator unlocks it)."""

    def __init__(self, user: str, until_us: int | None) -> None:
        when = "an administrator unlocks it" if until_us is None else "the lockout ends"
        super().__init__(f"account {user!r} is locked after too many failed log-ins, until {when}")
        self.user = user
        self.until_us = until_us


class PermissionDenied(UnsError):
    """The user's roles do not allow ``action``."""

    def __init__(self, message: str, *, action: str) -> None:
        super().__init__(message)
        self.action = action


class ReviewRefused(UnsError):
    """A review rule forbids the step as things are now; ``rule`` is the rule's name
    (``four-eyes``, ``batch-closed``, ...; docs/web.md lists them)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class BrokerError(UnsError):
    """The MQTT connection could not be made, was refused, or was lost (uns.mqtt.client)."""


class BrokerRefused(BrokerError):
    """The broker (or its TLS certificate) refused us in a way that retrying cannot heal:
    bad user name or password, not authorized, identifier rejected, a certificate that does
    not verify.  ``uns run`` stops with one line instead of reconnecting forever."""


class BrokerClosedEarly(BrokerError):
    """A plain (``mqtt://``) connection the broker closed before its CONNACK.  A port that
    speaks TLS does that to plain MQTT; so does a broker that restarts.  A reconnect loop
    that never got through gives up after a few in a row, naming the likely cause."""
