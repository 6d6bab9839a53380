"""Births and deaths of edge nodes and devices (pure).

An NBIRTH starts a node's session: bdSeq, seq base, a fresh node-wide alias
space, and the node's born metrics (catalog entries and samples); every
device then needs a DBIRTH again.  A DBIRTH (re)defines one device.  An
NDEATH ends the session when its bdSeq matches the NBIRTH's; a DDEATH takes
one device offline.  Going offline marks the owner's metrics stale.

What the session manager does *around* these (giving up the reorder buffer
of the session that ends) is in :mod:`uns.sparkplug.session`; what is kept of
each born metric in :mod:`uns.sparkplug.births`.

:func:`nbirth` and :func:`dbirth` are generators (:mod:`uns.sparkplug.steps`): a
birth of many metrics pauses after every slice of them, so the engine's loop can
run between slices; ``run_steps`` runs one at once.  Each slice re-reads
``out.batch``, so a caller may take the rows made so far between slices.
"""

from __future__ import annotations

from uns.core.events import CatalogEntry, Quality, Sample, SessionEventKind
from uns.sparkplug.births import BornMetric, describe_properties, property_quality
from uns.sparkplug.nodes import NEVER_BORN, NO_DBIRTH, NO_NBIRTH, NodeState, Owner
from uns.sparkplug.outcome import (
    Outcome,
    RebirthPolicy,
    payload_ts,
    protocol_error_once,
    reject,
    session_event,
)
from uns.sparkplug.payload import Metric, Template
from uns.sparkplug.reorder import Received
from uns.sparkplug.steps import SLICE, Steps

__all__ = [
    "dbirth",
    "ddeath",
    "go_offline",
    "ignored_ndeath",
    "nbirth",
    "ndeath_bdseq",
    "node_died",
]

_GOOD = Quality.GOOD


def _int_value(metric: Metric) -> int | None:
    value = metric.value
    return value if type(value) is int else None


def _is_bdseq(name: str | None) -> bool:
    return name is not None and name.lower() == "bdseq"


# --- births --------------------------------------------------------------------------


def nbirth(node: NodeState, msg: Received, out: Outcome, rebirths: RebirthPolicy) -> Steps[None]:
    """A new session of ``node`` (its reorder buffer must have been given up first)."""
    ts = payload_ts(msg)
    previous = node.bdseq if node.own.online else None
    for device in node.devices.values():
        if device.online:
            _owner_offline(node, device, ts, out, "since the NBIRTH (waiting for a DBIRTH)", "NBIRTH")
        device.by_alias = {}  # the alias space is rebuilt; names stay for the view until the DBIRTH
    node.alias_owner.clear()
    node.ambiguous.clear()
    node.templates.clear()
    node.warned.clear()
    bdseq_metric = next(
        (m for m in msg.payload.metrics if _is_bdseq(m.name) and _int_value(m) is not None), None
    )
    node.bdseq = None if bdseq_metric is None else _int_value(bdseq_metric)
    node.bdseq_alias = None if bdseq_metric is None else bdseq_metric.alias
    node.tracker.restart(msg.seq, hash(msg.raw))
    node.own = Owner(None, NEVER_BORN)
    count = yield from _birth_metrics(node, node.own, msg, out, rebirths)
    node.own.online, node.own.birth_ts, node.born = True, ts, True
    detail = f"bdSeq={node.bdseq} seq={msg.seq} metrics={count}"
    if previous is not None and previous != node.bdseq:
        detail += f"; the session with bdSeq={previous} ended without an NDEATH"
    session_event(out, ts, node, None, SessionEventKind.BIRTH, detail)
    if bdseq_metric is None:
        protocol_error_once(node, "no-bdseq", "NBIRTH without an integer bdSeq metric", ts, out)
    if msg.seq is None:
        protocol_error_once(node, "no-seq", "NBIRTH without seq: the next seq is the base", ts, out)


def dbirth(
    node: NodeState, device_id: str, msg: Received, out: Outcome, rebirths: RebirthPolicy
) -> Steps[None]:
    """A device (re)born: its metrics replace whatever it had."""
    old = node.devices.get(device_id)
    for alias in () if old is None else old.by_alias:
        node.alias_owner.pop(alias, None)
    device = node.devices[device_id] = Owner(device_id, NO_DBIRTH)
    count = yield from _birth_metrics(node, device, msg, out, rebirths)
    device.online, device.birth_ts = True, payload_ts(msg)
    session_event(
        out, device.birth_ts, node, device_id, SessionEventKind.BIRTH, f"seq={msg.seq} metrics={count}"
    )


