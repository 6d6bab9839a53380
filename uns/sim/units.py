"""The pilot plant's process units and their deterministic value models (pure):
bioreactors, a high-shear granulator and a tablet press, each running ISA-88 batches."""

import math
import random
from typing import ClassVar

from uns.sim.batch import BatchCycle
from uns.sim.models import ALARM, SIM_EPOCH_MS, BatchUnit, MetricDef, f32
from uns.sparkplug.datatypes import DataType


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
