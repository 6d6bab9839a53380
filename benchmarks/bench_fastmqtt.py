"""Receive throughput of uns.mqtt.client.FastClient (MQTT 3.1.1 and 5.0) vs a bare aiomqtt subscriber
(a script, not a test).

    .venv/bin/python benchmarks/bench_fastmqtt.py [--messages 200000] [--size 200]

Starts a private mosquitto on loopback.  For each receiver in turn (FastClient,
then aiomqtt) it starts the receiver in its own process, then a raw-socket
publisher in this process pushes ``--messages`` QoS 0 PUBLISHes of ``--size``
payload bytes as fast as the socket takes them.  Each receiver reports the
messages it got, msgs/s between its first and last message, and its own CPU
time per message (``time.process_time`` over the same span): the CPU figure
is the one to compare, the wall-clock rate is shared with mosquitto and the
publisher on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "bench/fastmqtt"


# ---------------------------------------------------------------------- receivers (child processes)
async def _receive_fast(port: int, count: int, idle: float, protocol: int = 4) -> dict[str, Any]:
    from uns.mqtt.client import FastClient  # noqa: PLC0415 - the child imports only what it measures
    from uns.mqtt.settings import BrokerSettings  # noqa: PLC0415

    got = 0
    first_wall = first_cpu = 0.0
    settings = BrokerSettings(port=port, keepalive=60, protocol=protocol)
    async with FastClient(settings, identifier=f"bench-fast-{os.getpid()}") as client:
        await client.subscribe(f"{TOPIC}/#")
        print(json.dumps({"ready": True}), flush=True)
        while got < count:
            try:
                async with asyncio.timeout(idle if got else 60):
                    await client.wait_messages()
            except TimeoutError:
                break
            if not got:
                first_wall, first_cpu = time.monotonic(), time.process_time()
            for _topic, _payload, _qos, _retain in client.take():
                got += 1
        last_wall, last_cpu = time.monotonic(), time.process_time()
        stats = client.stats
    return _result(
        "fastmqtt" if protocol == 4 else "fastmqtt5",
        got,
        last_wall - first_wall,
        last_cpu - first_cpu,
        pauses=stats["pauses"],
        msgs_per_read=round(stats["messages_received"] / max(stats["reads"], 1), 1),
    )


async def _receive_aiomqtt(port: int, count: int, idle: float) -> dict[str, Any]:
    import aiomqtt  # noqa: PLC0415

    got = 0
    first_wall = first_cpu = 0.0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-aiomqtt-{os.getpid()}") as client:
        await client.subscribe(f"{TOPIC}/#")
        print(json.dumps({"ready": True}), flush=True)
        messages = aiter(client.messages)
        while got < count:
            try:
                async with asyncio.timeout(idle if got else 60):
                    await anext(messages)
            except TimeoutError:
                break
            if not got:
                first_wall, first_cpu = time.monotonic(), time.process_time()
            got += 1
        last_wall, last_cpu = time.monotonic(), time.process_time()
    return _result("aiomqtt", got, last_wall - first_wall, last_cpu - first_cpu)


def _result(name: str, got: int, wall: float, cpu: float, **extra: Any) -> dict[str, Any]:
    # the first message opened the span, so got - 1 messages fall inside it
    inside = max(got - 1, 1)
    return {
        "receiver": name,
        "messages": got,
        "seconds": round(wall, 3),
        "msgs_per_s": round(inside / wall) if wall > 0 else 0,
        "cpu_us_per_msg": round(cpu / inside * 1e6, 2),
        **extra,
    }


# ---------------------------------------------------------------------- publisher (this process)
def _publish(port: int, count: int, size: int) -> float:
    """Push ``count`` QoS 0 PUBLISHes through a raw socket; return the seconds it took."""
    from uns.mqtt.wire import encode_connect, encode_publish  # noqa: PLC0415

    rng = random.Random(0)
    packets = [encode_publish(f"{TOPIC}/node{i % 20}/dev{i % 7}", rng.randbytes(size)) for i in range(1000)]
    block = b"".join(packets)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(encode_connect(f"bench-pub-{os.getpid()}", keepalive=60))
        if sock.recv(4)[:2] != b"\x20\x02":
            raise SystemExit("no CONNACK")
        start = time.monotonic()
        sent = 0
        while sent < count:
            n = min(1000, count - sent)
            sock.sendall(block if n == 1000 else b"".join(packets[:n]))
            sent += n
        sock.sendall(b"\xc0\x00")  # PINGREQ: its PINGRESP means mosquitto has read everything
        sock.settimeout(120)
        sock.recv(2)
        elapsed = time.monotonic() - start
        sock.sendall(b"\xe0\x00")
    return elapsed


def _run(receiver: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--receiver", receiver, "--port", str(port)]
    cmd += ["--messages", str(args.messages), "--idle", str(args.idle)]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        if json.loads(child.stdout.readline()).get("ready") is not True:
            raise SystemExit(f"{receiver} receiver did not start")
        publish_s = _publish(port, args.messages, args.size)
        out, _ = child.communicate(timeout=600)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["publisher_msgs_per_s"] = round(args.messages / publish_s)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=200, help="payload bytes")
    parser.add_argument("--idle", type=float, default=5.0, help="receiver gives up after this many quiet s")
    parser.add_argument(
        "--receivers", default="fastmqtt,aiomqtt,fastmqtt5", help="comma-separated, in this order"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each receiver (the best CPU counts)")
    parser.add_argument("--receiver", choices=["fastmqtt", "fastmqtt5", "aiomqtt"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:  # child mode
        if args.receiver == "aiomqtt":
            outcome = asyncio.run(_receive_aiomqtt(args.port, args.messages, args.idle))
        else:
            protocol = 5 if args.receiver == "fastmqtt5" else 4
            outcome = asyncio.run(_receive_fast(args.port, args.messages, args.idle, protocol))
        print(json.dumps(outcome), flush=True)
        return

    from uns.mqtt.mosquitto import running_mosquitto  # noqa: PLC0415

    results = []
    with running_mosquitto() as broker:
        for _ in range(args.repeat):
            for receiver in args.receivers.split(","):
                results.append(_run(receiver, broker.port, args))
                print(json.dumps(results[-1]), flush=True)
    cpu: dict[str, float] = {}  # receiver -> its best CPU time per message over the repeats
    rate: dict[str, float] = {}
    for r in results:
        cpu[r["receiver"]] = min(cpu.get(r["receiver"], float("inf")), r["cpu_us_per_msg"])
        rate[r["receiver"]] = max(rate.get(r["receiver"], 0), r["msgs_per_s"])
    summary: dict[str, Any] = {
        "messages": args.messages,
        "payload_bytes": args.size,
        "best_cpu_us_per_msg": cpu,
    }
    if "fastmqtt" in cpu and "aiomqtt" in cpu:
        summary["cpu_ratio_aiomqtt_over_fastmqtt"] = round(cpu["aiomqtt"] / cpu["fastmqtt"], 1)
        summary["rate_ratio_fastmqtt_over_aiomqtt"] = round(rate["fastmqtt"] / max(rate["aiomqtt"], 1), 1)
    if "fastmqtt" in cpu and "fastmqtt5" in cpu:
        # the same client over MQTT 5.0 (mosquitto adds the empty property block)
        summary["cpu_ratio_mqtt5_over_311"] = round(cpu["fastmqtt5"] / cpu["fastmqtt"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
