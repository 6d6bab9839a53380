"""`uns context show` / `uns context set`: read context from the lake, publish context events.

:func:`send_events` is the one publisher of both ``uns context set --wait`` and
``uns context import``: it subscribes to the engines' acknowledgements
(``<prefix>/_engine/<host id>/context_ack``) *before* it publishes, keeps a
bounded number of events in flight, and matches each acknowledgement to its
event by ``id`` and by the SHA-256 of the message it answers (docs/contracts.md).

Anyone allowed to publish on the acknowledgement topic could answer in an
engine's name.  So when the engine has a key (``engine.signing_key`` in the
config, its public key among ``audit.trusted_keys``: :func:`engine_ack_key`) only
acknowledgements signed by it count; without one, an answer is taken but marked
unauthenticated, and the command says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uns.clock import parse_time
from uns.core.context import ContextStore
from uns.core.events import ContextChange
from uns.core.intake_rules import check_event_ts, check_topic_path
from uns.core.signing import SIGNATURE_FIELD, canonical_json, sign_event, verify_block
from uns.errors import BrokerError, BrokerRefused, ContextError, IntakeError, SignatureError, UnsError
from uns.keyring import PRIVATE_SUFFIX, load_private_key, load_trusted_keys
from uns.mqtt.client import FastClient
from uns.mqtt.settings import BrokerSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from uns.config import Config
    from uns.lake.storage import LakeStore

#: (key name, public key) an engine signs its acknowledgements with
AckKey = tuple[str, "Ed25519PublicKey"]

__all__ = [
    "ACK_STATUSES",
    "DEFAULT_WAIT_S",
    "UNAUTHENTICATED",
    "Ack",
    "AckKey",
    "Outgoing",
    "SetResult",
    "ack_filter",
    "build_event",
    "configured_ack_key",
    "context_at",
    "engine_ack_key",
    "new_event_id",
    "parse_ack",
    "parse_time",
    "publish_context",
    "send_events",
    "split_wait",
]

#: seconds ``--wait`` waits for an acknowledgement when given without a value
DEFAULT_WAIT_S = 10.0
#: what a command says of acknowledgements it could not authenticate
UNAUTHENTICATED = (
    "uns: warning: the acknowledgement is unauthenticated: the engine has no signing key "
    "(engine.signing_key), so anyone allowed to publish on its context_ack topic could have sent it"
)
ACK_STATUSES = frozenset({"applied", "duplicate", "rejected", "conflict"})


def new_event_id() -> str:
    """A fresh event id for ``uns context set --wait`` (uuid4 based)."""
    return f"cli-{uuid.uuid4()}"


def build_event(
    pairs: list[str],
    clear: list[str],
    *,
    user: str | None,
    reason: str | None,
    ts: int,
    event_id: str | None = None,
    source: str = "uns-cli",
) -> dict[str, object]:
    """The context event JSON for ``KEY=VALUE`` pairs and keys to clear."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ContextError(f"{pair!r} is not KEY=VALUE")
        values[key.strip()] = value
    event: dict[str, object] = {"ts": ts, "source": source}
    if event_id is not None:
        event["id"] = event_id
    if values:
        event["set"] = values
    if clear:
        event["clear"] = list(clear)
    if user:
        event["user"] = user
    if reason:
        event["reason"] = reason
    return event


# ------------------------------------------------------------------ acknowledgements


@dataclass(frozen=True, slots=True)
class Ack:
    """An engine's answer to one context event (``schemas/context-ack.schema.json``)."""

    id: str
    status: str  # applied, duplicate, rejected or conflict
    reason: str | None
    path: str | None
    host_id: str | None
    #: SHA-256 of the message it answers (None from engines before issue 29)
    event_sha256: str | None = None
    #: the key whose signature was verified; None: unauthenticated (no key was asked for)
    signer: str | None = None


