"""The vocabulary of ``uns validate``: requirements, checks and their results.

Every check proves one requirement (:data:`REQUIREMENTS`; docs/gxp.md lists them as
the traceability matrix).  A check is a function that returns a :class:`Check`, or
raises: whatever it raises is a failure of its requirement, with the error as the
detail, never the end of the run.
"""

from __future__ import annotations

import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

__all__ = ["REQUIREMENTS", "Check", "run_check"]


def _requirements() -> dict[str, tuple[str, str]]:
    text = resources.files("uns.validation").joinpath("requirements.toml").read_text(encoding="utf-8")
    return {req: (str(entry["text"]), str(entry["regulation"])) for req, entry in tomllib.loads(text).items()}


#: requirement id -> (what the system must do, the regulation or practice it serves),
#: from uns.cli/validation_requirements.toml
REQUIREMENTS: Final[dict[str, tuple[str, str]]] = _requirements()


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
