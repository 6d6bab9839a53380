"""A hand-driven Sparkplug edge node for engine tests: every message is explicit,
so a test can send exactly the sequence (gaps, bad aliases, stale deaths) it needs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiomqtt

from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RawEdge:
    client: aiomqtt.Client
    group: str
    node: str
    bdseq: int = 0
    seq: int = 0
    metrics: dict[str, tuple[int, DataType]] = field(
        default_factory=lambda: {"Temperature": (1, DataType.Double), "Count": (2, DataType.UInt32)}
    )

    def topic(self, mtype: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.group}/{mtype}/{self.node}"
        return base if device is None else f"{base}/{device}"

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    async def nbirth(self) -> None:
        ts = now_ms()
        self.seq = 0
        metrics = [
            Metric(name="bdSeq", datatype=DataType.Int64, value=self.bdseq, timestamp=ts),
            Metric(name="Node Control/Rebirth", datatype=DataType.Boolean, value=False, timestamp=ts),
        ]
        await self.client.publish(
            self.topic("NBIRTH"), encode_payload(Payload(timestamp=ts, seq=0, metrics=metrics)), qos=0
        )

    async def dbirth(self, device: str) -> None:
        ts = now_ms()
        metrics = [
            Metric(
                name=name, alias=alias, datatype=dt, value=20.0 if dt is DataType.Double else 0, timestamp=ts
            )
            for name, (alias, dt) in self.metrics.items()
        ]
        payload = Payload(timestamp=ts, seq=self.next_seq(), metrics=metrics)
        await self.client.publish(self.topic("DBIRTH", device), encode_payload(payload), qos=0)

    def ddata_payload(self, value: float, *, seq: int | None = None, alias: int = 1) -> bytes:
        ts = now_ms()
        s = self.next_seq() if seq is None else seq
        return encode_payload(
            Payload(timestamp=ts, seq=s, metrics=[Metric(alias=alias, timestamp=ts, value=value)])
        )

    async def ddata(self, device: str, value: float, *, alias: int = 1) -> None:
        await self.client.publish(self.topic("DDATA", device), self.ddata_payload(value, alias=alias), qos=0)

    async def born_with_data(self, device: str, count: int) -> None:
        """NBIRTH, DBIRTH of ``device``, then ``count`` DDATA of Temperature (0.0, 1.0, ...)."""
        await self.nbirth()
        await self.dbirth(device)
        for v in range(count):
            await self.ddata(device, float(v))

    async def ndeath(self, bdseq: int | None = None) -> None:
        b = self.bdseq if bdseq is None else bdseq
        payload = Payload(
            timestamp=now_ms(), metrics=[Metric(name="bdSeq", datatype=DataType.Int64, value=b)]
        )
        await self.client.publish(self.topic("NDEATH"), encode_payload(payload), qos=1)
