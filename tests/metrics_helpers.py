"""Reading the engine's ``/metrics`` in tests: scrape over HTTP, parse the text format."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine_helpers import engine_config
from uns.engine.daemon import build_engine
from uns.engine.metrics import EngineMetrics

#: the suffixes the text format adds to a family's name
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


def family_name(sample_name: str) -> str:
    """``uns_rejected_total`` -> ``uns_rejected``; ``uns_info`` -> ``uns_info``."""
    if sample_name == "uns_info":
        return sample_name
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> (sorted labels) -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(scrape: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    """The value of one sample (0 when the labels are not there)."""
    return scrape.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


async def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, from a thread (the engine's loop stays free)."""
    return await asyncio.to_thread(_get, url)


async def scrape(base: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, _, body = await get(f"{base}/metrics")
    assert status == 200, body
    return parse(body)


async def ready(base: str) -> tuple[int, dict[str, Any]]:
    status, _, body = await get(f"{base}/readyz")
    return status, json.loads(body)


def full_scrape(lake_dir: Path) -> str:
    """A scrape of an engine with a lake and the republisher (every family there is), not
    started: what a Prometheus server sees first."""
    cfg = engine_config(
        "mqtt://127.0.0.1:1", "scrape", **{"lake.path": str(lake_dir), "republish.enabled": True}
    )
    return generate_latest(EngineMetrics(build_engine(cfg)).registry).decode()
