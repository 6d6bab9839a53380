"""The TCK's MultipleBrokerTest: one host, two real mosquittos (``--broker`` twice).

The host keeps a session per broker: on each, its first PUBLISH is a STATE birth
carrying that connection's own Will timestamp.  Then, as the TCK does, the host is
forcibly disconnected from broker 1 (its connection cut, so the broker publishes the
Will): broker 1 shows offline, then online again with a new timestamp, while broker 2
stays online with its own.  Births, deaths and seq are tracked per broker: losing
broker 1 makes stale only what was learned through it, and each broker's data lands
once in the lake.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from tests.conformance import StatusWatch, UnsRun, lake_sessions, retained, tck
from tests.edge import RawEdge
from tests.wiretap import Packet, Wiretap
from uns.mqtt.mosquitto import Mosquitto

pytestmark = pytest.mark.integration


def _session_start(tap: Wiretap, client_id: str, conn: int) -> tuple[int, Packet]:
    """(the Will's T, the first PUBLISH) of connection ``conn``; SUBSCRIBEs came before it."""
    packets = tap.connection(conn)
    connect = packets[0]
    assert connect.kind == "CONNECT" and connect.fields["client_id"] == client_id
    will_ts = int(json.loads(connect.fields["will"].payload)["timestamp"])
    first = next(p for p in packets if p.kind == "PUBLISH")
    assert {p.kind for p in packets[1 : packets.index(first)]} <= {"SUBSCRIBE", "PINGREQ", "PUBACK"}
    assert any(p.kind == "SUBSCRIBE" for p in packets[: packets.index(first)])
    return will_ts, first


async def _follow(host: str, port: int, topic: str, into: list[dict[str, object]]) -> None:
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(topic, qos=1)
        async for msg in client.messages:
            into.append(json.loads(bytes(msg.payload)))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@tck("operational-behavior-host-application-multi-server-timestamp",
     does="broker.urls: one session per broker, each with its own STATE timestamp T")  # fmt: skip
@tck("operational-behavior-primary-application-state-with-multiple-servers-state",
     "operational-behavior-primary-application-state-with-multiple-servers-state-subs",
     does="on each broker: SUBSCRIBE, then STATE online first; a forced disconnect from one "
          "broker: offline (Will) then online there, the other stays online")  # fmt: skip
async def test_multiple_brokers(
    broker: Mosquitto, second_broker: Mosquitto, ns: str, tmp_path: Path, protocol: str
) -> None:
    host, lake = f"{ns}-h", tmp_path / "lake"
    state_topic, client_id = f"spBv1.0/STATE/{host}", f"uns-{host}"
    env = {
        "UNS_LAKE": str(lake),
        "UNS_LAKE_COMMIT_INTERVAL": "0.5",
        "UNS_ENGINE_PREFIX": f"{ns}/uns",
        "UNS_BROKER_PROTOCOL": protocol,
    }
    seen_1: list[dict[str, object]] = []
    with pytest.raises(TimeoutError):  # the host is offline at the start: no STATE anywhere
        await retained(second_broker.host, second_broker.port, state_topic, timeout=0.5)
    async with (
        Wiretap(broker.port) as tap_1,
        Wiretap(second_broker.port) as tap_2,
        StatusWatch(broker.host, broker.port, f"{ns}/uns/_engine/{host}/status") as status,
        UnsRun("--primary", "--host-id", host, "--broker", tap_1.url, "--broker", tap_2.url, env=env) as run,
        aiomqtt.Client(broker.host, broker.port) as edge_1,
        aiomqtt.Client(second_broker.host, second_broker.port) as edge_2,
    ):
        follower = asyncio.create_task(_follow(broker.host, broker.port, state_topic, seen_1))
        births = []
        for tap in (tap_1, tap_2):
            birth = await tap.wait_for(
                lambda p: p.kind == "PUBLISH" and p.topic == state_topic, 30, "a birth"
            )
            will_ts, first = _session_start(tap, client_id, birth.conn)
            assert first is birth and birth.json() == {"online": True, "timestamp": will_ts}
            assert (birth.fields["qos"], birth.fields["retain"]) == (1, True)
            births.append(birth)
        ts_1, ts_2 = (b.json()["timestamp"] for b in births)
        # an edge node on each broker, with data
        node_1, node_2 = RawEdge(edge_1, ns, "N1"), RawEdge(edge_2, ns, "N2")
        await node_1.born_with_data("D1", 3)
        await node_2.born_with_data("D1", 3)
        await status.until(lambda d: d["nodes_online"] == 2 and d["devices_online"] == 2, "both born")
        # the TCK disconnects the host from broker 1
        tap_1.cut(births[0].conn)
        reborn = await tap_1.wait_for(
            lambda p: p.kind == "PUBLISH" and p.topic == state_topic and p.conn != births[0].conn,
            30,
            "reconnect",
        )
        new_will, first = _session_start(tap_1, client_id, reborn.conn)
        assert (
            first is reborn and reborn.json() == {"online": True, "timestamp": new_will} and new_will > ts_1
        )
        await status.until(lambda d: d["nodes_online"] == 1, "N1 (broker 1) offline, N2 (broker 2) online")
        assert [b["connected"] for b in status.doc["brokers"]] == [True, True]
        # broker 1 said offline (the Will, T of the cut connection) and then online again
        follower.cancel()
        assert {"online": False, "timestamp": ts_1} in seen_1
        assert seen_1[-1] == {"online": True, "timestamp": new_will}
        # broker 2 never saw us go: online, its own T (>= its Will's, which it is)
        assert await retained(second_broker.host, second_broker.port, state_topic) == {
            "online": True,
            "timestamp": ts_2,
        }
        assert tap_2.of("CONNECT") == [tap_2.connection(births[1].conn)[0]]  # one session, never cut
        assert await run.stop() == 0
    # what broker 1's loss made stale: N1 only
    disconnected = {(n, d) for _ts, n, d, event, _x in lake_sessions(lake, ns) if event == "disconnected"}
    assert disconnected == {("N1", None)}
    # each broker's data lands once
    from uns.lake import connect  # noqa: PLC0415

    con = connect(lake)
    counts = con.execute(
        "SELECT edge_node_id, count(*), count(DISTINCT seq) FROM measurements "
        "WHERE group_id = ? AND metric = 'Temperature' GROUP BY 1 ORDER BY 1",
        [ns],
    ).fetchall()
    con.close()
    assert counts == [("N1", 4, 4), ("N2", 4, 4)]  # the DBIRTH's value and three DDATA each
