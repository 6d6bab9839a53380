"""The review workspace in tests: a real lake with two batches, the server's key trusted as a
service key, users, and `uns serve` on a free loopback port in a thread of this process."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from uns.audit.keys import trust_key
from uns.config import Config, load_config
from uns.core.events import Batch, ContextChange, Sample
from uns.keyring import new_key_pair
from uns.lake import LakeConfig, LakeSink
from uns.sparkplug.datatypes import DataType
from uns.users import add_user, cli_store
from uns.web.server import serve

PATH = "acme/basel/pilot/usp/br-101"
OTHER = "acme/basel/pilot/usp/br-102"
T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z
CLOSED = "B-WEB-1"  # closed, two exceptions: an excursion and late context
OPEN = "B-WEB-2"  # still running
SPEC = """
name = "web test"
[[limit]]
metric = "Temperature"
action_high = 37.5
"""
PASSWORDS = {
    "rev1": "reviewer one password",
    "appr1": "approver one password",
    "both1": "reviews and approves",
    "op1": "operator one password",
    "view1": "viewer one password",
    "admin1": "administrator password",
}
ROLES = {
    "rev1": ["reviewer"],
    "appr1": ["approver"],
    "both1": ["reviewer", "approver"],
    "op1": ["operator"],
    "view1": ["viewer"],
    "admin1": ["admin"],
}
NAMES = {
    "rev1": "Rita Reviewer",
    "appr1": "Anton Approver",
    "both1": "Bo Both",
    "op1": "Otto Operator",
    "view1": "Vera Viewer",
    "admin1": "Ada Admin",
}


def change(ts: int, key: str, value: str | None, ident: str, *, path: str = PATH, received: int | None = None,
           user: str = "mes", reason: str | None = None) -> ContextChange:  # fmt: skip
    return ContextChange(T0 + ts, T0 + (ts if received is None else received), path, key, value, "mes", user,
                         reason, ident)  # fmt: skip


def write(lake_dir: Path, samples: list[Sample], changes: list[ContextChange]) -> None:
    """Write rows with a LakeSink, on a thread of its own (a test may run an event loop:
    Playwright's sync API does)."""

    async def sink_them() -> None:
        async with LakeSink(lake_dir, LakeConfig(commit_interval=0.05)) as sink:
            sink.add(Batch(samples=samples, context=changes))

    failed: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run(sink_them(), failed), name="lake-write")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _run(coro: Any, failed: list[BaseException]) -> None:
    try:
        asyncio.run(coro)
    except BaseException as exc:  # handed to the caller's thread
        failed.append(exc)


def temperature(path: str, start: int, values: list[float]) -> list[Sample]:
    return [
        Sample("Pilot", "BR", None, "Temperature", DataType.Double, v, T0 + start + i * 1000,
               T0 + start + i * 1000, seq=i, bdseq=0, path=path)
        for i, v in enumerate(values)
    ]  # fmt: skip


def write_batches(lake_dir: Path, *, product: str = "mAb-A") -> None:
    """B-WEB-1 (closed, 10 s; an action excursion and a late context change) on br-101 and
    B-WEB-2 (open) on br-102."""
    changes = [
        change(0, "batch_id", CLOSED, "e1"),
        change(0, "product", product, "e1"),
        change(0, "phase", "growth", "e1"),
        change(2000, "operator", "jdoe", "e-late", received=60_000, user="jdoe", reason="forgot to log in"),
        change(10_000, "batch_id", None, "e2"),
        change(10_000, "phase", None, "e2"),
        change(20_000, "batch_id", OPEN, "e3", path=OTHER),
        change(20_000, "product", "mAb-B", "e3", path=OTHER),
    ]
    values = [37.0, 37.1, 37.2, 37.1, 38.0, 37.0, 37.1, 37.2, 37.0, 37.1]
    write(lake_dir, temperature(PATH, 0, values) + temperature(OTHER, 20_000, [37.0]), changes)


def correct_recipe(lake_dir: Path) -> None:
    """A late, back-dated correction of B-WEB-1's recipe: its report content changes."""
    write(lake_dir, [], [change(0, "recipe", "v2 (corrected)", "e-fix", received=90_000, user="qa",
                                reason="wrong recipe")])  # fmt: skip


@dataclass
class Site:
    """A lake with its users, keys and config."""

    lake: Path
    cfg: Config
    trusted: Path


def make_site(tmp: Path, *, product: str = "mAb-A", **web: Any) -> Site:
    """A lake with B-WEB-1 (of ``product``) and B-WEB-2, the server's key, the users of
    PASSWORDS; ``web`` sets [web] keys."""
    lake = tmp / "lake"
    write_batches(lake, product=product)
    trusted = tmp / "trusted"
    trusted.mkdir()
    private, public = new_key_pair("uns-web", tmp / "keys")
    trust_key(lake, public, name="uns-web", full_name="uns review workspace", reason="the test server",
              trusted_dir=trusted, signs_for="users")  # fmt: skip
    spec = tmp / "spec.toml"
    spec.write_text(SPEC)
    overrides = {
        "lake.path": str(lake), "audit.trusted_keys": str(trusted), "web.signing_key": str(private),
        "batch.spec": str(spec), "web.max_failed_logins": 3, "web.lockout_s": 3600.0,
    } | {f"web.{k}": v for k, v in web.items()}  # fmt: skip
    file = None
    if "ldap" in web:  # a table of options: only a config file gives it
        ldap = dict(overrides.pop("web.ldap"))
        roles = {k.removeprefix("roles."): ldap.pop(k) for k in list(ldap) if k.startswith("roles.")}
        lines = ["[web.ldap]", *(f"{k} = {json.dumps(v)}" for k, v in ldap.items()), "[web.ldap.roles]",
                 *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in roles.items())]  # fmt: skip
        file = tmp / "uns.toml"
        file.write_text("\n".join(lines) + "\n")
    cfg = load_config(file, env={}, overrides=overrides)
    store = cli_store(lake)
    for user, password in PASSWORDS.items():
        add_user(store, user, full_name=NAMES[user], roles=ROLES[user], password=password, web=cfg.web)
    return Site(lake, cfg, trusted)


@dataclass
class Server:
    url: str
    workspace: Any
    uvicorn: Any


@contextmanager
def running(cfg: Config) -> Iterator[Server]:
    """`uns serve` for ``cfg`` on a free loopback port, in a thread; stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    opened: dict[str, Any] = {}
    failed: list[BaseException] = []

    def run() -> None:
        try:
            serve(cfg, sockets=[sock], started=lambda ws, server: opened.update(ws=ws, server=server))
        except BaseException as exc:  # the test says what stopped the server
            failed.append(exc)

    thread = threading.Thread(target=run, name="uns-serve", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert not failed, failed
        try:
            if httpx.get(f"{url}/login", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "uns serve did not answer within 60 s"
        time.sleep(0.05)
    try:
        yield Server(url, opened["ws"], opened["server"])
    finally:
        opened["server"].should_exit = True
        thread.join(timeout=30)
        sock.close()


def login(url: str, user: str, password: str | None = None) -> tuple[httpx.Client, str]:
    """A client logged in as ``user`` and its CSRF token."""
    client = httpx.Client(base_url=url, timeout=60)
    answer = client.post("/api/session", json={"username": user, "password": password or PASSWORDS[user]})
    assert answer.status_code == 200, answer.text
    return client, str(answer.json()["csrf_token"])
