"""The engine against the simulator's edge nodes: faults lead to rebirths that the node answers."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine_helpers import CollectingSink, engine_config, running_engine, wait_for
from uns.core.events import SessionEventKind
from uns.engine.host import Engine
from uns.mqtt.mosquitto import Mosquitto
from uns.sim import EdgeNode, pilot_plant
from uns.sim.sentlog import SentLog

pytestmark = pytest.mark.integration


def _births(sink: CollectingSink) -> int:
    return len([e for e in sink.events(SessionEventKind.BIRTH) if e.device_id is None])


@pytest.mark.parametrize("fault", ["skip_seq", "send_unknown_alias", "send_garbage"])
async def test_fault_leads_to_a_rebirth_the_node_answers(broker: Mosquitto, ns: str, fault: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns, **{"sparkplug.reorder_timeout_ms": 300}), sinks=[sink])
    log = SentLog()
    async with running_engine(engine):
        node = EdgeNode(
            pilot_plant(ns).nodes[0],
            group_id=ns,
            host=broker.host,
            port=broker.port,
            report_by_exception=False,
            sent_log=log,
        )
        async with node:  # connects and publishes its births
            await node.publish_data()
            await wait_for(lambda: _births(sink) >= 1, what="first NBIRTH")
            await asyncio.sleep(0.2)
            before = _births(sink)
            await getattr(node, fault)("BR-101") if fault != "skip_seq" else await node.skip_seq()
            await node.publish_data()
            await wait_for(
                lambda: _births(sink) > before, timeout=15, what="NBIRTH after the rebirth request"
            )
            await node.publish_data()
            await asyncio.sleep(0.3)
    assert engine.counters.rebirths_requested >= 1
    assert log.counts.rebirths_answered >= 1
    assert sink.events(SessionEventKind.REBIRTH_REQUESTED)
    # data after the rebirth is used again
    last_birth = max(e.ts for e in sink.events(SessionEventKind.BIRTH))
    assert any(s.received_at >= last_birth and s.device_id == "BR-101" for s in sink.samples)
