"""Performance qualification on the plant's own configuration and lake (PQ-01..05).

``uns validate --pq --config FILE --lake LAKE [--batch B ...]`` checks what uns can
check of the plant's real installation, reading only (the seal of the evidence is its
one audit entry in the lake):

- PQ-01: the plant model (``engine.model``) loads and maps every device that was born
  in the lake (``metric_catalog``) to an ISA-95 path; each one not mapped is listed;
- PQ-02: the spec (``batch.spec``) loads and has a ``[[limit]]`` entry for every numeric
  device metric born in the lake; each one without is listed, with what would apply;
- PQ-03: ``uns audit verify`` on the lake with the configuration's trusted keys (and
  its anchors, where the installation has them);
- PQ-04: each named batch's report made twice gives the same content SHA-256;
- PQ-05: each named batch's completeness against the spec's expected intervals.

The named batches are the PQ batches (``--batch``; without it the newest closed one).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

from uns import lake
from uns.validation.checks import Check, run_check, seen

if TYPE_CHECKING:
    from uns.batch.report import Report
    from uns.batch.spec import Spec
    from uns.config import Config
    from uns.core.model import PlantModel

__all__ = ["NUMERIC", "pq_checks"]

#: the Sparkplug datatypes a limit can apply to
NUMERIC: Final = frozenset(
    {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float", "Double"}
)
_T = TypeVar("_T")
_LISTED: Final = 30  # uncovered metrics named in a step's actual result (all are in the evidence)


def _configured(file: str | None, key: str, what: str, load: Callable[[str], _T]) -> _T:
    """``load(file)``, the file the configuration names under ``key``; an error if it names none."""
    from uns.errors import UnsError  # noqa: PLC0415

    if not file:
        raise UnsError(f"{key} is not set: the configuration names no {what}")
    return load(file)


class _Plant:
    """What the PQ checks share: the configuration, the lake, the model, spec and reports."""

    def __init__(self, config: Config, lake_dir: str, batches: Sequence[str]) -> None:
        self.config, self.lake, self.named = config, lake_dir, tuple(batches)
        self._model: PlantModel | None = None
        self._spec: Spec | None = None
        self._reports: dict[str, tuple[Report, Report]] = {}

    def model(self) -> PlantModel:
        from uns.engine.plant import load_model  # noqa: PLC0415

        if self._model is None:
            self._model = _configured(self.config.engine.model, "engine.model", "plant model", load_model)
        return self._model

    def spec(self) -> Spec:
        from uns.batch.api import load_spec  # noqa: PLC0415

        if self._spec is None:
            self._spec = _configured(self.config.batch.spec, "batch.spec", "spec", load_spec)
        return self._spec

    def catalog(self) -> list[tuple[str, str, str, str, str]]:
        """(group, node, device, metric, datatype) of every device metric ever born."""
        con = lake.connect(self.lake)
        try:
            rows = con.execute(
                "SELECT DISTINCT group_id, edge_node_id, device_id, metric, arg_max(datatype, birth_ts) "
                "FROM metric_catalog WHERE device_id IS NOT NULL GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        finally:
            con.close()
        return [tuple(str(v) for v in r) for r in rows]  # type: ignore[misc]

    def batches(self) -> tuple[str, ...]:
        from uns.errors import UnsError  # noqa: PLC0415

        if self.named:
            return self.named
        con = lake.connect(self.lake)
        try:
            row = con.execute(
                "SELECT batch_id FROM batches WHERE status = 'closed' ORDER BY \"end\" DESC, batch_id LIMIT 1"
            ).fetchone()
        finally:
            con.close()
        if row is None:
            raise UnsError("no batch named (--batch) and no closed batch in the lake")
        self.named = (str(row[0]),)
        return self.named

    def reports(self, batch_id: str) -> tuple[Report, Report]:
        """The batch's report made twice, each from its own snapshot of the lake."""
        from uns.batch.report import ReportRequest, build_report  # noqa: PLC0415

        if batch_id not in self._reports:
            request = ReportRequest(
                batch_id,
                spec=self.spec(),
                model=self.model(),
                late_context_s=self.config.batch.late_context_s,
            )
            made = []
            for _ in range(2):
                con = lake.connect(self.lake)
                try:
                    made.append(build_report(con, request))
                finally:
                    con.close()
            self._reports[batch_id] = (made[0], made[1])
        return self._reports[batch_id]


