"""The vocabulary of ``uns validate``: requirements, their test steps, checks and results.

Every requirement (:data:`REQUIREMENTS`, from ``requirements.toml``; docs/gxp.md lists
them as the traceability matrix) has test steps, each an action and, for most, an
expected result, and an acceptance criterion.  A check is a function that returns a
:class:`Check`: what it *observed* for each step with an expected result (the actual
result and whether it meets the expectation).  The requirement passes when every
such step was observed and passed.  Whatever a check raises fails each of its steps,
with the error as what was observed, never the end of the run.
"""

from __future__ import annotations

import time
import tomllib
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Final

__all__ = [
    "PARTS",
    "REQUIREMENTS",
    "Check",
    "Observed",
    "Requirement",
    "Step",
    "parse_requirements",
    "run_check",
    "seen",
]

#: the parts of a qualification, in order: installation, operation, performance
PARTS: Final = ("iq", "oq", "pq")


@dataclass(frozen=True, slots=True)
class Step:
    """One test step: what is done and, unless it is an action only, the expected result."""

    id: str
    action: str
    expected: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Requirement:
    """A requirement: what the system must do, the regulation it serves, how it is tested."""

    id: str
    text: str
    regulation: str
    acceptance: str
    steps: tuple[Step, ...]

    @property
    def part(self) -> str:
        return self.id.split("-", 1)[0].lower()

    @property
    def judged(self) -> tuple[Step, ...]:
        """The steps with an expected result (each gets an actual result and pass/fail)."""
        return tuple(s for s in self.steps if s.expected is not None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": [s.to_dict() for s in self.steps]}  # a JSON list, not a tuple


def parse_requirements(text: str) -> dict[str, Requirement]:
    """The requirements of a ``requirements.toml`` text, in file order."""
    out: dict[str, Requirement] = {}
    for req, entry in tomllib.loads(text).items():
        steps = tuple(
            Step(str(s["id"]), str(s["do"]), str(s["expect"]) if "expect" in s else None)
            for s in entry.get("step", [])
        )
        out[req] = Requirement(
            req, str(entry["text"]), str(entry["regulation"]), str(entry["acceptance"]), steps
        )
    return out


def _requirements() -> dict[str, Requirement]:
    text = resources.files("uns.validation").joinpath("requirements.toml").read_text(encoding="utf-8")
    return parse_requirements(text)


#: requirement id -> the requirement, from uns/validation/requirements.toml
REQUIREMENTS: Final[Mapping[str, Requirement]] = _requirements()


@dataclass(frozen=True, slots=True)
class Observed:
    """The actual result of one step and whether it meets the expected result."""

    passed: bool
    actual: str


@dataclass(slots=True)
class Check:
    """One requirement's result: what was observed per step, a one-line summary, evidence.

    ``observed`` maps step ids to :class:`Observed`; a judged step that is missing from it
    counts as failed ("not observed")."""

    requirement: str
    detail: str
    observed: dict[str, Observed] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        steps = REQUIREMENTS[self.requirement].judged
        return bool(steps) and all(s.id in self.observed and self.observed[s.id].passed for s in steps)

    def fail_all(self, why: str) -> None:
        """Every judged step failed because of ``why`` (the run itself went wrong)."""
        for step in REQUIREMENTS[self.requirement].judged:
            seen = self.observed.get(step.id)
            actual = f"{why} -- {seen.actual}" if seen is not None else why
            self.observed[step.id] = Observed(False, actual)
        self.detail = f"{why} -- {self.detail}"

    def steps(self, expected: Mapping[str, str | None] | None = None) -> list[dict[str, Any]]:
        """The steps of the requirement with their actual results (``expected``: the
        expected results as the executed protocol states them, by step id)."""
        rows = []
        for n, step in enumerate(REQUIREMENTS[self.requirement].steps, 1):
            want = step.expected if expected is None else expected.get(step.id, step.expected)
            seen = self.observed.get(step.id)
            if want is None:
                result, actual = "done", seen.actual if seen is not None else ""
            elif seen is None:
                result, actual = "fail", "not observed"
            else:
                result, actual = ("pass" if seen.passed else "fail"), seen.actual
            rows.append(
                {"n": n, "id": step.id, "action": step.action, "expected": want,
                 "actual": actual, "result": result}
            )  # fmt: skip
        return rows

    def to_dict(self, expected: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        req = REQUIREMENTS[self.requirement]
        return {
            "requirement": self.requirement,
            "text": req.text,
            "regulation": req.regulation,
            "acceptance": req.acceptance,
            "result": "pass" if self.passed else "fail",
            "detail": self.detail,
            "steps": self.steps(expected),
            "evidence": self.evidence,
            "seconds": round(self.seconds, 3),
        }


def seen(passed: bool, actual: str) -> Observed:
    """Shorthand for the checks: ``seen(ok, "what was observed")``."""
    return Observed(bool(passed), actual)


def run_check(requirement: str, fn: Callable[[], Check]) -> Check:
    """``fn()``, timed; an exception fails every judged step of ``requirement`` with the
    error as what was observed."""
    started = time.perf_counter()
    try:
        check = fn()
    except Exception as exc:  # a check that breaks is a failed check, never the end of the run
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        why = f"{type(exc).__name__}: {exc}{where}"
        check = Check(
            requirement, why, {s.id: Observed(False, why) for s in REQUIREMENTS[requirement].judged}
        )
    check.seconds = time.perf_counter() - started
    return check
