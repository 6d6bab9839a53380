"""Commands to edge nodes: NCMD/DCMD metric writes and rebirth requests (``uns cmd``).

The engine itself never writes to the plant; it sends only rebirth requests.
A person does, on purpose, through this module (the command line today, the
web workspace's ``operator`` role later, with the same call):

    uns cmd Plant/Line1 "Setpoint/Speed=1200" --reason "batch B42 recipe step 3"
    uns cmd Plant/Line1/Filler Valve=true --reason "..."
    uns cmd Plant/Line1 --rebirth --reason "refresh after maintenance"

What is sent (docs/sparkplug.md "Commands"; the TCK's SendCommandTest):
``spBv1.0/<group>/NCMD/<node>`` for the node, ``.../DCMD/<node>/<device>``
for a device; QoS 0, not retained; the payload has a timestamp and no seq;
each metric carries the name and the datatype of the node's last birth (the
TCK compares the datatype with the birth, so it is sent despite the spec's
SHOULD NOT) and, when the birth gave one, its alias.  A value is checked
against the datatype before anything is sent.  A rebirth is
``Node Control/Rebirth = true`` (Boolean) on the node's NCMD; for a device,
``Device Control/Rebirth`` on its DCMD when its DBIRTH declares that metric,
else the node's rebirth (which rebirths every device of the node).

The last birth comes from a running engine when one answers on
``engine.http_listen`` (``GET /sparkplug/births/<group>/<node>[/<device>]``:
the births it holds now), else from the lake's ``metric_catalog`` (the last
``birth_ts`` of that node or device).  Each command sent is an audit entry
(kind ``command``, the user and the reason, the topic and the metrics written)
in the chain of what is run by hand (:func:`uns.lake.manual.cli_recorder`);
without a lake to record it, nothing is sent.

Refusals are :class:`~uns.errors.CommandError`, one line each: commands are
off (``sparkplug.commands_enabled``), the node or device was never born (or the
running engine saw it die), a metric is not in its birth, a value does not fit the
datatype.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from uns.config import Config
from uns.errors import BrokerError, CommandError, LakeError
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import SIGNED_WIDTH, UNSIGNED_WIDTH, DataType
from uns.sparkplug.ncmd import REBIRTH_METRIC
from uns.sparkplug.payload import Metric, Payload
from uns.sparkplug.topic import NAMESPACE

__all__ = [
    "DEVICE_REBIRTH_METRIC",
    "Birth",
    "BornMetric",
    "Command",
    "Target",
    "build_command",
    "parse_assignments",
    "parse_target",
    "parse_value",
    "send_command",
]

#: the device-level rebirth metric some edge nodes declare in their DBIRTH
DEVICE_REBIRTH_METRIC = "Device Control/Rebirth"
_ENGINE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Target:
    """``GROUP/NODE[/DEVICE]``."""

    group: str
    node: str
    device: str | None = None

    def __str__(self) -> str:
        return f"{self.group}/{self.node}" + (f"/{self.device}" if self.device else "")


@dataclass(frozen=True, slots=True)
class BornMetric:
    name: str
    datatype: DataType
    alias: int | None = None


@dataclass(frozen=True, slots=True)
class Birth:
    """The metrics of the last NBIRTH or DBIRTH of a target, and where they were read."""

    metrics: dict[str, BornMetric]
    source: str  # "engine" or "lake"
    birth_ts: int | None = None
    #: the running engine knows it offline (dead since this birth): nothing would receive a command
    offline: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    """One NCMD or DCMD, ready to publish (QoS 0, not retained)."""

    target: Target
    topic: str
    payload: bytes
    #: (name, datatype name, value) per metric, for the output and the audit entry
    metrics: tuple[tuple[str, str, Any], ...]

    @property
    def verb(self) -> str:
        return self.topic.split("/")[2]


def parse_target(text: str) -> Target:
    """``GROUP/NODE`` or ``GROUP/NODE/DEVICE``; CommandError otherwise."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts) or any(c in text for c in "+#"):
        raise CommandError(f"target {text!r} is not GROUP/NODE or GROUP/NODE/DEVICE")
    if parts[0] == "STATE":
        raise CommandError("STATE is not a Sparkplug group")
    return Target(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def parse_assignments(items: Sequence[str]) -> list[tuple[str, str]]:
    """``METRIC=VALUE`` items (split at the first ``=``: metric names have none, values may)."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CommandError(f"{item!r} is not METRIC=VALUE")
        pairs.append((name, value))
    return pairs


_TRUE, _FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


def parse_value(text: str, datatype: DataType, metric: str) -> Any:
    """``text`` as a value of ``datatype``; CommandError when it does not fit."""
    try:
        return _parse(text.strip() if datatype is not DataType.String else text, datatype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise CommandError(f"{metric}: {text!r} is not a {datatype.name} value ({exc})") from exc


def _parse(text: str, datatype: DataType) -> Any:
    if datatype in SIGNED_WIDTH or datatype in UNSIGNED_WIDTH:
        value = int(text, 0)
        if datatype in SIGNED_WIDTH:
            half = 1 << (SIGNED_WIDTH[datatype] - 1)
            low, high = -half, half - 1
        else:
            low, high = 0, (1 << UNSIGNED_WIDTH[datatype]) - 1
        if not low <= value <= high:
            raise ValueError(f"out of range {low}..{high}")
        return value
    if datatype in (DataType.Float, DataType.Double):
        value_f = float(text)
        if datatype is DataType.Float and math.isfinite(value_f) and abs(value_f) > 3.4028234663852886e38:
            raise ValueError("out of the Float range")
        return value_f
    if datatype is DataType.Boolean:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("true or false")
    if datatype in (DataType.String, DataType.Text):
        return text
    if datatype is DataType.UUID:
        return str(uuid.UUID(text))
    if datatype is DataType.DateTime:
        return int(text, 0)  # ms since epoch, UTC
    if datatype is DataType.Bytes:
        return bytes.fromhex(text)
    raise ValueError(f"{datatype.name} metrics cannot be written from a command")


def build_command(target: Target, birth: Birth, writes: Sequence[tuple[str, str]], now_ms: int) -> Command:
    """The NCMD/DCMD writing ``writes`` (name, text) to ``target``, checked against ``birth``."""
    if not writes:
        raise CommandError("nothing to write: give METRIC=VALUE, or --rebirth")
    metrics, shown = [], []
    for name, text in writes:
        born = birth.metrics.get(name)
        if born is None:
            known = ", ".join(sorted(birth.metrics)[:8]) or "none"
            raise CommandError(f"{name!r} is not a metric of {target}'s last birth (it has: {known})")
        value = parse_value(text, born.datatype, name)
        metrics.append(
            Metric(name=name, alias=born.alias, timestamp=now_ms, datatype=born.datatype, value=value)
        )
        shown.append((name, born.datatype.name, value if not isinstance(value, bytes) else value.hex()))
    return _command(target, metrics, shown, now_ms)


def rebirth_command(target: Target, birth: Birth | None, now_ms: int) -> Command:
    """Node Control/Rebirth on the node's NCMD; a device's own Device Control/Rebirth when its
    DBIRTH declares one, else its node's rebirth."""
    if target.device is not None and birth is not None and DEVICE_REBIRTH_METRIC in birth.metrics:
        name = DEVICE_REBIRTH_METRIC
    else:
        name, target = REBIRTH_METRIC, Target(target.group, target.node)
    metric = Metric(name=name, timestamp=now_ms, datatype=DataType.Boolean, value=True)
    return _command(target, [metric], [(name, "Boolean", True)], now_ms)


def _command(
    target: Target, metrics: list[Metric], shown: list[tuple[str, str, Any]], now_ms: int
) -> Command:
    verb = "DCMD" if target.device is not None else "NCMD"
    topic = f"{NAMESPACE}/{target.group}/{verb}/{target.node}" + (
        f"/{target.device}" if target.device else ""
    )
    payload = encode_payload(Payload(timestamp=now_ms, metrics=metrics))  # no seq: commands carry none
    return Command(target, topic, payload, tuple(shown))


# ---------------------------------------------------------------- where the birth comes from
def birth_from_engine(listen: str, target: Target) -> Birth | None:
    """The running engine's view of ``target``'s last birth (None: no engine answers there, or
    it does not know the target)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    path = "/".join(urllib.parse.quote(p, safe="") for p in (target.group, target.node, target.device) if p)
    url = f"http://{host}:{port}/sparkplug/births/{path}"
    try:
        with urllib.request.urlopen(url, timeout=_ENGINE_TIMEOUT_S) as answer:
            doc = json.loads(answer.read(1 << 22))
    except (urllib.error.URLError, OSError, ValueError):
        return None  # not running, or the target unknown (404): the lake may know it
    metrics = {
        m["name"]: BornMetric(m["name"], DataType[m["datatype"]], m.get("alias")) for m in doc["metrics"]
    }
    return Birth(metrics, "engine", doc.get("birth_ts"), offline=not doc.get("online"))


def birth_from_lake(lake: str, target: Target) -> Birth | None:
    """``target``'s metrics at its last birth in the lake's ``metric_catalog`` (None: never born)."""
    from uns.lake import connect  # noqa: PLC0415 - DuckDB only when a command needs it

    params = [target.group, target.node, target.device]
    con = connect(lake)
    try:
        rows = con.execute(
            "SELECT metric, datatype, alias, epoch_ms(birth_ts) FROM metric_catalog "
            "WHERE group_id = ? AND edge_node_id = ? AND device_id IS NOT DISTINCT FROM ? "
            "AND birth_ts = (SELECT max(birth_ts) FROM metric_catalog "
            "WHERE group_id = ? AND edge_node_id = ? AND device_id IS NOT DISTINCT FROM ?)",
            params + params,
        ).fetchall()
    finally:
        con.close()
    if not rows:
        return None
    metrics = {
        name: BornMetric(name, DataType[datatype], None if alias is None else int(alias))
        for name, datatype, alias, _ in rows
        if datatype in DataType.__members__
    }
    return Birth(metrics, "lake", int(rows[0][3]))


def last_birth(config: Config, target: Target, lake: str | None) -> Birth:
    """The target's last birth: a running engine's, else the lake's; CommandError when neither has one."""
    what = "device" if target.device else "edge node"
    if config.engine.http_listen:
        birth = birth_from_engine(config.engine.http_listen, target)
        if birth is not None and birth.offline:
            raise CommandError(f"{what} {target} is offline: the running engine saw its death")
        if birth is not None:
            return birth
    if lake:
        try:
            birth = birth_from_lake(lake, target)
        except LakeError as exc:
            raise CommandError(f"cannot read the births: {exc}") from exc
        if birth is not None:
            return birth
    raise CommandError(f"{what} {target} was never born (no birth in the running engine or the lake)")


# ---------------------------------------------------------------- sending
def send_command(
    config: Config,
    target: Target,
    writes: Sequence[tuple[str, str]] = (),
    *,
    rebirth: bool = False,
    user: str | None = None,
    reason: str = "",
    lake: str | None = None,
) -> Command:
    """Check, send (QoS 0, not retained) and record one command; return what was sent.

    ``lake`` defaults to ``lake.path``; the broker is the home broker (``broker.url`` or the
    first of ``broker.urls``).  CommandError for a refusal, BrokerError when it cannot be sent."""
    import asyncio  # noqa: PLC0415

    from uns.lake.audit_entries import entry, os_user  # noqa: PLC0415
    from uns.lake.manual import cli_recorder  # noqa: PLC0415

    if not config.sparkplug.commands_enabled:
        raise CommandError("commands are disabled: set sparkplug.commands_enabled = true to send NCMD/DCMD")
    if rebirth == bool(writes):
        raise CommandError(
            "give METRIC=VALUE writes or --rebirth, not both" if rebirth else "nothing to send"
        )
    if not reason.strip():
        raise CommandError("a command needs --reason (it goes into the audit trail)")
    lake = lake if lake is not None else config.lake.path
    if not lake:
        raise CommandError("no lake to record the command in: set lake.path or --lake")
    now = time.time_ns() // 1_000_000
    if rebirth:
        birth = None
        if target.device is not None:
            birth = last_birth(config, target, lake)
        command = rebirth_command(target, birth, now)
    else:
        command = build_command(target, last_birth(config, target, lake), writes, now)
    audit = cli_recorder(_lake_root(lake))
    asyncio.run(_publish(config, command))
    actor = user or os_user()
    detail: dict[str, Any] = {
        "topic": command.topic,
        "verb": command.verb,
        "metrics": [{"name": n, "datatype": d, "value": v} for n, d, v in command.metrics],
        "broker": config.broker.settings().masked_url(),
        "sent_at": now,
    }
    if user and user != os_user():
        detail["os_user"] = os_user()  # the account that ran it, beside the name given
    audit.record([entry(now * 1000, "command", str(command.target), detail, actor=actor, reason=reason)])
    return command


def _lake_root(lake: str) -> Any:
    from pathlib import Path  # noqa: PLC0415

    from uns.lake.storage import as_store  # noqa: PLC0415

    store = as_store(lake)
    return store if store.remote else Path(lake)


async def _publish(config: Config, command: Command) -> None:
    from uns.mqtt.client import FastClient  # noqa: PLC0415

    settings = config.broker.settings()
    client = FastClient(settings, identifier=f"uns-cmd-{uuid.uuid4().hex[:8]}")
    try:
        await client.connect()
        await client.publish(command.topic, command.payload, qos=0, retain=False)
    except BrokerError as exc:
        raise BrokerError(f"cannot send to {settings.masked_url()}: {exc}") from exc
    finally:
        await client.disconnect()
