"""`uns sim`: run the plant simulator from the command line with a one-line progress display."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Mapping, Sequence

from uns.errors import BrokerError, BrokerRefused
from uns.mqtt.settings import BrokerSettings
from uns.sim import SimConfig, SimReport, run_sim
from uns.sim.inject import parse_fault

__all__ = ["run_sim_cli"]


def _line(r: SimReport) -> str:
    return (
        f"\r{r.elapsed:6.1f}s  {r.messages:>9,} msgs  {r.metrics:>10,} metrics  {r.births:>5} births  "
        f"{r.context_events:>4} context events  {r.records:>4} records  "
        f"{r.rebirths_answered} rebirths answered"
    )


def run_sim_cli(
    broker: BrokerSettings,
    *,
    nodes: int,
    devices: int,
    metrics: int,
    rate: float,
    duration: float,
    seed: int,
    group: str | None,
    prefix: str,
    faults: Mapping[str, Sequence[str] | None] | None = None,
) -> SimReport:
    """Run until ``duration`` (0: until Ctrl-C) with a progress line on stderr; the final report.

    BrokerError (BrokerRefused when retrying cannot help) naming the broker when
    the plant cannot connect or is refused while reconnecting."""
    config = SimConfig(
        broker=broker,
        plant="bench" if nodes > 0 else "pilot",
        group_id=group,
        nodes=max(nodes, 1),
        devices=devices,
        metrics=metrics,
        rate=rate,
        duration=duration or None,
        seed=seed,
        prefix=prefix,
        report_by_exception=nodes == 0,
        faults=tuple(
            parse_fault(kind, text) for kind, texts in (faults or {}).items() for text in texts or ()
        ),
    )
    plant = "pilot plant (PilotPlant: USP-Ctrl/BR-101,BR-102, GRAN-Ctrl/GR-201, TAB-Ctrl/TP-301)"
    if nodes > 0:
        plant = f"load plant: {nodes} nodes x {devices} devices x {metrics} metrics"
    print(f"uns sim: {plant} -> {broker.masked_url()} at {rate:g} msg/s; Ctrl-C stops", file=sys.stderr)

    progress_shown = False

    def progress(r: SimReport) -> None:
        nonlocal progress_shown
        progress_shown = True
        print(_line(r), end="", file=sys.stderr)

    async def go() -> SimReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await run_sim(config, stop=stop, on_progress=progress)

    try:
        report = asyncio.run(go())
    except BrokerError as exc:  # the CLI prints one line: say which broker
        if progress_shown:
            print(file=sys.stderr)  # end the progress line first
        cls = BrokerRefused if isinstance(exc, BrokerRefused) else BrokerError
        raise cls(f"cannot reach the broker at {broker.masked_url()}: {exc}") from exc
    print(_line(report), file=sys.stderr)
    return report
