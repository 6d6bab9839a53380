"""The batch record's calls, as every face makes them (the command line, the web workspace).

Each takes the lake (a path or URL; ``None``: the configured one) and returns data:
the rows of ``uns batch list``, the report document of ``uns batch show``, the
bytes and verdict of ``uns batch report``, the audit entry of ``uns batch sign``,
the trend document (:func:`trend_document`; :func:`uns.batch.trend_html.render_trend_html`
renders it) and bytes of ``uns batch trend``.  Printing is the face's business.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uns import lake
from uns.batch.document import ReportRequest
from uns.batch.queries import batch_info, list_batches
from uns.batch.signing import SignResult
from uns.batch.spec import Spec, parse_spec
from uns.batch.times import iso
from uns.config import Config, load_config
from uns.errors import BatchError, UnsError

if TYPE_CHECKING:  # the trend loads with its first call, not for `uns batch list`
    from uns.batch.trend import TrendRequest

__all__ = [
    "SignResult",
    "batch_document",
    "batch_rows",
    "load_spec",
    "parse_references",
    "parse_since",
    "parse_time",
    "report_bytes",
    "report_file_name",
    "report_request",
    "settings",
    "sign",
    "trend_bytes",
    "trend_document",
    "trend_request",
]


#: what a file name made from a batch id may hold (a batch id is anyone's text: MQTT context)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def report_file_name(batch_id: str, fmt: str) -> str:
    """The default file name of a batch's report: the batch id with every character but
    letters, digits, ``.``, ``_``, ``-`` replaced by ``_``, no leading dot, at most 120
    characters, and the format's suffix -- a plain name, so the report lands in the current
    directory whatever the batch id (``../x`` becomes ``_x.html``)."""
    stem = _UNSAFE.sub("_", batch_id).lstrip(".")[:120] or "batch"
    return f"{stem}.{fmt}"


def settings(lake_dir: str | None, config: str | None = None) -> Config:
    """The configuration with ``lake_dir`` as the lake (UnsError when there is none)."""
    cfg = load_config(config, overrides={"lake.path": lake_dir})
    if not cfg.lake.path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return cfg


def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (a naive one is local time); BatchError naming ``option`` and the
    format otherwise."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BatchError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-12-01T08:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.now().astimezone().tzinfo)


def parse_since(text: str | None) -> datetime | None:
    """``--since``: :func:`parse_time`."""
    return parse_time(text, "--since")


def parse_references(text: str | None) -> tuple[str, ...]:
    """``--reference B1,B2,B3``: the batch ids, each once, in order; BatchError for an empty one."""
    if text is None:
        return ()
    ids = [part.strip() for part in text.split(",")]
    if not all(ids):
        raise BatchError(f"--reference {text!r}: give batch ids separated by commas (B1,B2,B3)")
    return tuple(dict.fromkeys(ids))


def batch_rows(
    lake_dir: str | None, *, since: str | None = None, product: str | None = None, open_only: bool = False
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The batches (``uns batch list``): column names and rows, times as ISO 8601 UTC text."""
    cfg = settings(lake_dir)
    con = lake.connect(cfg.lake.path or "")
    try:
        columns, rows = list_batches(con, since=parse_since(since), product=product, open_only=open_only)
    finally:
        con.close()
    return columns, [tuple(iso(v) if isinstance(v, datetime) else v for v in row) for row in rows]


def load_spec(path: str | None) -> Spec:
    """The spec file at ``path`` (none: an empty spec, the fallback limits apply)."""
    if not path:
        return Spec()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"cannot read the spec file: {exc.strerror or exc}", file=path) from exc
    return parse_spec(text, file=path)


def report_request(
    cfg: Config,
    batch_id: str,
    *,
    spec: str | None,
    metrics: Sequence[str] = (),
    reference: str | None = None,
    envelope_exceptions: bool = False,
) -> ReportRequest:
    """The report request of ``batch_id``: the spec (``spec`` or the configured one) and
    the plant model of the configuration; ``reference`` is one reference batch or several
    separated by commas."""
    from uns.engine.plant import load_model  # noqa: PLC0415 - `uns batch list` needs no model

    model = load_model(cfg.engine.model) if cfg.engine.model else None
    return ReportRequest(
        batch_id,
        spec=load_spec(spec or cfg.batch.spec),
        model=model,
        metrics=tuple(metrics),
        references=parse_references(reference),
        envelope_exceptions=envelope_exceptions,
        late_context_s=cfg.batch.late_context_s,
        trusted_keys=cfg.audit.trusted_keys,
    )


