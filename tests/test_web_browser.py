"""The review workspace in a real browser (issue 27): Debian's Chromium, headless, driven by
Playwright against `uns serve` on loopback over a real lake.

Two users review and approve a batch through the pages (dispositions, the sign dialog),
with a refused self-approval, a refused approval of an open batch and one after the data
changed; a locked account; an idle log-out; `<script>` in a context value and a name is
text on every page; no page asks another host for anything; `uns audit verify` is clean
afterwards and names every signer."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.web_helpers import CLOSED, OPEN, PASSWORDS, Server, Site, correct_recipe, make_site, running
from uns.audit.trail import audit_log, verify_lines
from uns.pdf import CHROMIUM_ARGS, find_chromium
from uns.users import add_user, cli_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

XSS = "<script>window.__xss = 1</script>"
TIMEOUT_MS = 60_000  # a shared machine: generous, and waits are on conditions


def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (the fixture ``browser`` of the modules that use it)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


browser = pytest.fixture(scope="module", name="browser")(chromium)


class Pages:
    """Browser contexts (one per user: their own cookies) recording every request made."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.browser = browser
        self.server = server
        self.requests: list[str] = []
        self.contexts: list[BrowserContext] = []

    def new(self) -> Page:
        context = self.browser.new_context(base_url=self.server.url, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        context.on("request", lambda r: self.requests.append(r.url))
        self.contexts.append(context)
        return context.new_page()

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def log_in(page: Page, user: str, password: str | None = None, *, target: str = "/") -> None:
    page.goto(target)
    page.wait_for_url("**/login**")
    page.fill("#username", user)
    page.fill("#password", password or PASSWORDS[user])
    page.press("#password", "Enter")  # the keyboard submits the form


def logged_in(page: Page, user: str, target: str = "/") -> Page:
    log_in(page, user, target=target)
    page.wait_for_selector("#who-name")
    return page


def inert(page: Page) -> None:
    """The `<script>` in the data never ran: its text is on the page, as text."""
    assert page.evaluate("window.__xss") is None
    assert page.locator("script").count() == 1  # our own app.js only


def dispose(page: Page, exception_id: str, comment: str, *, ref: str | None = None) -> None:
    form = page.locator(f"#exception-{exception_id} form")
    if not form.is_visible():
        page.locator(f"#exception-{exception_id} summary").click()
    if ref is not None:
        form.locator('input[value="deviation"]').check()
        form.locator('[name="deviation_ref"]').fill(ref)
    form.locator('[name="comment"]').fill(comment)
    with page.expect_navigation():
        form.locator('button[type="submit"]').click()


def sign(page: Page, meaning: str, user: str, reason: str = "") -> str:
    """Open the sign dialog, sign; the error shown in it ('' when the page reloaded)."""
    page.click("#open-sign")
    dialog = page.locator("#sign-dialog")
    dialog.locator("#meaning").select_option(meaning)
    dialog.locator("#sign-reason").fill(reason)
    dialog.locator("#sign-password").fill(PASSWORDS[user])
    before = page.evaluate("performance.timeOrigin")
    dialog.locator('button[type="submit"]').click()
    errors = dialog.locator(".error:not(:empty)")
    page.wait_for_function(
        "([t]) => performance.timeOrigin !== t || document.querySelector('#sign-dialog .error:not(:empty)')",
        arg=[before],
    )
    if page.evaluate("performance.timeOrigin") != before:
        page.wait_for_selector("#review-state")
        return ""
    text = errors.first.inner_text()
    dialog.locator(".close-dialog").click()
    return text


def exception_ids(page: Page) -> list[str]:
    return [str(r.get_attribute("data-exception")) for r in page.locator("#exceptions tbody tr").all()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("browser"), product=XSS)
    add_user(cli_store(site.lake), "xss1", full_name=XSS, roles=["viewer"], password="long enough password",
             web=site.cfg.web)  # fmt: skip
    return site


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[Server]:
    with running(site.cfg) as server:
        yield server


@pytest.fixture
def pages(browser: Browser, server: Server) -> Iterator[Pages]:
    pages = Pages(browser, server)
    yield pages
    pages.close()
    others = [u for u in pages.requests if not u.startswith(server.url + "/") and not u.startswith("data:")]
    assert not others, f"a page asked another host: {others}"


def test_two_users_review_and_approve_in_the_browser(site: Site, server: Server, pages: Pages) -> None:
    reviewer = logged_in(pages.new(), "rev1")
    assert reviewer.locator("#who-name").inner_text() == "Rita Reviewer"
    rows = reviewer.locator("#batches tbody tr")
    assert rows.count() == 2 and XSS in reviewer.locator("#batches").inner_text()
    inert(reviewer)
    reviewer.click(f"a[href='/batches/{CLOSED}']")
    reviewer.wait_for_selector("#review-state")
    assert "Review state: open" in reviewer.locator("#review-state").inner_text()
    assert XSS in reviewer.locator("#header").inner_text()
    inert(reviewer)
    first, second = exception_ids(reviewer)
    # an error is shown next to its field: a deviation without its reference
    form = reviewer.locator(f"#exception-{first} form")
    form.locator('input[value="deviation"]').check()
    form.locator('[name="comment"]').fill("investigated")
    form.locator('button[type="submit"]').click()
    error = form.locator('[data-error-for="deviation_ref"]')
    error.wait_for()
    assert "deviation ref is required" in error.inner_text()
    assert form.locator('[name="deviation_ref"]').get_attribute("aria-invalid") == "true"
    dispose(reviewer, first, "investigated", ref="DEV-042")
    assert "reviewed needs every exception dispositioned" not in reviewer.content()
    error = sign(reviewer, "reviewed", "rev1")
    assert "not dispositioned" in error and "all-dispositioned" in error
    dispose(reviewer, second, "known late entry")
    assert sign(reviewer, "reviewed", "rev1", "reviewed by exception") == ""
    assert "Review state: reviewed" in reviewer.locator("#review-state").inner_text()
    manifest = reviewer.locator("#manifestations").inner_text()
    assert "REVIEWED by Rita Reviewer (rev1, reviewer)" in manifest and "UTC" in manifest

    # the approver: an open batch is not approved; a batch whose data changed is not approved
    approver = logged_in(pages.new(), "appr1", f"/batches/{OPEN}")
    assert "batch-closed" in sign(approver, "approved", "appr1")
    correct_recipe(site.lake)
    approver.goto(f"/batches/{CLOSED}")
    assert "Review state: in review" in approver.locator("#review-state").inner_text()
    assert "no longer covers the batch" in approver.locator("#manifestations").inner_text()
    assert "content-unchanged" in sign(approver, "approved", "appr1")
    # the reviewer dispositions the new exception and reviews again
    reviewer.reload()
    (new,) = [i for i in exception_ids(reviewer) if i not in (first, second)]
    dispose(reviewer, new, "recipe corrected by QA")
    assert sign(reviewer, "reviewed", "rev1") == ""
    # someone with both roles may review but not approve their own review
    both = logged_in(pages.new(), "both1", f"/batches/{CLOSED}")
    dispose(both, second, "seen by Bo too")
    assert sign(both, "reviewed", "both1") == ""
    assert "four-eyes" in sign(both, "approved", "both1")
    # ... the approver approves
    approver.reload()
    assert sign(approver, "approved", "appr1", "released") == ""
    assert "Review state: approved" in approver.locator("#review-state").inner_text()
    manifest = approver.locator("#manifestations").inner_text()
    assert "APPROVED by Anton Approver (appr1, approver)" in manifest and "released" in manifest
    assert approver.locator("#open-sign").count() == 0  # decided: nothing more to sign
    # the full report shows the manifestations beside the verdict, the PDF downloads
    approver.goto(f"/batches/{CLOSED}/report.html")
    review = approver.locator("#review").inner_text()
    assert "Review state: approved" in review and "Anton Approver (user appr1, approver)" in review
    inert_report = approver.evaluate("window.__xss")
    assert inert_report is None and XSS in approver.locator("table.header").inner_text()
    approver.goto(f"/batches/{CLOSED}")
    with approver.expect_download() as download:
        approver.click("#report-pdf")
    pdf = Path(download.value.path())
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):  # the printout shows the manifestations too (§11.50)
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert "Review state: approved" in text and "Anton Approver" in text and "Rita Reviewer" in text
    # the batch list: filters by review state
    approver.goto("/?review_state=approved")
    assert [r.get_attribute("data-batch") for r in approver.locator("#batches tbody tr").all()] == [CLOSED]
    # the audit trail is on the page; the lake verifies and names every signer
    approver.goto(f"/batches/{CLOSED}")
    trail = approver.locator("#audit-trail").inner_text()
    assert "disposition" in trail and "signature" in trail
    code, lines = verify_lines(str(site.lake), str(site.trusted))
    assert code == 0, lines
    assert "(by rev1 (Rita Reviewer), both1 (Bo Both), appr1 (Anton Approver))" in lines[0]
    made = [e for e in audit_log(str(site.lake), kind="report") if e[6] == CLOSED]
    assert {e[4] for e in made} == {"appr1"}  # the reports made, by the user who asked


