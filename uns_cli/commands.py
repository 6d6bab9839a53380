"""What every ``uns`` command shares: the ``--lake`` and ``--format`` options, one line
for a domain error, the lake directory from the options or the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from uns.errors import UnsError

__all__ = ["FormatOpt", "LakeOpt", "fail", "guard", "lake_path"]

T = TypeVar("T")

LakeOpt = Annotated[str | None, typer.Option("--lake", help="lake directory (env UNS_LAKE; default ./lake)")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, csv or json")]


def fail(message: str) -> typer.Exit:
    typer.echo(f"uns: error: {message}", err=True)
    return typer.Exit(1)


def guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a UnsError becomes one line on stderr and exit 1."""
    try:
        return fn()
    except UnsError as exc:
        raise fail(str(exc)) from None


def lake_path(lake: str | None) -> str:
    from uns.config import load_config  # noqa: PLC0415 - keep `uns --help` fast

    path = load_config(overrides={"lake.path": lake}).lake.path
    if not path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return path
