"""A cheap Sparkplug B load generator for the benchmark harness (one process, one MQTT connection).

The plant is the simulator's bench plant (``uns.sim.bench_plant`` naming:
``node-%03d`` / ``dev-%02d`` / ``m%03d`` Doubles, aliases per node, every
metric in every DDATA: report by exception off).  On the 2-core benchmark
machine the generator shares the CPUs with mosquitto and the engine, so every
microsecond it spends is taken from the engine under test.  Hence:

- no MQTT library: a minimal MQTT 3.1.1 client on a plain TCP socket
  (CONNECT, SUBSCRIBE to its nodes' NCMD, PINGREQ, DISCONNECT; incoming
  PUBLISH parsed for rebirth commands);
- DDATA as pre-framed QoS 0 PUBLISH packets: per device, the packet is laid
  out once with fixed-width fields (the timestamp varint of current-epoch
  milliseconds is always 6 bytes, values are 8-byte doubles) and one
  ``struct.pack`` fills in ts and values; only ``seq`` (the last field)
  changes length, 1 byte below 128 and 2 from 128.  The encoding is canonical
  protobuf: a decoder cannot tell it from ``SerializeToString``;
- per 5 ms tick, all packets of the tick joined and sent with one ``sendall``.

Births (NBIRTH, DBIRTH) are built with the generated protobuf classes (not a
hot path) and go on the same connection, so they reach the broker before the
DDATA that follow.  All nodes share the connection (a benchmark needs no
per-node Will); per-node ``seq`` order holds because one TCP stream carries
them in order.

It answers NCMD ``Node Control/Rebirth`` with fresh births (the rebirth-storm
scenario) and reports what it published as JSON (``--report``); the harness's
loss check compares ``device_metrics`` with the lake, so a sample is counted
only once ``sendall`` has handed it to the kernel::

    python -m benchmarks.loadgen --port 1883 --group G --nodes 10 --devices 10 \
        --metrics 10 --rate 100000 --duration 60 --report out.json

``--rate`` is metrics per second (all nodes together); ``-1`` sends as fast
as it can, ``0`` sends births only and then idles (answering rebirths).
Every sample timestamp is unique per (device, metric): ``ts`` advances by at
least 1 ms per message of a device, so a lake can prove exactly-once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from uns.errors import BrokerError
from uns.mqtt.wire import (
    CONNACK,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    SUBACK,
    PacketReader,
    encode_connect,
    encode_publish,
    encode_subscribe,
)
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType

__all__ = [
    "DataTemplate",
    "GeneratorReport",
    "WireClient",
    "main",
    "varint",
    "varint6",
]

TICK_S = 0.005
MAX_BACKLOG_S = 0.05  # a generator that falls behind does not burst more than this
KEEPALIVE_S = 60
DOUBLE = int(DataType.Double)
REBIRTH = "Node Control/Rebirth"


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
    data_cpu_s: float = 0.0  # the generator's own CPU (process_time) over the DATA loop

    @property
    def device_metrics(self) -> int:
        return self.data_metrics + self.birth_metrics


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------- wire encoding
def varint(value: int) -> bytes:
    """The shortest (canonical) protobuf / MQTT-style base-128 varint of a non-negative int."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: a varint of exactly 6 bytes is canonical for 2**35 <= value < 2**42: epoch milliseconds
#: from 1971 to 2109, so every DDATA timestamp has the same width and can be patched in place
VARINT6_RANGE = (1 << 35, 1 << 42)


def varint6(value: int) -> bytes:
    if not VARINT6_RANGE[0] <= value < VARINT6_RANGE[1]:
        raise ValueError(f"{value} has no 6-byte canonical varint")
    return bytes(
        (
            value & 0x7F | 0x80,
            value >> 7 & 0x7F | 0x80,
            value >> 14 & 0x7F | 0x80,
            value >> 21 & 0x7F | 0x80,
            value >> 28 & 0x7F | 0x80,
            value >> 35,
        )
    )


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


