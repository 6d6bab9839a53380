"""The simulated plants: their Sparkplug ids, metrics and deterministic value models (pure).

Two plants:

- :func:`pilot_plant`: a small pharma pilot plant.  Group ``PilotPlant``;
  edge node ``USP-Ctrl`` with bioreactors ``BR-101`` and ``BR-102``,
  ``GRAN-Ctrl`` with the high-shear granulator ``GR-201``, ``TAB-Ctrl`` with
  the tablet press ``TP-301``.  Every unit runs ISA-88 batches
  (:mod:`uns.sim.batch`); setpoints follow the phase.
- :func:`bench_plant`: ``nodes`` x ``devices`` x ``metrics`` Doubles
  (``node-000``/``dev-00``/``m000``) for load tests.

Values are a function of the seed and the number and size of the steps taken
(simulated time), never of the wall clock: every model draws from its own
``random.Random(f"{seed}/{node}/{device}")``.  Float metrics hold values that
are exact in float32 so what the simulator logs is what a host decodes.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from uns.sim.batch import BatchCycle, BatchRecipe, ContextUpdate
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

__all__ = [
    "ALARM",
    "PILOT_GROUP",
    "PILOT_PATHS",
    "BenchDevice",
    "Bioreactor",
    "Granulator",
    "MetricDef",
    "NodeController",
    "NodeModel",
    "Plant",
    "TabletPress",
    "UnitModel",
    "bench_plant",
    "pilot_plant",
]

PILOT_GROUP = "PilotPlant"
#: ISA-95 paths of the units (the matching plant model file maps devices to them)
PILOT_PATHS = {
    "BR-101": "acme/basel/pilot/usp/br-101",
    "BR-102": "acme/basel/pilot/usp/br-102",
    "GR-201": "acme/basel/pilot/granulation/gr-201",
    "TP-301": "acme/basel/pilot/compression/tp-301",
}
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


class Bioreactor(BatchUnit):
    """A fed-batch cell-culture bioreactor (upstream processing)."""

    BASE = (
        MetricDef("Temperature", DataType.Double, "degC", 36.5, 37.5),
        MetricDef("pH", DataType.Double, "pH", 6.8, 7.3),
        MetricDef("DO", DataType.Float, "%", 30.0, 60.0),
        MetricDef("Agitation", DataType.Float, "rpm", 0.0, 150.0),
        # gauge pressure: negative while the vessel is drained during harvest
        MetricDef("Headspace/Pressure", DataType.Int16, "mbar", -50.0, 100.0),
        MetricDef("LastCIP", DataType.DateTime),
        ALARM,
    )
    QUALITY_METRIC = "Temperature"
    SPECTRUM = MetricDef("Spectrum", DataType.FloatArray, "counts")
    SPECTRUM_BINS = 16
    SPECTRUM_PERIOD = 30.0  # simulated seconds between two Raman spectra
    #: phase -> (temperature, pH, agitation, pressure); DO is controlled separately
    SETPOINTS: ClassVar[dict[str, tuple[float, float, float, float]]] = {
        "setup": (36.8, 7.10, 80.0, 0.0),
        "inoculation": (37.0, 7.10, 100.0, 5.0),
        "growth": (37.0, 7.02, 120.0, 10.0),
        "harvest": (36.9, 7.00, 90.0, -20.0),
        "idle": (36.8, 7.10, 0.0, 0.0),
    }

    def __init__(
        self, device_id: str, rng: random.Random, *, path: str, cycle: BatchCycle, spectrum: bool
    ) -> None:
        super().__init__(device_id, rng, path=path, cycle=cycle)
        self.metrics = self.BASE + ((self.SPECTRUM,) if spectrum else ())
        self._pressure = 0.0
        self._next_spectrum = 0.0
        self._last_phase = cycle.phase
        self.values = {
            "Temperature": 36.8,
            "pH": 7.1,
            "DO": f32(60.0),
            "Agitation": f32(80.0),
            "Headspace/Pressure": 0,
            "LastCIP": SIM_EPOCH_MS - 3_600_000 * (2 + rng.randrange(20)),
            "Alarm": False,
        }
        if spectrum:
            self.values["Spectrum"] = self._spectrum()

    def update_values(self, dt: float) -> None:
        phase = self.cycle.phase
        temp_sp, ph_sp, agit_sp, press_sp = self.SETPOINTS[phase]
        # cells consume oxygen as they grow: DO falls from 55 % to 30 % during growth
        do_sp = 55.0 - 25.0 * self.cycle.phase_progress if phase == "growth" else 55.0
        temperature = self._approach("Temperature", temp_sp, tau=60.0, noise=0.02, dt=dt)
        self.values["Temperature"] = round(min(37.3, max(36.7, temperature)), 3)
        self.values["pH"] = round(self._approach("pH", ph_sp, tau=120.0, noise=0.003, dt=dt), 3)
        do = self._approach("DO", do_sp, tau=20.0, noise=0.3, dt=dt)
        self.values["DO"] = f32(round(min(60.0, max(30.0, do)), 2))
        self.values["Agitation"] = f32(
            round(max(0.0, self._approach("Agitation", agit_sp, tau=5.0, noise=0.4, dt=dt)), 1)
        )
        self._pressure += (press_sp - self._pressure) * (1.0 - math.exp(-dt / 10.0))
        self.values["Headspace/Pressure"] = round(self._pressure + self.rng.gauss(0.0, 3.0))
        if phase == "idle" and self._last_phase != "idle":
            # cleaning in place right after a batch
            self.values["LastCIP"] = SIM_EPOCH_MS + round(self.sim_seconds * 1000)
        self._last_phase = phase
        if "Spectrum" in self.values and self.sim_seconds >= self._next_spectrum:
            self._next_spectrum = self.sim_seconds + self.SPECTRUM_PERIOD
            self.values["Spectrum"] = self._spectrum()

    def _spectrum(self) -> list[float]:
        """A Raman-like spectrum: a glucose band that shrinks and a protein band that grows."""
        growth = self.cycle.phase_progress if self.cycle.phase == "growth" else 0.0
        out = []
        for i in range(self.SPECTRUM_BINS):
            glucose = 800.0 * (1.0 - 0.6 * growth) * math.exp(-((i - 4) ** 2) / 4.0)
            protein = 500.0 * growth * math.exp(-((i - 11) ** 2) / 3.0)
            out.append(f32(round(100.0 + glucose + protein + self.rng.gauss(0.0, 5.0), 1)))
        return out


class Granulator(BatchUnit):
    """A high-shear wet granulator; its PLC also carries the batch id and phase."""

    metrics = (
        MetricDef("ImpellerSpeed", DataType.Float, "rpm", 0.0, 400.0),
        MetricDef("ChopperSpeed", DataType.Float, "rpm", 0.0, 3000.0),
        MetricDef("Power", DataType.Double, "kW", 0.0, 12.0),
        MetricDef("BedTemp", DataType.Double, "degC", 15.0, 60.0),
        MetricDef("SprayRate", DataType.Double, "g/min", 0.0, 200.0),
        MetricDef("Batch/ID", DataType.String),
        MetricDef("Batch/Phase", DataType.String),
        ALARM,
    )
    QUALITY_METRIC = "BedTemp"
    #: phase -> (impeller rpm, chopper rpm, bed temperature, spray g/min)
    SETPOINTS: ClassVar[dict[str, tuple[float, float, float, float]]] = {
        "dry_mix": (200.0, 0.0, 22.0, 0.0),
        "wet_granulation": (300.0, 1500.0, 26.0, 120.0),
        "drying": (60.0, 0.0, 45.0, 0.0),
        "idle": (0.0, 0.0, 22.0, 0.0),
    }

    def __init__(self, device_id: str, rng: random.Random, *, path: str, cycle: BatchCycle) -> None:
        super().__init__(device_id, rng, path=path, cycle=cycle)
        self.values = {
            "ImpellerSpeed": f32(0.0),
            "ChopperSpeed": f32(0.0),
            "Power": 0.2,
            "BedTemp": 22.0,
            "SprayRate": 0.0,
            "Batch/ID": cycle.batch_id,
            "Batch/Phase": "" if cycle.idle else cycle.phase,
            "Alarm": False,
        }

    def update_values(self, dt: float) -> None:
        phase = self.cycle.phase
        impeller_sp, chopper_sp, bed_sp, spray_sp = self.SETPOINTS[phase]
        impeller = max(0.0, self._approach("ImpellerSpeed", impeller_sp, tau=3.0, noise=0.5, dt=dt))
        chopper = max(0.0, self._approach("ChopperSpeed", chopper_sp, tau=3.0, noise=2.0, dt=dt))
        self.values["ImpellerSpeed"] = f32(round(impeller, 1))
        self.values["ChopperSpeed"] = f32(round(chopper, 1))
        # the wetter and denser the granules, the more power the impeller draws
        if phase == "wet_granulation":
            power_sp = 3.0 + 6.0 * self.cycle.phase_progress
        else:
            power_sp = {"dry_mix": 2.5, "drying": 1.2}.get(phase, 0.2)
        power = self._approach("Power", power_sp, tau=4.0, noise=0.05, dt=dt)
        self.values["Power"] = round(max(0.0, power), 3)
        self.values["BedTemp"] = round(self._approach("BedTemp", bed_sp, tau=90.0, noise=0.05, dt=dt), 2)
        spray = self._approach("SprayRate", spray_sp, tau=2.0, noise=0.8 if spray_sp else 0.0, dt=dt)
        self.values["SprayRate"] = round(max(0.0, spray), 1)
        # like the MES events: no batch and no phase between batches
        self.values["Batch/ID"] = self.cycle.batch_id
        self.values["Batch/Phase"] = "" if self.cycle.idle else phase


class TabletPress(BatchUnit):
    """A rotary tablet press with lifetime tablet and reject counters."""

    metrics = (
        MetricDef("TabletCount", DataType.UInt64, "tablets"),
        MetricDef("RejectCount", DataType.UInt32, "tablets"),
        MetricDef("CompressionForce", DataType.Double, "kN", 8.0, 14.0),
        MetricDef("TurretSpeed", DataType.Float, "rpm", 0.0, 80.0),
        MetricDef("Running", DataType.Boolean),
        ALARM,
    )
    QUALITY_METRIC = "TurretSpeed"
    STATIONS = 36
    REJECT_RATE = 0.002
    TURRET: ClassVar[dict[str, float]] = {"setup": 10.0, "compression": 45.0, "cleaning": 0.0, "idle": 0.0}

    def __init__(self, device_id: str, rng: random.Random, *, path: str, cycle: BatchCycle) -> None:
        super().__init__(device_id, rng, path=path, cycle=cycle)
        self._tablets = 48_213_907.0  # fractional tablets carry over between steps
        self.values = {
            "TabletCount": 48_213_907,
            "RejectCount": 12_034,
            "CompressionForce": 0.0,
            "TurretSpeed": f32(0.0),
            "Running": False,
            "Alarm": False,
        }

    def update_values(self, dt: float) -> None:
        phase = self.cycle.phase
        compressing = phase == "compression"
        turret = max(0.0, self._approach("TurretSpeed", self.TURRET[phase], tau=4.0, noise=0.2, dt=dt))
        self.values["TurretSpeed"] = f32(round(turret, 1))
        self.values["Running"] = compressing
        if compressing:
            made = turret / 60.0 * self.STATIONS * dt
            before = int(self._tablets)
            self._tablets += made
            new_tablets = int(self._tablets) - before
            rejects = int(new_tablets * self.REJECT_RATE + self.rng.random())
            self.values["TabletCount"] = int(self._tablets)
            reject_count = self.values["RejectCount"]
            assert isinstance(reject_count, int)
            self.values["RejectCount"] = reject_count + rejects
            force = min(14.0, max(8.0, 11.0 + self.rng.gauss(0.0, 0.4)))
            self.values["CompressionForce"] = round(force, 3)
        else:
            self.values["CompressionForce"] = 0.0


class NodeController(UnitModel):
    """An edge node's own metrics: firmware, hardware, uptime and load."""

    metrics = (
        MetricDef("Properties/Firmware", DataType.String),
        MetricDef("Properties/Hardware", DataType.String),
        MetricDef("Uptime", DataType.Int64, "s"),
        MetricDef("CPU/Load", DataType.Float, "%", 0.0, 100.0),
    )

    def __init__(self, rng: random.Random, *, firmware: str, hardware: str) -> None:
        super().__init__(None, rng)
        self._boot_age = 86_400.0 * (1 + rng.randrange(30))  # already up for days
        self.values = {
            "Properties/Firmware": firmware,
            "Properties/Hardware": hardware,
            "Uptime": int(self._boot_age),
            "CPU/Load": f32(12.0),
        }

    def step(self, dt: float) -> ContextUpdate | None:
        super().step(dt)
        self.values["Uptime"] = int(self._boot_age + self.sim_seconds)
        load = min(100.0, max(0.0, self._approach("CPU/Load", 12.0, tau=30.0, noise=0.5, dt=dt)))
        self.values["CPU/Load"] = f32(round(load, 1))
        return None


