"""The ``uns audit`` commands (registered by cli.py; the work is in uns.cli/audit.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import FormatOpt, LakeOpt, PassphraseOpt, SignKeyOpt, SignUserOpt, guard, lake_path

__all__ = ["audit_app"]

audit_app = typer.Typer(help="The lake's audit trail: verify it, read it.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    lake: LakeOpt = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor", help="the anchors to check against: DIR or s3://bucket/prefix (audit.anchor)"
        ),
    ] = None,
) -> None:
    """Recompute the audit hash chains and every data file's SHA-256, check every digital
    signature against the trusted keys (audit.trusted_keys), the chains against their
    anchors outside the lake (audit.anchor) and the clock; exit 0 with a summary when the
    lake is intact, 1 with one line per finding.

    Example: uns audit verify --lake ./uns-lake --anchor /mnt/worm/uns-anchors
    """
    from uns.audit.trail import verify_lines  # noqa: PLC0415
    from uns.cli.lake_cmds import lake_store  # noqa: PLC0415
    from uns.config import load_config  # noqa: PLC0415

    path = guard(lambda: lake_store(lake))
    audit = guard(lambda: load_config().audit)
    code, lines = guard(lambda: verify_lines(path, audit.trusted_keys, audit=audit, anchor=anchor))
    for line in lines:
        typer.echo(line)
    if code:
        raise typer.Exit(code)


@audit_app.command("log")
def audit_log(
    lake: LakeOpt = None,
    since: Annotated[str | None, typer.Option("--since", help="from this time (epoch ms or ISO)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="before this time (epoch ms or ISO)")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="e.g. context_change, data_commit")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="entries about this ISA-95 path or below")
    ] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="entries of this batch")] = None,
    user: Annotated[str | None, typer.Option("--user", help="entries by this actor")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Print audit trail entries in time order, filtered.

    Example: uns audit log --batch B2026-0042 --kind context_change --lake ./uns-lake
    """
    from uns.audit.trail import LOG_COLUMNS, audit_log  # noqa: PLC0415
    from uns.output import render_rows  # noqa: PLC0415

    where = guard(lambda: lake_path(lake))
    rows = guard(
        lambda: audit_log(
            where,
            since=since,
            until=until,
            kind=kind,
            path=path,
            batch=batch,
            user=user,
            parse_detail=fmt == "json",
        )
    )
    typer.echo(render_rows(list(LOG_COLUMNS), rows, fmt))


@audit_app.command("review")
def audit_review(
    since: Annotated[str, typer.Option("--since", help="start of the period (ISO 8601 or epoch ms)")],
    until: Annotated[str | None, typer.Option("--until", help="end of the period (default: now)")] = None,
    lake: LakeOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, pdf or json")] = "html",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="write here (default: review-<since>.<format>)")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="the configuration (spec, model, keys; env UNS_CONFIG)"),
    ] = None,
) -> None:
    """Periodic review of the lake (EU GMP Annex 11 §11): configuration changes with their
    reasons, user and key changes and lockouts where recorded, signatures and dispositions,
    exceptions and deviations per batch, audit verify and anchors, gaps in the engine's
    running time, and the findings; recorded in the trail like every report.  Sign its JSON
    with uns audit sign.

    Example: uns audit review --since 2026-01-01 --format pdf -o review.pdf --lake ./uns-lake
    """
    from pathlib import Path  # noqa: PLC0415

    from uns.config import load_config  # noqa: PLC0415
    from uns.validation.review import review_bytes  # noqa: PLC0415

    cfg = guard(lambda: load_config(config, overrides={"lake.path": lake}))
    where = guard(lambda: lake_path(cfg.lake.path))
    data, doc = guard(lambda: review_bytes(where, cfg, since=since, until=until, fmt=fmt))
    target = Path(output or f"review-{doc['period']['since'][:10]}.{fmt}")
    target.write_bytes(data)
    typer.echo(f"{target}: periodic review {doc['period']['since']} .. {doc['period']['until']}, "
               f"{len(doc['findings'])} finding(s); content SHA-256 {doc['content_sha256']}")  # fmt: skip


@audit_app.command("sign")
def audit_sign(
    document: Annotated[str, typer.Argument(help="protocol.json (uns validate) or a review's JSON")],
    meaning: Annotated[str, typer.Option("--meaning", help="reviewed, approved or rejected")],
    key: SignKeyOpt,
    reason: Annotated[str | None, typer.Option("--reason", help="the signer's comment")] = None,
    user: SignUserOpt = None,
    passphrase: PassphraseOpt = False,
    lake: LakeOpt = None,
) -> None:
    """Sign a validation protocol or a periodic review in the lake's audit trail as the owner
    of your key, as a batch report is signed (uns batch sign): your user id, full name, the
    time, the meaning, your comment and the document's SHA-256, signed with your Ed25519
    key (checked by uns audit verify).  uns validate --protocol lists the protocol's
    signatures.

    Example: uns audit sign protocol.json --meaning approved --key ~/.uns/qa-asmith.key --lake ./uns-lake
    """
    from uns.cli.keys_cli import read_passphrase  # noqa: PLC0415
    from uns.config import load_config  # noqa: PLC0415
    from uns.validation.documents import sign_document  # noqa: PLC0415

    cfg = guard(lambda: load_config(overrides={"lake.path": lake}))
    where = guard(lambda: lake_path(cfg.lake.path))
    seq, subject = guard(
        lambda: sign_document(
            where, document, meaning=meaning, key=key, trusted_keys=cfg.audit.trusted_keys, user=user,
            reason=reason, passphrase=read_passphrase(passphrase), audit=cfg.audit,
        )
    )  # fmt: skip
    typer.echo(f"signed {subject} ({meaning}): audit entry uns-cli #{seq}")
