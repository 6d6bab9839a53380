"""The vocabulary of what the engine decides for a message (pure data): a :data:`Decision`
and the statuses of an acknowledgement of a context event or batch record
(``schemas/context-ack.schema.json``).  :mod:`uns.engine.dispatch` makes the decisions,
:mod:`uns.engine.record_decisions` those of the batch records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from uns.core.events import Batch, RebirthRequest
from uns.engine.transport import Publish

__all__ = [
    "ALREADY_APPLIED",
    "APPLIED",
    "CONFLICT",
    "DUPLICATE",
    "NONE",
    "REJECTED",
    "RETAINED_COPY",
    "Decision",
]

#: (batch for the sinks, rebirth requests, other publishes) -- all that one message decided
Decision = tuple[Batch, Sequence[RebirthRequest], Sequence[Publish]]

#: the shared "nothing to send" of a decision
NONE: tuple[()] = ()

#: ``status`` of an acknowledgement
APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
REJECTED: Final = "rejected"
CONFLICT: Final = "conflict"
#: ``reason`` of a duplicate
ALREADY_APPLIED: Final = "already applied"
RETAINED_COPY: Final = "retained copy"
