"""The simulated units' building blocks (pure): a metric's definition, a unit's value model,
and a unit that runs ISA-88 batches (:mod:`uns.sim.batch`).  The pilot plant's process
units are in :mod:`uns.sim.units`, the plants themselves in :mod:`uns.sim.plant`."""

import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from uns.sim.batch import BatchCycle, ContextUpdate
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

#: 2026-01-01T00:00:00Z: the simulated clock of DateTime values starts here
SIM_EPOCH_MS = 1_767_225_600_000

MAB = ("mAb-A", "mAb-A v3", ("setup", "inoculation", "growth", "harvest"))
GRANULATION = ("Tab-X 50 mg", "Tab-X granulation v2", ("dry_mix", "wet_granulation", "drying"))
COMPRESSION = ("Tab-X 50 mg", "Tab-X compression v1", ("setup", "compression", "cleaning"))


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32 (what a Float metric carries on the wire)."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


@dataclass(frozen=True, slots=True)
class MetricDef:
    """A metric as declared in a BIRTH (the alias is assigned per node by :class:`NodeModel`)."""

    name: str
    datatype: DataType
    unit: str | None = None
    low: float | None = None  # engLow: the normal operating range, for a UI
    high: float | None = None


class UnitModel:
    """Base of all value models: a device (or a node's own metrics) in simulated time."""

    metrics: tuple[MetricDef, ...] = ()

    def __init__(self, device_id: str | None, rng: random.Random, *, path: str | None = None) -> None:
        self.device_id = device_id
        self.path = path  # ISA-95 path of the unit; None when it sends no context events
        self.rng = rng
        self.sim_seconds = 0.0
        self.values: dict[str, MetricValue] = {}
        self.muted = False  # a fault (uns.sim.inject): the unit sends nothing while set
        #: a fault (uns.sim.inject): metrics whose samples carry Sparkplug quality bad (0)
        self.bad_quality: set[str] = set()

    def step(self, dt: float) -> ContextUpdate | None:
        """Advance by ``dt`` simulated seconds, update ``values``; a context change if any."""
        self.sim_seconds += dt
        return None

    def context_now(self) -> ContextUpdate | None:
        """The unit's present context (published once at start-up), None if it has none."""
        return None

    def _approach(self, name: str, setpoint: float, *, tau: float, noise: float, dt: float) -> float:
        """First-order lag towards ``setpoint`` (time constant ``tau`` s) plus white noise."""
        current = self.values[name]
        assert isinstance(current, float)
        alpha = 1.0 - math.exp(-dt / tau)
        return current + (setpoint - current) * alpha + self.rng.gauss(0.0, noise)


#: every batch unit's alarm (the plant model marks it ``alarm = true``): true while active
ALARM = MetricDef("Alarm", DataType.Boolean)


class BatchUnit(UnitModel):
    """A unit that runs batches: owns a :class:`BatchCycle`."""

    #: the metric a bad-quality fault (an instrument failure) spoils
    QUALITY_METRIC: ClassVar[str] = ""

    def __init__(self, device_id: str, rng: random.Random, *, path: str, cycle: BatchCycle) -> None:
        super().__init__(device_id, rng, path=path)
        self.cycle = cycle
        #: faults applied after each step (uns.sim.inject.Injector.apply)
        self.injections: list[Callable[[BatchUnit], None]] = []
        #: offsets added to the published values after the last step (a ``shift`` fault)
        self._offsets: dict[str, float] = {}

    def shift(self, name: str, delta: float) -> None:
        """Publish metric ``name`` shifted by ``delta`` after this step; the next step starts
        from the unshifted value, so the unit's dynamics do not see the shift."""
        current = self.values[name]
        if isinstance(current, bool) or not isinstance(current, int | float):
            return
        shifted: int | float = round(current + delta) if isinstance(current, int) else current + delta
        self.values[name] = shifted
        self._offsets[name] = self._offsets.get(name, 0.0) + (shifted - current)

    def step(self, dt: float) -> ContextUpdate | None:
        super().step(dt)
        for name, delta in self._offsets.items():
            value = self.values[name]
            assert isinstance(value, int | float)
            self.values[name] = round(value - delta) if isinstance(value, int) else value - delta
        self._offsets.clear()
        update = self.cycle.advance(dt)
        self.update_values(dt)
        for inject in self.injections:
            inject(self)
        return update

    def context_now(self) -> ContextUpdate | None:
        return self.cycle.current_update()

    def update_values(self, dt: float) -> None:
        raise NotImplementedError
