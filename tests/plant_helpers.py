"""Helpers of the end-to-end batch tests: a lake the simulated pilot plant wrote, a page
opened in a real headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from uns.demo import run_plant
from uns.mqtt.mosquitto import running_mosquitto
from uns.pdf import CHROMIUM_ARGS, find_chromium
from uns.sim.inject import BatchFault

__all__ = ["opened_page", "simulated_lake"]


def simulated_lake(
    directory: Path, seconds: float, faults: tuple[BatchFault, ...], phase_seconds: float
) -> Path:
    """``directory/lake``: the pilot plant (with ``faults``) run for ``seconds`` against a real
    mosquitto and the engine, batch phases of ``phase_seconds``."""
    lake_dir = directory / "lake"
    with running_mosquitto() as broker:
        asyncio.run(
            run_plant(
                seconds, lake_dir, broker.url, lambda _line: None, faults=faults, phase_seconds=phase_seconds
            )
        )
    return lake_dir


@contextlib.contextmanager
def opened_page(html: Path) -> Iterator[tuple[Page, list[str]]]:
    """``html`` loaded in headless Chromium (Debian's, as the PDFs are printed), and the
    URL of every request the page made (so far)."""
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html.as_uri(), wait_until="load")
            yield page, requests
        finally:
            browser.close()
