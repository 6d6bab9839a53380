"""What the host keeps of each edge node and its devices, and read-only snapshots of it (pure).

One :class:`NodeState` per edge node seen: its seq stream
(:class:`~uns.sparkplug.reorder.SeqTracker`), the bdSeq of its session, the
node-wide alias space and one :class:`Owner` -- the born metrics -- for the
node itself and for each device.  :class:`~uns.sparkplug.session.SessionManager`
owns them; :func:`node_info` copies one into a :class:`NodeInfo` for status
and ``uns topics``.
"""

from __future__ import annotations

from dataclasses import dataclass

from uns.sparkplug.births import BornMetric
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.reorder import SeqTracker

__all__ = [
    "NEVER_BORN",
    "NO_DBIRTH",
    "NO_NBIRTH",
    "DeviceInfo",
    "MetricInfo",
    "NodeInfo",
    "NodeState",
    "Owner",
    "node_info",
]

#: why a node is not online when it never had an NBIRTH in this session
NO_NBIRTH = "no NBIRTH in this session (host started after it, or the NBIRTH was lost)"
NEVER_BORN = f"with {NO_NBIRTH}"
#: why a device is not online when it never had a DBIRTH in this session
NO_DBIRTH = "with no DBIRTH in this session"


class Owner:
    """The born metrics of the node itself or of one device."""

    __slots__ = ("birth_ts", "by_alias", "by_name", "device_id", "offline_reason", "online")

    def __init__(self, device_id: str | None, offline_reason: str) -> None:
        self.device_id = device_id
        self.online = False
        self.offline_reason = offline_reason
        self.birth_ts: int | None = None
        self.by_name: dict[str, BornMetric] = {}
        self.by_alias: dict[int, BornMetric] = {}


class NodeState:
    """One edge node: its session, seq stream, alias space, devices and rebirth bookkeeping."""

    __slots__ = (
        "alias_owner",
        "ambiguous",
        "bdseq",
        "bdseq_alias",
        "born",
        "devices",
        "edge_node_id",
        "group_id",
        "key",
        "last_rebirth_at",
        "own",
        "rebirths_requested",
        "rebirths_suppressed",
        "templates",
        "tracker",
        "warned",
    )

    def __init__(self, group_id: str, edge_node_id: str) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.key = (group_id, edge_node_id)
        self.own = Owner(None, NEVER_BORN)
        self.devices: dict[str, Owner] = {}
        self.alias_owner: dict[int, str | None] = {}  # node-wide alias space: alias -> device id (None: node)
        self.ambiguous: set[int] = set()  # aliases claimed twice in the births: unusable until NBIRTH
        self.templates: dict[str, BornMetric] = {}
        self.born = False
        self.bdseq: int | None = None
        self.bdseq_alias: int | None = None
        self.tracker = SeqTracker()
        self.last_rebirth_at: int | None = None
        self.rebirths_requested = 0
        self.rebirths_suppressed = 0
        self.warned: set[str] = set()  # protocol errors already recorded since the NBIRTH


# --- snapshots ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    alias: int | None
    datatype: DataType
    unit: str | None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    online: bool
    birth_ts: int | None
    metrics: tuple[MetricInfo, ...]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Read-only snapshot of one edge node (for status and ``uns topics``)."""

    group_id: str
    edge_node_id: str
    online: bool
    bdseq: int | None
    next_seq: int | None
    birth_ts: int | None
    metrics: tuple[MetricInfo, ...]
    templates: tuple[str, ...]
    devices: tuple[DeviceInfo, ...]
    buffered: int
    rebirths_requested: int
    rebirths_suppressed: int


def node_info(node: NodeState) -> NodeInfo:
    """The snapshot of ``node`` (devices sorted by id)."""

    def metrics(owner: Owner) -> tuple[MetricInfo, ...]:
        return tuple(MetricInfo(r.name, r.alias, r.datatype, r.unit) for r in owner.by_name.values())

    devices = tuple(DeviceInfo(d, o.online, o.birth_ts, metrics(o)) for d, o in sorted(node.devices.items()))
    own, tracker = node.own, node.tracker
    return NodeInfo(
        node.group_id, node.edge_node_id, own.online, node.bdseq, tracker.expected, own.birth_ts,
        metrics(own), tuple(node.templates), devices, tracker.buffered,
        node.rebirths_requested, node.rebirths_suppressed,
    )  # fmt: skip
