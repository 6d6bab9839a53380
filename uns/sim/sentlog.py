"""What the simulator published: counters always, every sample on request.

Tests use it to prove that every sample reached the lake exactly once, so a
sample is recorded when its message is handed to the MQTT client, never when
it is only produced (store-and-forward may hold it, a full store may drop it).
Keeping every sample costs memory and time; at benchmark rates keep the
counters only (the default) and turn samples on for correctness tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

from uns.core.values import json_value
from uns.sim.batch import ContextEvent
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

if TYPE_CHECKING:
    from uns.sim.mes import RecordEvent

__all__ = ["SentCounts", "SentLog", "SentSample"]


@dataclass(frozen=True, slots=True)
class SentSample:
    """One metric value as published in a BIRTH or DATA message."""

    group_id: str
    edge_node_id: str
    device_id: str | None
    metric: str
    ts: int
    value: MetricValue
    datatype: DataType
    seq: int
    message_type: str  # NBIRTH, DBIRTH, NDATA or DDATA
    bdseq: int
    is_historical: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "group": self.group_id,
                "node": self.edge_node_id,
                "device": self.device_id,
                "metric": self.metric,
                "ts": self.ts,
                "value": json_value(self.value),
                "datatype": self.datatype.name,
                "seq": self.seq,
                "type": self.message_type,
                "bdseq": self.bdseq,
                "historical": self.is_historical,
            },
            separators=(",", ":"),
        )


@dataclass(slots=True)
class SentCounts:
    """Running totals over every edge node of a run."""

    messages: int = 0  # everything published, births, deaths and faults included
    data_messages: int = 0  # NDATA + DDATA
    metrics: int = 0  # metric samples in BIRTH and DATA messages
    births: int = 0  # NBIRTH + DBIRTH
    deaths: int = 0  # NDEATH published by the node itself + DDEATH
    rebirths_answered: int = 0
    context_events: int = 0
    records: int = 0  # batch records (uns.sim.mes)
    historical_messages: int = 0  # store-and-forward DATA sent after the host came back
    dropped_messages: int = 0  # DATA lost because the store-and-forward buffer was full
    faults: int = 0


class SentLog:
    """Counters, plus (``keep_samples`` or ``path``) every sample and context event."""

    def __init__(self, *, keep_samples: bool = False, path: str | Path | None = None) -> None:
        self.counts = SentCounts()
        self.keep_samples = keep_samples
        self.samples: list[SentSample] = []
        self.contexts: list[ContextEvent] = []
        self.records: list[RecordEvent] = []
        self._file: IO[str] | None = Path(path).open("w", encoding="utf-8") if path is not None else None  # noqa: SIM115 - closed in close()

    @property
    def detailed(self) -> bool:
        """Whether samples are recorded (callers skip building them otherwise)."""
        return self.keep_samples or self._file is not None

    def add_samples(self, samples: Iterable[SentSample]) -> None:
        if self.keep_samples:
            samples = list(samples)
            self.samples.extend(samples)
        if self._file is not None:
            self._file.writelines(s.to_json() + "\n" for s in samples)

    def add_context(self, event: ContextEvent) -> None:
        self.counts.context_events += 1
        self._keep(self.contexts, "context", event)

    def add_record(self, event: RecordEvent) -> None:
        self.counts.records += 1
        self._keep(self.records, "record", event)

    def _keep(self, into: list[Any], label: str, event: ContextEvent | RecordEvent) -> None:
        """Keep a context event or record (``keep_samples``) and log it (``path``)."""
        if self.keep_samples:
            into.append(event)
        if self._file is not None:
            line = {label: event.path, **json.loads(event.to_json())}
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