def _some(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def _model_covers(plant: _Plant) -> Check:
    model = plant.model()
    loaded = seen(True, f"{plant.config.engine.model}: {len(model.sources)} sources, "
                        f"{len(model.equipment)} equipment")  # fmt: skip
    catalog = plant.catalog()
    uncovered = [f"{g}/{n}/{d} {m}" for g, n, d, m, _t in catalog if model.resolve(g, n, d).unmapped]
    what = f"{len(uncovered)} of {len(catalog)} device metrics without a path" + (
        f": {_some(uncovered)}" if uncovered else ""
    )
    return Check("PQ-01", what, {"load": loaded, "covered": seen(not uncovered, what)},
                 {"device_metrics": len(catalog), "uncovered": uncovered})  # fmt: skip


def _spec_covers(plant: _Plant) -> Check:
    spec, model = plant.spec(), plant.model()
    loaded = seen(True, f"{plant.config.batch.spec}: {len(spec.limits)} [[limit]] entries")
    uncovered: list[str] = []
    numeric = 0
    for group, node, device, metric, datatype in plant.catalog():
        if datatype not in NUMERIC:
            continue
        numeric += 1
        where = model.resolve(group, node, device)
        info = where.metrics.get(metric)
        name = info.display_name if info is not None else metric
        if any(e.metric == name and (e.path is None or fnmatch.fnmatchcase(where.path, e.path))
               for e in spec.limits):  # fmt: skip
            continue
        if info is not None and (info.low is not None or info.high is not None):
            fallback = f"the model's limits {info.low}..{info.high} apply"
        else:
            fallback = "no model limits; engLow/engHigh of its birth, if any, apply"
        uncovered.append(f"{where.path} {name} ({datatype}; {fallback})")
    what = f"{len(uncovered)} of {numeric} numeric device metrics without a [[limit]] entry" + (
        f": {_some(uncovered)}" if uncovered else ""
    )
    return Check("PQ-02", what, {"load": loaded, "covered": seen(not uncovered, what)},
                 {"numeric_device_metrics": numeric, "uncovered": uncovered})  # fmt: skip


def _audit(plant: _Plant) -> Check:
    from uns.audit.trail import verify_lines  # noqa: PLC0415

    audit = plant.config.audit
    code, lines = verify_lines(plant.lake, audit.trusted_keys, audit=audit)
    said = "" if audit.anchor else "; anchors: audit.anchor is not configured"
    what = f"exit {code}: " + "; ".join(lines[:10]) + said
    return Check("PQ-03", what, {"verify": seen(code == 0, what)}, {"findings": lines if code else []})


def _reproducible(plant: _Plant) -> Check:
    from uns.batch.signing import report_content_sha256  # noqa: PLC0415

    said, same = [], True
    hashes: dict[str, list[str]] = {}
    for batch_id in plant.batches():
        first, second = (report_content_sha256(r.document) for r in plant.reports(batch_id))
        hashes[batch_id] = [first, second]
        same = same and first == second
        said.append(f"{batch_id}: {first[:16]}.. {'=' if first == second else '!='} {second[:16]}..")
    what = "; ".join(said)
    return Check("PQ-04", what, {"twice": seen(same, what)}, {"content_sha256": hashes})


def _complete(plant: _Plant) -> Check:
    short: list[str] = []
    checked = 0
    for batch_id in plant.batches():
        report, _again = plant.reports(batch_id)
        for m in report.document["completeness"]["metrics"]:
            checked += 1
            if m["received"] < m["expected"] or m["gaps"]:
                longest = max((g["duration_s"] for g in m["gaps"]), default=0.0)
                short.append(
                    f"{batch_id} {m['path']} {m['metric']}: {m['received']} of {m['expected']} samples, "
                    f"{len(m['gaps'])} gap(s){f' (longest {longest:.1f} s)' if m['gaps'] else ''}"
                )
    batches = ", ".join(plant.batches())
    if not checked:
        what = f"{batches}: the spec gives no metric of these batches an expected_interval_s"
        return Check("PQ-05", what, {"complete": seen(False, what + ": completeness cannot be shown")})
    what = f"{batches}: {len(short)} of {checked} metrics short of samples or with gaps" + (
        f": {_some(short)}" if short else ""
    )
    return Check("PQ-05", what, {"complete": seen(not short, what)}, {"incomplete": short})


def pq_checks(config: Config, lake_dir: str, batches: Sequence[str] = ()) -> list[Check]:
    """Every PQ check of the plant's ``config`` and lake, in requirement order."""
    plant = _Plant(config, lake_dir, batches)
    steps: list[tuple[str, Any]] = [
        ("PQ-01", _model_covers),
        ("PQ-02", _spec_covers),
        ("PQ-03", _audit),
        ("PQ-04", _reproducible),
        ("PQ-05", _complete),
    ]
    return [run_check(req, partial(fn, plant)) for req, fn in steps]
