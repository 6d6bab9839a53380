"""Engine health: the counters of the retained status document (and of ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from uns.sparkplug.topic import MessageType

__all__ = ["REJECT_REASONS", "SESSION_TYPES", "Counters", "reject_reason"]

#: the Sparkplug message types of an edge node's session (what ``sparkplug_messages`` counts)
SESSION_TYPES = ("NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA")

#: the ``reason`` of a rejected message or metric, from the start of its error text (the
#: text itself is in the lake's ``rejected`` table), else from a fragment of it, else ``other``
_REASON_PREFIXES = (
    ("not a Sparkplug B topic", "not_sparkplug"),
    ("over limit", "limit"),
    ("undecodable", "undecodable"),
    ("duplicate of the message", "duplicate"),
    ("seq ", "out_of_order"),
    ("BIRTH metric", "bad_birth"),
    ("unborn metric", "not_born"),
    ("a metric with neither name nor alias", "not_born"),
    ("alias ", "not_born"),
    ("DDATA for device", "not_born"),
)
_REASON_FRAGMENTS = (
    (" from an edge node ", "not_born"),
    (" is not a session message", "not_born"),
    ("': not a ", "bad_value"),
)
#: every value ``reject_reason`` returns (the ``reason`` label of ``uns_rejected_total``)
REJECT_REASONS = (
    "internal",
    *dict.fromkeys(r for _, r in (*_REASON_PREFIXES, *_REASON_FRAGMENTS)),
    "context",
    "other",
)


def reject_reason(error: str, *, context: bool = False) -> str:
    """The short, bounded reason of a rejection's error text (a Prometheus label value);
    ``context``: the rejection of a context event (``context`` unless an internal error)."""
    if error.startswith("internal error"):
        return "internal"
    if context:
        return "context"
    for prefix, reason in _REASON_PREFIXES:
        if error.startswith(prefix):
            return reason
    for fragment, reason in _REASON_FRAGMENTS:
        if fragment in error:
            return reason
    return "other"


def _by_type() -> dict[str, int]:
    return {t.value: 0 for t in MessageType}


@dataclass
class Counters:
    """Monotonic counters since start (published in the status document)."""

    messages: int = 0  # MQTT messages received
    metrics: int = 0  # samples produced
    rejected: int = 0  # messages or metrics that could not be used
    rebirths_requested: int = 0
    seq_gaps: int = 0
    reconnects: int = 0
    commands_ignored: int = 0  # NCMD/DCMD seen on spBv1.0/# (ours echoed back, or other hosts')
    host_states_seen: int = 0
    context_events: int = 0  # messages on <prefix>/_context/# (each one acknowledged)
    context_changes: int = 0
    context_applied: int = 0  # context events applied (each makes one or more changes)
    context_duplicates: int = 0  # context events whose id was applied before (not applied again)
    context_conflicts: int = 0  # context events reusing an applied id with other content (rejected)
    context_rejected: int = 0  # context events that were malformed (acknowledged as rejected)
    context_retained_ignored: int = 0  # retained deliveries of context events (never applied)
    records: int = 0  # messages on <prefix>/_records/# (batch records; each one acknowledged)
    records_applied: int = 0  # records applied (each is one row of materials, results, comments)
    records_duplicates: int = 0  # records whose id was applied before with the same content
    records_rejected: int = 0  # malformed records
    records_conflicts: int = 0  # records reusing an applied id with other content (rejected)
    records_retained_ignored: int = 0  # retained deliveries of records (never applied)
    backpressure_waits: int = 0  # times intake paused because a sink was full
    internal_errors: int = 0  # messages that hit a bug (rejected with the error; the loop goes on)
    sink_errors: int = 0  # batches a sink failed to take with an unexpected error (logged)
    node_births: int = 0  # NBIRTHs the sessions accepted
    device_births: int = 0
    node_deaths: int = 0  # NDEATHs that ended a session (an ignored one is not counted)
    device_deaths: int = 0
    #: Sparkplug messages received by message type (``NDATA``, ``STATE``, ...)
    messages_by_type: dict[str, int] = field(default_factory=_by_type)
    #: rejected messages and metrics by :func:`reject_reason`
    rejected_by_reason: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))

    @property
    def sparkplug_messages(self) -> int:
        """Messages of an edge node's session (births, deaths, data)."""
        by_type = self.messages_by_type
        return sum(by_type[t] for t in SESSION_TYPES)

    def count_rejected(self, errors: list[str], *, context: bool = False) -> None:
        """Count rejections (``rejected`` and its reasons) from their error texts."""
        self.rejected += len(errors)
        reasons = self.rejected_by_reason
        for error in errors:
            reason = reject_reason(error, context=context)
            reasons[reason] += 1

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        out: dict[str, int | dict[str, int]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, dict) else value
        out["sparkplug_messages"] = self.sparkplug_messages
        return out
