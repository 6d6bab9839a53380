"""The engine's configuration: one frozen, validated object per section.

Sources, lowest precedence first: built-in defaults, the TOML config file
(``--config FILE`` or ``UNS_CONFIG``), ``UNS_*`` environment variables, command
line flags.  Every key ``[section] key`` has the environment variable
``UNS_<SECTION>_<KEY>`` (e.g. ``UNS_BROKER_URL``, ``UNS_LAKE_PATH``); the most
used ones also have short names: ``UNS_BROKER``, ``UNS_LAKE``, ``UNS_MODEL``,
``UNS_HOST_ID``, ``UNS_PRIMARY``.  Secrets (the broker password, a password in
the broker URL) are masked by :meth:`Config.to_dict` with ``masked=True``,
which is what ``uns run --print-config`` and the logs show.

Each section class is what its component takes (``LakeSink`` a
:class:`LakeSection`, ``RepublishSink`` a :class:`RepublishSection`,
``SessionManager`` a :class:`SparkplugSection`): its field defaults are the
only defaults, and its ``__post_init__`` the only validation, raising
:class:`~uns.errors.ConfigError` with ``key="section.key"``.  A few fields are
tuning knobs for tests and benchmarks, not config-file keys (:func:`tuning`):
the file, the environment, the schema and ``--print-config`` do not know them.

Field types are limited to ``bool``, ``int``, ``float``, ``str`` and their
``... | None``: text from the file or the environment is coerced by the
annotation (:func:`key_type`), and the JSON schema uses the same mapping.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

import uns.config_options as opts
from uns.config_broker import PROTOCOLS, BrokerSection
from uns.config_options import require as _require
from uns.config_web import WebSection, parse_listen
from uns.core.topics import check_prefix
from uns.errors import ConfigError
from uns.mqtt.settings import parse_broker_url
from uns.sparkplug import limits
from uns.sparkplug.topic import group_list, valid_group_id

__all__ = [
    "PROTOCOLS",
    "SECTIONS",
    "AuditSection",
    "BatchSection",
    "BrokerSection",
    "Config",
    "ContextSection",
    "EngineSection",
    "LakeSection",
    "RepublishSection",
    "SparkplugSection",
    "WebSection",
    "file_keys",
    "key_type",
    "load_config",
    "parse_listen",
    "tuning",
]

SECRET_KEYS = frozenset({"broker.password"})
_MASK: Final = opts.MASK  # what a secret shows as
ENV_SHORTCUTS = {
    "UNS_BROKER": "broker.url",
    "UNS_LAKE": "lake.path",
    "UNS_MODEL": "engine.model",
    "UNS_HOST_ID": "engine.host_id",
    "UNS_PRIMARY": "engine.primary",
}

_T = TypeVar("_T")
_FILE_KEY: Final = opts.FILE_KEY


def tuning(default: _T) -> _T:
    """A section field that is not a config-file key (a knob for tests and benchmarks):
    validated with the section, unknown to the file, the environment and the schema."""
    return field(default=default, metadata={_FILE_KEY: False})


@dataclass(frozen=True, slots=True)
class EngineSection:
    host_id: str = "uns"
    primary: bool = False
    prefix: str = "uns/v1"
    model: str | None = None
    status_interval: float = 10.0  # seconds between retained status publishes
    on_reconnect: str = "wait"  # "wait" for births, or "rebirth" every known node
    log_level: str = "info"
    log_format: str = "text"  # "json": one JSON object per line (journald, Loki, Elastic)
    #: host:port of the HTTP endpoint (/metrics, /healthz, /readyz); "" = none
    http_listen: str = ""
    #: SIGTERM/SIGINT end the process within this many seconds, whatever the lake does
    #: (below systemd's default stop timeout of 90 s); see docs/lake.md section 4
    stop_timeout_s: float = 30.0
    #: the Sparkplug groups this engine hosts, comma-separated ("" = every group): the shard
    groups: str = ""
    #: the engine's Ed25519 private key file (uns keys new): it signs every context
    #: acknowledgement, and `uns context set --wait` trusts only acks signed by it (None: unsigned)
    signing_key: str | None = None

    def __post_init__(self) -> None:
        _require("engine.stop_timeout_s", self.stop_timeout_s, self.stop_timeout_s >= 1, ">= 1")
        _require(
            "engine.host_id",
            self.host_id,
            bool(self.host_id) and not any(c in self.host_id for c in "+#/"),
            "non-empty without '+', '#', '/'",
        )
        try:
            check_prefix(self.prefix)
        except ConfigError as exc:
            raise ConfigError(f"engine.prefix: {exc}", key="engine.prefix") from exc
        _require("engine.status_interval", self.status_interval, self.status_interval > 0, "> 0")
        reconnect = self.on_reconnect
        _require("engine.on_reconnect", reconnect, reconnect in ("wait", "rebirth"), "'wait' or 'rebirth'")
        _require(
            "engine.log_level",
            self.log_level,
            self.log_level.lower() in ("debug", "info", "warning", "error"),
            "debug, info, warning or error",
        )
        fmt = self.log_format
        _require("engine.log_format", fmt, fmt in ("text", "json"), "'text' or 'json'")
        if self.http_listen:
            parse_listen(self.http_listen)  # raises ConfigError(key="engine.http_listen")
        ok = all(map(valid_group_id, group_list(self.groups)))
        _require("engine.groups", self.groups, ok, "Sparkplug group ids (no '+', '#', '/', not STATE)")


@dataclass(frozen=True, slots=True)
class SparkplugSection:
    """How the host reacts to gaps and errors (docs/sparkplug.md §3 "seq", "Rebirth request")."""

    reorder_timeout_ms: int = 2000  # 0 = no buffering: a gap is given up (and a rebirth requested) at once
    rebirth_requests: bool = True  # send rebirth requests at all (usually only the primary host does)
    rebirth_min_interval_ms: int = 5000  # at most one rebirth request per node per interval
    max_decompressed_bytes: int = 16 * 1024 * 1024  # bound for Tahu-compressed payloads
    #: what one message may cost (uns.sparkplug.limits): over a limit it is refused whole,
    #: recorded in the rejected table (size, SHA-256 and its first KiB) and counted
    max_payload_bytes: int = limits.DEFAULT_MAX_PAYLOAD_BYTES
    max_metrics_per_message: int = limits.DEFAULT_MAX_METRICS  # Template members included
    max_nesting: int = limits.DEFAULT_MAX_NESTING  # Template/PropertySet levels
    #: ``uns cmd`` may send NCMD/DCMD (metric writes and rebirth requests) to edge nodes
    commands_enabled: bool = False
    #: messages buffered per node before the holes are given up
    max_reorder_buffer: int = tuning(1000)

    def __post_init__(self) -> None:
        for name in ("reorder_timeout_ms", "rebirth_min_interval_ms", "max_reorder_buffer"):
            value = getattr(self, name)
            _require(f"sparkplug.{name}", value, value >= 0, ">= 0")
        for name in ("max_decompressed_bytes", "max_payload_bytes", "max_metrics_per_message"):
            _require(f"sparkplug.{name}", getattr(self, name), getattr(self, name) > 0, "> 0")
        top = limits.MAX_NESTING_ALLOWED
        _require("sparkplug.max_nesting", self.max_nesting, 1 <= self.max_nesting <= top, f"1-{top}")


@dataclass(frozen=True, slots=True)
class RepublishSection:
    """How normalized events are republished (see :mod:`uns.sinks.republish`)."""

    enabled: bool = True
    mode: str = "metric"  # "metric": one message per sample; "device": one per device update
    qos: int = 0
    retain: bool = False
    include_historical: bool = False  # Sparkplug is_historical values: late backfill, usually not live
    include_transient: bool = True  # Sparkplug: transient values are shown, never historized
    include_unmapped: bool = True  # sources the plant model does not know, under _unmapped/
    max_queue: int = 100_000  # events; when full the oldest are dropped and counted
    # QoS 1/2 publishes awaited together (each waits for its PUBACK/PUBCOMP); more
    # overlap the broker's round trips (benchmarks/bench_republish.py measures it)
    max_in_flight: int = 8
    drain_timeout_s: float = 5.0  # on shutdown (and flush()), time to publish what is queued

    def __post_init__(self) -> None:
        _require("republish.mode", self.mode, self.mode in ("metric", "device"), "'metric' or 'device'")
        _require("republish.qos", self.qos, self.qos in (0, 1, 2), "0, 1 or 2")
        _require("republish.max_queue", self.max_queue, self.max_queue > 0, "> 0")
        _require("republish.max_in_flight", self.max_in_flight, self.max_in_flight > 0, "> 0")
        _require("republish.drain_timeout_s", self.drain_timeout_s, self.drain_timeout_s >= 0, ">= 0")


@dataclass(frozen=True, slots=True)
class LakeSection:
    """The lake writer (:class:`lake.LakeSink`; docs/lake.md explains the trade-offs).

    ``path`` tells the daemon where the lake is; the sink writes where it is
    given.  ``segment_max_bytes``, ``retry_initial_s`` and ``retry_max_s`` are
    tuning fields, not config-file keys (:func:`tuning`)."""

    path: str | None = "./uns-lake"  # empty = no lake; never ./lake (docs/lake.md)
    #: seal (and commit) the active WAL segment at this many rows ...
    commit_rows: int = 50_000
    #: ... or when it is this many seconds old, whichever comes first
    commit_interval: float = 5.0
    #: fsync the WAL this often (seconds); 0 = fsync inside every add() (slow, power-loss safe per batch)
    fsync_interval: float = 1.0
    #: beyond this many bytes of uncommitted WAL, add() raises LakeBackpressure
    wal_max_bytes: int = 1024**3
    #: seconds between the writer's own compactions of recent partitions (0 = never;
    #: then run `uns lake compact` yourself, or queries slow down as files pile up)
    compact_interval: float = 120.0
    #: distinct per engine when several engines write one lake (own WAL dir and app transaction ids)
    writer_id: str = ""
    #: the WAL's directory (default <path>/_wal[-<writer_id>]); required for an s3://... path
    wal_dir: str | None = None
    #: where Delta commits run: "process" (a worker process: Arrow and Parquet do not
    #: compete with the engine for the GIL) or "thread" (a worker thread of this process)
    commit_worker: str = "process"
    #: the worker process hands over to a fresh one once its RSS passes this (MiB; 0 = never):
    #: deltalake's native memory grows with every commit and only a new process frees it
    commit_worker_max_rss_mb: int = 256
    #: the worker process runs this much nicer than the engine (0-19): commits are
    #: batch work that can wait a moment; the engine's receive loop and republish cannot
    commit_worker_nice: int = 10
    #: a WAL segment never holds more rows (a record that would pass it is split): one
    #: commit's memory stays bounded whatever one message holds
    max_segment_rows: int = 200_000
    #: a segment whose commit fails this many times in a row with the same error (not a
    #: disk or network fault) is moved aside to <wal>/quarantine (0 = never; docs/lake.md)
    quarantine_after: int = 5
    #: seal a segment at this size too (bounds the memory of one commit)
    segment_max_bytes: int = tuning(64 << 20)
    #: commit retry backoff: first delay, doubling up to the cap (seconds)
    retry_initial_s: float = tuning(0.5)
    retry_max_s: float = tuning(30.0)
    #: object-store options for a remote ``path`` (``[lake.storage]``: aws_region, aws_endpoint_url, ...)
    storage: tuple[tuple[str, str], ...] = opts.option_table()

    def __post_init__(self) -> None:
        for name, ok, rule in (
            ("commit_rows", self.commit_rows > 0, "> 0"),
            ("commit_interval", self.commit_interval > 0, "> 0"),
            ("fsync_interval", self.fsync_interval >= 0, ">= 0"),
            ("wal_max_bytes", self.wal_max_bytes > 0, "> 0"),
            ("compact_interval", self.compact_interval >= 0, ">= 0 (0 = never)"),
            ("writer_id", _plain_id(self.writer_id), "letters, digits, '-' and '_'"),
            ("commit_worker", self.commit_worker in ("process", "thread"), "'process' or 'thread'"),
            ("commit_worker_max_rss_mb", self.commit_worker_max_rss_mb >= 0, ">= 0"),
            ("commit_worker_nice", 0 <= self.commit_worker_nice <= 19, "0-19"),
            ("segment_max_bytes", self.segment_max_bytes > 0, "> 0"),
            ("max_segment_rows", self.max_segment_rows > 0, "> 0"),
            ("quarantine_after", self.quarantine_after >= 0, ">= 0 (0 = never)"),
            ("retry_initial_s", 0 < self.retry_initial_s <= self.retry_max_s, "> 0 and <= retry_max_s"),
        ):
            _require(f"lake.{name}", getattr(self, name), ok, rule)


def _plain_id(text: str) -> bool:
    return not text or text.replace("-", "").replace("_", "").isalnum()


@dataclass(frozen=True, slots=True)
class ContextSection:
    window_hours: float = 24.0  # context history kept in memory (the lake keeps all of it)
    #: context events must be signed by a trusted key (audit.trusted_keys); others are rejected
    require_signature: bool = False
    #: an event's ts may be this far ahead of the engine's clock (nothing before 2000 either)
    max_future_s: float = 86_400.0
    #: a manual change (uns context set/import, the web) and a back-dated one (valid more than
    #: batch.late_context_s before it arrived) must give a reason; others are rejected
    require_reason: bool = True

    def __post_init__(self) -> None:
        _require("context.window_hours", self.window_hours, self.window_hours > 0, "> 0")
        _require("context.max_future_s", self.max_future_s, self.max_future_s >= 0, ">= 0")


@dataclass(frozen=True, slots=True)
class BatchSection:
    """Batch reports (``uns batch report``; docs/batches.md)."""

    spec: str | None = None  # the spec file (limits, expected intervals); --spec overrides it
    late_context_s: float = 5.0  # context received this much after its time is late

    def __post_init__(self) -> None:
        _require("batch.late_context_s", self.late_context_s, self.late_context_s >= 0, ">= 0")


@dataclass(frozen=True, slots=True)
class AuditSection:
    """Signatures (uns.keyring) and the audit trail's anchors outside the lake (uns.lake.anchor)."""

    #: directory of the trusted Ed25519 public keys, one <name>.pub each (None: no key is trusted)
    trusted_keys: str | None = None
    #: where every writer of audit entries anchors its chain head, write-once: a directory (a
    #: separate volume or WORM mount) or s3://bucket/prefix (a bucket with Object Lock)
    anchor: str | None = None
    #: a writer anchors its head at least this often while it records (and at every stop)
    anchor_interval_s: float = 60.0
    #: S3 anchors are locked (Object Lock, compliance mode) for this many days
    anchor_retention_days: int = 3650
    #: an RFC 3161 time-stamping authority that attests the time of each anchored head
    tsa_url: str | None = None
    #: the TSA's CA certificate (PEM) its tokens are verified against (None: not verified)
    tsa_ca_file: str | None = None
    #: audit timestamps that go backwards by more than this (seconds) are findings of verify
    clock_skew_s: float = 120.0

    def __post_init__(self) -> None:
        interval = self.anchor_interval_s
        _require("audit.anchor_interval_s", interval, interval > 0, "> 0")
        days = self.anchor_retention_days
        _require("audit.anchor_retention_days", days, days >= 1, ">= 1")
        _require("audit.clock_skew_s", self.clock_skew_s, self.clock_skew_s >= 0, ">= 0")


