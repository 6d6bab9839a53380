"""Spoil chosen batches of the pilot plant on purpose: excursions, a death, a gap, a late correction.

A :class:`BatchFault` names a batch and what happens to it; the
:class:`Injector` applies the faults while the simulation runs:

- ``excursion``: the unit running the batch holds a metric at a value for the
  middle fifth (40 % to 60 %) of a phase (default: the recipe's second phase);
- ``shift``: the unit publishes a metric shifted by a constant for the whole batch
  (a batch that runs off-centre, for the trends across batches); the unit's own
  dynamics are not disturbed, so the batches after it are not shifted;
- ``death``: the unit's edge node dies without a DISCONNECT (the broker sends
  its NDEATH) halfway through the batch's third phase; the runner brings it
  back a second later and its stored DATA follows as historical;
- ``gap``: the unit sends nothing for ``seconds`` from the start of the
  batch's last phase;
- ``correct_context``: when the batch's last phase starts, the MES corrects the
  batch's ``recipe`` back-dated to the batch start (``recipe`` + `` (corrected)``,
  user ``qa.reviewer``); later events of the batch carry the corrected recipe;
- ``alarm``: the unit's ``Alarm`` is active for the middle fifth of the batch's second
  phase;
- ``bad_quality``: the unit's :attr:`~uns.sim.plant.BatchUnit.QUALITY_METRIC` is sent
  with Sparkplug quality bad for the middle fifth of the batch's second phase (an
  instrument failure);
- ``not_ready``, ``material``, ``oos``, ``comment``, ``abort``: what the MES and LIMS
  record of the batch (:mod:`uns.sim.mes`).

The faults act on simulated time and the batch cycle only, so which samples they
touch does not depend on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from uns.errors import ConfigError
from uns.sim.batch import ContextEvent
from uns.sim.mes import MES_KINDS
from uns.sim.plant import BatchUnit, Plant

__all__ = ["FAULT_KINDS", "UNIT_KINDS", "BatchFault", "Injector", "parse_fault"]

#: faults the plant's units act out (the others are the MES's: uns.sim.mes.MES_KINDS)
UNIT_KINDS = ("excursion", "shift", "death", "gap", "correct_context", "alarm", "bad_quality")
FAULT_KINDS = (*UNIT_KINDS, *MES_KINDS)
CORRECTION_USER = "qa.reviewer"
CORRECTION_REASON = "correction: recipe version recorded wrongly at batch start"


@dataclass(frozen=True, slots=True)
class BatchFault:
    kind: str
    batch_id: str
    metric: str | None = None  # excursion, shift
    value: float | None = None  # excursion: the value held; shift: the offset
    phase: str | None = None  # excursion; None: the recipe's second phase
    seconds: float = 3.0  # gap


def parse_fault(kind: str, text: str) -> BatchFault:
    """A fault from its command-line form: ``BATCH:METRIC=VALUE[:PHASE]`` (excursion),
    ``BATCH:METRIC=DELTA`` (shift), ``BATCH[:SECONDS]`` (gap), ``BATCH`` (every other kind)."""
    key = f"sim.{kind}"
    if kind not in FAULT_KINDS:
        raise ConfigError(f"unknown batch fault {kind!r}", key=key)
    batch, _, rest = text.partition(":")
    if not batch:
        raise ConfigError(f"--{kind.replace('_', '-')} {text!r}: a batch id is needed", key=key)
    if kind == "excursion":
        target, _, phase = rest.partition(":")
        metric, _, value = target.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not metric or number is None:
            raise ConfigError(f"--excursion {text!r}: use BATCH:METRIC=VALUE[:PHASE]", key=key)
        return BatchFault(kind, batch, metric=metric, value=number, phase=phase or None)
    if kind == "shift":
        metric, _, value = rest.partition("=")
        try:
            delta = float(value)
        except ValueError:
            delta = math.nan
        if not metric or not math.isfinite(delta):
            raise ConfigError(f"--shift {text!r}: use BATCH:METRIC=DELTA", key=key)
        return BatchFault(kind, batch, metric=metric, value=delta)
    if kind == "gap" and rest:
        try:
            seconds = float(rest)
        except ValueError:
            seconds = -1.0
        if seconds <= 0:
            raise ConfigError(f"--gap {text!r}: use BATCH[:SECONDS] with SECONDS > 0", key=key)
        return BatchFault(kind, batch, seconds=seconds)
    if rest:
        raise ConfigError(f"--{kind.replace('_', '-')} {text!r}: use BATCH", key=key)
    return BatchFault(kind, batch)


class Injector:
    """Applies faults to the batch units of a plant (after each step) and to its context events."""

    def __init__(self, faults: tuple[BatchFault, ...]) -> None:
        self.faults = faults
        self._dying: list[BatchUnit] = []
        self._fired: set[tuple[str, str]] = set()  # (kind, batch) of one-shot faults done
        self._starts: dict[tuple[str, str], int] = {}  # (path, batch) -> ts of the batch start
        self._corrected: dict[tuple[str, str], str] = {}  # (path, batch) -> corrected recipe
        self._last_phases: dict[str, str] = {}  # unit path -> its recipe's last phase

    def attach(self, plant: Plant) -> None:
        for node in plant.nodes:
            for unit in node.devices:
                if isinstance(unit, BatchUnit):
                    unit.injections.append(self.apply)
                    if unit.path is not None:
                        self._last_phases[unit.path] = unit.cycle.recipe.phases[-1]

    def take_deaths(self) -> list[BatchUnit]:
        """Units whose edge node must die now (each once)."""
        dying, self._dying = self._dying, []
        return dying

    def apply(self, unit: BatchUnit) -> None:
        """After a step of ``unit``: excursions, gaps and deaths of its current batch."""
        cycle = unit.cycle
        batch, phases, index = cycle.batch_id, cycle.recipe.phases, cycle.phase_index
        muted = False
        # the middle fifth of the second phase: where alarm and bad-quality faults act
        middle = index == min(1, len(phases) - 1) and 0.4 <= cycle.phase_progress < 0.6
        for fault in self.faults:
            if not batch or fault.batch_id != batch:
                continue
            if fault.kind == "alarm" and "Alarm" in unit.values:
                unit.values["Alarm"] = middle
            elif fault.kind == "bad_quality" and unit.QUALITY_METRIC:
                unit.bad_quality = {unit.QUALITY_METRIC} if middle else set()
            if fault.kind == "excursion" and fault.metric in unit.values:
                phase = fault.phase or phases[min(1, len(phases) - 1)]
                if cycle.phase == phase and 0.4 <= cycle.phase_progress < 0.6:
                    current = unit.values[fault.metric]
                    value = fault.value if fault.value is not None else 0.0
                    unit.values[fault.metric] = round(value) if isinstance(current, int) else value
            elif fault.kind == "shift" and fault.metric in unit.values:
                unit.shift(fault.metric, fault.value or 0.0)
            elif fault.kind == "gap":
                muted |= index == len(phases) - 1 and cycle.phase_elapsed < fault.seconds
            elif fault.kind == "death" and self._due(
                batch, index == min(2, len(phases) - 1), cycle.phase_progress
            ):
                self._fired.add(("death", batch))
                self._dying.append(unit)
        unit.muted = muted

    def _due(self, batch: str, in_phase: bool, progress: float) -> bool:
        """A death is due halfway through its phase, once per batch."""
        return in_phase and progress >= 0.5 and ("death", batch) not in self._fired

    def observe(self, submit: Callable[[ContextEvent], None]) -> Callable[[ContextEvent], None]:
        """``submit`` (the MES publisher) with the context corrections added."""

        def on_context(event: ContextEvent) -> None:
            batch = event.set.get("batch_id")
            key = (event.path, batch or "")
            wanted = batch and any(f.kind == "correct_context" and f.batch_id == batch for f in self.faults)
            correction = None
            if wanted and event.reason == "batch start":
                self._starts[key] = event.ts
            elif wanted and self._correction_due(key, event):
                self._corrected[key] = f"{event.set.get('recipe', '')} (corrected)"
                correction = ContextEvent(
                    event.path,
                    self._starts[key],
                    set={"recipe": self._corrected[key]},
                    source=event.source,
                    user=CORRECTION_USER,
                    reason=CORRECTION_REASON,
                )
            if batch and key in self._corrected:  # from now on the MES sends the corrected recipe
                event = dataclasses.replace(event, set={**event.set, "recipe": self._corrected[key]})
            submit(event)
            if correction is not None:
                submit(correction)

        return on_context

    def _correction_due(self, key: tuple[str, str], event: ContextEvent) -> bool:
        """The batch's last phase starts now, and its recipe was not corrected yet."""
        return (
            event.reason == "phase change"
            and key in self._starts
            and key not in self._corrected
            and event.set.get("phase") == self._last_phases.get(event.path)
        )
