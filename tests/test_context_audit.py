"""Context audit that is right (issue 28, item 5): manual and back-dated changes need a
reason (``context.require_reason``, refused with an acknowledgement that says why), and on
a real lake each ``context_change`` entry names the value in effect at the change's own
valid-from time, only for keys whose value changed -- also when the commit worker starts
afresh and must look further back in the lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.engine_helpers import engine_config
from tests.lake_helpers import query
from uns.core.events import Batch, ContextChange
from uns.core.reasons import MANUAL_SOURCES, missing_reason
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.lake import LakeConfig, LakeSink
from uns.lake.audit_state import context_history

NS = "reasons"
UNIT = "acme/basel/pilot/usp/br-101"
TOPIC = f"{NS}/uns/_context/{UNIT}"
NOW = 1_767_261_600_000  # when the events arrive


def _decide(event: dict[str, Any], *, require: bool = True) -> tuple[str, str | None, int]:
    engine = Engine(
        engine_config("mqtt://memory:1883", NS, **{"context.require_reason": require}),
        transport=MemoryBroker(),
    )
    batch, _rebirths, (ack,) = engine.dispatch.process_context(TOPIC, json.dumps(event).encode(), NOW)
    body = json.loads(ack.payload)
    return body["status"], body["reason"], len(batch.rejected)


@pytest.mark.parametrize(
    ("event", "status", "why"),
    [
        ({"ts": NOW, "set": {"phase": "growth"}, "source": "mes"}, "applied", None),
        ({"ts": NOW - 4_000, "set": {"phase": "growth"}, "source": "mes"}, "applied", None),  # within 5 s
        ({"ts": NOW - 3_600_000, "set": {"phase": "growth"}, "source": "mes"}, "rejected",
         "a back-dated change needs a reason: valid from 2026-01-01T09:00:00.000Z, "
         "3600.0 s before it arrived (context.require_reason)"),
        ({"ts": NOW - 3_600_000, "set": {"phase": "growth"}, "source": "mes", "reason": "MES was down"},
         "applied", None),
        ({"ts": NOW, "set": {"phase": "growth"}, "source": "uns-cli", "user": "jdoe"}, "rejected",
         "a manual change needs a reason (source 'uns-cli'; context.require_reason)"),
        ({"ts": NOW, "set": {"phase": "growth"}, "source": "uns-web", "reason": "   "}, "rejected",
         "a manual change needs a reason (source 'uns-web'; context.require_reason)"),
        ({"ts": NOW, "set": {"phase": "growth"}, "source": "uns-import", "reason": "paper record 17"},
         "applied", None),
    ],
)  # fmt: skip
def test_manual_and_back_dated_changes_need_a_reason(
    event: dict[str, Any], status: str, why: str | None
) -> None:
    got_status, got_why, rejected = _decide(event)
    assert (got_status, got_why) == (status, why)
    assert rejected == (status == "rejected")  # kept in the rejected table with its reason
    assert _decide(event, require=False)[0] == "applied"  # context.require_reason = false


def test_the_rule_is_pure_and_names_the_manual_sources() -> None:
    change = ContextChange(NOW, NOW, UNIT, "phase", "x", "uns-cli")
    assert missing_reason([change], NOW, late_ms=5_000) is not None
    assert missing_reason([], NOW, late_ms=5_000) is None
    assert {"uns-cli", "uns-import", "uns-web"} == MANUAL_SOURCES


def _change(ts: int, key: str, value: str | None, ident: str, received: int) -> ContextChange:
    return ContextChange(ts, received, UNIT, key, value, "mes", "jdoe", "why", ident)


async def _commit(lake_dir: Path, changes: list[ContextChange]) -> None:
    async with LakeSink(lake_dir, LakeConfig(commit_interval=0.05, commit_worker="thread")) as sink:
        sink.add(Batch(context=changes))


@pytest.mark.integration
async def test_the_audit_names_the_value_in_effect_at_each_changes_own_time(tmp_path: Path) -> None:
    """Three runs of the sink (each a fresh commit worker reading the lake): the auditor's
    cases -- a change back-dated to before anything was set, a phase change that
    re-asserts every key, a correction of the past -- against what was in effect."""
    lake_dir = tmp_path / "lake"
    t = 1_767_261_600_000
    await _commit(lake_dir, [
        _change(t + 3_600_000, "recipe", "mAb-A v3", "e1", t + 3_600_000),  # 22:00 (from 21:00 = t + 0)
        _change(t + 3_600_000, "phase", "setup", "e1", t + 3_600_000),
    ])  # fmt: skip
    await _commit(lake_dir, [
        _change(t, "recipe", "mAb-A v2", "e2", t + 4_000_000),  # back-dated to 21:00: nothing was in effect
        _change(t + 7_200_000, "recipe", "mAb-A v3", "e3", t + 7_200_000),  # re-asserted with the phase
        _change(t + 7_200_000, "phase", "growth", "e3", t + 7_200_000),
    ])  # fmt: skip
    await _commit(lake_dir, [
        _change(t + 5_400_000, "phase", "inoculation", "e4", t + 8_000_000),  # a correction of 22:30
    ])  # fmt: skip
    rows = query(
        lake_dir,
        "SELECT json_extract_string(detail, '$.key'), json_extract_string(detail, '$.old'), "
        "json_extract_string(detail, '$.new'), json_extract_string(detail, '$.event_id') "
        "FROM audit WHERE kind = 'context_change' ORDER BY seq",
    )
    assert rows == [
        ("recipe", None, "mAb-A v3", "e1"),
        ("phase", None, "setup", "e1"),
        ("recipe", None, "mAb-A v2", "e2"),
        ("phase", "setup", "growth", "e3"),
        ("phase", "setup", "inoculation", "e4"),
    ]
    # a history that keeps one change per key looks older ones up in the context table
    history = context_history(DeltaTable(lake_dir / "context"), 1 << 62, keep=1)
    import datetime as dt  # noqa: PLC0415

    at = dt.datetime.fromtimestamp((t + 1_000) / 1000, dt.UTC)
    assert history.value_at(UNIT, "recipe", at, 1 << 62) == "mAb-A v2"
    assert history.value_at(UNIT, "phase", at, 1 << 62) is None