#: ``seq`` is Payload field 3 (varint), the last field of a canonical DDATA
SEQ_FIELDS = tuple(b"\x18" + varint(seq) for seq in range(256))


class DataTemplate:
    """One device's DDATA PUBLISH packet, laid out once; :meth:`packet` fills in ts, seq, values.

    Payload fields in canonical (field number) order: ``timestamp`` (1), per metric
    ``metrics`` (2) = {``alias`` (2), ``timestamp`` (3), ``double_value`` (13)}, ``seq`` (3).
    Metric ``i`` carries ``value + i``.  The arguments of the packet's ``struct.pack``
    are kept in one list, [head, ts] + [const, ts, 0x69, value] per metric + [seq field],
    and only its ts and value slots are rewritten (slice assignments: no Python loop)."""

    __slots__ = ("_args", "_heads", "_offsets", "_structs")

    def __init__(self, topic: str, aliases: list[int]) -> None:
        # per metric, the bytes before its timestamp: the submessage's tag and length, alias, ts tag;
        # after it: the double's tag (0x69) and 8 bytes
        consts = []
        for alias in aliases:
            inner = b"\x10" + varint(alias) + b"\x18"
            consts.append(b"\x12" + bytes((len(inner) + 6 + 9,)) + inner)
        self._offsets = [float(i) for i in range(len(aliases))]
        fixed = 7 + sum(len(c) + 6 + 9 for c in consts)  # the payload without seq
        topic_field = _utf8(topic)
        metrics_format = "".join(f"{len(c)}s6sBd" for c in consts)
        self._heads: list[bytes] = []
        self._structs: list[struct.Struct] = []
        for seq_len in (1, 2):
            remaining = len(topic_field) + fixed + 1 + seq_len
            head = b"\x30" + varint(remaining) + topic_field + b"\x08"  # ... + Payload.timestamp tag
            self._heads.append(head)
            self._structs.append(struct.Struct(f"<{len(head)}s6s{metrics_format}{1 + seq_len}s"))
        self._args: list[bytes | int | float] = [b"", b""]
        for const in consts:
            self._args += (const, b"", 0x69, 0.0)
        self._args.append(b"")

    def packet(self, ts6: bytes, seq: int, value: float) -> bytes:
        """``ts6``: :func:`varint6` of the timestamp (shared by the payload and its metrics)."""
        args = self._args
        seq_field = SEQ_FIELDS[seq]
        wide = len(seq_field) - 2
        args[0] = self._heads[wide]
        args[1] = ts6
        args[3::4] = [ts6] * len(self._offsets)
        args[5::4] = map(value.__add__, self._offsets)
        args[-1] = seq_field
        return self._structs[wide].pack(*args)


