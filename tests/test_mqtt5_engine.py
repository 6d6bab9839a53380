"""The engine over MQTT 5.0 (``broker.protocol = "5"``) against a real mosquitto 2.

The host session is Clean Start with Session Expiry 0 (tests/test_tck_session.py);
here: the context connection is Clean Start 0 with a session expiry and a Receive
Maximum, so context published while the engine is away arrives when it is back and
is acknowledged once durable; data and context reach the lake; a SUBSCRIBE refused as
not authorized stops ``uns run`` with one line and exit 1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from tests.conformance import StatusWatch, UnsRun
from tests.edge import RawEdge
from tests.test_mqtt5 import CONNACK_OK, _reasoned, scripted
from tests.wiretap import Wiretap
from uns.lake import connect
from uns.mqtt.client import HELD_RECEIVE_MAXIMUM, PERSISTENT_SESSION_EXPIRY
from uns.mqtt.mosquitto import Mosquitto

pytestmark = pytest.mark.integration


async def test_the_engine_over_mqtt5_keeps_context_across_a_restart(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    lake, host = tmp_path / "lake", f"{ns}-h"
    env = {
        "UNS_LAKE": str(lake),
        "UNS_LAKE_COMMIT_INTERVAL": "0.5",
        "UNS_ENGINE_PREFIX": f"{ns}/uns",
        "UNS_BROKER_PROTOCOL": "5",
    }
    context_topic = f"{ns}/uns/_context/acme/line1"
    version = aiomqtt.ProtocolVersion.V5
    async with Wiretap(broker.port) as tap:
        for round_ in range(2):
            async with (
                StatusWatch(broker.host, broker.port, f"{ns}/uns/_engine/{host}/status") as status,
                UnsRun("--host-id", host, "--broker", tap.url, env=env) as run,
                aiomqtt.Client(broker.host, broker.port, protocol=version) as client,
            ):
                await status.until(lambda d: d["connected"] and d["context_intake"]["connected"], "connected")
                if round_ == 0:
                    edge = RawEdge(client, ns, "N1")
                    await edge.born_with_data("D1", 2)
                    await status.until(lambda d: d["counters"]["metrics"] >= 4, "data processed")
                    # a time the intake takes (from 2000 on), back-dated: so with a reason
                    body = {"id": "ev-1", "ts": 1_767_261_601_000, "set": {"batch_id": "B1"}, "reason": "MES"}
                    await client.publish(context_topic, json.dumps(body).encode(), qos=1)
                    await status.until(
                        lambda d: d["context_intake"]["acknowledged"] >= 1, "context acknowledged"
                    )
                else:
                    await status.until(
                        lambda d: d["context_intake"]["acknowledged"] >= 1, "the queued context"
                    )
                assert await run.stop() == 0
            if round_ == 0:  # published while the engine is away: the broker keeps it for the session
                async with aiomqtt.Client(broker.host, broker.port, protocol=version) as client:
                    body = {"id": "ev-2", "ts": 1_767_261_602_000, "set": {"batch_id": "B2"}, "reason": "MES"}
                    await client.publish(context_topic, json.dumps(body).encode(), qos=1)
    contexts = [p for p in tap.of("CONNECT") if p.fields["client_id"] == f"uns-{host}-context"]
    assert len(contexts) == 2
    for connect_packet in contexts:
        f = connect_packet.fields
        assert (f["level"], f["clean"]) == (5, False)
        assert f["session_expiry"] == PERSISTENT_SESSION_EXPIRY
        assert f["receive_maximum"] == HELD_RECEIVE_MAXIMUM
    con = connect(lake)
    values = con.execute("SELECT value FROM context WHERE key = 'batch_id' ORDER BY ts").fetchall()
    samples = con.execute("SELECT count(*) FROM measurements WHERE group_id = ?", [ns]).fetchone()
    con.close()
    assert [v for (v,) in values] == ["B1", "B2"]
    assert samples is not None and samples[0] >= 4


async def test_a_subscription_refused_as_not_authorized_stops_uns_run_with_one_line() -> None:
    refused = _reasoned(0x90, b"\x00\x01", "no Sparkplug for you", b"\x87")
    async with scripted(CONNACK_OK, refused) as port:
        run = UnsRun(
            "--host-id", "h", "--broker", f"mqtt://127.0.0.1:{port}", env={"UNS_BROKER_PROTOCOL": "5"}
        )
        async with run:
            assert await asyncio.wait_for(run.wait(), 60) == 1
    lines = run.stderr.decode().strip().splitlines()
    assert lines[-1].startswith("uns: error: ")
    assert "refused the subscription to 'spBv1.0/#': not authorized (0x87): no Sparkplug for you" in lines[-1]
