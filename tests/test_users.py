"""Users of the review workspace (issue 27): accounts, passwords, lockout and sessions, kept
in a real lake's audit trail and shared by every process over it; `uns users`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from uns.audit.trail import audit_log, verify_lines
from uns.cli.app import app
from uns.config_web import WebSection
from uns.errors import AccountLocked, AuthenticationError, PermissionDenied, UserError
from uns.users import AccessControl, add_user, cli_store, set_password, unlock_user
from uns.users.credentials import DIRECTORY, read_credential
from uns.users.passwords import check_policy, hash_password, verify_password
from uns.users.roles import ACTIONS, allowed, check_roles, require
from uns.users.sessions import Identity, Sessions
from uns.users.state import Directory

PASSWORD = "correct horse battery staple"
WEB = WebSection(max_failed_logins=3, lockout_s=60.0, password_min_length=12, password_history=2)


class Clock:
    """A clock the test moves (nanoseconds, as time.time_ns)."""

    def __init__(self) -> None:
        self.ns = 1_800_000_000 * 10**9

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def test_roles_allow_only_their_actions() -> None:
    assert allowed(["reviewer"], "dispose") and not allowed(["reviewer"], "sign:approved")
    assert allowed(["approver"], "sign:approved") and not allowed(["approver"], "dispose")
    assert allowed(["operator"], "set_context") and not allowed(["viewer"], "set_context")
    assert all(allowed([r], "view") for r in ("viewer", "operator", "reviewer", "approver", "admin"))
    assert {a for a in ACTIONS if allowed(["admin"], a)} == {"view", "manage_users"}
    with pytest.raises(PermissionDenied, match="needs the role approver") as denied:
        require("jdoe", ["reviewer"], "sign:approved")
    assert denied.value.action == "sign:approved"
    assert check_roles(["approver", " reviewer", "approver"]) == ("reviewer", "approver")
    with pytest.raises(UserError, match="roles must be"):
        check_roles(["boss"])


def test_the_password_policy_names_the_rule_it_breaks() -> None:
    old = hash_password(PASSWORD)
    assert old.startswith("$argon2id$") and verify_password(old, PASSWORD) and not verify_password(old, "x")
    for password, words in (
        ("short", "at least 12"),
        ("jdoe-is-my-password", "user id"),
        (PASSWORD, "previous"),
        ("x" * 1025, "at most 1024"),
    ):
        with pytest.raises(UserError, match=words) as caught:
            check_policy("jdoe", password, min_length=12, previous=[old])
        assert caught.value.field == "password"
    check_policy("jdoe", "another long passphrase", min_length=12, previous=[old])


def test_sessions_end_when_idle_and_keep_only_a_hash_of_the_token() -> None:
    sessions = Sessions(idle_us=1000)
    token, session = sessions.open(Identity("jdoe", "J. Doe", ("reviewer",), "local"), 0)
    assert token not in session.key and len(session.id) == 16 and session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None) and not session.csrf_ok("nope")
    assert sessions.find(token, 999) == (session, None)  # touched at 999
    assert sessions.find(token, 1998) == (session, None)
    assert sessions.find(token, 2998) == (None, session)  # idle 1000 µs: ended, handed back once
    assert sessions.find(token, 2999) == (None, None)
    sessions.open(Identity("asmith", "A. Smith", ("approver",), "local"), 0)
    assert [s.identity.user for s in sessions.idle(5000)] == ["asmith"] and len(sessions) == 0


_ENTRY = st.sampled_from([
    ("user_added", {"full_name": "J. Doe", "roles": ["reviewer"]}),
    ("user_changed", {"roles": ["approver"]}),
    ("user_disabled", {}),
    ("user_enabled", {}),
    ("login_failed", {"reason": "wrong password"}),
    ("login_failed", {"reason": "locked"}),
    ("login", {}),
    ("lockout", {"until_us": 50}),
    ("user_unlocked", {}),
])  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_ENTRY, st.integers(0, 100), st.sampled_from(["uns-cli", "uns-web", "uns-web-2"]))),
       st.integers(0, 40))  # fmt: skip
def test_every_process_folds_the_same_entries_to_the_same_users(
    raw: list[tuple[tuple[str, dict[str, object]], int, str]], cut: int
) -> None:
    """Entries of several writers give one state, whether folded at once or as a process sees
    them -- some first, the rest later, an older one among them (the store folds anew)."""
    rows = [
        (ts, writer, seq, kind, "admin", "jdoe", json.dumps(detail))
        for seq, ((kind, detail), ts, writer) in enumerate(raw)
    ]
    one = Directory()
    one.fold(sorted(rows))
    early, late = sorted(rows[:cut]), sorted(rows[cut:])
    two = Directory()
    two.fold(early)
    if late and early and late[0] < early[-1]:  # an older entry arrives late: UserStore folds anew
        two = Directory()
        two.fold(sorted(early + late))
    else:
        two.fold(late)
    assert one == two
    access = one.access_of("jdoe")
    assert access.failures >= 0 and (not access.locked or access.locked_until_us in (50, None))


def test_a_lockout_by_one_server_holds_for_the_other_and_ends(tmp_path: Path) -> None:
    """Two servers (two stores, two chains) over one lake: failures on one count on the
    other; the right password is refused while locked (423); the lockout ends after
    web.lockout_s or by an administrator; every attempt is an audit entry."""
    lake = tmp_path / "lake"
    admin = cli_store(lake)
    add_user(admin, "jdoe", full_name="Jane Doe", roles=["reviewer"], password=PASSWORD, web=WEB)
    clock = Clock()
    first = AccessControl(cli_store(lake), WEB, clock=clock)
    second = AccessControl(cli_store(lake), WEB, clock=clock)
    token, session = first.login("jdoe", PASSWORD)
    assert session.identity == Identity("jdoe", "Jane Doe", ("reviewer",), "local")
    for control in (first, second):
        with pytest.raises(AuthenticationError, match="wrong user name or password"):
            control.login("jdoe", "not the password")
    with pytest.raises(AccountLocked):  # the third failure in a row locks the account
        second.login("jdoe", "still not it")
    with pytest.raises(AccountLocked):  # ... for everyone, the right password too
        first.login("jdoe", PASSWORD)
    assert first.session(token) is None  # the locked account's session ended
    clock.advance(61)
    first.login("jdoe", PASSWORD)  # web.lockout_s passed
    for _ in range(3):
        with pytest.raises((AuthenticationError, AccountLocked)):
            second.login("jdoe", "wrong again")
    with pytest.raises(UserError, match="not locked"):
        unlock_user(admin, "asmith")
    unlock_user(admin, "jdoe", reason="identity checked", actor="admin1")
    second.login("jdoe", PASSWORD)
    kinds = [row[3] for row in audit_log(str(lake))]
    assert kinds.count("lockout") == 2 and kinds.count("login_failed") >= 7 and kinds.count("login") == 3
    assert "user_unlocked" in kinds
    assert verify_lines(str(lake))[0] == 0


def test_a_password_hash_is_kept_beside_the_lake_and_bound_to_the_trail(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    store = cli_store(lake)
    account = add_user(store, "jdoe", full_name="Jane Doe", roles=["reviewer"], password=PASSWORD, web=WEB)
    (name,) = account.credentials
    path = lake / DIRECTORY / name
    assert (
        stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    )
    assert read_credential(lake, name) == path.read_text() and PASSWORD not in path.read_text()
    assert PASSWORD not in json.dumps(audit_log(str(lake)), default=str)
    with pytest.raises(UserError, match="previous"):
        set_password(store, "jdoe", PASSWORD, web=WEB)
    # a hash swapped for another one (someone's own) no longer matches its name: no log-in
    path.chmod(0o600)
    path.write_text(hash_password("the intruder's password"))
    control = AccessControl(cli_store(lake), WEB)
    with pytest.raises(AuthenticationError):
        control.login("jdoe", "the intruder's password")
    with pytest.raises(AuthenticationError):
        control.login("jdoe", PASSWORD)


def test_unknown_disabled_and_roleless_users_are_refused_and_recorded(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    store = cli_store(lake)
    add_user(store, "jdoe", full_name="Jane Doe", roles=["viewer"], password=PASSWORD, web=WEB)
    control = AccessControl(store, WEB)
    with pytest.raises(AuthenticationError, match="wrong user name or password"):
        control.login("nobody", PASSWORD)
    from uns.users import disable_user  # noqa: PLC0415

    disable_user(store, "jdoe", reason="left", actor="admin1")
    with pytest.raises(AuthenticationError, match="disabled"):
        control.login("jdoe", PASSWORD)
    failed = [json.loads(r[7]) | {"actor": r[4]} for r in audit_log(str(lake), kind="login_failed")]
    assert [(f["actor"], f["reason"]) for f in failed] == [("nobody", "unknown user"), ("jdoe", "disabled")]


def test_the_users_commands(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    runner = CliRunner()

    def uns(*args: str, stdin: str | None = None) -> tuple[int, str]:
        env = {k: None for k in os.environ if k.startswith("UNS_")}
        result = runner.invoke(app, [*args, "--lake", lake], input=stdin, env=env)
        return result.exit_code, result.stdout + result.stderr

    added = uns("users", "add", "jdoe", "--full-name", "Jane Doe", "--role", "reviewer,approver",
                "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    assert added == (0, "user jdoe added (reviewer, approver)\n")
    code, out = uns(
        "users", "add", "jdoe", "--full-name", "X", "--role", "viewer", "--password-stdin", stdin="x\n"
    )
    assert (code, out) == (
        1,
        "uns: error: user 'jdoe' exists already (uns users passwd changes a password)\n",
    )
    code, out = uns(
        "users", "add", "x1", "--full-name", "X", "--role", "boss", "--password-stdin", stdin="x\n"
    )
    assert code == 1 and "roles must be some of" in out
    code, out = uns("users", "passwd", "jdoe", "--password-stdin", stdin="short\n")
    assert (code, out) == (1, "uns: error: the password must have at least 12 characters\n")
    assert uns("users", "passwd", "jdoe", "--password-stdin", stdin="a new long passphrase\n")[0] == 0
    assert uns("users", "disable", "jdoe", "--reason", "left")[0] == 0
    assert uns("users", "enable", "jdoe")[0] == 0
    assert uns("users", "unlock", "jdoe") == (1, "uns: error: user 'jdoe' is not locked\n")
    code, out = uns("users", "list", "--format", "json")
    (row,) = json.loads(out)
    assert code == 0 and row["roles"] == "reviewer,approver" and row["disabled"] is False
    entries = audit_log(lake, kind=None)
    assert [e[3] for e in entries] == [
        "user_added",
        "password_set",
        "password_set",
        "user_disabled",
        "user_enabled",
    ]
    assert {e[1] for e in entries} == {"uns-cli"}