def batch_document(lake_dir: str | None, batch_id: str, *, spec: str | None = None) -> dict[str, Any]:
    """The report document of ``batch_id`` (the JSON report's content; nothing recorded)."""
    from uns.batch.report import build_report  # noqa: PLC0415

    cfg = settings(lake_dir)
    con = lake.connect(cfg.lake.path or "")
    try:
        batch_info(con, batch_id)  # an unknown batch: one line, before any other work
        return build_report(con, report_request(cfg, batch_id, spec=spec)).document
    finally:
        con.close()


def report_bytes(
    lake_dir: str | None,
    batch_id: str,
    *,
    fmt: str,
    spec: str | None = None,
    reference: str | None = None,
    metrics: Sequence[str] = (),
    envelope_exceptions: bool = False,
) -> tuple[bytes, str]:
    """The report of ``batch_id`` in ``fmt`` (json, html, pdf) and its verdict; the report
    is recorded in the audit trail with its SHA-256.  ``reference``: one golden batch, or
    several separated by commas (their envelope; ``envelope_exceptions``: leaving it is an
    exception)."""
    from uns.batch.report import generate_report  # noqa: PLC0415

    cfg = settings(lake_dir)
    request = report_request(
        cfg, batch_id, spec=spec, metrics=metrics, reference=reference,
        envelope_exceptions=envelope_exceptions,
    )  # fmt: skip
    return generate_report(cfg.lake.path or "", request, fmt, audit=cfg.audit)


def sign(
    lake_dir: str | None,
    batch_id: str,
    *,
    spec: str | None,
    meaning: str,
    key: str,
    user: str | None = None,
    reason: str | None = None,
    expect_sha256: str | None = None,
    passphrase: bytes | None = None,
) -> SignResult:
    """Sign the report of ``batch_id`` with the private key file ``key`` as the key's
    enrolled owner (``user``, if given, must be that owner): :func:`uns.batch.signing.sign_report`."""
    from uns.batch.report import build_report  # noqa: PLC0415
    from uns.batch.signing import load_signing, sign_report, signer_of_key  # noqa: PLC0415

    cfg = settings(lake_dir)
    request = report_request(cfg, batch_id, spec=spec)
    signing, trusted, keyring = load_signing(key, cfg.audit.trusted_keys, passphrase=passphrase)
    signer = signer_of_key(trusted, user)

    def document(con: Any) -> dict[str, Any]:
        batch_info(con, batch_id)  # an unknown batch: one line
        return build_report(con, request).document

    return sign_report(
        cfg.lake.path or "", batch_id, document=document, signer=signer, meaning=meaning,
        reason=reason or "", key=signing, keyring=keyring, expect_sha256=expect_sha256,
        spec=request.spec.identity(), audit=cfg.audit,
    )  # fmt: skip


def trend_request(
    cfg: Config,
    metric: str,
    *,
    stat: str = "mean",
    product: str | None = None,
    recipe: str | None = None,
    phase: str | None = None,
    path: str | None = None,
    since: str | None = None,
    until: str | None = None,
    spec: str | None = None,
) -> TrendRequest:
    """The trend request of ``metric`` (times as ISO 8601 text; the spec ``spec`` or the
    configured one)."""
    from uns.batch.trend import TrendRequest  # noqa: PLC0415

    return TrendRequest(
        metric,
        stat=stat,
        product=product,
        recipe=recipe,
        phase=phase,
        path=path,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        spec=load_spec(spec or cfg.batch.spec),
    )


def trend_document(lake_dir: str | None, metric: str, **options: Any) -> dict[str, Any]:
    """The trend document of ``metric`` across the closed batches (``uns batch trend``, JSON
    form; the options are :func:`trend_request`'s); render it with
    :func:`uns.batch.trend_html.render_trend_html`."""
    from uns.batch.trend import build_trend  # noqa: PLC0415

    cfg = settings(lake_dir)
    request = trend_request(cfg, metric, **options)
    con = lake.connect(cfg.lake.path or "")
    try:
        return build_trend(con, request)
    finally:
        con.close()


def trend_bytes(lake_dir: str | None, metric: str, *, fmt: str, **options: Any) -> tuple[bytes, str]:
    """The trend of ``metric`` in ``fmt`` (json, html, pdf) and its one-line summary."""
    from uns.batch.trend import generate_trend  # noqa: PLC0415

    cfg = settings(lake_dir)
    return generate_trend(cfg.lake.path or "", trend_request(cfg, metric, **options), fmt)
