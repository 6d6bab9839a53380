"""Node commands a host sends (pure): the NCMD that asks an edge node to rebirth."""

from __future__ import annotations

from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload

__all__ = ["REBIRTH_METRIC", "rebirth_payload", "rebirth_topic"]

#: the Node Control metric a host sets to true to ask for a rebirth (Sparkplug B 3.0, 6.4.6)
REBIRTH_METRIC = "Node Control/Rebirth"


def rebirth_payload(ts: int) -> bytes:
    """NCMD ``Node Control/Rebirth = true`` at ``ts``: payload timestamp, no seq, Boolean, never aliased."""
    return encode_payload(
        Payload(
            timestamp=ts,
            metrics=[Metric(name=REBIRTH_METRIC, timestamp=ts, datatype=DataType.Boolean, value=True)],
        )
    )


def rebirth_topic(group_id: str, edge_node_id: str) -> str:
    """Where a rebirth request for ``group_id/edge_node_id`` goes."""
    return f"spBv1.0/{group_id}/NCMD/{edge_node_id}"