def _birth_metrics(
    node: NodeState, owner: Owner, msg: Received, out: Outcome, rebirths: RebirthPolicy
) -> Steps[int]:
    """Build the owner's records, catalog entries and samples; returns how many metrics were born."""
    batch = out.batch
    birth_ts = payload_ts(msg)
    ids = (node.group_id, node.edge_node_id, owner.device_id)
    count = 0
    for index, metric in enumerate(msg.payload.metrics):
        if index and not index % SLICE:
            yield
            batch = out.batch  # the caller may have taken the rows so far
        name, datatype, alias = metric.name, metric.datatype, metric.alias
        if not name or datatype is None:
            what = f"metric {name!r} has no datatype" if name else f"metric with alias {alias} has no name"
            reject(out, msg, f"BIRTH {what}: it cannot be defined")
            continue
        unit, properties = describe_properties(metric.properties)
        value = None if metric.is_null else metric.value
        definition = isinstance(value, Template) and bool(value.is_definition)
        control = owner.device_id is None and (_is_bdseq(name) or name.startswith("Node Control/"))
        is_sample = not (control or definition)
        record = BornMetric.define(name, alias, datatype, unit, is_sample)
        batch.catalog.append(
            CatalogEntry(*ids, name, alias, datatype, birth_ts, node.bdseq, unit, properties)
        )
        count += 1
        if definition:
            node.templates[name] = record
            continue
        owner.by_name[name] = record
        if alias is not None:
            _claim_alias(node, owner, record, msg.received_at, out, rebirths)
        if record.is_sample:
            props = metric.properties
            batch.samples.append(
                Sample(
                    *ids, name, datatype, value,
                    birth_ts if metric.timestamp is None else metric.timestamp, msg.received_at,
                    _GOOD if props is None else property_quality(props),
                    metric.is_historical, metric.is_transient, msg.seq, node.bdseq, alias, "", unit,
                )
            )  # fmt: skip
    return count


def _claim_alias(
    node: NodeState, owner: Owner, record: BornMetric, now: int, out: Outcome, rebirths: RebirthPolicy
) -> None:
    alias = record.alias
    assert alias is not None
    if alias not in node.alias_owner and alias not in node.ambiguous:
        node.alias_owner[alias] = owner.device_id
        owner.by_alias[alias] = record
        return
    # aliases are unique node-wide: a second claim makes every use of it unresolvable
    if alias in node.alias_owner:
        holder_id = node.alias_owner.pop(alias)
        holder = node.own if holder_id is None else node.devices.get(holder_id)
        if holder is not None:
            holder.by_alias.pop(alias, None)
    node.ambiguous.add(alias)
    why = f"alias {alias} of metric {record.name!r} is already used in this node's births"
    session_event(out, now, node, owner.device_id, SessionEventKind.PROTOCOL_ERROR, why)
    rebirths.request(node, why, now, out)


# --- deaths --------------------------------------------------------------------------


def ndeath_bdseq(node: NodeState, msg: Received) -> int | None:
    """The bdSeq an NDEATH carries (the ``bdSeq`` metric, or the NBIRTH's bdSeq alias)."""
    for metric in msg.payload.metrics:  # seq is ignored on NDEATH (some nodes send one)
        by_alias = metric.name is None and metric.alias is not None and metric.alias == node.bdseq_alias
        if _is_bdseq(metric.name) or by_alias:
            return _int_value(metric)
    return None


def ignored_ndeath(node: NodeState, bdseq: int | None) -> str | None:
    """Why an NDEATH with ``bdseq`` does not end the node's session; None when it does."""
    if not node.born:
        return f"bdSeq={bdseq}: {NO_NBIRTH}"
    if bdseq != node.bdseq:
        return f"bdSeq={bdseq} does not match the NBIRTH's bdSeq={node.bdseq} (an old session's Will?)"
    if not node.own.online:
        return f"repeated NDEATH bdSeq={bdseq}: node already offline"
    return None


def node_died(node: NodeState, bdseq: int | None, now: int, out: Outcome) -> None:
    """A matched NDEATH (its reorder buffer given up first): the node and its devices go offline."""
    session_event(out, now, node, None, SessionEventKind.DEATH, f"bdSeq={bdseq}")
    why = f"that is offline (NDEATH bdSeq={bdseq})"
    go_offline(node, now, out, why, "NDEATH", device_deaths=True)


def ddeath(node: NodeState, device_id: str, device: Owner | None, msg: Received, out: Outcome) -> None:
    """A DDEATH in seq order: the device goes offline (ignored when it is not online)."""
    ts = payload_ts(msg)
    if device is None or not device.online:
        offline = NO_DBIRTH if device is None else device.offline_reason
        session_event(out, ts, node, device_id, SessionEventKind.DEATH_IGNORED, f"device offline {offline}")
    else:
        session_event(out, ts, node, device_id, SessionEventKind.DEATH, f"DDEATH seq={msg.seq}")
        _owner_offline(node, device, ts, out, "after its DDEATH", "DDEATH")


def go_offline(node: NodeState, ts: int, out: Outcome, why: str, cause: str, *, device_deaths: bool) -> None:
    """The node and every online device offline, their metrics stale at ``ts``."""
    for device in node.devices.values():
        if device.online:
            if device_deaths:
                session_event(out, ts, node, device.device_id, SessionEventKind.DEATH, f"edge node {cause}")
            _owner_offline(node, device, ts, out, f"since its edge node's {cause}", cause)
    _owner_offline(node, node.own, ts, out, why, cause)
    node.tracker.forget()


def _owner_offline(node: NodeState, owner: Owner, ts: int, out: Outcome, why: str, cause: str) -> None:
    owner.online, owner.offline_reason = False, why
    detail = f"{cause}: {len(owner.by_name)} metrics stale"
    session_event(out, ts, node, owner.device_id, SessionEventKind.STALE, detail)
