"""What a batch report is asked for (:class:`ReportRequest`) and what it holds (:class:`Report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from uns.batch.parameters import Parameter
from uns.batch.queries import BatchInfo
from uns.batch.spec import Spec
from uns.core.model import PlantModel

__all__ = ["Report", "ReportRequest"]


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What to report on and against what."""

    batch_id: str
    spec: Spec = field(default_factory=Spec)
    model: PlantModel | None = None
    metrics: tuple[str, ...] = ()  # further numeric metrics to report (--metric)
    reference: str | None = None  # one golden batch (--reference B): its series overlaid
    #: several golden batches (--reference B1,B2,B3): their mean +- 3 sd band (uns.batch.golden)
    references: tuple[str, ...] = ()
    envelope_exceptions: bool = False  # leaving the band is an exception (--envelope-exceptions)
    late_context_s: float = 5.0
    now: datetime | None = None  # the report time (default: now)
    #: the directory of the trusted keys its signatures are checked against (audit.trusted_keys)
    trusted_keys: str | None = None

    @property
    def reference_batches(self) -> tuple[str, ...]:
        """Every reference batch, in the order given (``reference`` first), each once."""
        given = ((self.reference,) if self.reference else ()) + self.references
        return tuple(dict.fromkeys(given))


@dataclass(slots=True)
class Report:
    """The report's content (``document``: the JSON object) and what only plots need."""

    document: dict[str, Any]
    parameters: list[Parameter]
    info: BatchInfo
    reference: BatchInfo | None = None
