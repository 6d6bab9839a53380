"""NDATA/DDATA of an online node or device, in seq order: one sample per metric (pure).

The typed path: every metric of a decoded :class:`~uns.sparkplug.payload.Payload`
is looked up by alias (or by name when it has none) among the owner's born
metrics and typed with the BIRTH's datatype, unless it carries its own
``datatype`` on the wire, which then wins.  A metric no BIRTH defined is
rejected and the node asked for a rebirth; the rest of the message is used.
(Ordinary in-order DATA usually takes the lean decoder of
:mod:`uns.sparkplug.fastdata` instead, with the same result.)
"""

from __future__ import annotations

from uns.core.events import Quality, Sample
from uns.errors import SparkplugDecodeError
from uns.sparkplug.births import property_quality
from uns.sparkplug.nodes import NodeState, Owner
from uns.sparkplug.outcome import Outcome, RebirthPolicy, payload_ts, reject
from uns.sparkplug.payload import Metric, MetricValue
from uns.sparkplug.reorder import Received

__all__ = ["apply_data"]

_GOOD = Quality.GOOD


def apply_data(node: NodeState, owner: Owner, msg: Received, out: Outcome, rebirths: RebirthPolicy) -> None:
    """The samples of one DATA message of ``owner`` (the node or one of its devices)."""
    # the hot path: one dict lookup, one converter call and one Sample per metric
    samples = out.batch.samples
    group_id, edge_node_id, device_id = node.group_id, node.edge_node_id, owner.device_id
    received_at, seq, bdseq = msg.received_at, msg.seq, node.bdseq
    ts = payload_ts(msg)
    by_alias, by_name = owner.by_alias, owner.by_name
    unborn: list[str] = []
    for metric in msg.payload.metrics:
        alias = metric.alias
        record = by_alias.get(alias) if alias is not None else by_name.get(metric.name or "")
        if record is None:
            unborn.append(_unborn(node, owner, metric, msg, out))
            continue
        value: MetricValue
        if metric.is_null:
            value, datatype = None, metric.datatype or record.datatype
        elif metric.datatype is None:
            try:
                value = record.convert(metric.value)
            except SparkplugDecodeError as exc:
                reject(out, msg, f"metric {record.name!r}: not a {record.datatype.name}: {exc.reason}")
                continue
            datatype = record.datatype
        else:
            value, datatype = metric.value, metric.datatype
        if record.is_sample:
            props = metric.properties
            samples.append(
                Sample(
                    group_id, edge_node_id, device_id, record.name, datatype, value,
                    ts if metric.timestamp is None else metric.timestamp, received_at,
                    _GOOD if props is None else property_quality(props),
                    metric.is_historical, metric.is_transient, seq, bdseq, record.alias, "", record.unit,
                )
            )  # fmt: skip
    if unborn:
        listed = ", ".join(unborn[:3]) + (f" (+{len(unborn) - 3} more)" if len(unborn) > 3 else "")
        rebirths.request(node, f"{msg.topic.message_type.value} with {listed}", received_at, out)


def _unborn(node: NodeState, owner: Owner, metric: Metric, msg: Received, out: Outcome) -> str:
    """Reject a DATA metric that no BIRTH defined; returns a short description."""
    alias = metric.alias
    if alias is None:
        what = f"unborn metric {metric.name!r}" if metric.name else "a metric with neither name nor alias"
        why = f"{what}: not in the {'DBIRTH' if owner.device_id else 'NBIRTH'}"
    else:
        what = f"unknown alias {alias}"
        if alias in node.ambiguous:
            why = f"alias {alias} is claimed by more than one metric in the births"
        elif alias in node.alias_owner:
            holder = node.alias_owner[alias]
            why = f"alias {alias} belongs to {f'device {holder!r}' if holder else 'the node'}"
        else:
            why = f"alias {alias} is not in any BIRTH of this session"
        if metric.name:
            why += f" (metric named {metric.name!r})"
    reject(out, msg, why)
    return what
