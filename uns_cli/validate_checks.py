"""The vocabulary of ``uns validate``: requirements, checks and their results.

Every check proves one requirement (:data:`REQUIREMENTS`; docs/gxp.md lists them as
the traceability matrix).  A check is a function that returns a :class:`Check`, or
raises: whatever it raises is a failure of its requirement, with the error as the
detail, never the end of the run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["REQUIREMENTS", "Check", "run_check"]

#: requirement id -> (what the system must do, the regulation or practice it serves)
REQUIREMENTS: Final[dict[str, tuple[str, str]]] = {
    "IQ-01": ("A supported Python (CPython 3.11 or newer) runs uns", "GAMP 5 IQ: platform"),
    "IQ-02": ("The uns distribution is installed, in the version of the running code", "GAMP 5 IQ: version"),
    "IQ-03": (
        "Every runtime dependency is installed in a version its requirement allows",
        "GAMP 5 IQ: configuration items",
    ),
    "IQ-04": (
        "Every installed file of uns has the SHA-256 of its record (RECORD), and the running "
        "code is that installed code (not an editable checkout, not a shadowing copy)",
        "Part 11 §11.10(a); Annex 11 §4",
    ),
    "IQ-05": (
        "Every installed file of every runtime dependency has the SHA-256 of its record",
        "Part 11 §11.10(a); Annex 11 §4",
    ),
    "IQ-06": (
        "The shipped JSON Schemas are present, well-formed, and the config schema is the code's",
        "GAMP 5 IQ: interfaces",
    ),
    "IQ-07": ("The effective configuration loads, and its trusted keys can be read", "Annex 11 §4.8"),
    "OQ-01": (
        "Sparkplug B data is stored once per sample with its ISA-95 path from the plant model",
        "ALCOA+ original, complete",
    ),
    "OQ-02": (
        "Each sample carries the batch context valid at its own timestamp",
        "ALCOA+ attributable; 21 CFR 211.188",
    ),
    "OQ-03": ("A Sparkplug seq gap is detected and recorded", "ALCOA+ complete"),
    "OQ-04": ("A device death and its rebirth are recorded in order", "ALCOA+ complete"),
    "OQ-05": ("A message that cannot be used is kept, with the reason, in rejected", "ALCOA+ complete"),
    "OQ-06": (
        "A late context correction is kept beside the original, with who and why, and corrects history",
        "Part 11 §11.10(e); Annex 11 §9",
    ),
    "OQ-07": (
        "The batch report lists a CPP excursion and the device death as exceptions",
        "21 CFR 211.188, 211.192 (review by exception)",
    ),
    "OQ-08": (
        "A killed engine loses no context event and stores none twice; it starts again on its lake",
        "ALCOA+ complete, enduring; Annex 11 §7",
    ),
    "OQ-09": (
        "uns audit verify finds the lake intact: hash chains and every data file's SHA-256",
        "Part 11 §11.10(c), (e); Annex 11 §7.1",
    ),
    "OQ-10": (
        "uns audit verify names a data file changed behind the writer's back",
        "Part 11 §11.10(c), (e); Annex 11 §7.1",
    ),
    "OQ-11": (
        "A batch signature records signer, time, meaning and report hash, verifies with the "
        "trusted key, and is flagged when the report content changes",
        "Part 11 §11.50, §11.70; Annex 11 §14",
    ),
    "OQ-12": (
        "With context.require_signature, only context signed by a trusted key is applied; the "
        "signer is stored, the rest rejected with the reason",
        "ALCOA+ attributable; Part 11 §11.10(d)",
    ),
}


@dataclass(slots=True)
class Check:
    """One check's result: the requirement, pass or fail, what was seen."""

    requirement: str
    passed: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        text, regulation = REQUIREMENTS[self.requirement]
        return {
            "requirement": self.requirement,
            "text": text,
            "regulation": regulation,
            "result": "pass" if self.passed else "fail",
            "detail": self.detail,
            "evidence": self.evidence,
            "seconds": round(self.seconds, 3),
        }


def run_check(requirement: str, fn: Callable[[], Check]) -> Check:
    """``fn()``, timed; an exception fails ``requirement`` with the error as its detail."""
    started = time.perf_counter()
    try:
        check = fn()
    except Exception as exc:  # a check that breaks is a failed check, never the end of the run
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        check = Check(requirement, False, f"{type(exc).__name__}: {exc}{where}")
    check.seconds = time.perf_counter() - started
    return check
