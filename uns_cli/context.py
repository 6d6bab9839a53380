"""`uns context show` / `uns context set`: read context from the lake, publish context events."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

from uns.clock import now_ms
from uns.core.context import ContextStore
from uns.core.events import ContextChange
from uns.errors import BrokerError, BrokerRefused, ContextError, UnsError
from uns.mqtt.client import FastClient
from uns.mqtt.settings import BrokerSettings

__all__ = ["build_event", "context_at", "parse_time", "publish_context"]


def parse_time(text: str | None) -> int:
    """Epoch ms from ``None`` (now), digits (epoch ms) or an ISO 8601 time (UTC if no zone)."""
    if text is None:
        return now_ms()
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UnsError(f"bad time {text!r}: use epoch milliseconds or ISO 8601") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def build_event(
    pairs: list[str], clear: list[str], *, user: str | None, reason: str | None, ts: int
) -> dict[str, object]:
    """The context event JSON for ``KEY=VALUE`` pairs and keys to clear."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ContextError(f"{pair!r} is not KEY=VALUE")
        values[key.strip()] = value
    event: dict[str, object] = {"ts": ts, "source": "uns-cli"}
    if values:
        event["set"] = values
    if clear:
        event["clear"] = list(clear)
    if user:
        event["user"] = user
    if reason:
        event["reason"] = reason
    return event


def publish_context(
    broker: BrokerSettings,
    path: str,
    pairs: list[str],
    clear: list[str],
    *,
    user: str | None = None,
    reason: str | None = None,
    ts: str | None = None,
    prefix: str = "uns/v1",
) -> str:
    """Validate and publish one context event (QoS 1, acknowledged); return the topic.

    BrokerRefused or BrokerError, naming the broker, when it cannot be published."""
    event = build_event(pairs, clear, user=user, reason=reason, ts=parse_time(ts))
    # The same validation the engine applies: a bad event never leaves this machine.
    ContextStore().apply_event(path, event, parse_time(None))
    topic = f"{prefix}/_context/{path.strip('/')}"

    async def send() -> None:
        async with FastClient(broker, identifier=f"uns-ctx-{time.time_ns() % 10**9}") as client:
            await client.publish(topic, json.dumps(event).encode(), qos=1)

    try:
        asyncio.run(send())
    except BrokerError as exc:  # one attempt: the CLI prints one line naming the broker
        cls = BrokerRefused if isinstance(exc, BrokerRefused) else BrokerError
        raise cls(f"cannot publish to {broker.masked_url()}: {exc}") from exc
    return topic


def context_at(lake_dir: str, path: str, at: str | None) -> dict[str, str]:
    """The context valid at ``path`` at time ``at``, replayed from the lake's context table."""
    import lake  # noqa: PLC0415 - the lake pulls in duckdb/pyarrow

    when = parse_time(at)
    con = lake.connect(lake_dir)
    try:
        rows = con.execute(
            "SELECT epoch_ms(ts), epoch_ms(received_at), path, key, value, source, user, reason "
            "FROM context WHERE ts <= make_timestamptz(? * 1000) ORDER BY ts, received_at",
            [when],
        ).fetchall()
    finally:
        con.close()
    store = ContextStore(window_ms=2**62)
    for ts, received_at, cpath, key, value, source, user, reason in rows:
        store.apply(ContextChange(int(ts), int(received_at), cpath, key, value, source or "", user, reason))
    return store.at(path.strip("/"), when)