class BenchDevice(UnitModel):
    """``count`` Double metrics ``m000``.. doing independent random walks (uniform steps of +-0.5)."""

    def __init__(self, device_id: str, rng: random.Random, *, count: int) -> None:
        super().__init__(device_id, rng)
        self.metrics = tuple(MetricDef(f"m{i:03d}", DataType.Double) for i in range(count))
        self._names = [m.name for m in self.metrics]
        self._walk = [round(rng.uniform(0.0, 100.0), 3) for _ in self._names]
        self.values = dict(zip(self._names, self._walk, strict=True))

    def step(self, dt: float) -> ContextUpdate | None:
        # hot at benchmark rates: plain lists, one dict rebuild
        self.sim_seconds += dt
        rand = self.rng.random
        self._walk = [round(v + rand() - 0.5, 3) for v in self._walk]
        self.values = dict(zip(self._names, self._walk, strict=True))
        return None


class NodeModel:
    """One edge node: its own metrics, its devices, and node-wide unique aliases."""

    def __init__(self, node_id: str, own: UnitModel | None, devices: list[UnitModel]) -> None:
        self.node_id = node_id
        self.own = own
        self.devices = devices
        self.aliases: dict[tuple[str | None, str], int] = {}
        units: list[UnitModel] = ([own] if own is not None else []) + devices
        for unit in units:
            for metric in unit.metrics:
                self.aliases[(unit.device_id, metric.name)] = len(self.aliases) + 1

    def units(self) -> list[UnitModel]:
        """Everything that publishes DATA: the node's own metrics first, then the devices."""
        own = [self.own] if self.own is not None and self.own.metrics else []
        return own + list(self.devices)

    def device(self, device_id: str | None) -> UnitModel:
        for unit in self.units():
            if unit.device_id == device_id:
                return unit
        raise KeyError(device_id)


