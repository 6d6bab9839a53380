"""The ``uns`` command line: a thin typer shell over the ``uns`` and ``lake`` packages."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="uns",
    help="Unified Namespace context engine: Sparkplug B host, batch context, Delta lake.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the uns version.  Example: uns version"""
    import uns  # noqa: PLC0415 - keep CLI start-up cheap

    typer.echo(uns.__version__)


if __name__ == "__main__":
    app()
