"""The review's rules (uns.batch.review): pure, no lake.  Each refusal names its rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uns.batch.review import (
    RULES,
    STATES,
    Disposition,
    Signed,
    check_disposition,
    check_signature,
    current_dispositions,
    dispositions_sha256,
    review_state,
)
from uns.errors import ReviewRefused, UserError

IDS = ["a" * 16, "b" * 16]


def d(exception_id: str, ts: int = 1, decision: str = "accepted", user: str = "jdoe") -> Disposition:
    return Disposition(
        exception_id, decision, "ok", None if decision == "accepted" else "DEV-1", user, "J. Doe", ts
    )


def refused(rule: str, **kw: object) -> None:
    args = {"status": "closed", "exception_ids": IDS, "dispositions": {}, "signatures": []} | kw
    meaning, user, reason = args.pop("meaning"), args.pop("user", "asmith"), args.pop("reason", "")
    with pytest.raises(ReviewRefused) as caught:
        check_signature(meaning, user, reason, **args)  # type: ignore[arg-type]
    assert caught.value.rule == rule and rule in RULES


def test_each_signing_rule_is_named() -> None:
    both = {i: d(i) for i in IDS}
    review = Signed("jdoe", "reviewed", verified=True, counts=True)
    stale = Signed("jdoe", "reviewed", verified=True, counts=False)
    refused("reason-required", meaning="rejected", reason="  ")
    refused("all-dispositioned", meaning="reviewed", dispositions={IDS[0]: d(IDS[0])})
    refused("batch-closed", meaning="approved", status="open", dispositions=both, signatures=[review])
    refused("reviewed-first", meaning="approved", dispositions=both)
    refused("reviewed-first", meaning="approved", signatures=[Signed("jdoe", "reviewed", False, False)])
    refused("content-unchanged", meaning="approved", dispositions=both, signatures=[stale])
    refused("four-eyes", meaning="approved", user="jdoe", dispositions=both, signatures=[review])
    approved = Signed("asmith", "approved", verified=True, counts=True)
    refused("decided", meaning="reviewed", dispositions=both, signatures=[review, approved])
    # and what the rules allow
    check_signature(
        "reviewed", "jdoe", "", status="open", exception_ids=IDS, dispositions=both, signatures=[]
    )
    check_signature("approved", "asmith", "", status="closed", exception_ids=IDS, dispositions=both,
                    signatures=[review])  # fmt: skip
    check_signature(
        "rejected", "asmith", "no", status="open", exception_ids=IDS, dispositions={}, signatures=[]
    )


def test_a_disposition_is_checked_field_by_field() -> None:
    assert check_disposition("open", IDS, IDS[0], "accepted", " fine ", None) == (
        IDS[0],
        "accepted",
        "fine",
        None,
    )
    for args, field in (
        ((IDS[0], "maybe", "x", None), "decision"),
        ((IDS[0], "accepted", "", None), "comment"),
        ((IDS[0], "deviation", "x", ""), "deviation_ref"),
        ((IDS[0], "accepted", "x" * 5000, None), "comment"),
    ):
        with pytest.raises(UserError) as caught:
            check_disposition("open", IDS, *args)
        assert caught.value.field == field
    with pytest.raises(ReviewRefused, match="no exception") as unknown:
        check_disposition("open", IDS, "c" * 16, "accepted", "x", None)
    assert unknown.value.rule == "unknown-exception"
    with pytest.raises(ReviewRefused) as decided:
        check_disposition("approved", IDS, IDS[0], "accepted", "x", None)
    assert decided.value.rule == "decided"


def test_the_newest_disposition_of_each_current_exception_counts() -> None:
    history = [d(IDS[0], 1), d(IDS[0], 3, "deviation"), d(IDS[1], 2), d("gone" + "x" * 12, 4)]
    current = current_dispositions(history, IDS)
    assert current[IDS[0]].decision == "deviation" and set(current) == set(IDS)
    assert dispositions_sha256(current) != dispositions_sha256({IDS[0]: d(IDS[0])})
    assert dispositions_sha256({}) == dispositions_sha256({})


_SIGNED = st.tuples(
    st.sampled_from(["jdoe", "asmith"]),
    st.sampled_from(["reviewed", "approved", "rejected"]),
    st.booleans(),
    st.booleans(),
)


@given(st.lists(_SIGNED, max_size=6), st.booleans())
def test_the_state_is_the_newest_counting_decision(
    raw: list[tuple[str, str, bool, bool]], active: bool
) -> None:
    signed = [Signed(u, m, v, v and c) for u, m, v, c in raw]
    state = review_state(signed, active)
    assert state in STATES
    decisions = [s.meaning for s in signed if s.counts and s.meaning != "reviewed"]
    if decisions:
        assert state == decisions[-1]
    elif any(s.counts for s in signed):
        assert state == "reviewed"
    else:
        assert state == ("in_review" if signed or active else "open")