@dataclass(slots=True)
class Plant:
    """A whole simulated plant: one Sparkplug group of edge nodes."""

    group_id: str
    nodes: list[NodeModel]


def _rng(seed: int, node_id: str, device_id: str | None) -> random.Random:
    # str seeds hash with SHA-512: stable across processes, unlike hash()
    return random.Random(f"{seed}/{node_id}/{device_id or '-'}")


def pilot_plant(group_id: str = PILOT_GROUP, *, seed: int = 0, phase_seconds: float = 10.0) -> Plant:
    """The pharma pilot plant (ids fixed, see the module docstring)."""
    units = ("BR-101", "BR-102", "GR-201", "TP-301")

    def cycle(device_id: str, spec: tuple[str, str, tuple[str, ...]]) -> BatchCycle:
        recipe = BatchRecipe(product=spec[0], recipe=spec[1], phases=spec[2])
        index = units.index(device_id)
        return BatchCycle(
            recipe,
            unit_index=index,
            unit_count=len(units),
            phase_seconds=phase_seconds,
            offset=phase_seconds * index / len(units),
        )

    def controller(node_id: str, firmware: str, hardware: str) -> NodeController:
        return NodeController(_rng(seed, node_id, None), firmware=firmware, hardware=hardware)

    usp = NodeModel(
        "USP-Ctrl",
        controller("USP-Ctrl", "4.2.1", "S7-1518"),
        [
            Bioreactor(
                device_id,
                _rng(seed, "USP-Ctrl", device_id),
                path=PILOT_PATHS[device_id],
                cycle=cycle(device_id, MAB),
                spectrum=device_id == "BR-101",
            )
            for device_id in ("BR-101", "BR-102")
        ],
    )
    gran = NodeModel(
        "GRAN-Ctrl",
        controller("GRAN-Ctrl", "3.9.0", "CompactLogix 5380"),
        [
            Granulator(
                "GR-201",
                _rng(seed, "GRAN-Ctrl", "GR-201"),
                path=PILOT_PATHS["GR-201"],
                cycle=cycle("GR-201", GRANULATION),
            )
        ],
    )
    tab = NodeModel(
        "TAB-Ctrl",
        controller("TAB-Ctrl", "2.7.4", "X20CP3586"),
        [
            TabletPress(
                "TP-301",
                _rng(seed, "TAB-Ctrl", "TP-301"),
                path=PILOT_PATHS["TP-301"],
                cycle=cycle("TP-301", COMPRESSION),
            )
        ],
    )
    return Plant(group_id, [usp, gran, tab])


def bench_plant(group_id: str = "Bench", *, nodes: int, devices: int, metrics: int, seed: int = 0) -> Plant:
    """The load plant: ``node-%03d`` / ``dev-%02d`` / ``m%03d`` Doubles, no node metrics."""
    if nodes < 1 or devices < 1 or metrics < 1:
        raise ValueError("nodes, devices and metrics must be at least 1")
    built = []
    for n in range(nodes):
        node_id = f"node-{n:03d}"
        devs: list[UnitModel] = [
            BenchDevice(f"dev-{d:02d}", _rng(seed, node_id, f"dev-{d:02d}"), count=metrics)
            for d in range(devices)
        ]
        built.append(NodeModel(node_id, None, devs))
    return Plant(group_id, built)
