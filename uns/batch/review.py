"""The review's rules: dispositions, signatures and the review state (pure: no I/O, no clock).

A batch is reviewed by exception: a reviewer dispositions every exception of the
report (``accepted`` with a comment, or ``deviation`` with the deviation's reference),
signs ``reviewed``; another person with the authority approves (``approved``) or
rejects (``rejected``).  Each refusal names its rule (docs/web.md lists them; the web
API answers 409 with it):

| rule | what it says |
|---|---|
| ``reason-required`` | a rejection says why |
| ``decided`` | nothing more is signed or dispositioned once the batch is approved or rejected |
| ``unknown-exception`` | a disposition names an exception of the report as it is now |
| ``all-dispositioned`` | ``reviewed`` needs every exception dispositioned |
| ``batch-closed`` | ``approved`` needs the batch closed |
| ``reviewed-first`` | ``approved`` needs a valid ``reviewed`` signature |
| ``content-unchanged`` | ... of the report content and dispositions as they are now |
| ``four-eyes`` | ... by another user than the approver |

A signature *counts* only when it verifies (its Ed25519 signature by a trusted key, for
the signer, at its place in the audit trail) and covers the report as it is now: the
same report content (SHA-256) and, for ``reviewed`` and ``approved``, the same
dispositions (:func:`dispositions_sha256`).  Changed data, or a disposition changed
after the review, puts the batch back in review.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from uns.errors import ReviewRefused, UserError

__all__ = [
    "DECISIONS",
    "MEANINGS",
    "RULES",
    "STATES",
    "Disposition",
    "Signed",
    "check_disposition",
    "check_signature",
    "current_dispositions",
    "dispositions_sha256",
    "review_state",
]

STATES: Final = ("open", "in_review", "reviewed", "approved", "rejected")
MEANINGS: Final = ("reviewed", "approved", "rejected")
DECISIONS: Final = ("accepted", "deviation")
RULES: Final = {
    "reason-required": "a rejection says why",
    "decided": "nothing more is signed or dispositioned once the batch is approved or rejected",
    "unknown-exception": "a disposition names an exception of the report as it is now",
    "all-dispositioned": "reviewed needs every exception dispositioned",
    "batch-closed": "approved needs the batch closed",
    "reviewed-first": "approved needs a valid reviewed signature",
    "content-unchanged": "approved needs the report content and dispositions unchanged since that review",
    "four-eyes": "approved needs a review by another user than the approver",
}
#: bounds of the texts a reviewer types (untrusted input is bounded)
MAX_COMMENT: Final = 4000
MAX_REFERENCE: Final = 200


@dataclass(frozen=True, slots=True)
class Disposition:
    """A reviewer's decision on one exception (the newest per exception counts)."""

    exception_id: str
    decision: str  # accepted | deviation
    comment: str
    deviation_ref: str | None
    user: str
    full_name: str
    ts_us: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # every field, in order (the report's dispositions)


@dataclass(frozen=True, slots=True)
class Signed:
    """A signature as the rules see it: who, what it means, and whether it counts
    (verified and covering the report and dispositions as they are now) -- else
    ``verified`` tells a stale signature from one that does not verify at all."""

    user: str
    meaning: str
    verified: bool
    counts: bool


def current_dispositions(
    dispositions: Iterable[Disposition], exception_ids: Iterable[str]
) -> dict[str, Disposition]:
    """The newest disposition of each exception of the report as it is now."""
    wanted = set(exception_ids)
    newest: dict[str, Disposition] = {}
    for d in sorted(dispositions, key=lambda d: d.ts_us):
        if d.exception_id in wanted:
            newest[d.exception_id] = d
    return newest


def dispositions_sha256(current: Mapping[str, Disposition]) -> str:
    """The SHA-256 of the dispositions as they are (what a review signs besides the report)."""
    rows = [
        [d.exception_id, d.decision, d.comment, d.deviation_ref, d.user] for _, d in sorted(current.items())
    ]
    text = json.dumps(rows, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def review_state(signatures: Sequence[Signed], dispositioned: bool) -> str:
    """``open`` (nothing done), ``in_review`` (dispositions or signatures, none counting for
    a decision), ``reviewed``, ``approved`` or ``rejected`` (the newest counting decision)."""
    counting = [s for s in signatures if s.counts]
    decisions = [s.meaning for s in counting if s.meaning in ("approved", "rejected")]
    if decisions:
        return decisions[-1]
    if any(s.meaning == "reviewed" for s in counting):
        return "reviewed"
    return "in_review" if dispositioned or signatures else "open"


def _text(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise UserError(f"{field.replace('_', ' ')} is required", field=field)
        return None
    if not isinstance(value, str):
        raise UserError(f"{field.replace('_', ' ')} must be text", field=field)
    if len(value) > limit:
        raise UserError(f"{field.replace('_', ' ')} must be at most {limit} characters", field=field)
    return value.strip()


def check_disposition(
    state: str, exception_ids: Iterable[str], exception_id: object, decision: object, comment: object,
    deviation_ref: object,
) -> tuple[str, str, str, str | None]:  # fmt: skip
    """The disposition's (exception id, decision, comment, deviation reference) checked:
    UserError for a bad input (naming its field), ReviewRefused for a rule."""
    if decision not in DECISIONS:
        raise UserError("decision must be accepted or deviation", field="decision")
    text = _text(comment, "comment", MAX_COMMENT, required=True)
    ref = _text(deviation_ref, "deviation_ref", MAX_REFERENCE, required=decision == "deviation")
    if not isinstance(exception_id, str) or exception_id not in set(exception_ids):
        raise ReviewRefused(
            "unknown-exception",
            f"no exception {str(exception_id)[:40]!r} in the report as it is now (reload the batch)",
        )
    if state in ("approved", "rejected"):
        raise ReviewRefused("decided", f"the batch is {state}: its dispositions are final")
    assert text is not None
    return exception_id, str(decision), text, ref


def check_signature(
    meaning: str,
    user: str,
    reason: str,
    *,
    status: str,
    exception_ids: Sequence[str],
    dispositions: Mapping[str, Disposition],
    signatures: Sequence[Signed],
) -> None:
    """ReviewRefused naming the rule that forbids ``user`` to sign ``meaning`` now."""
    if meaning not in MEANINGS:
        raise UserError("meaning must be reviewed, approved or rejected", field="meaning")
    if meaning == "rejected" and not reason.strip():
        raise ReviewRefused("reason-required", "a rejection needs a reason")
    state = review_state(signatures, bool(dispositions))
    if state in ("approved", "rejected"):
        raise ReviewRefused("decided", f"the batch is {state} already (as its report is now)")
    if meaning == "reviewed":
        missing = [i for i in exception_ids if i not in dispositions]
        if missing:
            raise ReviewRefused(
                "all-dispositioned",
                f"{len(missing)} of {len(exception_ids)} exceptions are not dispositioned yet",
            )
    elif meaning == "approved":
        if status != "closed":
            raise ReviewRefused("batch-closed", f"the batch is {status}: only a closed batch is approved")
        reviews = [s for s in signatures if s.meaning == "reviewed" and s.verified]
        if not reviews:
            raise ReviewRefused("reviewed-first", "the batch has no valid reviewed signature")
        valid = [s for s in reviews if s.counts]
        if not valid:
            raise ReviewRefused(
                "content-unchanged",
                "the report content or its dispositions changed since it was reviewed: it needs a new review",
            )
        if all(s.user == user for s in valid):
            raise ReviewRefused(
                "four-eyes", f"{user} reviewed this batch: another person with the approver role approves it"
            )
