"""The TCK's SessionEstablishmentTest and SessionTerminationTest, driven the way the TCK does.

``uns run --primary`` connects through a :class:`~tests.wiretap.Wiretap` to a real
mosquitto; the tap records the host's CONNECT (clean session, Will), SUBSCRIBEs
and PUBLISHes in order, as the TCK's HiveMQ extension intercepts them.  Then, as
the TCK does, a client publishes a spoofed ``{"online":false}`` with the Will's
timestamp on the host's STATE topic, and at the end the operator stops the host
(SIGTERM).  Each test runs over MQTT 3.1.1 and MQTT 5.0 (``broker.protocol``).
"""

from __future__ import annotations

import json
import time

import aiomqtt
import pytest

from tests.conformance import UnsRun, retained, tck
from tests.wiretap import Packet, Wiretap
from uns.mqtt.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

#: how far a STATE timestamp may be from this machine's UTC clock (the TCK checks a window)
WINDOW_MS = 60_000

WILL_IDS = (
    "operational-behavior-host-application-connect-will",
    "operational-behavior-host-application-connect-will-topic",
    "operational-behavior-host-application-connect-will-payload",
    "operational-behavior-host-application-connect-will-qos",
    "operational-behavior-host-application-connect-will-retained",
    "host-topic-phid-death-required",
    "host-topic-phid-death-topic",
    "host-topic-phid-death-payload",
    "host-topic-phid-death-qos",
    "host-topic-phid-death-retain",
    "payloads-state-will-message",
    "payloads-state-will-message-payload",
    "payloads-state-will-message-qos",
    "payloads-state-will-message-retain",
)
SUBSCRIBE_IDS = (
    "message-flow-phid-sparkplug-subscription",
    "host-topic-phid-birth-sub-required",
    "payloads-state-subscribe",
)
BIRTH_IDS = (
    "principles-birth-certificates-order",
    "host-topic-phid-birth-message",
    "host-topic-phid-birth-required",
    "host-topic-phid-birth-topic",
    "host-topic-phid-birth-payload",
    "host-topic-phid-birth-payload-timestamp",
    "host-topic-phid-birth-qos",
    "host-topic-phid-birth-retain",
    "payloads-state-birth",
    "payloads-state-birth-payload",
    "message-flow-phid-sparkplug-state-publish",
    "message-flow-phid-sparkplug-state-publish-payload",
    "message-flow-phid-sparkplug-state-publish-payload-timestamp",
    "operational-behavior-host-application-connect-birth",
    "operational-behavior-host-application-connect-birth-payload",
    "operational-behavior-host-application-connect-birth-qos",
    "operational-behavior-host-application-connect-birth-retained",
    "operational-behavior-host-application-connect-birth-topic",
)
STATE_IDS = ("intro-sparkplug-host-state", "components-ph-state", "conformance-primary-host")
DEATH_IDS = (
    "operational-behavior-host-application-termination",
    "operational-behavior-host-application-death-topic",
    "operational-behavior-host-application-death-payload",
    "operational-behavior-host-application-death-qos",
    "operational-behavior-host-application-death-retained",
    "operational-behavior-host-application-disconnect-intentional",
    "host-topic-phid-death-payload-timestamp-disconnect-clean",
    "host-topic-phid-death-payload-timestamp-disconnect-with-no-disconnect-packet",
)


def _utc_ok(ts: object, started_ms: int) -> bool:
    now = time.time_ns() // 1_000_000
    return type(ts) is int and started_ms - WINDOW_MS <= ts <= now + WINDOW_MS


