"""``uns keys``: Ed25519 signing keys and their life cycle (a typer sub-app that cli.py mounts;
the key files are :mod:`uns.keyring`'s, the audited acts :mod:`uns.audit.keys`')."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from uns.cli.commands import LakeOpt, guard, lake_path

__all__ = ["ConfigOpt", "PassphraseOpt", "keys_app", "read_passphrase"]

keys_app = typer.Typer(
    help="Signing keys: make one, trust it (an audited act), revoke it, list the trusted ones.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")]
PassphraseOpt = Annotated[
    bool,
    typer.Option("--passphrase-stdin", help="read the private key's passphrase from the first line of stdin"),
]


def read_passphrase(wanted: bool) -> bytes | None:
    """The passphrase from the first line of stdin, when ``wanted``."""
    if not wanted:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        from uns.errors import SignatureError  # noqa: PLC0415

        raise SignatureError("--passphrase-stdin: no passphrase on stdin")
    return line.encode()


def _trusted_dir(config: str | None) -> str:
    from uns.config import load_config  # noqa: PLC0415
    from uns.errors import UnsError  # noqa: PLC0415

    trusted = load_config(config).audit.trusted_keys
    if not trusted:
        raise UnsError(
            "no trusted-keys directory: set audit.trusted_keys in the config (or UNS_AUDIT_TRUSTED_KEYS)"
        )
    return trusted


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="key name: letters, digits, '.', '_', '-' (e.g. qa-jdoe)")],
    directory: Annotated[str, typer.Option("--dir", help="where the key pair goes")] = ".",
    passphrase: PassphraseOpt = False,
) -> None:
    """Make an Ed25519 key pair: DIR/NAME.key (private, mode 0600; encrypted with
    --passphrase-stdin) and DIR/NAME.pub.  The key is not trusted: an administrator
    trusts NAME.pub with `uns keys trust` (an audited act).

    Example: uns keys new qa-jdoe --dir ~/.uns --passphrase-stdin
    """
    from uns.keyring import new_key_pair  # noqa: PLC0415

    private, public = guard(lambda: new_key_pair(name, directory, passphrase=read_passphrase(passphrase)))
    typer.echo(f"private key {private} (mode 0600: only you may read it)")
    typer.echo(
        f"public key  {public} (not trusted yet: uns keys trust {public} --name {name} --full-name ...)"
    )


@keys_app.command("trust")
def keys_trust(
    file: Annotated[str, typer.Argument(metavar="FILE", help="the public key (.pub) to trust")],
    name: Annotated[str, typer.Option("--name", help="the name it signs under (e.g. qa-jdoe)")],
    full_name: Annotated[str, typer.Option("--full-name", help="the owner's printed name (§11.50)")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the audit trail)")],
    user_id: Annotated[
        str | None, typer.Option("--user-id", help="the owner's user id (default: the key name)")
    ] = None,
    role: Annotated[str | None, typer.Option("--role", help="the owner's role, e.g. 'QA reviewer'")] = None,
    service: Annotated[
        bool,
        typer.Option(
            "--service", help="a service's key that signs for the users it authenticates (uns serve)"
        ),
    ] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Trust a public key for signing, as its owner's key: NAME.pub and NAME.owner.json in
    the trusted-keys directory (audit.trusted_keys) and a key_trusted entry in the lake's
    audit trail.  A key signs only for its owner (or, with --service, for the users a
    service authenticates).

    Example: uns keys trust ~/.uns/qa-jdoe.pub --name qa-jdoe --user-id jdoe --full-name "J. Doe"
    --role QA --reason "new QA reviewer"
    """
    from uns.audit.keys import trust_key  # noqa: PLC0415
    from uns.config import load_config  # noqa: PLC0415

    key, seq = guard(
        lambda: trust_key(
            lake_path(lake), file, name=name, full_name=full_name, reason=reason,
            trusted_dir=_trusted_dir(config), user_id=user_id, role=role,
            signs_for="users" if service else "owner", audit=load_config(config).audit,
        )
    )  # fmt: skip
    assert key.owner is not None
    typer.echo(
        f"trusted key {key.name} of {key.owner.user_id} ({key.owner.full_name}), fingerprint "
        f"{key.fingerprint[:16]}; audit entry uns-cli #{seq}"
    )


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="the trusted key's name")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the audit trail)")],
    from_time: Annotated[
        str | None,
        typer.Option("--from", help="signatures from this time on fail (ISO 8601 or epoch ms; default now)"),
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a trusted key from a time on: its signatures made before stay valid, later
    ones fail; NAME.revoked.json and a key_revoked entry in the audit trail.

    Example: uns keys revoke qa-jdoe --from 2026-03-01T00:00:00Z --reason "left the company"
    """
    from uns.audit.keys import revoke_key  # noqa: PLC0415
    from uns.audit.signatures import iso_us  # noqa: PLC0415
    from uns.clock import parse_time  # noqa: PLC0415
    from uns.config import load_config  # noqa: PLC0415

    key, seq = guard(
        lambda: revoke_key(
            lake_path(lake), name, from_us=parse_time(from_time) * 1000, reason=reason,
            trusted_dir=_trusted_dir(config), audit=load_config(config).audit,
        )
    )  # fmt: skip
    assert key.revoked is not None
    typer.echo(f"revoked key {key.name} from {iso_us(key.revoked.from_us)}; audit entry uns-cli #{seq}")


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """The trusted keys: name, fingerprint, owner, whom it signs for, revocation.

    Example: uns keys list
    """
    from uns.audit.signatures import iso_us  # noqa: PLC0415
    from uns.keyring import load_keyring  # noqa: PLC0415
    from uns.output import render_rows  # noqa: PLC0415

    keys = guard(lambda: load_keyring(_trusted_dir(config)))
    rows = []
    for name, key in sorted(keys.items()):
        owner = key.owner
        rows.append((
            name, key.fingerprint[:16],
            owner.user_id if owner else "(no owner: context only)", owner.full_name if owner else "",
            (owner.role or "") if owner else "", owner.signs_for if owner else "",
            f"from {iso_us(key.revoked.from_us)}" if key.revoked else "",
        ))  # fmt: skip
    typer.echo(
        render_rows(
            ["key", "fingerprint", "user_id", "full_name", "role", "signs_for", "revoked"], rows, "table"
        )
    )
