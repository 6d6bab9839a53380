"""`uns topics` and `uns watch`: look at a live broker without disturbing it.

Both feed what they receive through a private :class:`SessionManager`, so
alias-only DATA is shown with the metric names of the births seen so far.
When a node's birth has not been seen, they say so; only with
``request_rebirth=True`` do they ask the node for one (off by default:
inspection should not disturb the plant).  A node that sends DATA is online
whether or not its birth was seen.  Values are shown as :mod:`uns.client.display`
says (Float by its shortest 32-bit text, DateTime as ISO 8601 UTC); ``--json``
keeps the decoded values exact (epoch ms, 64-bit floats) beside their datatype.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uns.client.display import shown, uns_event_text
from uns.clock import now_ms
from uns.config import SparkplugSection
from uns.core.events import SessionEventKind
from uns.core.values import json_value, value_text
from uns.errors import BrokerError, BrokerRefused, UnsError
from uns.mqtt.client import FastClient
from uns.mqtt.settings import BrokerSettings
from uns.sparkplug.codec import decode_payload_lenient
from uns.sparkplug.ncmd import rebirth_payload, rebirth_topic
from uns.sparkplug.payload import Payload
from uns.sparkplug.session import SessionManager
from uns.sparkplug.state import parse_state
from uns.sparkplug.topic import MessageType, Topic, parse_topic

__all__ = ["MessageView", "TopicTree", "describe", "listen"]


@dataclass
class MetricView:
    value: Any
    datatype: str
    ts: int
    quality: str
    unit: str | None = None


@dataclass
class DeviceView:
    online: bool = False
    stale: bool = False
    metrics: dict[str, MetricView] = field(default_factory=dict)


@dataclass
class NodeView:
    online: bool = False
    birth_seen: bool = False
    devices: dict[str | None, DeviceView] = field(default_factory=dict)


@dataclass
class MessageView:
    """One received message, decoded for display."""

    topic: str
    received_at: int
    kind: str  # NBIRTH.., STATE, JSON, TEXT, BINARY
    seq: int | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"topic": self.topic, "received_at": self.received_at, "kind": self.kind}
        if self.seq is not None:
            out["seq"] = self.seq
        if self.metrics:
            out["metrics"] = self.metrics
        if self.body is not None:
            out["payload"] = self.body
        if self.note:
            out["note"] = self.note
        return out

    def as_line(self) -> str:
        when = dt.datetime.fromtimestamp(self.received_at / 1000, tz=dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        head = f"{when} {self.kind:<7} {self.topic}"
        if self.seq is not None:
            head += f" seq={self.seq}"
        if self.metrics:
            parts = []
            for m in self.metrics:
                unit = f" {m['unit']}" if m.get("unit") else ""
                parts.append(f"{m['name']}={shown(m['value'], m.get('datatype'))}{unit}")
            head += "  " + "  ".join(parts)
        if self.body is not None:
            head += "\n" + json.dumps(self.body, indent=2, ensure_ascii=False)
        if self.note:
            head += f"  ({self.note})"
        return head


class TopicTree:
    """The plant as seen so far: groups / nodes / devices / metrics with last values."""

    def __init__(self) -> None:
        self.sessions = SessionManager(SparkplugSection(reorder_timeout_ms=0, rebirth_min_interval_ms=0))
        self.nodes: dict[tuple[str, str], NodeView] = {}
        self.units: dict[tuple[str, str, str | None, str], str] = {}
        self.uns_topics: dict[str, Any] = {}
        self.host_states: dict[str, bool] = {}
        self.other: dict[str, Any] = {}
        self.unborn: set[tuple[str, str]] = set()

    def feed(self, topic: str, payload: bytes, received_at: int) -> MessageView:
        try:
            parsed = parse_topic(topic)
        except UnsError:
            return self._feed_other(topic, payload, received_at)
        if parsed.message_type is MessageType.STATE:
            try:
                state = parse_state(payload)
                self.host_states[parsed.host_id or ""] = state.online
                body: Any = {"online": state.online, "timestamp": state.timestamp}
            except UnsError as exc:
                body = {"error": str(exc)}
            return MessageView(topic, received_at, "STATE", body=body)
        try:
            decoded, _ = decode_payload_lenient(payload)
        except UnsError as exc:
            return MessageView(topic, received_at, parsed.message_type.value, note=f"undecodable: {exc}")
        return self._feed_sparkplug(parsed, decoded, payload, received_at)

    def _feed_sparkplug(self, t: Topic, p: Payload, raw: bytes, received_at: int) -> MessageView:
        view = MessageView(str(t), received_at, t.message_type.value, seq=p.seq)
        if t.message_type in (MessageType.NCMD, MessageType.DCMD):
            view.metrics = [
                {"name": m.name or f"#{m.alias}", "value": json_value(m.value), "unit": None}
                for m in p.metrics
            ]
            return view
        outcome = self.sessions.handle(t, p, raw, received_at)
        node = self.nodes.setdefault(t.node_key, NodeView())
        if t.message_type in (MessageType.NDATA, MessageType.DDATA):
            # a node that publishes is online, whether or not its birth was seen
            node.online = True
            if t.device_id is not None:
                dev = node.devices.setdefault(t.device_id, DeviceView())
                dev.online, dev.stale = True, False
        elif t.message_type in (MessageType.NDEATH, MessageType.DDEATH) and not node.birth_seen:
            # without its birth the sessions cannot match the death's bdSeq; it still went away
            gone = (
                node.devices.values()
                if t.device_id is None
                else [node.devices.setdefault(t.device_id, DeviceView())]
            )
            node.online = node.online and t.device_id is not None
            for d in gone:
                d.online, d.stale = False, True
        for entry in outcome.batch.catalog:
            if entry.unit:
                self.units[(entry.group_id, entry.edge_node_id, entry.device_id, entry.metric)] = entry.unit
        for ev in outcome.batch.sessions:
            dev = node.devices.setdefault(ev.device_id, DeviceView())
            if ev.event == SessionEventKind.BIRTH:
                dev.online, dev.stale = True, False
                if ev.device_id is None:
                    node.online = node.birth_seen = True
                    self.unborn.discard(t.node_key)
            elif ev.event in (SessionEventKind.DEATH, SessionEventKind.STALE):
                dev.online, dev.stale = False, True
                if ev.device_id is None:
                    node.online = False
                    for d in node.devices.values():
                        d.online, d.stale = False, True
        for s in outcome.batch.samples:
            unit = self.units.get((s.group_id, s.edge_node_id, s.device_id, s.metric))
            dev = node.devices.setdefault(s.device_id, DeviceView())
            dev.metrics[s.metric] = MetricView(json_value(s.value), s.datatype.name, s.ts, s.quality, unit)
            view.metrics.append(
                {
                    "name": s.metric,
                    "value": json_value(s.value),
                    "datatype": s.datatype.name,
                    "unit": unit,
                    "ts": s.ts,
                }
            )
        if outcome.rebirths and not node.birth_seen:
            self.unborn.add(t.node_key)
            view.note = "birth not seen yet: metric names unknown"
            view.metrics = [
                {
                    "name": m.name or f"#{m.alias}",
                    "value": value_text(m.value),
                    "datatype": m.datatype.name if m.datatype is not None else None,
                    "unit": None,
                }
                for m in p.metrics
            ]
        return view

    def _feed_other(self, topic: str, payload: bytes, received_at: int) -> MessageView:
        try:
            body = json.loads(payload)
            kind = "JSON"
        except (ValueError, UnicodeDecodeError):
            try:
                body, kind = payload.decode("utf-8"), "TEXT"
            except UnicodeDecodeError:
                body, kind = payload.hex(), "BINARY"
        self.other[topic] = body
        return MessageView(topic, received_at, kind, body=body)

    def as_json(self) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for (group, node_id), node in sorted(self.nodes.items()):
            devices: dict[str, Any] = {}
            for dev_id, dev in sorted(node.devices.items(), key=lambda kv: kv[0] or ""):
                devices[dev_id or ""] = {
                    "online": dev.online,
                    "stale": dev.stale,
                    "metrics": {
                        name: {
                            "value": m.value,
                            "datatype": m.datatype,
                            "unit": m.unit,
                            "ts": m.ts,
                            "quality": m.quality,
                        }
                        for name, m in sorted(dev.metrics.items())
                    },
                }
            groups.setdefault(group, {})[node_id] = {
                "online": node.online,
                "birth_seen": node.birth_seen,
                "devices": devices,
            }
        return {"sparkplug": groups, "host_states": self.host_states, "other_topics": self.other}

    def render(self) -> str:
        """A readable tree: groups / nodes / devices / metrics, then other topics."""
        lines: list[str] = []
        data = self.as_json()
        for group, nodes in data["sparkplug"].items():
            lines.append(f"spBv1.0/{group}")
            for node_id, node in nodes.items():
                state = "online" if node["online"] else "offline"
                if not node["birth_seen"]:
                    state += "; birth not seen yet (names unknown; `--rebirth` asks for one)"
                lines.append(f"  {node_id}  [{state}]")
                for dev_id, dev in node["devices"].items():
                    indent = "    "
                    if dev_id:
                        dstate = "online" if dev["online"] else ("stale" if dev["stale"] else "offline")
                        lines.append(f"    {dev_id}  [{dstate}]")
                        indent = "      "
                    for name, m in dev["metrics"].items():
                        unit = f" {m['unit']}" if m["unit"] else ""
                        flag = "" if m["quality"] == "good" else f" ({m['quality']})"
                        value = shown(m["value"], m["datatype"])
                        lines.append(f"{indent}{name} = {value}{unit}  <{m['datatype']}>{flag}")
        if self.host_states:
            lines.append("host applications (STATE)")
            for host, online in sorted(self.host_states.items()):
                lines.append(f"  {host}  [{'online' if online else 'offline'}]")
        if self.other:
            lines.append("other topics (UNS events, context, status)")
            for topic, body in sorted(self.other.items()):
                lines.append(f"  {topic} = {uns_event_text(body) or shown(body)}")
        return "\n".join(lines) if lines else "(nothing received)"


def describe(tree: TopicTree, topic: str, payload: bytes) -> MessageView:
    return tree.feed(topic, payload, now_ms())


async def listen(
    broker: BrokerSettings,
    filters: list[str],
    *,
    on_message: Callable[[MessageView], None],
    duration: float | None = None,
    count: int | None = None,
    request_rebirth: bool = False,
    tree: TopicTree | None = None,
) -> TopicTree:
    """Subscribe to ``filters`` and feed every message to a TopicTree, calling
    ``on_message`` with its decoded view; stop after ``duration`` s or ``count`` messages.

    One attempt, no reconnect: BrokerRefused (bad credentials, certificates) or
    BrokerError, either naming the broker, for the CLI's one line."""
    tree = tree or TopicTree()
    try:
        await _listen(broker, filters, tree, on_message, duration, count, request_rebirth)
    except BrokerError as exc:
        cls = BrokerRefused if isinstance(exc, BrokerRefused) else BrokerError
        raise cls(f"cannot reach the broker at {broker.masked_url()}: {exc}") from exc
    return tree


async def _listen(
    broker: BrokerSettings,
    filters: list[str],
    tree: TopicTree,
    on_message: Callable[[MessageView], None],
    duration: float | None,
    count: int | None,
    request_rebirth: bool,
) -> None:
    seen = 0
    asked: set[tuple[str, str]] = set()
    async with FastClient(broker, identifier=f"uns-inspect-{time.time_ns() % 10**9}") as client:
        for f in filters:
            await client.subscribe(f, qos=1)
        deadline = None if duration is None else time.monotonic() + duration
        while count is None or seen < count:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await client.wait_messages()
            except TimeoutError:
                break
            limit = 2048 if count is None else count - seen
            for topic, payload, _qos, _retain in client.take(limit):
                on_message(tree.feed(topic, payload, now_ms()))
                seen += 1
            if request_rebirth:
                for group, node in tree.unborn - asked:
                    asked.add((group, node))
                    await client.publish(rebirth_topic(group, node), rebirth_payload(now_ms()), qos=0)
