"""A fast Sparkplug B load generator for the benchmark harness (one process, one MQTT connection).

The plant is the simulator's bench plant (``uns.sim.bench_plant`` naming:
``node-%03d`` / ``dev-%02d`` / ``m%03d`` Doubles, aliases per node, every
metric in every DDATA: report by exception off), but messages are built with
the generated protobuf classes and sent with paho's synchronous API: the
simulator's typed codec and aiomqtt cost ~200 us per message, which caps one
process at ~5k messages/s -- too little to load an engine on a 2-core machine.
All nodes share one connection (a benchmark does not need per-node Wills);
per-node ``seq`` order holds because one TCP stream carries them in order.

It answers NCMD ``Node Control/Rebirth`` with fresh births (the rebirth-storm
scenario) and writes what it published as JSON (``--report``)::

    python -m benchmarks.loadgen --port 1883 --group G --nodes 10 --devices 10 \
        --metrics 10 --rate 100000 --duration 60 --report out.json

``--rate`` is metrics per second (all nodes together); ``-1`` sends as fast
as it can, ``0`` sends births only and then idles (answering rebirths).
Every sample timestamp is unique per (device, metric): ``ts`` advances by at
least 1 ms per message of a device, so a lake can prove exactly-once.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType

__all__ = ["GeneratorReport", "main"]

TICK_S = 0.005
MAX_BACKLOG_S = 0.05  # a generator that falls behind does not burst more than this
DOUBLE = int(DataType.Double)


@dataclass
class GeneratorReport:
    group: str
    messages: int = 0
    data_messages: int = 0
    data_metrics: int = 0  # device metric samples in DDATA
    birth_messages: int = 0
    birth_metrics: int = 0  # device metric samples in DBIRTH (node control metrics excluded)
    rebirths_answered: int = 0
    started: float = 0.0  # wall clock of the first DATA publish
    elapsed: float = 0.0  # seconds of DATA publishing
    births_started: float = 0.0
    births_done: float = 0.0

    @property
    def device_metrics(self) -> int:
        return self.data_metrics + self.birth_metrics


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Device:
    __slots__ = (
        "alias_base",
        "device_id",
        "last_ts",
        "node",
        "step",
        "template",
        "template_metrics",
        "topic",
    )

    def __init__(self, node: _Node, device_id: str, group: str, alias_base: int) -> None:
        self.node = node
        self.alias_base = alias_base  # aliases are per node: device d has d*metrics+1 ...
        self.device_id = device_id
        self.topic = f"spBv1.0/{group}/DDATA/{node.node_id}/{device_id}"
        self.last_ts = 0
        self.step = 0
        # a DDATA built once and mutated per message: 4 us instead of 17 us of protobuf building
        self.template = pb.Payload(timestamp=0, seq=0)
        self.template_metrics: list[Any] = []


class _Node:
    __slots__ = ("devices", "node_id", "seq")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.seq = 0
        self.devices: list[_Device] = []

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.group: str = args.group
        self.metrics: int = args.metrics
        self.nodes = [_Node(f"node-{n:03d}") for n in range(args.node_offset, args.node_offset + args.nodes)]
        for node in self.nodes:
            node.devices = [
                _Device(node, f"dev-{d:02d}", self.group, d * self.metrics) for d in range(args.devices)
            ]
        self.units = [dev for node in self.nodes for dev in node.devices]
        self.report = GeneratorReport(group=self.group)
        self._rebirths: list[str] = []
        self.stopped = False  # SIGTERM: stop sending DATA, report
        self._by_id = {n.node_id: n for n in self.nodes}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-gen-{self.group}-{args.node_offset}",
            protocol=mqtt.MQTTv311,
        )
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._on_message

    # ------------------------------------------------------------------ births
    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        node_id = message.topic.rsplit("/", 1)[-1]
        if node_id not in self._by_id:
            return
        payload = pb.Payload()
        try:
            payload.ParseFromString(bytes(message.payload))
        except Exception:
            return
        if any(m.name == "Node Control/Rebirth" and m.boolean_value for m in payload.metrics):
            self._rebirths.append(node_id)

    def publish_births(self, node: _Node) -> None:
        ts = now_ms()
        nbirth = pb.Payload(timestamp=ts, seq=0)
        nbirth.metrics.add(name="bdSeq", timestamp=ts, datatype=int(DataType.Int64), long_value=0)
        nbirth.metrics.add(
            name="Node Control/Rebirth", timestamp=ts, datatype=int(DataType.Boolean), boolean_value=False
        )
        node.seq = 0
        self._publish(f"spBv1.0/{self.group}/NBIRTH/{node.node_id}", nbirth.SerializeToString())
        self.report.birth_messages += 1
        for dev in node.devices:
            # one ts per (device, metric) sample: births use a fresh ms like DATA does
            ts = dev.last_ts = max(now_ms(), dev.last_ts + 1)
            birth = pb.Payload(timestamp=ts, seq=node.next_seq())
            base = dev.alias_base
            for i in range(self.metrics):
                birth.metrics.add(
                    name=f"m{i:03d}",
                    alias=base + i + 1,
                    timestamp=ts,
                    datatype=DOUBLE,
                    double_value=float(i),
                )
            self._publish(
                f"spBv1.0/{self.group}/DBIRTH/{node.node_id}/{dev.device_id}", birth.SerializeToString()
            )
            self.report.birth_messages += 1
            self.report.birth_metrics += self.metrics

    def _publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0)
        self.report.messages += 1

    def _answer_rebirths(self) -> None:
        while self._rebirths:
            node = self._by_id[self._rebirths.pop(0)]
            self.publish_births(node)
            self.report.rebirths_answered += 1

    # ------------------------------------------------------------------ data
    def publish_data(self, dev: _Device) -> None:
        ts = dev.last_ts = max(now_ms(), dev.last_ts + 1)
        dev.step += 1
        payload = dev.template
        if not dev.template_metrics:
            for i in range(self.metrics):
                payload.metrics.add(alias=dev.alias_base + i + 1, timestamp=0, double_value=0.0)
            dev.template_metrics = list(payload.metrics)
        payload.timestamp = ts
        payload.seq = dev.node.next_seq()
        value = dev.step * 0.5
        for i, metric in enumerate(dev.template_metrics):
            metric.timestamp = ts
            metric.double_value = value + i
        self.client.publish(dev.topic, payload.SerializeToString(), qos=0)
        report = self.report
        report.messages += 1
        report.data_messages += 1
        report.data_metrics += self.metrics

    def run(self) -> GeneratorReport:
        args = self.args
        client = self.client
        client.connect(args.host, args.port, keepalive=60)
        client.subscribe(f"spBv1.0/{self.group}/NCMD/+", qos=0)
        deadline = time.monotonic() + 10
        while not client.is_connected():
            client.loop(0.05)
            if time.monotonic() > deadline:
                raise SystemExit("load generator: cannot connect to the broker")
        if args.start_at:
            while time.time() < args.start_at:
                client.loop(min(0.05, max(0.0, args.start_at - time.time())))
        self.report.births_started = time.time()
        for node in self.nodes:
            self.publish_births(node)
            client.loop(0)
        self._flush()
        self.report.births_done = time.time()
        print(
            json.dumps({"born": self.report.births_done, "births_started": self.report.births_started}),
            flush=True,
        )
        self._data_loop()
        self._flush()
        client.disconnect()
        client.loop(0.1)
        return self.report

    def _data_loop(self) -> None:
        args = self.args
        client = self.client
        rate_msgs = args.rate / self.metrics if args.rate > 0 else 0.0
        unlimited = args.rate < 0
        units = self.units
        count_units = len(units)
        cursor = 0
        started = time.monotonic()
        self.report.started = time.time()
        end = started + args.duration
        last = started
        credit = 0.0
        while not self.stopped:
            now = time.monotonic()
            if now >= end:
                break
            self._answer_rebirths()
            if unlimited:
                count = 200
            elif rate_msgs > 0:
                credit = min(credit + (now - last) * rate_msgs, rate_msgs * MAX_BACKLOG_S + 1)
                count = int(credit)
                credit -= count
            else:
                count = 0
            last = now
            for _ in range(count):
                self.publish_data(units[cursor])
                cursor = (cursor + 1) % count_units
            # paho: read NCMDs, flush what the socket did not take; doubles as the tick sleep
            client.loop(0 if unlimited else max(0.0, min(TICK_S, end - time.monotonic())))
        self.report.elapsed = time.monotonic() - started

    def _flush(self) -> None:
        deadline = time.monotonic() + 60
        self.client.loop(0)
        while self.client.want_write() and time.monotonic() < deadline:
            self.client.loop(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--group", default="Bench")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--node-offset", type=int, default=0, help="first node number (several generators)")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=10, help="metrics per DDATA")
    parser.add_argument("--rate", type=float, default=10_000, help="metrics/s; -1 = max, 0 = births only")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of DATA after the births")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to start births")
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    generator = Generator(args)

    def stop(*_: object) -> None:
        generator.stopped = True

    signal.signal(signal.SIGTERM, stop)
    report = generator.run()
    body = {**asdict(report), "device_metrics": report.device_metrics}
    if args.report is not None:
        args.report.write_text(json.dumps(body))
    print(json.dumps({"report": body}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
