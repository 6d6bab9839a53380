"""Engine health: the counters of the retained status document."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Counters"]


@dataclass
class Counters:
    """Monotonic counters since start (published in the status document)."""

    messages: int = 0  # MQTT messages received
    sparkplug_messages: int = 0
    metrics: int = 0  # samples produced
    rejected: int = 0  # messages or metrics that could not be used
    rebirths_requested: int = 0
    seq_gaps: int = 0
    reconnects: int = 0
    commands_ignored: int = 0  # NCMD/DCMD seen on spBv1.0/# (ours echoed back, or other hosts')
    host_states_seen: int = 0
    context_events: int = 0  # messages on <prefix>/_context/# (each one acknowledged)
    context_changes: int = 0
    context_duplicates: int = 0  # context events whose id was applied before (not applied again)
    context_retained_ignored: int = 0  # retained deliveries of context events (never applied)
    backpressure_waits: int = 0  # times intake paused because a sink was full
    internal_errors: int = 0  # messages that hit a bug (rejected with the error; the loop goes on)
    sink_errors: int = 0  # batches a sink failed to take with an unexpected error (logged)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
