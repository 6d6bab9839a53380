"""Sparkplug B topic parsing and formatting (pure).

Forms::

    spBv1.0/<group>/{NBIRTH,NDEATH,NDATA,NCMD}/<edge_node>
    spBv1.0/<group>/{DBIRTH,DDEATH,DDATA,DCMD}/<edge_node>/<device>
    spBv1.0/STATE/<host_id>          Sparkplug 3.0 host STATE (JSON payload)
    STATE/<host_id>                  legacy (pre-3.0) host STATE (ONLINE/OFFLINE)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from uns.errors import SparkplugTopicError

__all__ = [
    "NAMESPACE",
    "MessageType",
    "Topic",
    "group_list",
    "namespace_filters",
    "parse_topic",
    "valid_group_id",
]

NAMESPACE = "spBv1.0"


class MessageType(enum.Enum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"
    STATE = "STATE"

    @property
    def is_device(self) -> bool:
        return self in _DEVICE_TYPES


_DEVICE_TYPES = frozenset({MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD})
_NODE_TYPES = frozenset({MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA, MessageType.NCMD})
_BY_NAME = {m.value: m for m in MessageType if m is not MessageType.STATE}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Sparkplug topic.  ``str(topic)`` gives back the original string.

    For STATE topics ``group_id``/``edge_node_id`` are empty and ``host_id`` is
    set; ``legacy`` marks the pre-3.0 ``STATE/<host>`` form.
    """

    message_type: MessageType
    group_id: str = ""
    edge_node_id: str = ""
    device_id: str | None = None
    host_id: str | None = None
    legacy: bool = False

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return f"STATE/{self.host_id}" if self.legacy else f"{NAMESPACE}/STATE/{self.host_id}"
        base = f"{NAMESPACE}/{self.group_id}/{self.message_type.value}/{self.edge_node_id}"
        return base if self.device_id is None else f"{base}/{self.device_id}"

    @property
    def node_key(self) -> tuple[str, str]:
        """The Edge Node Descriptor (group, edge node), unique system-wide."""
        return (self.group_id, self.edge_node_id)


def _check_id(topic: str, what: str, value: str) -> None:
    if not value:
        raise SparkplugTopicError(topic, f"empty {what}")
    if "+" in value or "#" in value:
        raise SparkplugTopicError(topic, f"{what} {value!r} contains a wildcard character")


def parse_topic(topic: str) -> Topic:
    """Parse a Sparkplug B topic; raise :class:`SparkplugTopicError` for anything else."""
    parts = topic.split("/")
    if parts[0] == "STATE":
        if len(parts) != 2:
            raise SparkplugTopicError(topic, "legacy STATE topic must be STATE/<host_id>")
        _check_id(topic, "host id", parts[1])
        return Topic(MessageType.STATE, host_id=parts[1], legacy=True)
    if parts[0] != NAMESPACE:
        raise SparkplugTopicError(topic, f"namespace must be {NAMESPACE!r}")
    if len(parts) >= 2 and parts[1] == "STATE":
        if len(parts) != 3:
            raise SparkplugTopicError(topic, "STATE topic must be spBv1.0/STATE/<host_id>")
        _check_id(topic, "host id", parts[2])
        return Topic(MessageType.STATE, host_id=parts[2])
    if len(parts) not in (4, 5):
        raise SparkplugTopicError(topic, f"expected 4 or 5 levels, got {len(parts)}")
    mtype = _BY_NAME.get(parts[2])
    if mtype is None:
        raise SparkplugTopicError(topic, f"unknown message type {parts[2]!r}")
    _check_id(topic, "group id", parts[1])
    _check_id(topic, "edge node id", parts[3])
    if mtype in _NODE_TYPES:
        if len(parts) != 4:
            raise SparkplugTopicError(topic, f"{mtype.value} takes no device id")
        return Topic(mtype, parts[1], parts[3])
    if len(parts) != 5:
        raise SparkplugTopicError(topic, f"{mtype.value} needs a device id")
    _check_id(topic, "device id", parts[4])
    return Topic(mtype, parts[1], parts[3], parts[4])


def namespace_filters(groups: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The subscriptions of a host for ``groups`` (every group when empty): one
    ``spBv1.0/<group>/#`` per group, or ``spBv1.0/#``.  A shard of groups does not see
    other hosts' STATE (``spBv1.0/STATE/...``); a host subscribes its own apart."""
    return tuple(f"{NAMESPACE}/{g}/#" for g in groups) if groups else (f"{NAMESPACE}/#",)


def group_list(text: str) -> tuple[str, ...]:
    """Comma-separated group ids (``engine.groups``), in order, each once (empty: every group)."""
    return tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))


def valid_group_id(group: str) -> bool:
    """A group id a host can subscribe to on its own: no wildcard, no level, not STATE."""
    return group != "STATE" and not any(c in group for c in "+#/")
