"""The engine's configuration: one frozen, validated object.

Sources, lowest precedence first: built-in defaults, the TOML config file
(``--config FILE`` or ``UNS_CONFIG``), ``UNS_*`` environment variables, command
line flags.  Every key ``[section] key`` has the environment variable
``UNS_<SECTION>_<KEY>`` (e.g. ``UNS_BROKER_URL``, ``UNS_LAKE_PATH``); the most
used ones also have short names: ``UNS_BROKER``, ``UNS_LAKE``, ``UNS_MODEL``,
``UNS_HOST_ID``, ``UNS_PRIMARY``.  Secrets (the broker password, a password in
the broker URL) are masked by :meth:`Config.to_dict` with ``masked=True``,
which is what ``uns run --print-config`` and the logs show.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from uns.core.normalize import check_prefix
from uns.errors import ConfigError
from uns.mqtt.settings import BrokerSettings, parse_broker_url

__all__ = [
    "BrokerSection",
    "Config",
    "ContextSection",
    "EngineSection",
    "LakeSection",
    "RepublishSection",
    "SparkplugSection",
    "load_config",
]

SECRET_KEYS = frozenset({"broker.password"})
ENV_SHORTCUTS = {
    "UNS_BROKER": "broker.url",
    "UNS_LAKE": "lake.path",
    "UNS_MODEL": "engine.model",
    "UNS_HOST_ID": "engine.host_id",
    "UNS_PRIMARY": "engine.primary",
}


@dataclass(frozen=True)
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

    def settings(self) -> BrokerSettings:
        b = parse_broker_url(self.url).with_credentials(self.username, self.password)
        return dataclasses.replace(
            b,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            tls_insecure=self.tls_insecure,
            keepalive=self.keepalive,
        )


@dataclass(frozen=True)
class EngineSection:
    host_id: str = "uns"
    primary: bool = False
    prefix: str = "uns/v1"
    model: str | None = None
    status_interval: float = 10.0  # seconds between retained status publishes
    on_reconnect: str = "wait"  # "wait" for births, or "rebirth" every known node
    log_level: str = "info"


@dataclass(frozen=True)
class SparkplugSection:
    reorder_timeout_ms: int = 2000
    rebirth_requests: bool = True
    rebirth_min_interval_ms: int = 5000
    max_decompressed_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class RepublishSection:
    enabled: bool = True
    mode: str = "metric"  # "metric": one message per sample; "device": one per device update
    qos: int = 0
    retain: bool = False
    include_historical: bool = False
    include_transient: bool = True  # Sparkplug: transient values are shown, never historized
    include_unmapped: bool = True
    max_queue: int = 100_000
    max_in_flight: int = 8  # concurrent publishes (aiomqtt warns beyond 10 outstanding)
    drain_timeout_s: float = 5.0  # on shutdown, time to publish what is queued


@dataclass(frozen=True)
class LakeSection:
    path: str | None = "./lake"  # empty = no lake
    commit_rows: int = 50_000
    commit_interval: float = 5.0
    fsync_interval: float = 1.0
    wal_max_bytes: int = 1024**3
    compact_interval: float = 120.0  # seconds between the writer's own compactions of recent partitions
    writer_id: str = ""  # distinct per engine when several engines write one lake
    commit_worker: str = "process"  # Delta commits in a worker "process" (default) or a "thread"
    commit_worker_max_rss_mb: int = 256  # the worker process hands over to a fresh one beyond this RSS
    commit_worker_nice: int = 10  # the worker process runs this much nicer than the engine (0-19)


@dataclass(frozen=True)
class ContextSection:
    window_hours: float = 24.0


@dataclass(frozen=True)
class Config:
    broker: BrokerSection = field(default_factory=BrokerSection)
    engine: EngineSection = field(default_factory=EngineSection)
    sparkplug: SparkplugSection = field(default_factory=SparkplugSection)
    republish: RepublishSection = field(default_factory=RepublishSection)
    lake: LakeSection = field(default_factory=LakeSection)
    context: ContextSection = field(default_factory=ContextSection)

    def to_dict(self, *, masked: bool = True) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for f in dataclasses.fields(self):
            section = dataclasses.asdict(getattr(self, f.name))
            if masked:
                for key, value in section.items():
                    if f"{f.name}.{key}" in SECRET_KEYS and value is not None:
                        section[key] = "***"
                if f.name == "broker":
                    section["url"] = self.broker.settings().masked_url() if _url_ok(self) else "***"
            out[f.name] = section
        return out


def _url_ok(cfg: Config) -> bool:
    try:
        parse_broker_url(cfg.broker.url)
    except ConfigError:
        return False
    return True


_SECTION_TYPES = get_type_hints(Config)


def _coerce(key: str, value: Any, hint: Any, origin: str) -> Any:
    text_hint = str(hint)
    optional = "None" in text_hint
    if value is None or (optional and isinstance(value, str) and value == "" and "str" not in text_hint):
        if optional:
            return None
        raise ConfigError(f"{origin}: {key} must not be empty", key=key)
    if "bool" in text_hint:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{origin}: {key} must be true or false, got {value!r}", key=key)
    if "int" in text_hint and "float" not in text_hint:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{origin}: {key} must be an integer, got {value!r}", key=key)
    if "float" in text_hint:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{origin}: {key} must be a number, got {value!r}", key=key)
    if isinstance(value, str):
        return value if value != "" or not optional else None
    raise ConfigError(f"{origin}: {key} must be text, got {value!r}", key=key)


def _validate(cfg: Config) -> None:
    cfg.broker.settings()  # raises ConfigError for a bad URL
    e = cfg.engine
    if not e.host_id or any(c in e.host_id for c in "+#/"):
        raise ConfigError(
            f"engine.host_id {e.host_id!r} must be non-empty without '+', '#', '/'", key="engine.host_id"
        )
    try:
        check_prefix(e.prefix)
    except ConfigError as exc:
        raise ConfigError(f"engine.prefix: {exc}", key="engine.prefix") from exc
    if e.on_reconnect not in ("wait", "rebirth"):
        raise ConfigError("engine.on_reconnect must be 'wait' or 'rebirth'", key="engine.on_reconnect")
    if e.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("engine.log_level must be debug, info, warning or error", key="engine.log_level")
    if cfg.republish.mode not in ("metric", "device"):
        raise ConfigError("republish.mode must be 'metric' or 'device'", key="republish.mode")
    if cfg.lake.commit_worker not in ("process", "thread"):
        raise ConfigError("lake.commit_worker must be 'process' or 'thread'", key="lake.commit_worker")
    if cfg.republish.qos not in (0, 1, 2):
        raise ConfigError("republish.qos must be 0, 1 or 2", key="republish.qos")
    positive = {
        "sparkplug.rebirth_min_interval_ms": cfg.sparkplug.rebirth_min_interval_ms >= 0,
        "sparkplug.reorder_timeout_ms": cfg.sparkplug.reorder_timeout_ms >= 0,
        "lake.commit_rows": cfg.lake.commit_rows > 0,
        "lake.commit_interval": cfg.lake.commit_interval > 0,
        "lake.fsync_interval": cfg.lake.fsync_interval >= 0,
        "lake.wal_max_bytes": cfg.lake.wal_max_bytes > 0,
        "lake.compact_interval": cfg.lake.compact_interval >= 0,  # 0 = never (run `uns lake compact`)
        "lake.commit_worker_max_rss_mb": cfg.lake.commit_worker_max_rss_mb >= 0,
        "lake.commit_worker_nice": 0 <= cfg.lake.commit_worker_nice <= 19,
        "republish.max_queue": cfg.republish.max_queue > 0,
        "republish.max_in_flight": cfg.republish.max_in_flight > 0,
        "republish.drain_timeout_s": cfg.republish.drain_timeout_s >= 0,
        "engine.status_interval": cfg.engine.status_interval > 0,
        "context.window_hours": cfg.context.window_hours > 0,
    }
    for key, ok in positive.items():
        if not ok:
            raise ConfigError(f"{key} is out of range", key=key)


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
    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_TYPES}
    hints = {name: get_type_hints(_SECTION_TYPES[name]) for name in _SECTION_TYPES}

    def put(dotted: str, value: Any, origin: str) -> None:
        section, _, key = dotted.partition(".")
        if section not in hints or key not in hints[section]:
            known = ", ".join(f"{s}.{k}" for s in hints for k in hints[s])
            raise ConfigError(f"{origin}: unknown setting {dotted!r} (known: {known})", key=dotted)
        values[section][key] = _coerce(dotted, value, hints[section][key], origin)

    source = file or env.get("UNS_CONFIG") or None
    if source is not None:
        path = Path(source)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]", key=section)
            for key, value in table.items():
                put(f"{section}.{key}", value, str(path))
    for name, value in env.items():
        if not name.startswith("UNS_") or name == "UNS_CONFIG":
            continue
        if name in ENV_SHORTCUTS:
            put(ENV_SHORTCUTS[name], value, f"environment {name}")
            continue
        rest = name[4:].lower()
        env_section = next((s for s in hints if rest.startswith(s + "_")), None)
        if env_section is not None:
            put(f"{env_section}.{rest[len(env_section) + 1 :]}", value, f"environment {name}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            put(dotted, value, "command line")
    cfg = Config(**{name: _SECTION_TYPES[name](**vals) for name, vals in values.items()})
    _validate(cfg)
    return cfg


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (committed as schemas/config.schema.json)."""

    def prop(hint: Any, default: Any) -> dict[str, Any]:
        text = str(hint)
        kinds: list[str] = []
        if "bool" in text:
            kinds.append("boolean")
        elif "int" in text and "float" not in text:
            kinds.append("integer")
        elif "float" in text:
            kinds.append("number")
        else:
            kinds.append("string")
        if "None" in text:
            kinds.append("null")
        out: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
        if default is not None:
            out["default"] = default
        return out

    sections: dict[str, Any] = {}
    for name, cls in _SECTION_TYPES.items():
        hints = get_type_hints(cls)
        defaults = cls()
        sections[name] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: prop(h, getattr(defaults, k)) for k, h in hints.items()},
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://uns.invalid/schemas/config.schema.json",
        "title": "uns engine configuration (TOML)",
        "type": "object",
        "additionalProperties": False,
        "properties": sections,
    }