def _check_connect(connect: Packet, host_id: str, protocol: str) -> int:
    """The CONNECT: clean session, and a Will of {online:false, T} on our STATE topic, QoS 1,
    retained.  Returns T."""
    f = connect.fields
    assert f["client_id"] == f"uns-{host_id}"
    assert f["clean"] is True
    if protocol == "5":
        assert f["level"] == 5 and f["session_expiry"] == 0  # Clean Start, Session Expiry 0
    else:
        assert f["level"] == 4
    will = f["will"]
    assert will is not None and will.topic == f"spBv1.0/STATE/{host_id}"
    assert (will.qos, will.retain) == (1, True)
    payload = json.loads(will.payload)
    assert set(payload) == {"online", "timestamp"} and payload["online"] is False
    return int(payload["timestamp"])


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@tck("message-flow-phid-sparkplug-clean-session-311", "message-flow-phid-sparkplug-clean-session-50",
     does="CONNECT with Clean Session 1 (3.1.1), or Clean Start 1 and Session Expiry 0 (MQTT 5)")  # fmt: skip
@tck(*WILL_IDS, does="a Will on spBv1.0/STATE/<host_id>: {online:false, timestamp:T}, QoS 1, retained")
@tck(*SUBSCRIBE_IDS, does="SUBSCRIBE spBv1.0/# and spBv1.0/STATE/<host_id> (QoS 1) before any PUBLISH")
@tck(*BIRTH_IDS, does="first PUBLISH: STATE {online:true, timestamp:T} (the Will's T), QoS 1, retained")
@tck(*STATE_IDS, does="the primary host (--primary) keeps STATE birth, Will and death")
@tck("message-flow-hid-sparkplug-state-message-delivered",
     does="its own STATE seen offline while connected: re-published online at once, the same T")  # fmt: skip
@tck("host-topic-phid-death-payload-timestamp-connect",
     does="the Will's T is taken when CONNECT is sent (UTC ms)")  # fmt: skip
async def test_session_establishment(broker: Mosquitto, ns: str, protocol: str) -> None:
    host_id = f"{ns}-h"
    state_topic = f"spBv1.0/STATE/{host_id}"
    started = time.time_ns() // 1_000_000
    env = {"UNS_BROKER_PROTOCOL": protocol}
    async with (
        Wiretap(broker.port) as tap,
        UnsRun("--primary", "--host-id", host_id, "--broker", tap.url, env=env) as run,
    ):
        birth = await tap.wait_for(
            lambda p: p.kind == "PUBLISH" and p.topic == state_topic, 30, "STATE birth"
        )
        packets = tap.connection(birth.conn)
        connect = packets[0]
        assert connect.kind == "CONNECT"
        will_ts = _check_connect(connect, host_id, protocol)
        # T is the time of CONNECT, UTC ms (within the clock's resolution and the tap's delay)
        assert _utc_ok(will_ts, started) and started <= will_ts <= connect.at * 1000 + 50
        before = packets[1 : packets.index(birth)]
        assert {p.kind for p in before} <= {"SUBSCRIBE", "PINGREQ", "PUBACK"}, (
            "nothing published before the birth"
        )
        filters = dict(f for p in before if p.kind == "SUBSCRIBE" for f in p.fields["filters"])
        assert "spBv1.0/#" in filters and filters.get(state_topic) == 1
        assert (birth.fields["qos"], birth.fields["retain"]) == (1, True)
        assert birth.json() == {"online": True, "timestamp": will_ts}
        # the TCK publishes us offline with our own T: we answer online at once, the same T
        version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
        async with aiomqtt.Client(broker.host, broker.port, protocol=version) as tck_client:
            spoof = json.dumps({"online": False, "timestamp": will_ts}).encode()
            spoofed_at = time.time()
            await tck_client.publish(state_topic, spoof, qos=1, retain=True)
        again = await tap.wait_for(
            lambda p: p.kind == "PUBLISH" and p.topic == state_topic and p.at >= spoofed_at,
            10,
            "re-birth",
        )
        assert again.conn == birth.conn and (again.fields["qos"], again.fields["retain"]) == (1, True)
        assert again.json() == {"online": True, "timestamp": will_ts}
        assert await retained(broker.host, broker.port, state_topic) == {
            "online": True,
            "timestamp": will_ts,
        }
        assert await run.stop() == 0


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@tck(
    *DEATH_IDS, does="on SIGTERM: STATE {online:false, timestamp: now >= T}, QoS 1, retained, then DISCONNECT"
)
async def test_session_termination(broker: Mosquitto, ns: str, protocol: str) -> None:
    host_id = f"{ns}-h"
    state_topic = f"spBv1.0/STATE/{host_id}"
    env = {"UNS_BROKER_PROTOCOL": protocol}
    async with Wiretap(broker.port) as tap:
        async with UnsRun("--primary", "--host-id", host_id, "--broker", tap.url, env=env) as run:
            birth = await tap.wait_for(
                lambda p: p.kind == "PUBLISH" and p.topic == state_topic, 30, "STATE birth"
            )
            will_ts = _check_connect(tap.connection(birth.conn)[0], host_id, protocol)
            assert birth.json() == {"online": True, "timestamp": will_ts}
            assert await run.stop() == 0  # the operator stops the host
        await tap.wait_for(lambda p: p.kind == "CLOSED" and p.conn == birth.conn, 10, "the connection's end")
    packets = tap.connection(birth.conn)
    kinds = [p.kind for p in packets]
    states = [p for p in packets if p.kind == "PUBLISH" and p.topic == state_topic]
    death = states[-1]
    assert death.json()["online"] is False and death.json()["timestamp"] >= will_ts
    assert (death.fields["qos"], death.fields["retain"]) == (1, True)
    # the death is published before the DISCONNECT, and before the connection closes
    assert kinds.index("DISCONNECT") > packets.index(death) and kinds[-1] == "CLOSED"
    assert all(p.kind in ("PUBACK", "UNSUBSCRIBE", "PINGREQ") for p in packets[packets.index(death) + 1 : -2])
    # and it is what the broker keeps: the death, not the Will (the clean DISCONNECT drops the Will)
    assert await retained(broker.host, broker.port, state_topic) == death.json()


