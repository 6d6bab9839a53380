"""`uns context import` benchmark: 100,000 context events from a file, each acknowledged.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_context_import [--events 100000] [--format jsonl|csv]
        [--in-flight 1000] [--against responder|engine]

Starts a private mosquitto, writes the file, and runs the real command
(``python -m cli context import FILE``, a child process: parsing, validation,
publishing and waiting for every acknowledgement are all in the time) twice:
the first import is all ``applied``, the second all ``duplicate``.

``--against responder`` (default) answers with a small responder in a child
process that plays the engine's ack side of docs/contracts.md: it validates
each event with the engine's rules (``uns.core.context``), dedupes by id and
publishes ``{"id", "status", ...}`` on ``<prefix>/_engine/<host>/context_ack``.
``--against engine`` runs ``uns run`` with a lake in a temporary directory
instead (needs the engine's acknowledgements, issue 15).

Prints one line per import (events/s) and a JSON summary; the issue's target
is 100,000 events in under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uns.core.context import decode_context_payload, event_id, parse_context_event
from uns.errors import ContextError
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import running_mosquitto
from uns.mqtt.settings import BrokerSettings

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench/uns"
HOST_ID = "bench-host"


def write_file(path: Path, events: int, fmt: str) -> None:
    base = 1767261600000
    with path.open("w") as f:
        if fmt == "csv":
            f.write("ts,path,key,value,user,reason\n")
            for i in range(events):  # two rows per event: batch_id and phase
                where = f"acme/basel/pilot/unit-{i % 50}"
                f.write(f"{base + i},{where},batch_id,B-{i // 10},mes,import\n")
                f.write(f"{base + i},{where},phase,p{i % 7},mes,import\n")
        else:
            for i in range(events):
                doc = {
                    "path": f"acme/basel/pilot/unit-{i % 50}",
                    "ts": base + i,
                    "set": {"batch_id": f"B-{i // 10}", "phase": f"p{i % 7}"},
                    "source": "mes",
                }
                f.write(json.dumps(doc, separators=(",", ":")) + "\n")


async def respond(host: str, port: int) -> None:
    """The engine's ack side, for the benchmark: validate, dedupe by id, acknowledge."""
    settings = BrokerSettings(host=host, port=port)
    ack_topic = f"{PREFIX}/_engine/{HOST_ID}/context_ack"
    cut = len(f"{PREFIX}/_context/")
    seen: set[str] = set()
    async with FastClient(settings, identifier="bench-responder") as client:
        await client.subscribe(f"{PREFIX}/_context/#", qos=1)
        print("ready", flush=True)
        while True:
            await client.wait_messages()
            for topic, payload, _qos, _retain in client.take():
                path = topic[cut:]
                reason = None
                try:
                    event = decode_context_payload(payload, path=path)
                    parse_context_event(path, event, 0)
                    eid = event_id(path, event)
                    status = "duplicate" if eid in seen else "applied"
                    seen.add(eid)
                except ContextError as exc:
                    eid, status, reason = "?", "rejected", exc.reason
                ack = json.dumps(
                    {"id": eid, "status": status, "reason": reason, "path": path, "host_id": HOST_ID, "ts": 0}
                ).encode()
                if not client.publish_nowait(ack_topic, ack, qos=1):
                    await client.publish(ack_topic, ack, qos=1)


@contextlib.contextmanager
def answering(against: str, url: str, host: str, port: int, workdir: Path) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    if against == "responder":
        cmd = [sys.executable, "-m", "benchmarks.bench_context_import", "--responder", f"{host}:{port}"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "cli",
            "run",
            "--broker",
            url,
            "--lake",
            str(workdir / "lake"),
            "--host-id",
            HOST_ID,
        ]
        env["UNS_ENGINE_PREFIX"] = PREFIX
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        if against == "responder":
            assert proc.stdout is not None
            proc.stdout.readline()  # "ready": subscribed
        else:
            time.sleep(3.0)  # the engine connects and subscribes
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_import(file: Path, url: str, in_flight: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    cmd = [sys.executable, "-m", "uns", "context", "import", str(file), "--broker", url]
    cmd += ["--prefix", PREFIX, "--in-flight", str(in_flight), "--wait", "30", "--no-progress"]
    started = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    return {
        "exit": r.returncode,
        "seconds": round(seconds, 2),
        "summary": r.stdout.strip(),
        "stderr": r.stderr[-500:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    ap.add_argument("--in-flight", type=int, default=1000)
    ap.add_argument("--against", choices=("responder", "engine"), default="responder")
    ap.add_argument("--responder", help=argparse.SUPPRESS)  # internal: run the responder at HOST:PORT
    args = ap.parse_args()
    if args.responder:
        host, _, port = args.responder.rpartition(":")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(respond(host, int(port)))
        return
    with tempfile.TemporaryDirectory(prefix="uns-bench-ctx-") as d, running_mosquitto() as broker:
        work = Path(d)
        file = work / f"events.{args.format}"
        write_file(file, args.events, args.format)
        results: dict[str, Any] = {"events": args.events, "format": args.format, "against": args.against}
        with answering(args.against, broker.url, broker.host, broker.port, work):
            for run in ("first", "second"):
                res = run_import(file, broker.url, args.in_flight)
                res["events_per_s"] = round(args.events / res["seconds"])
                results[run] = res
                print(
                    f"{run} import: {args.events} events in {res['seconds']:.1f} s = "
                    f"{res['events_per_s']:,} events/s (exit {res['exit']}): {res['summary']}",
                    flush=True,
                )
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
