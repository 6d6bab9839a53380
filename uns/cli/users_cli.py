"""``uns users``: the accounts of the review workspace (a typer sub-app that app.py mounts;
the accounts are :mod:`uns.users`'s, kept in the lake's audit trail)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from uns.cli.commands import FormatOpt, LakeOpt, fail, guard

__all__ = ["users_app"]

users_app = typer.Typer(
    help="Users of the review workspace (uns serve): add, list, disable, change passwords.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")]
StdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from the first line of standard input")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (audit trail)")]
NameArg = Annotated[str, typer.Argument(help="user id: letters, digits, '.', '_', '@', '-' (e.g. jdoe)")]


def _store(lake: str | None, config: str | None) -> tuple[Any, Any]:
    """The users of the lake and the [web] settings (the password policy)."""
    from uns.batch.api import settings  # noqa: PLC0415
    from uns.users import cli_store  # noqa: PLC0415

    cfg = settings(lake, config)
    return cli_store(cfg.lake.path or ""), cfg.web


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise fail("no terminal to ask for the password: give it with --password-stdin")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def users_add(
    name: NameArg,
    full_name: Annotated[
        str, typer.Option("--full-name", help="printed full name, shown with each signature")
    ],
    role: Annotated[
        str, typer.Option("--role", help="ROLE[,ROLE]: viewer, operator, reviewer, approver, admin")
    ],
    password_stdin: StdinOpt = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a user with a password (asked twice, or --password-stdin).

    Example: uns users add jdoe --full-name "Jane Doe" --role reviewer --lake ./lake
    """
    from uns.users import add_user  # noqa: PLC0415
    from uns.users.manage import check_new_user  # noqa: PLC0415

    store, web = guard(lambda: _store(lake, config))
    roles = role.split(",")
    guard(lambda: check_new_user(store, name, full_name=full_name, roles=roles))  # before the password
    password = _password(password_stdin)
    guard(lambda: add_user(store, name, full_name=full_name, roles=roles, password=password, web=web))
    typer.echo(f"user {name} added ({', '.join(r.strip() for r in roles)})")


@users_app.command("list")
def users_list(lake: LakeOpt = None, config: ConfigOpt = None, fmt: FormatOpt = "table") -> None:
    """The users with their roles, whether disabled or locked, and their last log-in.

    Example: uns users list --lake ./lake
    """
    import time  # noqa: PLC0415

    from uns.output import render_rows  # noqa: PLC0415
    from uns.users import list_users  # noqa: PLC0415

    store, _web = guard(lambda: _store(lake, config))
    rows = guard(lambda: list_users(store, time.time_ns() // 1000))
    columns = ["user", "full_name", "roles", "disabled", "locked", "failures", "last_login"]
    table = [
        (
            r["user"],
            r["full_name"],
            ",".join(r["roles"]),
            r["disabled"],
            r["locked"],
            r["failures"],
            _iso(r["last_login_us"]),
        )
        for r in rows
    ]
    typer.echo(render_rows(columns, table, fmt))


def _iso(us: int | None) -> str | None:
    from uns.batch.times import iso  # noqa: PLC0415

    return None if us is None else iso(us // 1000)


def _change_command(verb: str, what: str, doc: str) -> None:
    """Register ``uns users VERB NAME [--reason TEXT]``: one account change of :mod:`uns.users.manage`."""

    def command(
        name: NameArg, reason: ReasonOpt = "", lake: LakeOpt = None, config: ConfigOpt = None
    ) -> None:
        from uns.users import manage  # noqa: PLC0415

        change = getattr(manage, f"{verb}_user")
        store, _web = guard(lambda: _store(lake, config))
        guard(lambda: change(store, name, reason=reason))
        typer.echo(f"user {name} {what}")

    command.__doc__ = doc
    users_app.command(verb)(command)


for _verb, _what, _doc in (
    (
        "disable",
        "disabled",
        "Disable a user: no more log-ins, its sessions end (nothing is deleted).\n\n"
        'Example: uns users disable jdoe --reason "left the company" --lake ./lake',
    ),
    ("enable", "enabled", "Enable a disabled user again.  Example: uns users enable jdoe --lake ./lake"),
    (
        "unlock",
        "unlocked",
        "End a lockout after too many failed log-ins (a local or a directory user).\n\n"
        'Example: uns users unlock jdoe --reason "identity checked by phone" --lake ./lake',
    ),
):
    _change_command(_verb, _what, _doc)


@users_app.command("passwd")
def users_passwd(
    name: NameArg, password_stdin: StdinOpt = False, lake: LakeOpt = None, config: ConfigOpt = None
) -> None:
    """Set a new password (the policy: web.password_min_length, no reuse of the last
    web.password_history).  Example: uns users passwd jdoe --lake ./lake
    """
    from uns.users import set_password  # noqa: PLC0415

    store, web = guard(lambda: _store(lake, config))
    password = _password(password_stdin)
    guard(lambda: set_password(store, name, password, web=web))
    typer.echo(f"password of {name} changed")
