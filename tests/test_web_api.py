"""The review workspace's JSON API over HTTP (issue 27): a real `uns serve` on loopback, a real
lake; every refusal code (401, 403, 404, 409 with the rule named, 415, 423), the review's
whole path, and `uns audit verify` clean after it, naming every signer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.web_helpers import (
    CLOSED,
    NAMES,
    OPEN,
    PASSWORDS,
    Server,
    Site,
    correct_recipe,
    make_site,
    running,
)
from tests.web_helpers import login as open_session
from uns.audit.trail import audit_log, verify_lines

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parent.parent
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text())
Login = Callable[..., tuple[httpx.Client, str]]
DETAIL_SCHEMA = json.loads((ROOT / "schemas" / "audit-detail.schema.json").read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[Server]:
    with running(site.cfg) as server:
        yield server


@pytest.fixture
def login() -> Iterator[Callable[..., tuple[httpx.Client, str]]]:
    """Log in (a client and its CSRF token); every client is closed after the test."""
    clients: list[httpx.Client] = []

    def log_in(url: str, user: str, password: str | None = None) -> tuple[httpx.Client, str]:
        client, csrf = open_session(url, user, password)
        clients.append(client)
        return client, csrf

    yield log_in
    for client in clients:
        client.close()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as plain:
        yield plain


def post(client: httpx.Client, csrf: str, path: str, body: dict[str, object]) -> httpx.Response:
    return client.post(path, json=body, headers={"X-CSRF-Token": csrf})


def refusal(answer: httpx.Response, status: int, rule: str | None = None) -> str:
    assert answer.status_code == status, answer.text
    if rule is not None:
        assert answer.json()["rule"] == rule, answer.text
    return str(answer.json()["error"])


def test_log_in_sets_a_strict_http_only_cookie_and_every_answer_a_strict_csp(client: httpx.Client) -> None:
    assert refusal(client.get("/api/batches"), 401)
    answer = client.post("/api/session", json={"username": "view1", "password": PASSWORDS["view1"]})
    assert answer.json() | {"csrf_token": "-"} == {
        "user": "view1", "full_name": NAMES["view1"], "roles": ["viewer"], "csrf_token": "-"
    }  # fmt: skip
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    for response in (answer, client.get("/"), client.get("/static/app.js"), client.get("/login")):
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-frame-options"] == "DENY"
    assert client.get("/api/session").json()["user"] == "view1"
    wrong = client.post("/api/session", json={"username": "view1", "password": "not it at all"})
    assert refusal(wrong, 401) == "wrong user name or password"
    assert refusal(
        client.post("/api/session", content=b"username=x", headers={"content-type": "text/plain"}), 415
    )
    assert refusal(client.post("/api/session", json={"username": "view1"}), 400)


def dispose(
    client: httpx.Client, csrf: str, exception_id: str, decision: str = "accepted", comment: str = "ok",
    ref: str | None = None, batch: str = CLOSED,
) -> httpx.Response:  # fmt: skip
    body = {"exception_id": exception_id, "decision": decision, "comment": comment, "deviation_ref": ref}
    return post(client, csrf, f"/api/batches/{batch}/dispositions", body)


def sign(client: httpx.Client, csrf: str, user: str, meaning: str, reason: str = "", *, batch: str = CLOSED,
         password: str | None = None) -> httpx.Response:  # fmt: skip
    body = {"meaning": meaning, "password": password or PASSWORDS[user], "reason": reason}
    return post(client, csrf, f"/api/batches/{batch}/signatures", body)


def test_the_review_path_with_every_refusal(site: Site, server: Server, login: Login) -> None:
    reviewer, rcsrf = login(server.url, "rev1")
    approver, acsrf = login(server.url, "appr1")
    viewer, vcsrf = login(server.url, "view1")
    both, bcsrf = login(server.url, "both1")

    batches = {b["batch_id"]: b for b in viewer.get("/api/batches").json()}
    assert set(batches) == {CLOSED, OPEN} and batches[OPEN]["status"] == "open"
    assert [b["batch_id"] for b in viewer.get("/api/batches", params={"status": "open"}).json()] == [OPEN]
    assert [b["batch_id"] for b in viewer.get("/api/batches", params={"product": "mAb-A"}).json()] == [CLOSED]
    assert refusal(viewer.get("/api/batches/NOPE/report"), 404)
    assert refusal(viewer.get("/api/batches", params={"review_state": "done"}), 400)

    report = reviewer.get(f"/api/batches/{CLOSED}/report").json()
    jsonschema.validate(report, REPORT_SCHEMA)
    review = report["review"]
    assert review["state"] == "open" and review["exceptions"] == 2 and review["open_exceptions"] == 2
    first, second = (e["id"] for e in report["exceptions"])
    again = viewer.get(f"/api/batches/{CLOSED}/report").json()
    assert [e["id"] for e in again["exceptions"]] == [first, second]  # stable ids

    # 403: a viewer disposes, a request without the CSRF token; 400: a field missing
    assert "may not dispose" in refusal(dispose(viewer, vcsrf, first), 403)
    no_csrf = reviewer.post(f"/api/batches/{CLOSED}/dispositions", json={"exception_id": first})
    assert "X-CSRF-Token" in refusal(no_csrf, 403)
    assert refusal(dispose(reviewer, rcsrf, first, comment=""), 400).startswith("comment is required")
    missing_ref = dispose(reviewer, rcsrf, first, "deviation", "investigated")
    assert refusal(missing_ref, 400) and missing_ref.json()["field"] == "deviation_ref"
    refusal(dispose(reviewer, rcsrf, "0" * 16), 409, "unknown-exception")
    # reviewed needs every exception dispositioned
    done = dispose(reviewer, rcsrf, first, "deviation", "investigated", "DEV-042")
    assert done.status_code == 200 and done.json()["review"]["state"] == "in_review"
    refusal(sign(reviewer, rcsrf, "rev1", "reviewed"), 409, "all-dispositioned")
    assert dispose(reviewer, rcsrf, second, comment="known late entry").status_code == 200
    # 401: the password asked again is wrong; 403: the role may not sign that meaning
    refusal(sign(reviewer, rcsrf, "rev1", "reviewed", password="not my password"), 401)
    assert "needs the role approver" in refusal(sign(reviewer, rcsrf, "rev1", "approved"), 403)
    # approved needs a valid review first
    refusal(sign(approver, acsrf, "appr1", "approved"), 409, "reviewed-first")
    signed = sign(reviewer, rcsrf, "rev1", "reviewed", "reviewed by exception")
    assert signed.status_code == 200, signed.text
    assert signed.json()["review"]["state"] == "reviewed"
    # four eyes: who reviewed may not approve, even with both roles (a changed disposition
    # also voids rev1's review: it signed the dispositions as they were)
    dispose(both, bcsrf, second, comment="seen")
    sign(both, bcsrf, "both1", "reviewed")
    refusal(sign(both, bcsrf, "both1", "approved"), 409, "four-eyes")
    # rejected needs a reason; an open batch is not approved
    refusal(sign(approver, acsrf, "appr1", "rejected"), 409, "reason-required")
    refusal(sign(approver, acsrf, "appr1", "approved", batch=OPEN), 409, "batch-closed")
    # the data changes after the review: the approval is refused, the review no longer counts
    correct_recipe(site.lake)
    refusal(sign(approver, acsrf, "appr1", "approved"), 409, "content-unchanged")
    report = approver.get(f"/api/batches/{CLOSED}/report").json()
    assert report["review"]["state"] == "in_review"
    assert {s["why"] for s in report["review"]["signatures"]} == {"the report changed after it was signed"}
    # reviewed again (the correction is a new exception), approved by another person
    for exception in report["exceptions"]:
        if exception["id"] not in (first, second):
            dispose(reviewer, rcsrf, exception["id"], comment="recipe corrected by QA")
    assert sign(reviewer, rcsrf, "rev1", "reviewed").status_code == 200
    approved = sign(approver, acsrf, "appr1", "approved", "released")
    assert approved.status_code == 200, approved.text
    report = viewer.get(f"/api/batches/{CLOSED}/report").json()
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["review"]["state"] == "approved"
    manifests = [(s["full_name"], s["user"], s["role"], s["meaning"], s["counts"])
                 for s in report["review"]["signatures"]]  # fmt: skip
    assert manifests[-2:] == [
        ("Rita Reviewer", "rev1", "reviewer", "reviewed", True),
        ("Anton Approver", "appr1", "approver", "approved", True),
    ]
    refusal(dispose(reviewer, rcsrf, first, comment="late change"), 409, "decided")
    # the batch list knows the state; the batch's audit trail has its dispositions and signatures
    listed = {
        b["batch_id"]: b for b in viewer.get("/api/batches", params={"review_state": "approved"}).json()
    }
    assert set(listed) == {CLOSED} and listed[CLOSED]["open_exceptions"] == 0 and listed[CLOSED]["checked"]
    kinds = [a["kind"] for a in viewer.get(f"/api/batches/{CLOSED}/audit").json()]
    assert kinds.count("signature") == 4 and kinds.count("disposition") == 4 and "context_change" in kinds
    # every entry's detail has its schema; the lake verifies, and names each signer
    for entry in audit_log(str(site.lake), parse_detail=True):
        kind = {"engine_start": "engine", "engine_stop": "engine", "catalog_new": "catalog"}.get(
            entry[3], entry[3]
        )
        jsonschema.Draft202012Validator({**DETAIL_SCHEMA, "$ref": f"#/$defs/{kind}"}).validate(entry[7])
    code, lines = verify_lines(str(site.lake), str(site.trusted))
    assert code == 0, lines
    assert "(by rev1 (Rita Reviewer), both1 (Bo Both), appr1 (Anton Approver))" in lines[0], lines


def test_a_locked_account_gets_423_even_with_the_right_password(
    site: Site, server: Server, client: httpx.Client, login: Login
) -> None:
    for _ in range(2):
        refusal(client.post("/api/session", json={"username": "op1", "password": "wrong password!"}), 401)
    locked = client.post("/api/session", json={"username": "op1", "password": "wrong password!"})
    assert refusal(locked, 423).startswith("account 'op1' is locked")
    refusal(client.post("/api/session", json={"username": "op1", "password": PASSWORDS["op1"]}), 423)
    admin, csrf = login(server.url, "admin1")
    users = {u["user"]: u for u in admin.get("/api/users").json()}
    assert users["op1"]["locked"] is True
    viewer, vcsrf = login(server.url, "view1")
    refusal(post(viewer, vcsrf, "/api/users/op1/unlock", {"reason": "x"}), 403)
    assert post(admin, csrf, "/api/users/op1/unlock", {"reason": "checked by phone"}).status_code == 204
    login(server.url, "op1")
    entries = audit_log(str(site.lake), user="op1")
    assert [e[3] for e in entries].count("lockout") == 1
    assert any(
        e[3] == "user_unlocked" and e[4] == "admin1" for e in audit_log(str(site.lake), kind="user_unlocked")
    )


def test_log_out_ends_the_session(server: Server, login: Login) -> None:
    client, csrf = login(server.url, "view1")
    refusal(client.delete("/api/session"), 403)  # without its CSRF token
    assert client.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    refusal(client.get("/api/batches"), 401)


def test_uns_serve_refuses_to_start_without_its_key_in_one_line(site: Site, tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from uns.cli.app import app  # noqa: PLC0415
    from uns.keyring import new_key_pair  # noqa: PLC0415

    env = {k: None for k in os.environ if k.startswith("UNS_")} | {
        "UNS_AUDIT_TRUSTED_KEYS": str(site.trusted)
    }
    result = CliRunner().invoke(app, ["serve", "--lake", str(site.lake)], env=env)
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("uns: error: uns serve needs its signing key: make one with `uns keys new")
    private, _public = new_key_pair("stranger", tmp_path)  # a key nobody trusted
    result = CliRunner().invoke(
        app, ["serve", "--lake", str(site.lake)], env=env | {"UNS_WEB_SIGNING_KEY": str(private)}
    )
    assert (
        result.exit_code == 1 and "is not trusted" in result.stderr and len(result.stderr.splitlines()) == 1
    )
    result = CliRunner().invoke(
        app, ["serve", "--lake", str(tmp_path / "none")], env=env | {"UNS_WEB_SIGNING_KEY": str(private)}
    )
    assert result.exit_code == 1 and result.stderr.startswith("uns: error: no lake at")
