"""The TCK's SendCommandTest: the operator makes the host send an NCMD rebirth, an NCMD metric
write, a DCMD rebirth and a DCMD metric write (``uns cmd``); the packets are read on the
wire (a :class:`~tests.wiretap.Wiretap` in front of mosquitto), as the TCK reads them.

Every refusal (commands off, node never born, unknown metric, wrong type, no reason) is
one line on stderr and exit 1, and every command sent is an audit entry with its user
and reason.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.conformance import ROOT, StatusWatch, UnsRun, tck
from tests.edge import now_ms
from tests.wiretap import Packet, Wiretap
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto, free_port
from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import Will
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload

pytestmark = pytest.mark.integration

Born = tuple[str, int | None, DataType, Any]  # name, alias, datatype, value
NODE_METRICS: list[Born] = [
    ("bdSeq", None, DataType.Int64, 0),
    ("Node Control/Rebirth", None, DataType.Boolean, False),
    ("Setpoint", 10, DataType.Int32, 100),
]
DEVICE_METRICS: list[Born] = [
    ("Temperature", 1, DataType.Double, 20.0),
    ("Count", 2, DataType.UInt32, 0),
    ("Device Control/Rebirth", None, DataType.Boolean, False),
]


def _birth(metrics: list[Born], seq: int) -> bytes:
    ts = now_ms()
    born = [Metric(name=n, alias=a, datatype=d, value=v, timestamp=ts) for n, a, d, v in metrics]
    return encode_payload(Payload(timestamp=ts, seq=seq, metrics=born))


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def uns_cmd(*args: str, env: dict[str, str]) -> Done:
    """``uns cmd`` in its own process, as an operator runs it (awaited: the tap keeps proxying)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uns", "cmd", *args,
        env={**os.environ, "UNS_REPUBLISH_ENABLED": "false", **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def _sent(tap: Wiretap, topic: str) -> Packet:
    (packet,) = [p for p in tap.of("PUBLISH") if p.topic == topic]
    return packet


def _check_command(packet: Packet, born: dict[str, DataType]) -> Payload:
    """QoS 0, not retained, a payload timestamp, no seq, born names with their datatypes."""
    assert (packet.fields["qos"], packet.fields["retain"]) == (0, False)
    payload = decode_payload(packet.fields["payload"])
    assert payload.timestamp is not None and abs(payload.timestamp - now_ms()) < 120_000
    assert payload.seq is None
    for metric in payload.metrics:
        assert metric.name in born and metric.datatype == born[metric.name]
        assert metric.timestamp is not None  # optional, sent
    return payload


REBIRTH_IDS = (
    "operational-behavior-data-commands-ncmd-rebirth-verb",
    "operational-behavior-data-commands-ncmd-rebirth-name",
    "operational-behavior-data-commands-ncmd-rebirth-value",
)
NCMD_IDS = (
    "operational-behavior-data-commands-ncmd-verb",
    "operational-behavior-data-commands-ncmd-metric-name",
    "operational-behavior-data-commands-ncmd-metric-value",
    "topics-ncmd-topic",
    "topics-ncmd-mqtt",
    "topics-ncmd-timestamp",
    "topics-ncmd-payload",
    "payloads-ncmd-qos",
    "payloads-ncmd-retain",
    "payloads-ncmd-seq",
    "payloads-ncmd-timestamp",
)
DCMD_IDS = tuple(i.replace("ncmd", "dcmd") for i in NCMD_IDS)


@tck(*REBIRTH_IDS, does="uns cmd G/N --rebirth: NCMD Node Control/Rebirth = true (Boolean, no alias)")
@tck(*NCMD_IDS, does="uns cmd G/N M=V: NCMD, QoS 0, not retained, payload timestamp, no seq, born name/type")
@tck(*DCMD_IDS, does="uns cmd G/N/D M=V: the same as a DCMD on spBv1.0/G/DCMD/N/D")
@tck(
    "payloads-name-cmd-requirement", does="command metrics carry name, datatype and timestamp (alias if born)"
)
async def test_send_commands(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    lake, http = tmp_path / "lake", f"127.0.0.1:{free_port()}"
    host = f"{ns}-h"
    engine_env = {"UNS_LAKE": str(lake), "UNS_LAKE_COMMIT_INTERVAL": "0.5", "UNS_ENGINE_PREFIX": f"{ns}/uns"}
    async with (
        Wiretap(broker.port) as tap,
        StatusWatch(broker.host, broker.port, f"{ns}/uns/_engine/{host}/status") as status,
        UnsRun("--primary", "--host-id", host, "--broker", broker.url, "--http", http, env=engine_env) as run,
        aiomqtt.Client(broker.host, broker.port) as edge,
    ):
        await status.until(lambda d: d["connected"], "the host connected")
        await edge.subscribe(f"spBv1.0/{ns}/NCMD/N1", qos=1)
        await edge.subscribe(f"spBv1.0/{ns}/DCMD/N1/#", qos=1)
        await edge.publish(f"spBv1.0/{ns}/NBIRTH/N1", _birth(NODE_METRICS, 0))
        await edge.publish(f"spBv1.0/{ns}/DBIRTH/N1/D1", _birth(DEVICE_METRICS, 1))
        await status.until(lambda d: d["devices_online"] == 1, "the edge node and its device born")
        env = {
            "UNS_BROKER": tap.url,  # the command's connection goes through the tap
            "UNS_LAKE": str(lake),
            "UNS_ENGINE_HTTP_LISTEN": http,  # the running engine knows the births
            "UNS_SPARKPLUG_COMMANDS_ENABLED": "true",
        }
        runs = [
            await uns_cmd(f"{ns}/N1", "--rebirth", "--reason", "TCK step 1", env=env),
            await uns_cmd(f"{ns}/N1", "Setpoint=42", "--reason", "TCK step 2", "--user", "jdoe", env=env),
            await uns_cmd(f"{ns}/N1/D1", "--rebirth", "--reason", "TCK step 3", env=env),
            await uns_cmd(f"{ns}/N1/D1", "Temperature=21.5", "Count=7", "--reason", "TCK step 4", env=env),
        ]
        for done in runs:
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("sent ")
        received = []
        async with asyncio.timeout(10):
            async for msg in edge.messages:
                received.append(msg.topic.value)
                if len(received) == 4:
                    break
        assert await run.stop() == 0
    ncmd, dcmd = f"spBv1.0/{ns}/NCMD/N1", f"spBv1.0/{ns}/DCMD/N1/D1"
    assert received == [ncmd, ncmd, dcmd, dcmd]  # the edge node got all four
    node_types = {n: d for n, _a, d, _v in NODE_METRICS}
    device_types = {n: d for n, _a, d, _v in DEVICE_METRICS}
    rebirth, write = (_check_command(p, node_types) for p in tap.of("PUBLISH") if p.topic == ncmd)
    ((name, value, alias),) = [(m.name, m.value, m.alias) for m in rebirth.metrics]
    assert (name, value, alias) == ("Node Control/Rebirth", True, None)
    assert [(m.name, m.alias, m.value) for m in write.metrics] == [("Setpoint", 10, 42)]
    device_rebirth, device_write = (
        _check_command(p, device_types) for p in tap.of("PUBLISH") if p.topic == dcmd
    )
    assert [(m.name, m.value) for m in device_rebirth.metrics] == [("Device Control/Rebirth", True)]
    assert [(m.name, m.alias, m.value) for m in device_write.metrics] == [
        ("Temperature", 1, 21.5),
        ("Count", 2, 7),
    ]
    # every command is an audit entry with its user and reason
    from uns.lake import connect  # noqa: PLC0415

    con = connect(lake)
    rows = con.execute(
        "SELECT actor, reason, subject, detail FROM audit WHERE kind = 'command' ORDER BY seq"
    ).fetchall()
    con.close()
    assert [(r[1], r[2]) for r in rows] == [
        ("TCK step 1", f"{ns}/N1"),
        ("TCK step 2", f"{ns}/N1"),
        ("TCK step 3", f"{ns}/N1/D1"),
        ("TCK step 4", f"{ns}/N1/D1"),
    ]
    assert rows[1][0] == "jdoe" and json.loads(rows[1][3])["os_user"] == getpass.getuser()
    assert rows[0][0] == getpass.getuser()
    assert json.loads(rows[3][3])["metrics"] == [
        {"name": "Temperature", "datatype": "Double", "value": 21.5},
        {"name": "Count", "datatype": "UInt32", "value": 7},
    ]
    # with the engine stopped, the births come from the lake's metric_catalog
    env.pop("UNS_ENGINE_HTTP_LISTEN")
    env["UNS_BROKER"] = broker.url
    done = await uns_cmd(f"{ns}/N1", "Setpoint=7", "--reason", "from the lake's births", env=env)
    assert done.returncode == 0, done.stderr


REFUSALS = [
    (("{ns}/N1", "Setpoint=1"), {"UNS_SPARKPLUG_COMMANDS_ENABLED": "false"}, "commands are disabled"),
    (("{ns}/Ghost", "Setpoint=1"), {}, "edge node {ns}/Ghost was never born"),
    (("{ns}/N1/D9", "Temperature=1"), {}, "device {ns}/N1/D9 was never born"),
    (("{ns}/N1", "Speed=1"), {}, "'Speed' is not a metric of {ns}/N1's last birth"),
    (("{ns}/N1", "Setpoint=fast"), {}, "Setpoint: 'fast' is not a Int32 value"),
    (("{ns}/N1", "Setpoint=3000000000"), {}, "Setpoint: '3000000000' is not a Int32 value (out of range"),
    (("{ns}/N1/D1", "Count=-1"), {}, "Count: '-1' is not a UInt32 value"),
    (("{ns}/N1",), {}, "nothing to send"),
    (("{ns}/N1", "Setpoint=1", "--no-reason"), {}, "a command needs --reason"),
]


async def test_every_refusal_is_one_line_and_exit_1(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    """Commands off, never born, an unknown metric, a wrong type, nothing or no reason: one line
    on stderr, exit 1, and nothing sent (the births are read from the lake here)."""
    lake, host = tmp_path / "lake", f"{ns}-h"
    engine_env = {"UNS_LAKE": str(lake), "UNS_LAKE_COMMIT_INTERVAL": "0.3", "UNS_ENGINE_PREFIX": f"{ns}/uns"}
    async with (
        StatusWatch(broker.host, broker.port, f"{ns}/uns/_engine/{host}/status") as status,
        UnsRun("--host-id", host, "--broker", broker.url, env=engine_env) as run,
        aiomqtt.Client(broker.host, broker.port) as edge,
    ):
        await status.until(lambda d: d["connected"], "the host connected")
        await edge.publish(f"spBv1.0/{ns}/NBIRTH/N1", _birth(NODE_METRICS, 0))
        await edge.publish(f"spBv1.0/{ns}/DBIRTH/N1/D1", _birth(DEVICE_METRICS, 1))
        await status.until(lambda d: d["devices_online"] == 1, "the edge node and its device born")
        assert await run.stop() == 0  # the births are in the lake
    async with Wiretap(broker.port) as tap:
        for args, extra, error in REFUSALS:
            env = {
                "UNS_LAKE": str(lake),
                "UNS_BROKER": tap.url,
                "UNS_SPARKPLUG_COMMANDS_ENABLED": "true",
                **extra,
            }
            argv = [a.format(ns=ns) for a in args if a != "--no-reason"]
            if "--no-reason" not in args:
                argv += ["--reason", "test"]
            done = await uns_cmd(*argv, env=env)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("uns: error: "), (
                done.stderr
            )
            assert error.format(ns=ns) in lines[0]
        assert tap.of("PUBLISH") == []  # nothing was sent


@tck("message-flow-edge-node-birth-publish-will-message-topic",
     does="the Will of an edge node (the TCK simulates one) on spBv1.0/G/NDEATH/N is its death")  # fmt: skip
async def test_an_edge_nodes_will_is_its_death(broker: Mosquitto, ns: str, tmp_path: Path) -> None:
    host, http = f"{ns}-h", f"127.0.0.1:{free_port()}"
    engine_env = {"UNS_ENGINE_PREFIX": f"{ns}/uns", "UNS_ENGINE_HTTP_LISTEN": http}
    death = encode_payload(
        Payload(timestamp=now_ms(), metrics=[Metric(name="bdSeq", datatype=DataType.Int64, value=0)])
    )
    will = Will(f"spBv1.0/{ns}/NDEATH/N1", death, qos=1, retain=False)
    async with (
        StatusWatch(broker.host, broker.port, f"{ns}/uns/_engine/{host}/status") as status,
        UnsRun("--host-id", host, "--broker", broker.url, env=engine_env) as run,
    ):
        await status.until(lambda d: d["connected"], "the host connected")
        edge = FastClient(BrokerSettings(port=broker.port, keepalive=5), identifier=f"{ns}-edge", will=will)
        await edge.connect()
        await edge.publish(f"spBv1.0/{ns}/NBIRTH/N1", _birth(NODE_METRICS, 0))
        await status.until(lambda d: d["nodes_online"] == 1, "the edge node born")
        edge.abort()  # the edge node's connection drops: the broker publishes its Will
        await status.until(lambda d: d["nodes_online"] == 0, "the Will took the node offline")
        # a command to it now is refused: nothing would receive it
        env = {
            "UNS_ENGINE_HTTP_LISTEN": http,
            "UNS_BROKER": broker.url,
            "UNS_SPARKPLUG_COMMANDS_ENABLED": "true",
        }
        env["UNS_LAKE"] = str(tmp_path / "lake")
        done = await uns_cmd(f"{ns}/N1", "Setpoint=1", "--reason", "test", env=env)
        assert done.returncode == 1
        assert (
            done.stderr.strip()
            == f"uns: error: edge node {ns}/N1 is offline: the running engine saw its death"
        )
        assert await run.stop() == 0
