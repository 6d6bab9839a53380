"""Work done in slices: pure generators an I/O shell can pause between slices (no asyncio).

A message of 100,000 metrics takes seconds of Python; done in one go it would
stall the engine's event loop (timers, the systemd watchdog, the context
connection, ``/healthz``) for all that time.  So the functions whose work grows
with a message's metrics -- the decoder's metric loop
(:func:`uns.sparkplug.codec.decode_payload_steps`), the births
(:mod:`uns.sparkplug.lifecycle`), the enrichment -- are written as generators
that ``yield`` after every :data:`SLICE` items.  They stay pure: the caller
decides what a pause means.  :func:`run_steps` runs one to its end at once (what
the plain functions do); the engine (:mod:`uns.engine.slicing`) lets its loop
run between slices.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Final, TypeVar

__all__ = ["SLICE", "Steps", "run_steps"]

#: items (metrics, samples) between two pauses: a few milliseconds of work
SLICE: Final = 2048

_T = TypeVar("_T")

#: a computation in slices: yields None between slices, returns its result
Steps = Generator[None, None, _T]


def run_steps(steps: Generator[object, None, _T]) -> _T:
    """Run ``steps`` to its end without pausing; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # the generator's return value
