"""`uns batch list|show|report`: what the commands do (their parsing is :mod:`uns_cli.batch_cli`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lake
from lake.batches import batch_info, list_batches
from uns.batch.spec import Spec, parse_spec
from uns.batch.times import iso
from uns.config import load_config
from uns.errors import BatchError, UnsError
from uns_cli.output import render_rows

if TYPE_CHECKING:
    from uns_cli.batch_report import ReportRequest

__all__ = ["batch_list", "batch_report", "batch_show", "batch_sign", "load_spec"]

Echo = Callable[[str], Any]


def _settings(lake_dir: str | None, config: str | None = None) -> Any:
    cfg = load_config(config, overrides={"lake.path": lake_dir})
    if not cfg.lake.path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return cfg


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BatchError(f"--since {text!r} is not an ISO 8601 time (e.g. 2026-12-01T08:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.now().astimezone().tzinfo)


def batch_list(
    lake_dir: str | None, *, since: str | None, product: str | None, open_only: bool, fmt: str, echo: Echo
) -> None:
    cfg = _settings(lake_dir)
    con = lake.connect(cfg.lake.path)
    try:
        columns, rows = list_batches(con, since=_since(since), product=product, open_only=open_only)
    finally:
        con.close()
    shown = [tuple(iso(v) if isinstance(v, datetime) else v for v in row) for row in rows]
    echo(render_rows(columns, shown, fmt))


def load_spec(path: str | None) -> Spec:
    """The spec file at ``path`` (none: an empty spec, the fallback limits apply)."""
    if not path:
        return Spec()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"cannot read the spec file: {exc.strerror or exc}", file=path) from exc
    return parse_spec(text, file=path)


def _request(
    cfg: Any, batch_id: str, *, spec: str | None, metrics: tuple[str, ...] = (), reference: str | None = None
) -> ReportRequest:
    from uns.engine.plant import load_model  # noqa: PLC0415 - `uns batch list` needs neither
    from uns_cli.batch_report import ReportRequest  # noqa: PLC0415

    model = load_model(cfg.engine.model) if cfg.engine.model else None
    return ReportRequest(
        batch_id,
        spec=load_spec(spec or cfg.batch.spec),
        model=model,
        metrics=metrics,
        reference=reference,
        late_context_s=cfg.batch.late_context_s,
    )


def batch_show(lake_dir: str | None, batch_id: str, *, spec: str | None, echo: Echo) -> None:
    """A terminal summary: units, phases with durations, exceptions, completeness."""
    from uns_cli.batch_report import build_report  # noqa: PLC0415

    cfg = _settings(lake_dir)
    con = lake.connect(cfg.lake.path)
    try:
        batch_info(con, batch_id)  # an unknown batch: one line, before any other work
        doc = build_report(con, _request(cfg, batch_id, spec=spec)).document
    finally:
        con.close()
    b = doc["batch"]
    product, recipe, order = (b[k] or "-" for k in ("product", "recipe", "order_id"))
    echo(f"batch {b['batch_id']}  {product} / {recipe}  order {order}  [{b['status']}]")
    duration = "-" if b["duration_s"] is None else f"{b['duration_s']:g} s"
    echo(f"  start {b['start']}  end {b['end'] or 'open'}  duration {duration}")
    echo(f"  units {', '.join(b['units'])}")
    rows = [(p["path"], p["phase"], p["start"], p["end"] or "open", _seconds(p)) for p in doc["phases"]]
    echo(render_rows(["path", "phase", "start", "end", "duration_s"], rows, "table"))
    metrics = doc["completeness"]["metrics"]
    received = sum(m["received"] for m in metrics)
    expected = sum(m["expected"] for m in metrics)
    kinds: dict[str, int] = {}
    for e in doc["exceptions"]:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    echo(f"  parameters {len(doc['parameters'])}, excursions {len(doc['excursions'])}")
    echo(
        f"  completeness {received}/{expected} samples of metrics with an expected interval"
        if metrics
        else "  completeness: no expected interval in the spec"
    )
    echo(
        f"  exceptions {len(doc['exceptions'])}"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if kinds else "")
    )
    echo(f"  verdict: {doc['verdict']}")


def _seconds(phase: dict[str, Any]) -> float | None:
    if phase["end"] is None:
        return None
    start, end = (datetime.fromisoformat(phase[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return round((end - start).total_seconds(), 3)


def batch_report(
    lake_dir: str | None,
    batch_id: str,
    *,
    spec: str | None,
    fmt: str,
    output: str | None,
    reference: str | None,
    metrics: tuple[str, ...],
    echo: Echo,
) -> Path:
    """Write the report (default file: ``<batch>.<format>``); prints its path and verdict."""
    from uns_cli.batch_report import generate_report  # noqa: PLC0415

    cfg = _settings(lake_dir)
    data, verdict = generate_report(
        cfg.lake.path, _request(cfg, batch_id, spec=spec, metrics=metrics, reference=reference), fmt
    )
    target = Path(output or f"{batch_id}.{fmt}")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise BatchError(f"cannot write the report to {target}: {exc.strerror or exc}") from exc
    echo(f"{target}: {verdict}")
    return target


def batch_sign(
    lake_dir: str | None,
    batch_id: str,
    *,
    spec: str | None,
    meaning: str,
    user: str,
    reason: str | None,
    key: str | None,
    echo: Echo,
) -> int:
    """Sign the batch's report in the audit trail (uns_cli.batch_signatures); prints what
    was signed.  Returns the signature entry's seq."""
    from uns_cli.batch_report import build_report  # noqa: PLC0415
    from uns_cli.batch_signatures import sign_batch  # noqa: PLC0415

    cfg = _settings(lake_dir)
    request = _request(cfg, batch_id, spec=spec)

    def document(con: Any) -> dict[str, Any]:
        batch_info(con, batch_id)  # an unknown batch: one line
        return build_report(con, request).document

    seq, sha = sign_batch(
        cfg, document, batch_id, meaning=meaning, user=user, reason=reason, key=key,
        spec_file=request.spec.file,
    )  # fmt: skip
    how = f"digitally, key {Path(key).name.removesuffix('.key')}" if key else "electronically, no key"
    echo(f"{batch_id}: {meaning} by {user} ({how}); report content sha256 {sha}; audit entry uns-cli #{seq}")
    return seq