# ---------------------------------------------------------------------- the connection
class WireClient:
    """A minimal blocking MQTT 3.1.1 client: QoS 0 out, rebirth commands in, nothing else
    (packets encoded and parsed by :mod:`uns.mqtt.wire`, the engine's own codec).

    The socket stays blocking for ``sendall`` (a broker that does not read slows the
    generator down, which reports the rate it reached); reads never block."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = PacketReader()  # PUBLISHes collect in .messages
        self._control: list[tuple[int, int, bytes]] = []  # other packets read, not yet handled
        self.last_send = time.monotonic()
        self.send(encode_connect(client_id, keepalive=KEEPALIVE_S))
        _, _, connack = self._expect(CONNACK)
        if connack[1:2] != b"\x00":
            raise SystemExit(f"load generator: broker refused the connection ({connack!r})")

    def subscribe(self, topic: str) -> None:
        self.send(encode_subscribe(1, topic, 0))
        self._expect(SUBACK)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.last_send = time.monotonic()

    def keepalive(self) -> None:
        if time.monotonic() - self.last_send > KEEPALIVE_S / 2:
            self.send(PINGREQ_PACKET)  # the PINGRESP is read and dropped

    def wait_readable(self, timeout: float) -> bool:
        return bool(select.select([self.sock], [], [], max(0.0, timeout))[0])

    def _read(self, flags: int = 0) -> None:
        chunk = self.sock.recv(65536, flags)
        if not chunk:
            raise SystemExit("load generator: the broker closed the connection")
        try:
            self._control += self._reader.feed(chunk)
        except BrokerError as exc:
            raise SystemExit(f"load generator: {exc}") from None
        if self._reader.replies:  # acknowledgements of QoS 1/2 commands
            self.send(bytes(self._reader.replies))
            self._reader.replies.clear()

    def publishes(self) -> list[tuple[str, bytes]]:
        """The PUBLISH packets received so far (topic, payload), without blocking."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self._read(socket.MSG_DONTWAIT)
        self._control.clear()  # PINGRESPs
        messages = self._reader.messages
        out = [(topic, payload) for topic, payload, _qos, _retain in messages]
        messages.clear()
        return out

    def _expect(self, kind: int) -> tuple[int, int, bytes]:
        """Wait for the first packet of type ``kind``; what came before it is dropped."""
        self.sock.settimeout(10)
        try:
            while True:
                for index, packet in enumerate(self._control):
                    if packet[0] == kind:
                        del self._control[: index + 1]
                        return packet
                self._read()
        except TimeoutError:
            raise SystemExit(f"load generator: no packet of type {kind} from the broker") from None
        finally:
            self.sock.settimeout(None)

    def close(self) -> None:
        """DISCONNECT, then read to EOF: closing with unread input would reset the connection
        and could drop what the broker has not read yet."""
        try:
            self.send(DISCONNECT_PACKET)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(10)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()


# ---------------------------------------------------------------------- the plant
class _Device:
    __slots__ = ("alias_base", "device_id", "last_ts", "node", "step", "template")

    def __init__(self, node: _Node, device_id: str, group: str, alias_base: int, metrics: int) -> None:
        self.node = node
        self.alias_base = alias_base  # aliases are per node: device d has d*metrics+1 ...
        self.device_id = device_id
        self.last_ts = 0
        self.step = 0
        topic = f"spBv1.0/{group}/DDATA/{node.node_id}/{device_id}"
        self.template = DataTemplate(topic, [alias_base + i + 1 for i in range(metrics)])