def parse_ack(payload: bytes, key: AckKey | None = None) -> Ack | None:
    """The acknowledgement in ``payload``, or None for anything that is not one -- and,
    with ``key``, for one that is not signed by that key."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    ack_id, status = doc.get("id"), doc.get("status")
    if not isinstance(ack_id, str) or status not in ACK_STATUSES:
        return None
    signer = None
    if key is not None:
        name, public = key
        unsigned = {k: v for k, v in doc.items() if k != SIGNATURE_FIELD}
        try:
            signer = verify_block(doc.get(SIGNATURE_FIELD), canonical_json(unsigned), {name: public})
        except SignatureError:
            return None  # not the engine's: whoever sent it, it does not count

    def text(name: str) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) else None

    return Ack(
        ack_id, str(status), text("reason"), text("path"), text("host_id"), text("event_sha256"), signer
    )


def configured_ack_key() -> tuple[AckKey | None, float]:
    """From the config (file and ``UNS_*``): the engine's acknowledgement key
    (:func:`engine_ack_key`) and its ``context.max_future_s``."""
    from uns.config import load_config  # noqa: PLC0415 - the client needs it only here

    config = load_config()
    return engine_ack_key(config), config.context.max_future_s


def engine_ack_key(config: Config) -> AckKey | None:
    """The key the engine signs its acknowledgements with: the name of ``engine.signing_key``
    (``<name>.key``; only its name is read here) and that name's public key among
    ``audit.trusted_keys``.  None when the config names no engine key.  SignatureError
    when it names one that is not trusted here."""
    private = config.engine.signing_key
    if private is None:
        return None
    name = Path(private).name.removesuffix(PRIVATE_SUFFIX)
    trusted = load_trusted_keys(config.audit.trusted_keys)
    if name not in trusted:
        raise SignatureError(
            f"the engine's key {name!r} (engine.signing_key) is not among the trusted keys "
            f"(audit.trusted_keys: add {name}.pub there) to check its acknowledgements"
        )
    return name, trusted[name]


def ack_filter(prefix: str, host_id: str | None) -> str:
    """The topic filter of the acknowledgements of every engine, or of ``host_id``'s."""
    if host_id is not None and (not host_id or any(c in host_id for c in "/+#")):
        raise UnsError(f"bad host id {host_id!r}: one topic level, no '/', '+' or '#'")
    return f"{prefix}/_engine/{host_id or '+'}/context_ack"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish: its topic, its JSON and its id (the acknowledgement names it)."""

    topic: str
    payload: bytes
    id: str


async def send_events(
    broker: BrokerSettings,
    events: Sequence[Outgoing],
    *,
    ack_topic: str | None,
    wait: float,
    in_flight: int = 1000,
    on_answer: Callable[[int], None] | None = None,
    ack_key: AckKey | None = None,
) -> dict[str, Ack]:
    """Publish ``events`` in order at QoS 1 and collect their acknowledgements by id (with
    ``ack_key``: only those signed by it; an answer to another message of the same id --
    its ``event_sha256`` differs -- never counts).

    With ``ack_topic`` None (or ``wait`` 0) nothing is awaited but the broker's
    PUBACK of the last event.  Otherwise at most ``in_flight`` events wait for
    their acknowledgement at a time; one unanswered ``wait`` seconds after it
    was published counts as unanswered (its slot is freed; a late answer is
    still taken until the end).  The first answer for an id wins.
    ``on_answer(n)`` is called with the number of events answered or given up
    so far.  Returns id -> Ack for the events answered.  BrokerRefused or
    BrokerError, naming the broker, when the broker cannot be used."""
    try:
        return await _send(broker, events, ack_topic, wait, max(1, in_flight), on_answer, ack_key)
    except BrokerError as exc:  # one attempt: the CLI prints one line naming the broker
        cls = BrokerRefused if isinstance(exc, BrokerRefused) else BrokerError
        raise cls(f"cannot publish to {broker.masked_url()}: {exc}") from exc


async def _send(
    broker: BrokerSettings,
    events: Sequence[Outgoing],
    ack_topic: str | None,
    wait: float,
    in_flight: int,
    on_answer: Callable[[int], None] | None,
    ack_key: AckKey | None,
) -> dict[str, Ack]:
    acks: dict[str, Ack] = {}
    async with FastClient(broker, identifier=f"uns-ctx-{uuid.uuid4().hex[:12]}") as client:
        if ack_topic is None or wait <= 0:
            for i, out in enumerate(events):
                if i == len(events) - 1 or not client.publish_nowait(out.topic, out.payload, qos=1):
                    await client.publish(out.topic, out.payload, qos=1)
            return acks
        digests: dict[str, set[str]] = {}  # id -> SHA-256 of the messages sent with it
        for out in events:
            digests.setdefault(out.id, set()).add(hashlib.sha256(out.payload).hexdigest())
        pending: dict[str, float] = {}  # id -> deadline (monotonic)
        given_up: set[str] = set()  # unanswered within ``wait`` (a late answer still counts)
        slots = asyncio.Semaphore(in_flight)
        idle = asyncio.Event()  # nothing in flight
        idle.set()

        def answered() -> None:
            if on_answer is not None:
                on_answer(len(acks) + len(given_up))

        async def receive() -> None:
            while True:
                await client.wait_messages()
                for _topic, payload, _qos, _retain in client.take():
                    ack = parse_ack(payload, ack_key)
                    if ack is None or ack.id not in digests or ack.id in acks:
                        continue
                    if (ack.event_sha256 is not None or ack_key is not None) and (
                        ack.event_sha256 not in digests[ack.id]
                    ):
                        continue  # an answer to another message that used this id
                    acks[ack.id] = ack
                    given_up.discard(ack.id)
                    if pending.pop(ack.id, None) is not None:
                        slots.release()
                        if not pending:
                            idle.set()
                    answered()

        async def expire() -> None:
            while True:
                await asyncio.sleep(min(0.1, wait / 4))
                now = time.monotonic()
                late = [eid for eid, deadline in pending.items() if deadline <= now]
                for eid in late:
                    del pending[eid]
                    slots.release()
                    given_up.add(eid)
                if late:
                    if not pending:
                        idle.set()
                    answered()

        await client.subscribe(ack_topic, qos=1)
        tasks = [asyncio.create_task(receive()), asyncio.create_task(expire())]
        try:
            for out in events:
                if slots.locked():  # the window is full: wait for an answer (or a lost connection)
                    await _first(slots.acquire(), tasks)
                else:
                    await slots.acquire()
                    if tasks[0].done():
                        await _first(asyncio.sleep(0), tasks)  # the receiver ended: raise why
                if out.id in acks:  # answered already (a repeat of an earlier event)
                    slots.release()
                    continue
                pending[out.id] = time.monotonic() + wait
                idle.clear()
                if not client.publish_nowait(out.topic, out.payload, qos=1):
                    await client.publish(out.topic, out.payload, qos=1)
            await _first(idle.wait(), tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return acks


async def _first(awaitable: Awaitable[Any], watched: list[asyncio.Task[None]]) -> None:
    """Await ``awaitable``; if a watched task fails first (a lost connection), raise its error."""
    step = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([step, *watched], return_when=asyncio.FIRST_COMPLETED)
    if step in done:
        step.result()
        return
    step.cancel()
    for task in watched:
        if task in done:
            task.result()  # raises the task's error
    raise BrokerError("connection to the broker lost")


# ------------------------------------------------------------------ uns context set


@dataclass(frozen=True, slots=True)
class SetResult:
    """What ``uns context set`` did: the topic, the event's id and the engine's answer."""

    topic: str
    event_id: str | None
    ack: Ack | None  # None: not waited for, or no engine answered in time
    waited: bool
    #: the acknowledgement had to be signed by the engine's key (engine.signing_key)
    authenticated: bool = False


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
    wait: float | None = None,
    host_id: str | None = None,
    event_id: str | None = None,
    key: str | tuple[str, Ed25519PrivateKey] | None = None,
    source: str = "uns-cli",
    ack_key: AckKey | None = None,
    max_future_s: float | None = None,
    passphrase: bytes | None = None,
) -> SetResult:
    """Validate and publish one context event (QoS 1, acknowledged by the broker).

    With ``wait`` (seconds) the event gets an id (``event_id`` or a fresh one)
    and the engine's acknowledgement is awaited that long -- with ``ack_key`` only one
    signed by it (:func:`engine_ack_key`).  With ``key`` (a private key file,
    :mod:`uns.keyring`, or a key already read: its name and private key) the event is
    signed.  ``source`` names the sender (``uns-web`` for the workspace).
    ``max_future_s``: the engine's ``context.max_future_s``, checked here first.
    BrokerRefused or BrokerError, naming the broker, when it cannot be published."""
    if wait is not None and event_id is None:
        event_id = new_event_id()
    when, now = parse_time(ts), parse_time(None)
    event = build_event(pairs, clear, user=user, reason=reason, ts=when, event_id=event_id, source=source)
    # The same validation the engine applies: a bad event never leaves this machine.
    try:
        check_topic_path(path.strip("/"))
        check_event_ts(when, now, int((max_future_s if max_future_s is not None else 86_400.0) * 1000))
    except IntakeError as exc:
        raise ContextError(exc.reason, path=path) from None
    ContextStore().apply_event(path, event, now)
    if key is not None:
        name, private = load_private_key(key, passphrase) if isinstance(key, str) else key
        event = sign_event(private, name, path, event)
    topic = f"{prefix}/_context/{path.strip('/')}"
    ack_topic = ack_filter(prefix, host_id) if wait is not None else None
    out = Outgoing(topic, json.dumps(event).encode(), event_id or "")
    acks = asyncio.run(send_events(broker, [out], ack_topic=ack_topic, wait=wait or 0.0, ack_key=ack_key))
    return SetResult(topic, event_id, acks.get(out.id), wait is not None, ack_key is not None)


def context_at(lake_dir: str | LakeStore, path: str, at: str | None) -> dict[str, str]:
    """The context valid at ``path`` at time ``at``, replayed from the lake's context table."""
    from uns import lake  # noqa: PLC0415 - the lake pulls in duckdb/pyarrow

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


def split_wait(path: str, pairs: list[str], wait: bool) -> tuple[str, list[str], float | None]:
    """``--wait [SECONDS]``: the flag takes an optional number, which the parser hands over
    as a positional; a bare number among the KEY=VALUE pairs is the wait."""
    if not wait:
        return path, pairs, None

    def number(token: str) -> float | None:
        try:
            value = float(token)
        except ValueError:
            return None
        return value if value > 0 and "=" not in token else None

    for i, token in enumerate(pairs):
        seconds = number(token)
        if seconds is not None:
            return path, pairs[:i] + pairs[i + 1 :], seconds
    seconds = number(path)
    if seconds is not None and pairs and "=" not in pairs[0]:
        return pairs[0], pairs[1:], seconds  # `set --wait 5 PATH KEY=VALUE`
    return path, pairs, DEFAULT_WAIT_S
