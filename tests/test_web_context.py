"""Context by people (issue 27): an operator sets a batch's context from the batch page in a
real browser; it is the event of `uns context set`, published to a real mosquitto with the
authenticated user, a reason and the server's signature, stored by a real engine (`uns
run`, a child process) in the lake the workspace reads, and shown as text on the page."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.test_web_browser import XSS, Pages, chromium, inert, logged_in, wait_until
from tests.web_helpers import CLOSED, PATH, T0, make_site, running
from uns import lake
from uns.audit.trail import audit_log
from uns.batch.times import iso
from uns.config import load_config
from uns.mqtt.mosquitto import Mosquitto, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
browser = pytest.fixture(scope="module", name="browser")(chromium)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def engine(broker: Mosquitto, ns: str, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """The workspace's site and `uns run` on its lake: (lake, prefix, trusted keys)."""
    site = make_site(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")} | {
        "UNS_ENGINE_PREFIX": f"{ns}/v1", "UNS_LAKE_COMMIT_INTERVAL": "0.2",
        "UNS_AUDIT_TRUSTED_KEYS": str(site.trusted), "UNS_ENGINE_HOST_ID": ns,
    }  # fmt: skip
    log = (tmp_path / "engine.log").open("w")
    args = ["run", "--broker", broker.url, "--lake", str(site.lake), "--http", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([sys.executable, "-m", "uns", *args], env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "engine.log").read_text()
            time.sleep(0.1)
        yield site.lake, f"{ns}/v1", str(site.trusted)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_an_operator_corrects_context_from_the_batch_page(
    engine: tuple[Path, str, str], broker: Mosquitto, browser: Browser, tmp_path: Path
) -> None:
    lake_dir, prefix, trusted = engine
    site_cfg = load_config(
        env={},
        overrides={
            "lake.path": str(lake_dir), "audit.trusted_keys": trusted, "broker.url": broker.url,
            "engine.prefix": prefix, "web.signing_key": str(tmp_path / "keys" / "uns-web.key"),
            "batch.spec": str(tmp_path / "spec.toml"),
        },
    )  # fmt: skip
    with running(site_cfg) as server:
        pages = Pages(browser, server)
        try:
            viewer = logged_in(pages.new(), "view1", f"/batches/{CLOSED}")
            assert viewer.locator("#open-context").count() == 0  # only an operator sets context
            page = logged_in(pages.new(), "op1", f"/batches/{CLOSED}")
            page.click("#open-context")
            form = page.locator("#context-form")
            form.locator("#ctx-reason").fill("")
            form.locator("#ctx-key").fill("operator_note")
            form.locator("#ctx-value").fill(XSS)
            form.locator('button[type="submit"]').click()
            form.locator('[data-error-for="reason"]:not(:empty)').wait_for()  # a reason is required
            form.locator("#ctx-ts").fill(iso(T0 + 1000) or "")
            form.locator("#ctx-reason").fill("note taken on paper during the run")
            form.locator('button[type="submit"]').click()
            page.locator("#context-result:has-text('Engine: applied')").wait_for()

            def shown() -> bool:
                page.reload()
                return "operator_note" in page.locator("#context-changes").inner_text()

            wait_until(shown)
            row = page.locator("#context-changes tr:has-text('operator_note')").inner_text()
            assert XSS in row and "op1" in row and "note taken on paper" in row and "uns-web" in row
            inert(page)
        finally:
            pages.close()
        others = [u for u in pages.requests if not u.startswith(server.url + "/")]
        assert not others
    con = lake.connect(lake_dir)
    try:
        (signer, user, reason), = con.execute(
            "SELECT signer, user, reason FROM context WHERE key = 'operator_note' AND path = ?", [PATH]
        ).fetchall()  # fmt: skip
    finally:
        con.close()
    assert (signer, user, reason) == ("uns-web", "op1", "note taken on paper during the run")
    changes = audit_log(str(lake_dir), kind="context_change", user="op1", parse_detail=True)
    assert [e[7]["key"] for e in changes] == ["operator_note"]