@tck("operational-behavior-host-application-host-id",
     does="the host id names STATE topic and client id (uns-<host_id>); +, #, / refused")  # fmt: skip
async def test_host_ids_keep_hosts_apart(broker: Mosquitto, ns: str) -> None:
    async with (
        Wiretap(broker.port) as tap,
        UnsRun("--primary", "--host-id", f"{ns}-a", "--broker", tap.url) as a,
        UnsRun("--primary", "--host-id", f"{ns}-b", "--broker", tap.url) as b,
    ):
        for host in ("a", "b"):
            topic = f"spBv1.0/STATE/{ns}-{host}"
            await tap.wait_for(lambda p, t=topic: p.kind == "PUBLISH" and p.topic == t, 30, f"{host}'s birth")
        ids = {p.fields["client_id"] for p in tap.of("CONNECT")}
        assert {f"uns-{ns}-a", f"uns-{ns}-b"} <= ids
        assert await a.stop() == 0 and await b.stop() == 0
    bad = UnsRun("--primary", "--host-id", "plant/line")
    async with bad:
        assert await bad.wait() == 1
    assert b"engine.host_id must be non-empty without '+', '#', '/'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


async def test_groups_mode_says_once_that_the_tck_needs_the_whole_namespace(
    broker: Mosquitto, ns: str
) -> None:
    """With engine.groups the host subscribes per group (a shard), which fails the TCK's
    subscription check: it says so at start, once, and STATE works as before."""
    host_id = f"{ns}-h"
    state_topic = f"spBv1.0/STATE/{host_id}"
    async with Wiretap(broker.port) as tap:
        args = ("--primary", "--host-id", host_id, "--broker", tap.url, "--groups", f"{ns}A,{ns}B")
        async with UnsRun(*args) as run:
            birth = await tap.wait_for(
                lambda p: p.kind == "PUBLISH" and p.topic == state_topic, 30, "STATE birth"
            )
            filters = [f for p in tap.of("SUBSCRIBE", birth.conn) for f, _ in p.fields["filters"]]
            assert filters == [f"spBv1.0/{ns}A/#", f"spBv1.0/{ns}B/#", state_topic]
            assert await run.stop() == 0
    warnings = [line for line in run.stderr.splitlines() if b"requires spBv1.0/#" in line]
    assert len(warnings) == 1
