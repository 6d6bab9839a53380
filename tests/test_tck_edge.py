"""The TCK's EdgeSessionTerminationTest and MessageOrderingTest, and the MUST it cannot test.

The TCK asks a person whether the host marked devices offline and metrics stale
after a DDEATH and an NDEATH; here the answer is read where uns records it: the
lake's ``sessions`` table (``death`` and ``stale`` events, at the DDEATH's payload
timestamp or at the host's receive time for an NDEATH) and the live status
document (nodes and devices online).  The reordering test withholds a DDATA and
watches the host's own NCMD on the wire, as the TCK does.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import pytest

from tests.conformance import StatusWatch, UnsRun, lake_sessions, tck
from tests.edge import RawEdge, now_ms
from tests.wiretap import Wiretap
from uns.mqtt.mosquitto import Mosquitto
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.payload import Payload

pytestmark = pytest.mark.integration


def _lake_env(lake: Path, ns: str, **more: str) -> dict[str, str]:
    return {
        "UNS_LAKE": str(lake),
        "UNS_LAKE_COMMIT_INTERVAL": "0.5",
        "UNS_ENGINE_PREFIX": f"{ns}/uns",
        **more,
    }


@tck("operational-behavior-edge-node-termination-host-action-ddeath-devices-offline",
     "operational-behavior-edge-node-termination-host-action-ddeath-devices-tags-stale",
     does="DDEATH: the device offline, its metrics stale, at the DDEATH's payload timestamp "
          "(sessions: death + stale; status: devices_online)")  # fmt: skip
@tck("operational-behavior-edge-node-termination-host-action-ndeath-node-offline",
     "operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale",
     "operational-behavior-edge-node-termination-host-action-ndeath-devices-offline",
     "operational-behavior-edge-node-termination-host-action-ndeath-devices-tags-stale",
     does="NDEATH (bdSeq of the NBIRTH): node and devices offline, all their metrics stale, at "
          "the host's receive time (sessions: death + stale; status: nodes/devices_online)")  # fmt: skip
async def test_edge_session_termination(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    host = f"{ns}-h"
    status_topic = f"{ns}/uns/_engine/{host}/status"
    env = _lake_env(lake, ns)
    async with (
        StatusWatch(broker.host, broker.port, status_topic) as status,
        UnsRun("--host-id", host, "--broker", broker.url, env=env) as run,
        aiomqtt.Client(broker.host, broker.port) as client,
    ):
        await status.until(lambda d: d["connected"], "the host connected")
        edge = RawEdge(client, ns, "N1", bdseq=3)
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge.dbirth("D2")
        await status.until(
            lambda d: (d["nodes_online"], d["devices_online"]) == (1, 2), "node and devices born"
        )
        ddeath_ts = now_ms() - 7_000  # clearly not the receive time
        ddeath = Payload(timestamp=ddeath_ts, seq=edge.next_seq())
        await client.publish(edge.topic("DDEATH", "D1"), encode_payload(ddeath))
        await status.until(lambda d: d["devices_online"] == 1, "D1 offline")
        sent = now_ms()
        await edge.ndeath()  # its payload timestamp is the edge's; the host uses its own time
        await status.until(lambda d: (d["nodes_online"], d["devices_online"]) == (0, 0), "all offline")
        received_by = now_ms()
        assert await run.stop() == 0
    rows = lake_sessions(lake, ns)
    events = {(device, event): ts for ts, _node, device, event, _detail in rows}
    assert events[("D1", "death")] == events[("D1", "stale")] == ddeath_ts
    for who in (None, "D2"):  # the node and the device still online at the NDEATH
        assert sent <= events[(who, "death")] <= received_by
        assert events[(who, "stale")] == events[(who, "death")]
    details = {(device, event): detail for _ts, _node, device, event, detail in rows}
    assert details[("D2", "stale")].endswith("metrics stale") and "NDEATH" in details[("D2", "stale")]


async def _ncmds(tap: Wiretap, group: str, after: float) -> list[tuple[float, Payload]]:
    return [
        (p.at, decode_payload(p.fields["payload"]))
        for p in tap.of("PUBLISH")
        if p.topic == f"spBv1.0/{group}/NCMD/N1" and p.at >= after
    ]


@tck("operational-behavior-host-reordering-param",
     does="sparkplug.reorder_timeout_ms sets the Reorder Timeout")  # fmt: skip
@tck("operational-behavior-host-reordering-start",
     does="a seq gap starts the timer; later messages wait in the reorder buffer")  # fmt: skip
@tck("operational-behavior-host-reordering-rebirth",
     does="the timer expires: NCMD Node Control/Rebirth=true (QoS 0), the gap in sessions")  # fmt: skip
@tck("operational-behavior-host-reordering-success",
     does="the missing message in time: the timer stops, no rebirth (sessions: reorder_ok)")  # fmt: skip
async def test_message_ordering(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    timeout_s = 1.5
    lake = tmp_path / "lake"
    env = _lake_env(
        lake,
        ns,
        UNS_SPARKPLUG_REORDER_TIMEOUT_MS=str(int(timeout_s * 1000)),
        UNS_SPARKPLUG_REBIRTH_MIN_INTERVAL_MS="0",  # so that round 2 would see a rebirth if one were sent
    )
    async with (
        Wiretap(broker.port) as tap,
        UnsRun("--primary", "--host-id", f"{ns}-h", "--broker", tap.url, env=env) as run,
        aiomqtt.Client(broker.host, broker.port) as client,
    ):
        await tap.wait_for(lambda p: p.kind == "PUBLISH" and "STATE" in p.topic, 30, "the host's birth")
        edge = RawEdge(client, ns, "N1")
        # round 1: three DDATA, then seq 5 is withheld and never sent
        await edge.born_with_data("D1", 3)  # NBIRTH seq 0, DBIRTH 1, DDATA 2..4
        edge.next_seq()  # seq 5: withheld
        gap_at = time.time()
        await edge.ddata("D1", 99.0)  # seq 6
        await tap.wait_for(
            lambda p: p.kind == "PUBLISH" and p.topic == f"spBv1.0/{ns}/NCMD/N1",
            15,
            "the rebirth request",
        )
        ((asked_at, request),) = await _ncmds(tap, ns, gap_at)
        assert asked_at - gap_at >= timeout_s * 0.9, "the timer ran for the reorder timeout"
        assert [(m.name, m.value) for m in request.metrics] == [("Node Control/Rebirth", True)]
        # round 2: the edge rebirths; seq 4 is late but arrives within the timeout
        await edge.born_with_data("D1", 1)  # NBIRTH 0, DBIRTH 1, DDATA 2
        late = edge.ddata_payload(3.0)  # seq 3, held back
        await edge.ddata("D1", 4.0)  # seq 4 before it
        round2 = time.time()
        await asyncio.sleep(timeout_s / 3)
        await client.publish(edge.topic("DDATA", "D1"), late)
        await asyncio.sleep(2 * timeout_s)
        assert await _ncmds(tap, ns, round2) == [], "no rebirth when the gap filled in time"
        assert await run.stop() == 0
    events = [event for _ts, _node, _device, event, _detail in lake_sessions(lake, ns)]
    assert "reorder_timeout" in events and "seq_gap" in events and "reorder_ok" in events
    assert events.index("reorder_ok") > events.index("reorder_timeout")


@tck("host-broker-lost-metrics-stale",
     does="the broker connection lost: every node and device learned through it offline, "
          "their metrics stale (sessions: disconnected + stale), until their next birth")  # fmt: skip
async def test_a_lost_broker_makes_every_metric_stale(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    host = f"{ns}-h"
    env = _lake_env(lake, ns)
    async with (
        Wiretap(broker.port) as tap,
        StatusWatch(broker.host, broker.port, f"{ns}/uns/_engine/{host}/status") as status,
        UnsRun("--primary", "--host-id", host, "--broker", tap.url, env=env) as run,
        aiomqtt.Client(broker.host, broker.port) as client,
    ):
        await status.until(lambda d: d["connected"], "the host connected")
        edge = RawEdge(client, ns, "N1")
        await edge.born_with_data("D1", 2)
        await status.until(lambda d: (d["nodes_online"], d["devices_online"]) == (1, 1), "born")
        (first,) = tap.client_connections(f"uns-{host}")
        cut_at = now_ms()
        tap.cut(first)  # the broker connection is lost (the TCK cannot test this: a MUST)
        await tap.wait_for(lambda p: p.kind == "CONNECT" and p.conn != first, 15, "the reconnect")
        await status.until(lambda d: d["connected"] and d["nodes_online"] == 0, "offline after the loss")
        assert status.doc["devices_online"] == 0
        assert await run.stop() == 0
    rows = lake_sessions(lake, ns)
    after = [(device, event) for ts, _n, device, event, _d in rows if ts >= cut_at]
    assert (None, "disconnected") in after
    assert (None, "stale") in after and ("D1", "stale") in after