def test_a_locked_account_and_names_and_errors_as_text(server: Server, pages: Pages) -> None:
    page = pages.new()
    for attempt in range(3):
        log_in(page, "op1", "not the right one")
        error = page.locator('[data-error-for="password"]')
        error.wait_for()
        assert ("locked" in error.inner_text()) == (attempt == 2), error.inner_text()
    log_in(page, "op1")  # the right password: still locked
    page.locator('[data-error-for="password"]:has-text("locked")').wait_for()
    admin = logged_in(pages.new(), "admin1", "/users")
    assert XSS in admin.locator("#users").inner_text()
    inert(admin)
    admin.goto("/batches/%3Cimg%20src=x%20onerror=window.__xss=1%3E")  # a tag in the URL, echoed
    assert "unknown batch '<img src=x onerror=window.__xss=1>'" in admin.locator("#error").inner_text()
    assert admin.locator("#error img").count() == 0
    inert(admin)


def test_an_idle_session_ends_and_is_recorded(tmp_path: Path, browser: Browser) -> None:
    site = make_site(tmp_path, session_idle_s=1.5)
    with running(site.cfg) as server:
        pages = Pages(browser, server)
        try:
            page = logged_in(pages.new(), "view1")
            wait_until(lambda: any(e[3] == "idle_logout" for e in audit_log(str(site.lake), user="view1")))
            page.goto("/")
            page.wait_for_url("**/login**")
            assert "session ended" in page.locator("#ended").inner_text()
        finally:
            pages.close()


def wait_until(condition: Callable[[], Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
