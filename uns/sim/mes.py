"""The simulated MES and LIMS: equipment status and batch records around every batch (pure).

:class:`Mes` watches the context events of the units' batch cycles (it wraps the
publisher the edge nodes hand them to) and adds what an MES, an ERP and a LIMS record:

- **equipment status** (context on the unit's path): ``in_use`` when a batch starts,
  ``dirty`` when it ends, ``clean`` (with ``clean_expires`` 72 h and ``calibration_due``
  30 days later) halfway through the idle time after it (cleaning in place);
- **batch records** (``<prefix>/_records/<path>``, docs/batches.md section 8): a material
  lot charged at the batch start (released, expiring in a year), an in-process result in
  its specification when the last phase starts.

Batch faults (:class:`uns.sim.inject.BatchFault`) spoil chosen batches on purpose:
``not_ready`` (the unit is recorded dirty just before the batch takes it), ``material``
(the lot is in quarantine), ``oos`` (the result is out of specification), ``comment``
(an operator comment when the second phase starts), ``abort`` (the MES marks the batch
aborted when its second phase starts).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from uns.sim.batch import ContextEvent
from uns.sim.plant import BatchUnit, Plant

__all__ = ["MES_KINDS", "RESULT_TESTS", "Mes", "MesOutlet", "RecordEvent"]

#: the batch faults the MES applies (uns.sim.inject.parse_fault parses them)
MES_KINDS: Final = ("not_ready", "material", "oos", "comment", "abort")
MES_USER: Final = "op.sim"
CLEAN_HOLD_MS: Final = 72 * 3600 * 1000
CALIBRATION_MS: Final = 30 * 86_400_000
#: per recipe's product: the material charged at the start (name, quantity, unit)
MATERIALS: Final = {
    "mAb-A": ("Cell culture medium CD-CHO", 200.0, "L"),
    "Tab-X 50 mg": ("Microcrystalline cellulose", 12.5, "kg"),
}
#: per unit kind (the path's last level prefix): the in-process test (name, value, OOS value, unit, low, high)
RESULT_TESTS: Final = {
    "br": ("Viable cell density", 8.4, 2.1, "1e6 cells/mL", 5.0, 15.0),
    "gr": ("Loss on drying", 1.8, 4.6, "%", 1.0, 3.0),
    "tp": ("Tablet hardness", 82.0, 41.0, "N", 60.0, 100.0),
}


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """A batch record as published on ``<prefix>/_records/<path>`` (schemas/record-event.schema.json)."""

    path: str
    ts: int
    kind: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = "sim-mes"
    user: str = MES_USER

    def to_json(self) -> bytes:
        body = {"id": self.id, "ts": self.ts, "kind": self.kind, "user": self.user, "source": self.source}
        return json.dumps({**body, **self.fields}, separators=(",", ":")).encode()


class MesOutlet(Protocol):
    """Where the MES sends (:class:`uns.sim.runner.ContextPublisher`)."""

    def submit(self, event: ContextEvent) -> None: ...

    def submit_record(self, record: RecordEvent) -> None: ...

    def submit_later(self, event: ContextEvent, seconds: float) -> None: ...


def _iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


class Mes:
    """The MES of the pilot plant (see the module doc); ``faults``: (kind, batch id) pairs."""

    def __init__(self, faults: Sequence[tuple[str, str]], *, phase_seconds: float) -> None:
        self.faults = frozenset(faults)
        self.phase_seconds = phase_seconds
        self._phases: dict[str, tuple[str, ...]] = {}  # unit path -> its recipe's phases
        self._products: dict[str, str] = {}  # unit path -> its recipe's product
        self._batch: dict[str, str] = {}  # unit path -> the batch it runs (while it runs one)

    def attach(self, plant: Plant) -> None:
        for node in plant.nodes:
            for unit in node.devices:
                if isinstance(unit, BatchUnit) and unit.path is not None:
                    self._phases[unit.path] = unit.cycle.recipe.phases
                    self._products[unit.path] = unit.cycle.recipe.product

    def _spoilt(self, kind: str, batch: str) -> bool:
        return (kind, batch) in self.faults

    def observe(self, outlet: MesOutlet) -> Callable[[ContextEvent], None]:
        """The hook the edge nodes call with each context event of a batch cycle."""

        def on_context(event: ContextEvent) -> None:
            outlet.submit(event)
            for later, extra in self.follow(event):
                if isinstance(extra, RecordEvent):
                    outlet.submit_record(extra)
                elif later:
                    outlet.submit_later(extra, later)
                else:
                    outlet.submit(extra)

        return on_context

    def follow(self, event: ContextEvent) -> list[tuple[float, ContextEvent | RecordEvent]]:
        """What the MES records after a context event of a unit: (seconds later, event)."""
        path, ts = event.path, event.ts
        if path not in self._phases:
            return []
        batch = event.set.get("batch_id") or self._batch.get(path, "")
        if event.reason == "batch start" and batch:
            self._batch[path] = batch
            return self._batch_start(path, ts, batch)
        if event.reason == "phase change" and batch:
            self._batch[path] = batch
            return self._phase_change(path, ts, batch, event.set.get("phase", ""))
        if event.reason == "batch end":
            self._batch.pop(path, None)
            return self._batch_end(path, ts, batch)
        return []

    def _status(self, path: str, ts: int, reason: str, **values: str) -> ContextEvent:
        return ContextEvent(path, ts, set=values, source="sim-mes", user=MES_USER, reason=reason)

    def _batch_start(self, path: str, ts: int, batch: str) -> list[tuple[float, ContextEvent | RecordEvent]]:
        out: list[tuple[float, ContextEvent | RecordEvent]] = []
        if self._spoilt("not_ready", batch):
            out.append((0.0, self._status(path, ts - 1, "cleaning skipped", equipment_status="dirty")))
        out.append((0.0, self._status(path, ts, "equipment status", equipment_status="in_use")))
        name, quantity, unit = MATERIALS.get(self._products.get(path, ""), ("Excipient", 1.0, "kg"))
        status = "quarantine" if self._spoilt("material", batch) else "released"
        fields: dict[str, Any] = {"material": name, "lot": f"L-{batch}", "quantity": quantity, "unit": unit,
                  "status": status, "expiry": _iso(ts + 365 * 86_400_000)}  # fmt: skip
        out.append((0.0, RecordEvent(path, ts + 1, "material", f"sim-{batch}-material", fields)))
        return out

    def _phase_change(
        self, path: str, ts: int, batch: str, phase: str
    ) -> list[tuple[float, ContextEvent | RecordEvent]]:
        phases = self._phases[path]
        out: list[tuple[float, ContextEvent | RecordEvent]] = []
        if len(phases) > 1 and phase == phases[1]:
            if self._spoilt("comment", batch):
                text = {"text": f"{phase}: sample port leaking, tightened and checked by {MES_USER}"}
                out.append((0.0, RecordEvent(path, ts + 1, "comment", f"sim-{batch}-comment", text)))
            if self._spoilt("abort", batch):
                abort = ContextEvent(path, ts + 1, set={"batch_status": "aborted"}, source="sim-mes",
                                     user=MES_USER, reason="aborted: agitator failure")  # fmt: skip
                out.append((0.0, abort))
        if phase == phases[-1]:
            kind = path.rsplit("/", 1)[-1][:2]
            test, good, bad, unit, low, high = RESULT_TESTS.get(
                kind, ("Appearance", 1.0, 9.0, None, 0.0, 2.0)
            )
            value = bad if self._spoilt("oos", batch) else good
            verdict = "fail" if value < low or value > high else "pass"
            result = {"test": test, "value": value, "unit": unit, "low": low, "high": high, "status": verdict}
            record = RecordEvent(path, ts + 1, "result", f"sim-{batch}-result", result, "sim-lims", "lab.sim")
            out.append((0.0, record))
        return out

    def _batch_end(self, path: str, ts: int, batch: str) -> list[tuple[float, ContextEvent | RecordEvent]]:
        out: list[tuple[float, ContextEvent | RecordEvent]] = [
            (0.0, self._status(path, ts, "batch end", equipment_status="dirty"))
        ]
        if batch and self._spoilt("abort", batch):
            out.append((0.0, ContextEvent(path, ts, clear=("batch_status",), source="sim-mes", user=MES_USER,
                                          reason="batch end")))  # fmt: skip
        half = self.phase_seconds / 2
        clean = self._status(
            path, ts + round(half * 1000), "cleaned in place", equipment_status="clean",
            clean_expires=_iso(ts + CLEAN_HOLD_MS), calibration_due=_iso(ts + CALIBRATION_MS),
        )  # fmt: skip
        out.append((half, clean))
        return out