class _Node:
    __slots__ = ("devices", "node_id", "seq")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.seq = 0
        self.devices: list[_Device] = []

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.group: str = args.group
        self.metrics: int = args.metrics
        self.nodes = [_Node(f"node-{n:03d}") for n in range(args.node_offset, args.node_offset + args.nodes)]
        for node in self.nodes:
            node.devices = [
                _Device(node, f"dev-{d:02d}", self.group, d * self.metrics, self.metrics)
                for d in range(args.devices)
            ]
        self.units = [dev for node in self.nodes for dev in node.devices]
        self.report = GeneratorReport(group=self.group)
        self.stopped = False  # SIGTERM: stop sending DATA, report
        self._by_id = {n.node_id: n for n in self.nodes}
        self._ncmd_prefix = f"spBv1.0/{self.group}/NCMD/"

    # ------------------------------------------------------------------ births
    def _rebirth_requests(self, wire: WireClient) -> list[_Node]:
        nodes = []
        for topic, body in wire.publishes():
            node = self._by_id.get(topic.removeprefix(self._ncmd_prefix))
            if node is None:
                continue
            payload = pb.Payload()
            try:
                payload.ParseFromString(body)
            except Exception:
                continue
            if any(m.name == REBIRTH and m.boolean_value for m in payload.metrics):
                nodes.append(node)
        return nodes

    def publish_births(self, wire: WireClient, node: _Node) -> None:
        """NBIRTH and the node's DBIRTHs, one ``sendall``."""
        ts = now_ms()
        nbirth = pb.Payload(timestamp=ts, seq=0)
        nbirth.metrics.add(name="bdSeq", timestamp=ts, datatype=int(DataType.Int64), long_value=0)
        nbirth.metrics.add(name=REBIRTH, timestamp=ts, datatype=int(DataType.Boolean), boolean_value=False)
        node.seq = 0
        packets = [encode_publish(f"spBv1.0/{self.group}/NBIRTH/{node.node_id}", nbirth.SerializeToString())]
        for dev in node.devices:
            # one ts per (device, metric) sample: births use a fresh ms like DATA does
            ts = dev.last_ts = max(now_ms(), dev.last_ts + 1)
            birth = pb.Payload(timestamp=ts, seq=node.next_seq())
            base = dev.alias_base
            for i in range(self.metrics):
                birth.metrics.add(
                    name=f"m{i:03d}", alias=base + i + 1, timestamp=ts, datatype=DOUBLE, double_value=float(i)
                )
            topic = f"spBv1.0/{self.group}/DBIRTH/{node.node_id}/{dev.device_id}"
            packets.append(encode_publish(topic, birth.SerializeToString()))
        wire.send(b"".join(packets))
        report = self.report
        report.messages += len(packets)
        report.birth_messages += len(packets)
        report.birth_metrics += self.metrics * len(node.devices)

    def _answer_rebirths(self, wire: WireClient) -> None:
        for node in self._rebirth_requests(wire):
            self.publish_births(wire, node)
            self.report.rebirths_answered += 1

    # ------------------------------------------------------------------ data
    def run(self) -> GeneratorReport:
        args = self.args
        client_id = f"bench-gen-{self.group}-{args.node_offset}"
        wire = WireClient(args.host, args.port, client_id)
        try:
            wire.subscribe(f"{self._ncmd_prefix}+")
            if args.start_at:
                time.sleep(max(0.0, args.start_at - time.time()))
            self.report.births_started = time.time()
            for node in self.nodes:
                self.publish_births(wire, node)
            self.report.births_done = time.time()
            print(
                json.dumps({"born": self.report.births_done, "births_started": self.report.births_started}),
                flush=True,
            )
            cpu0 = time.process_time()
            self._data_loop(wire)
            self.report.data_cpu_s = time.process_time() - cpu0
        finally:
            wire.close()
        return self.report

    def _data_loop(self, wire: WireClient) -> None:
        args = self.args
        report = self.report
        rate_msgs = args.rate / self.metrics if args.rate > 0 else 0.0
        unlimited = args.rate < 0
        units = self.units
        count_units = len(units)
        metrics = self.metrics
        cursor = 0
        started = time.monotonic()
        report.started = time.time()
        end = started + args.duration
        last = started
        credit = 0.0
        while not self.stopped:
            now = time.monotonic()
            if now >= end:
                break
            self._answer_rebirths(wire)
            if unlimited:
                count = 200
            elif rate_msgs > 0:
                credit = min(credit + (now - last) * rate_msgs, rate_msgs * MAX_BACKLOG_S + 1)
                count = int(credit)
                credit -= count
            else:
                count = 0
            last = now
            if count:
                tick_ms = now_ms()
                stamps: dict[int, bytes] = {}  # ts -> its varint, shared by a tick's messages
                packets = []
                for _ in range(count):
                    dev = units[cursor]
                    cursor = (cursor + 1) % count_units
                    ts = dev.last_ts = tick_ms if tick_ms > dev.last_ts else dev.last_ts + 1
                    ts6 = stamps.get(ts)
                    if ts6 is None:
                        ts6 = stamps[ts] = varint6(ts)
                    dev.step += 1
                    node = dev.node
                    node.seq = seq = (node.seq + 1) & 0xFF
                    packets.append(dev.template.packet(ts6, seq, dev.step * 0.5))
                wire.send(b"".join(packets))
                report.messages += count
                report.data_messages += count
                report.data_metrics += count * metrics
            else:
                wire.keepalive()
            if not unlimited:
                # sleep to the next tick, but wake for a rebirth command
                next_tick = min(now + TICK_S, end)
                while (left := next_tick - time.monotonic()) > 0 and not self.stopped:
                    if wire.wait_readable(left):
                        self._answer_rebirths(wire)
        report.elapsed = time.monotonic() - started


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