@dataclass(frozen=True, slots=True)
class Config:
    broker: BrokerSection = field(default_factory=BrokerSection)
    engine: EngineSection = field(default_factory=EngineSection)
    sparkplug: SparkplugSection = field(default_factory=SparkplugSection)
    republish: RepublishSection = field(default_factory=RepublishSection)
    lake: LakeSection = field(default_factory=LakeSection)
    context: ContextSection = field(default_factory=ContextSection)
    batch: BatchSection = field(default_factory=BatchSection)
    audit: AuditSection = field(default_factory=AuditSection)
    web: WebSection = field(default_factory=WebSection)

    def __post_init__(self) -> None:
        if self.context.require_signature and not self.audit.trusted_keys:
            raise ConfigError(
                "context.require_signature needs audit.trusted_keys (the directory of the trusted keys)",
                key="context.require_signature",
            )

    def to_dict(self, *, masked: bool = True) -> dict[str, dict[str, Any]]:
        """The config-file keys and their values, section by section."""
        out: dict[str, dict[str, Any]] = {}
        for name, cls in SECTIONS.items():
            section_obj = getattr(self, name)
            section = {f.name: getattr(section_obj, f.name) for f in file_keys(cls)}
            if masked:
                for key, value in section.items():
                    if f"{name}.{key}" in SECRET_KEYS and value is not None:
                        section[key] = _MASK
                if name == "broker":
                    section["url"] = parse_broker_url(self.broker.url).masked_url()
                    section["urls"] = [parse_broker_url(u).masked_url() for u in self.broker.urls]
            for key in opts.option_tables(cls):
                options = getattr(section_obj, key)
                section[key] = opts.masked_options(options) if masked else dict(options)
            out[name] = section
        return out


