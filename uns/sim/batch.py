"""ISA-88 batch cycles of the simulated units and the context events they cause (pure).

A unit (bioreactor, granulator, tablet press) runs batch after batch: each
batch walks through the unit's phases, each phase lasting ``phase_seconds`` of
simulated time, then the unit stands idle for one more phase length before the
next batch starts.  Every change of phase yields one :class:`ContextUpdate`;
the simulator stamps it with the sample time and a path and publishes it as a
context event (docs/contracts.md: ``ts``, ``set``, ``clear``, ``source``, ``user``,
``reason``).

Each update carries the whole batch context (batch, order, product, recipe,
phase), not only what changed, so a consumer that missed one event is right
again at the next.  Idle clears the batch keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = [
    "BATCH_KEYS",
    "IDLE_PHASE",
    "BatchCycle",
    "BatchRecipe",
    "ContextEvent",
    "ContextUpdate",
]

#: the keys a batch sets and idle clears, in ISA-88/ISA-95 vocabulary
BATCH_KEYS = ("batch_id", "order_id", "product", "recipe", "phase")
#: the state between batches (internal: context and PLC metrics show no phase then)
IDLE_PHASE = "idle"
#: batch ids look like B2026-0001; the year is fixed so runs are reproducible
BATCH_ID_FORMAT = "B2026-{:04d}"
ORDER_ID_FORMAT = "PO-{:07d}"
FIRST_ORDER = 4711000


@dataclass(frozen=True, slots=True)
class BatchRecipe:
    """What a unit makes and the phases its recipe walks through."""

    product: str
    recipe: str
    phases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextUpdate:
    """A change of a unit's batch context, before it gets a time and a path."""

    set: dict[str, str]
    clear: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class ContextEvent:
    """A context event as published on ``<prefix>/_context/<path>``."""

    path: str
    ts: int  # ms UTC: when the change happened (not when it was published)
    set: dict[str, str] = field(default_factory=dict)
    clear: tuple[str, ...] = ()
    source: str = "sim-mes"
    user: str = "sim"
    reason: str = ""

    def to_json(self) -> bytes:
        body = {
            "ts": self.ts,
            "set": self.set,
            "clear": list(self.clear),
            "source": self.source,
            "user": self.user,
            "reason": self.reason,
        }
        return json.dumps(body, separators=(",", ":")).encode()


class BatchCycle:
    """The batch/phase state machine of one unit, driven by simulated time.

    Batch numbers interleave across units (unit ``i`` of ``n`` makes batches
    ``i+1, i+1+n, ...``) so ids are plant-wide unique and do not depend on the
    order in which units are stepped.
    """

    def __init__(
        self,
        recipe: BatchRecipe,
        *,
        unit_index: int,
        unit_count: int,
        phase_seconds: float,
        offset: float = 0.0,
    ) -> None:
        """``offset``: seconds already spent in the first phase, so units do not change in lockstep."""
        if phase_seconds <= 0:
            raise ValueError("phase_seconds must be positive")
        if not 0 <= offset < phase_seconds:
            raise ValueError("offset must be within the first phase")
        self.recipe = recipe
        self.unit_index = unit_index
        self.unit_count = unit_count
        self.phase_seconds = phase_seconds
        self.cycle = 0
        self.phase_index = 0  # == len(phases) while idle
        self.phase_elapsed = offset

    @property
    def idle(self) -> bool:
        return self.phase_index >= len(self.recipe.phases)

    @property
    def phase(self) -> str:
        return IDLE_PHASE if self.idle else self.recipe.phases[self.phase_index]

    @property
    def phase_progress(self) -> float:
        """How far into the current phase, 0.0 .. 1.0."""
        return min(1.0, self.phase_elapsed / self.phase_seconds)

    @property
    def batch_id(self) -> str:
        """The current batch id, empty while idle."""
        return "" if self.idle else BATCH_ID_FORMAT.format(self._batch_number())

    def _batch_number(self) -> int:
        return self.unit_index + 1 + self.cycle * self.unit_count

    def context(self) -> dict[str, str]:
        """The full batch context now (empty while idle)."""
        if self.idle:
            return {}
        number = self._batch_number()
        return {
            "batch_id": BATCH_ID_FORMAT.format(number),
            "order_id": ORDER_ID_FORMAT.format(FIRST_ORDER + number),
            "product": self.recipe.product,
            "recipe": self.recipe.recipe,
            "phase": self.phase,
        }

    def current_update(self) -> ContextUpdate:
        """The update that describes the present state (sent at start-up)."""
        if self.idle:
            return ContextUpdate(set={}, clear=BATCH_KEYS, reason="batch end")
        reason = "batch start" if self.phase_index == 0 else "phase change"
        return ContextUpdate(set=self.context(), clear=(), reason=reason)

    def advance(self, seconds: float) -> ContextUpdate | None:
        """Advance simulated time; the resulting update if the phase changed.

        Several phase changes within one step collapse into one update that
        describes the final state (each update carries the full context)."""
        self.phase_elapsed += seconds
        changed = False
        while self.phase_elapsed >= self.phase_seconds:
            self.phase_elapsed -= self.phase_seconds
            changed = True
            if self.idle:
                self.cycle += 1
                self.phase_index = 0
            else:
                self.phase_index += 1
        return self.current_update() if changed else None
