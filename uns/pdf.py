"""HTML printed to PDF by headless Chromium (Debian's ``chromium`` through Playwright).

Every report of uns (batch reports, validation evidence, reviews) is one
self-contained HTML file first; this prints it with every network request
refused, so a PDF can never hold anything fetched from elsewhere.
"""

from __future__ import annotations

import shutil
from html import escape
from typing import Final

from uns.errors import BatchError

__all__ = ["CHROMIUM_ARGS", "find_chromium", "render_pdf"]

#: how the report's Chromium starts: headless, no sandbox (root), nothing fetched in the background
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str:
    """The Chromium executable (Debian's ``chromium``), BatchError when there is none."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise BatchError(
        "a PDF report needs Chromium: install the Debian package chromium (bash scripts/setup.sh does)"
    )


def _band(text: str, *, pages: bool) -> str:
    """A header or footer template of Chromium's print: small text, HTML-escaped, with
    "page X of Y" from Chromium's pageNumber/totalPages placeholders when ``pages``."""
    counter = (
        ' &middot; page <span class="pageNumber"></span> of <span class="totalPages"></span>' if pages else ""
    )
    return (
        '<div style="font-family: DejaVu Sans, Arial, sans-serif; font-size: 7.5px; color: #444; '
        f'width: 100%; margin: 0 10mm; overflow-wrap: anywhere;">{escape(text)}{counter}</div>'
    )


def render_pdf(html: str, *, header: str | None = None, footer: str | None = None) -> bytes:
    """``html`` printed to PDF (A4) by headless Chromium, every network request refused.
    ``header`` and ``footer`` (plain text) are printed on every page, the header with
    "page X of Y"."""
    try:
        from playwright.sync_api import Error, sync_playwright  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - a dependency
        raise BatchError("a PDF report needs the Python package playwright") from exc
    executable = find_chromium()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
            try:
                page = browser.new_page()
                page.route("**/*", lambda route: route.abort())
                page.set_content(html, wait_until="load")
                bands = header is not None or footer is not None
                pdf: bytes = page.pdf(
                    format="A4",
                    print_background=True,
                    display_header_footer=bands,
                    header_template=_band(header or "", pages=True) if bands else "",
                    footer_template=_band(footer or "", pages=False) if bands else "",
                    margin={"top": "16mm" if bands else "12mm", "bottom": "16mm" if bands else "12mm",
                            "left": "10mm", "right": "10mm"},
                )  # fmt: skip
            finally:
                browser.close()
    except Error as exc:
        raise BatchError(f"Chromium could not print the report: {exc}") from exc
    return pdf
