"""Review workspace benchmark (issue 27): the batch list over 1,000 batches, and the batch page of
a 10-million-sample batch against `uns batch report` for it.

Usage (from the repository root; ``bash scripts/bench web`` sets up and runs this)::

    .venv/bin/python -m benchmarks.bench_web [--samples 10000000] [--metrics 20] [--batches 1000]
        [--repeat 3] [--keep DIR]

The lakes are the ones of ``benchmarks/bench_batch.py`` (written straight to Delta).  A
real ``uns serve`` (uvicorn, in a thread of this process) serves each; a logged-in HTTP
client on loopback asks for the pages and the API.  The figure is the server time the
server reports itself (``Server-Timing: app;dur=...``: from the request to the start of
the response), and the client's round trip beside it.

Targets: the batch list (``GET /api/batches`` and the page ``/``) over 1,000 batches under
1 s; the first view of the 10-million-sample batch's page no slower than ``uns batch
report`` for it (the command, HTML, in a child process, and ``generate_report`` in
process); a second view of the unchanged batch under 0.5 s (the report is kept per lake
version).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_batch import build_list_lake, build_report_lake
from uns.audit.keys import trust_key
from uns.batch.report import ReportRequest, generate_report
from uns.config import Config, load_config
from uns.keyring import new_key_pair
from uns.users import add_user, cli_store
from uns.web.server import serve

LIST_TARGET_S = 1.0
SECOND_VIEW_TARGET_S = 0.5
PASSWORD = "a long reviewer passphrase"


def _config(base: Path, lake_dir: Path) -> Config:
    """The server's key (a trusted service key) and one reviewer, for ``lake_dir``."""
    trusted = base / f"trusted-{lake_dir.name}"
    trusted.mkdir()
    private, public = new_key_pair("uns-web", base / f"keys-{lake_dir.name}")
    trust_key(lake_dir, public, name="uns-web", full_name="uns review workspace", reason="benchmark",
              trusted_dir=trusted, signs_for="users")  # fmt: skip
    cfg = load_config(env={}, overrides={"lake.path": str(lake_dir), "audit.trusted_keys": str(trusted),
                                         "web.signing_key": str(private)})  # fmt: skip
    add_user(cli_store(lake_dir), "bench", full_name="Bench Reviewer", roles=["reviewer"], password=PASSWORD,
             web=cfg.web)  # fmt: skip
    return cfg


@contextmanager
def _served(cfg: Config) -> Iterator[httpx.Client]:
    """`uns serve` on a free loopback port and a client logged in to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    opened: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: serve(cfg, sockets=[sock], started=lambda ws, server: opened.update(server=server)),
        daemon=True,
    )
    thread.start()
    client = httpx.Client(base_url=url, timeout=600)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/login").status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    answer = client.post("/api/session", json={"username": "bench", "password": PASSWORD})
    answer.raise_for_status()
    try:
        yield client
    finally:
        client.close()
        opened["server"].should_exit = True
        thread.join(timeout=60)
        sock.close()


def _timed(client: httpx.Client, path: str) -> tuple[float, float, httpx.Response]:
    """(server seconds from Server-Timing, round-trip seconds, the response)."""
    started = time.perf_counter()
    response = client.get(path)
    trip = time.perf_counter() - started
    response.raise_for_status()
    server = float(response.headers["server-timing"].split("dur=")[1]) / 1000
    return server, trip, response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="warm figures: the best of this many")
    parser.add_argument("--keep", help="build the lakes in this directory and keep them")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"samples": args.samples, "metrics": args.metrics, "batches": args.batches}
    with tempfile.TemporaryDirectory(prefix="uns-bench-web-") as tmp:
        base = Path(args.keep or tmp)
        list_lake, report_lake = base / "list-lake", base / "report-lake"
        print(
            f"list lake: {args.batches:,} batches written in {build_list_lake(list_lake, args.batches):.1f} s"
        )
        with _served(_config(base, list_lake)) as client:
            server, trip, response = _timed(client, "/api/batches")
            assert len(response.json()) == args.batches, len(response.json())
            result["list_first_s"], result["list_first_trip_s"] = round(server, 3), round(trip, 3)
            warm = [_timed(client, "/api/batches") for _ in range(args.repeat)]
            result["list_s"] = round(min(w[0] for w in warm), 3)
            page = [_timed(client, "/") for _ in range(args.repeat)]
            result["list_page_s"] = round(min(p[0] for p in page), 3)
        print(f"batch list of {args.batches:,}: first {result['list_first_s']:.3f} s, then "
              f"{result['list_s']:.3f} s (API), page {result['list_page_s']:.3f} s; "
              f"target < {LIST_TARGET_S:g} s")  # fmt: skip

        batch, built = build_report_lake(report_lake, args.samples, args.metrics)
        print(f"report lake: {args.samples:,} samples over {args.metrics} metrics written in {built:.1f} s")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "uns", "batch", "report", batch, "--lake", str(report_lake),
                        "-o", str(base / "report.html")], check=True, capture_output=True)  # fmt: skip
        result["cli_report_html_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        generate_report(report_lake, ReportRequest(batch), "html")
        result["generate_report_html_s"] = round(time.perf_counter() - started, 2)
        with _served(_config(base, report_lake)) as client:
            server, trip, _ = _timed(client, f"/batches/{batch}")
            result["page_first_s"], result["page_first_trip_s"] = round(server, 2), round(trip, 2)
            warm = [_timed(client, f"/batches/{batch}") for _ in range(args.repeat)]
            result["page_second_s"] = round(min(w[0] for w in warm), 3)
            api = [_timed(client, f"/api/batches/{batch}/report") for _ in range(args.repeat)]
            result["report_api_second_s"] = round(min(a[0] for a in api), 3)
        print(f"batch page of {args.samples:,} samples: first view {result['page_first_s']:.2f} s "
              f"(uns batch report {result['cli_report_html_s']:.2f} s, "
              f"generate_report {result['generate_report_html_s']:.2f} s); "
              f"second view {result['page_second_s']:.3f} s, its JSON {result['report_api_second_s']:.3f} s "
              f"(target < {SECOND_VIEW_TARGET_S:g} s)")  # fmt: skip
    result["targets_met"] = (
        result["list_s"] < LIST_TARGET_S
        and result["list_first_s"] < LIST_TARGET_S
        and result["page_first_s"] <= result["cli_report_html_s"]
        and result["page_second_s"] < SECOND_VIEW_TARGET_S
    )
    print(json.dumps(result))
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
