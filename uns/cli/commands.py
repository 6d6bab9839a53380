"""What every ``uns`` command shares: the ``--broker``, ``--lake`` and ``--format``
options, one line for a domain error, the broker settings and the lake directory from
the options or the config.  Imports nothing but typer and the error tree until a command
runs (``uns --help`` stays fast)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from uns.errors import UnsError

__all__ = [
    "BrokerOpt",
    "FormatOpt",
    "LakeOpt",
    "PassphraseOpt",
    "SignKeyOpt",
    "SignUserOpt",
    "broker_settings",
    "fail",
    "guard",
    "lake_path",
]

T = TypeVar("T")

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", "-b", help="mqtt://[user[:pass]@]host[:port] or mqtts://... (env UNS_BROKER)"),
]
LakeOpt = Annotated[
    str | None,
    typer.Option("--lake", help="lake directory or s3://bucket/prefix (env UNS_LAKE; default ./uns-lake)"),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, csv or json")]
#: the options of a signature made with an enrolled key (uns batch sign, uns audit sign)
SignKeyOpt = Annotated[
    str, typer.Option("--key", help="your Ed25519 private key file (uns keys new; trusted by uns keys trust)")
]
SignUserOpt = Annotated[
    str | None, typer.Option("--user", help="your user id: refused unless it is the key's enrolled owner")
]
PassphraseOpt = Annotated[
    bool, typer.Option("--passphrase-stdin", help="read the key's passphrase from the first line of stdin")
]


def fail(message: str) -> typer.Exit:
    typer.echo(f"uns: error: {message}", err=True)
    return typer.Exit(1)


def guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a UnsError becomes one line on stderr and exit 1."""
    try:
        return fn()
    except UnsError as exc:
        raise fail(str(exc)) from None


def broker_settings(broker: str | None) -> Any:
    """Broker settings for the short commands (watch, topics, sim, context set)."""
    from uns.config import load_config  # noqa: PLC0415 - keep `uns --help` fast

    return load_config(overrides={"broker.url": broker}).broker.settings()


def lake_path(lake: str | None) -> str:
    from uns.config import load_config  # noqa: PLC0415 - keep `uns --help` fast

    path = load_config(overrides={"lake.path": lake}).lake.path
    if not path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return path