#: the sections by their name in the config file, in the file's order
SECTIONS: Final[Mapping[str, type]] = {
    f.name: hint for f, hint in zip(dataclasses.fields(Config), get_type_hints(Config).values(), strict=True)
}


def file_keys(section: type) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of a section class that are config-file keys (all but :func:`tuning` ones)."""
    return tuple(f for f in dataclasses.fields(section) if f.metadata.get(_FILE_KEY, True))


_SCALARS: Final[Mapping[type, str]] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def key_type(hint: Any) -> tuple[type, bool]:
    """``(bool | int | float | str, optional)`` for a section field's annotation;
    ``(tuple, False)`` for ``tuple[str, ...]``, a list of text (``broker.urls``)."""
    origin = get_origin(hint)
    if origin is tuple and get_args(hint) == (str, ...):
        return tuple, False
    if origin is Union or origin is UnionType:  # Optional[X] / X | None
        args = get_args(hint)
    elif origin is None:  # a plain type
        args = (hint,)
    else:  # a generic (list[str], ...): not a config type
        args = ()
    optional = NoneType in args
    rest = [a for a in args if a is not NoneType]
    if len(rest) != 1 or rest[0] not in _SCALARS:
        raise TypeError(f"config fields are bool, int, float or str (or ... | None), not {hint!r}")
    return rest[0], optional


#: section -> key -> (type, optional), for every config-file key
_KEYS: Final[Mapping[str, Mapping[str, tuple[type, bool]]]] = {
    name: {f.name: key_type(get_type_hints(cls)[f.name]) for f in file_keys(cls)}
    for name, cls in SECTIONS.items()
}


def load_config(
    file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective config: defaults < file < environment < ``overrides``.

    ``overrides`` maps dotted keys (``"broker.url"``) to values; ``None`` values
    are ignored (a flag that was not given).  Raises ConfigError naming the
    source and key of anything wrong."""
    env = os.environ if env is None else env
    values: dict[str, dict[str, Any]] = {name: {} for name in _KEYS}
    origins: dict[str, str] = {}  # dotted key -> where its value came from, for error messages

    def put(dotted: str, value: Any, origin: str) -> None:
        section, _, key = dotted.partition(".")
        if section not in _KEYS or key not in _KEYS[section]:
            known = ", ".join(f"{s}.{k}" for s in _KEYS for k in _KEYS[s])
            raise ConfigError(f"{origin}: unknown setting {dotted!r} (known: {known})", key=dotted)
        values[section][key] = opts.coerce_value(dotted, value, _KEYS[section][key], origin)
        origins[dotted] = origin

    source = file or env.get("UNS_CONFIG") or None
    if source is not None:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]", key=section)
            for key, value in table.items():
                if isinstance(value, dict) and key in opts.option_tables(SECTIONS.get(section, Config)):
                    cls = SECTIONS[section]
                    values[section][key] = opts.parse_options(
                        f"{section}.{key}", value, str(path), nested=opts.nested_table(cls, key)
                    )
                    continue
                line = opts.line_of(text, section, key)
                put(f"{section}.{key}", value, f"{path} line {line}" if line else str(path))
    for name, value in env.items():
        if not name.startswith("UNS_") or name == "UNS_CONFIG":
            continue
        if name in ENV_SHORTCUTS:
            put(ENV_SHORTCUTS[name], value, f"environment {name}")
            continue
        rest = name[4:].lower()
        env_section = next((s for s in _KEYS if rest.startswith(s + "_")), None)
        if env_section is not None:
            put(f"{env_section}.{rest[len(env_section) + 1 :]}", value, f"environment {name}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            put(dotted, value, "command line")
    sections: dict[str, Any] = {}
    for name, vals in values.items():
        try:
            sections[name] = SECTIONS[name](**vals)
        except ConfigError as exc:  # a range or choice: say where the bad value was written
            origin = origins.get(exc.key or "")
            if origin is None:
                raise
            raise ConfigError(f"{origin}: {exc}", key=exc.key) from exc
    return Config(**sections)
