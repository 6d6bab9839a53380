"""`uns sim`: run the plant simulator from the command line with a one-line progress display."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from uns.mqtt.settings import BrokerSettings, tls_context
from uns.sim import SimConfig, SimReport, run_sim

__all__ = ["mqtt_options", "run_sim_cli"]


def mqtt_options(broker: BrokerSettings) -> dict[str, Any]:
    """aiomqtt keyword arguments (credentials, TLS) for the simulator's clients."""
    opts: dict[str, Any] = {}
    if broker.username is not None:
        opts["username"] = broker.username
    if broker.password is not None:
        opts["password"] = broker.password
    if broker.tls:
        opts["tls_context"] = tls_context(broker)
        opts["tls_insecure"] = broker.tls_insecure
    return opts


def _line(r: SimReport) -> str:
    return (
        f"\r{r.elapsed:6.1f}s  {r.messages:>9,} msgs  {r.metrics:>10,} metrics  {r.births:>5} births  "
        f"{r.context_events:>4} context events  {r.rebirths_answered} rebirths answered"
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
) -> SimReport:
    config = SimConfig(
        host=broker.host,
        port=broker.port,
        mqtt_options=mqtt_options(broker),
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
    )
    plant = "pilot plant (PilotPlant: USP-Ctrl/BR-101,BR-102, GRAN-Ctrl/GR-201, TAB-Ctrl/TP-301)"
    if nodes > 0:
        plant = f"load plant: {nodes} nodes x {devices} devices x {metrics} metrics"
    print(f"uns sim: {plant} -> {broker.masked_url()} at {rate:g} msg/s; Ctrl-C stops", file=sys.stderr)

    async def go() -> SimReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await run_sim(
            config, stop=stop, on_progress=lambda r: print(_line(r), end="", file=sys.stderr)
        )

    report = asyncio.run(go())
    print(_line(report), file=sys.stderr)
    return report
