"""``uns keys``: Ed25519 signing keys (a typer sub-app that cli.py mounts; the key files
are :mod:`uns.keyring`'s)."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import guard

__all__ = ["ConfigOpt", "keys_app"]

keys_app = typer.Typer(help="Signing keys: make one, see which are trusted.", no_args_is_help=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")]


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
    directory: Annotated[str, typer.Option("--dir", help="where the private key goes")] = ".",
    config: ConfigOpt = None,
) -> None:
    """Make an Ed25519 key pair: DIR/NAME.key (private, mode 0600: keep it to its owner)
    and NAME.pub in the trusted-keys directory (config audit.trusted_keys).

    Example: UNS_AUDIT_TRUSTED_KEYS=/etc/uns/trusted-keys uns keys new qa-jdoe --dir ~/.uns
    """
    from uns.keyring import new_key_pair  # noqa: PLC0415

    private, public = guard(lambda: new_key_pair(name, directory, _trusted_dir(config)))
    typer.echo(f"private key {private} (mode 0600: only you may read it)")
    typer.echo(f"public key  {public} (trusted: engines and `uns audit verify` accept it)")


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """The trusted keys by name (config audit.trusted_keys).  Example: uns keys list"""
    from uns.keyring import load_trusted_keys  # noqa: PLC0415

    keys = guard(lambda: load_trusted_keys(_trusted_dir(config)))
    for key in sorted(keys):
        typer.echo(key)
