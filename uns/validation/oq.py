"""Operational qualification, the run: uns operating on a simulated plant that misbehaves.

:func:`operate` runs the scenario once and returns what the checks
(:mod:`uns.validation.oq_checks`) look at.  Everything happens in a namespace of
its own (Sparkplug group ``UnsVal<tag>``, topic prefix ``uns-validate-<tag>/v1``,
host id ``uns-validate-<tag>``, a lake in the work directory), so it can run against
a plant's broker without touching the plant's data:

1. ``uns run`` in a child process (the engine as installed), primary host, on the
   pilot plant model;
2. the simulated pilot plant for :data:`RUN_S` seconds, batch phases of
   :data:`PHASE_S`, with batch B2026-0001 spoilt: a Temperature excursion, its edge
   node dying and coming back, a late back-dated correction of its recipe;
3. meanwhile a second edge node skips a seq number (a gap) and publishes bytes
   that are not Sparkplug (rejected);
4. halfway, the engine is killed (SIGKILL) and started again on its lake;
5. the engine stopped (SIGTERM), B2026-0001 signed with a fresh key;
6. the engine started once more with ``context.require_signature``: one context
   event signed by the trusted key (a back-dated change inside the signed batch),
   one unsigned, one signed by a key that is not trusted; then stopped.

On a given broker (``--broker``) the engine sends no rebirth requests (it would
send them to the plant's own nodes whose data it sees without their birth) and
the lake receives the plant's Sparkplug data too, in the work directory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any, Final

from uns.audit.keys import trust_key
from uns.client.context import Ack, Outgoing, send_events
from uns.core.signing import sign_event
from uns.keyring import load_private_key, new_key_pair
from uns.mqtt.client import FastClient
from uns.mqtt.settings import parse_broker_url
from uns.sim.edge import EdgeNode
from uns.sim.inject import BatchFault
from uns.sim.plant import bench_plant
from uns.sim.runner import SimConfig, SimReport, run_sim

__all__ = ["BATCH", "PHASE_S", "RUN_S", "SIGNER", "UNIT", "Operation", "operate", "report_request"]

#: the batch the faults spoil (BR-101's first) and its unit
BATCH: Final = "B2026-0001"
UNIT: Final = "acme/basel/pilot/usp/br-101"
RUN_S: Final = 16.0
PHASE_S: Final = 1.5
KILL_AT_S: Final = 8.0
#: samples sent this long before the kill may still be on their way (broker queue, socket)
#: when the engine dies: OQ-01 does not require them (its requirement text says so)
KILL_MARGIN_MS: Final = 1000
FAULTS: Final = (
    BatchFault("excursion", BATCH, metric="Temperature", value=38.2),
    BatchFault("death", BATCH),
    BatchFault("correct_context", BATCH),
)
SPEC: Final = """
name = "uns validate OQ"
version = "1"
[[limit]]
metric = "Temperature"
path = "acme/basel/pilot/usp/*"
action_low = 36.5
action_high = 37.5
"""
SIGNER: Final = "oq-signer"
#: the printed name of the OQ's signer (the owner its key is trusted for)
REVIEWER: Final = "OQ Reviewer"
INTRUDER: Final = "oq-intruder"
_READY: Final = "context intake connected"


class Operation:
    """What one OQ run did and left behind (its namespace and files derive from ``tag``)."""

    def __init__(self, work: Path, broker_url: str, tag: str, own_broker: bool) -> None:
        self.work, self.broker_url, self.tag, self.own_broker = work, broker_url, tag, own_broker
        names = ("lake", "spec.toml", "trusted-keys", f"keys/{SIGNER}.key")
        self.lake, self.spec, self.trusted, self.signer_key = (work / name for name in names)
        self.group, self.gap_group = f"UnsVal{tag}", f"UnsValGap{tag}"
        self.prefix, self.host_id = f"uns-validate-{tag}/v1", f"uns-validate-{tag}"
        self.sim: SimReport | None = None
        #: exit codes of the engine processes, in start order (-9: the killed one)
        self.exits: list[int | None] = []
        #: answers to the signed-context events: what was sent -> the engine's acknowledgement
        self.signed_context: dict[str, Ack | None] = {}
        self.signature_seq: int | None = None
        #: epoch ms from which no engine was there to receive (the kill, less
        #: :data:`KILL_MARGIN_MS`) until the restarted engine was ready: OQ-01's tolerance
        self.outage: tuple[int, int] | None = None
        self.problems: list[str] = []
        self.logs: list[str] = []
        #: every engine process started (the run ends each, also when it fails)
        self.processes: list[asyncio.subprocess.Process] = []


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _toml(values: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def _prepare(op: Operation) -> tuple[Path, Path]:
    """The model, spec, keys and the two engine configs; returns the configs' paths."""
    op.work.mkdir(parents=True, exist_ok=True)
    examples = resources.files("uns.validation").joinpath("examples")
    model = op.work / "plant.toml"
    model.write_text(examples.joinpath("pilot-plant.toml").read_text().replace("PilotPlant", op.group))
    op.spec.write_text(SPEC)
    _, public = new_key_pair(SIGNER, op.work / "keys")
    trust_key(
        op.lake, public, name=SIGNER, full_name=REVIEWER, reason="uns validate OQ", trusted_dir=op.trusted
    )
    new_key_pair(INTRUDER, op.work / "keys")  # never trusted
    base: dict[str, dict[str, Any]] = {
        "broker": {"url": op.broker_url, "reconnect_min": 0.2, "reconnect_max": 1.0},
        "engine": {
            "host_id": op.host_id,
            "primary": True,
            "prefix": op.prefix,
            "model": str(model),
            "status_interval": 2.0,
        },
        "sparkplug": {"rebirth_requests": op.own_broker},
        "republish": {"enabled": False},
        "lake": {"path": str(op.lake), "commit_interval": 0.5},
        "audit": {"trusted_keys": str(op.trusted)},
    }
    plain, signed = op.work / "uns.toml", op.work / "uns-signed.toml"
    plain.write_text(_toml(base))
    signed.write_text(_toml({**base, "context": {"require_signature": True}}))
    for path in (plain, signed):
        path.chmod(0o600)  # the broker URL may hold a password
    return plain, signed


class _Engine:
    """``uns run`` as a child process of the installed uns."""

    def __init__(self, op: Operation, config: Path) -> None:
        self.op = op
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uns", "run", "--config", str(self.config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        self.op.processes.append(self.proc)
        assert self.proc.stderr is not None
        async with asyncio.timeout(60):
            while True:
                line = (await self.proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"the engine ended before it was ready: {self.op.logs[-5:]}")
                self.op.logs.append(line.rstrip())
                if _READY in line:
                    break
        self._drain = asyncio.create_task(self._read(self.proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.op.logs.append(line.decode(errors="replace").rstrip())

    async def end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 90)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 10)
        self.op.exits.append(code)


async def _gap_and_garbage(op: Operation) -> None:
    """A second edge node: DATA, a skipped seq (a gap), DATA, bytes that are no payload."""
    (model,) = bench_plant(op.gap_group, nodes=1, devices=1, metrics=2, seed=7).nodes
    settings = parse_broker_url(op.broker_url)
    node = EdgeNode(
        model, group_id=op.gap_group, broker=settings, primary_host_id=op.host_id,
        client_id=f"val-{op.tag}-gap", report_by_exception=False,
    )  # fmt: skip
    async with node:
        await asyncio.wait_for(node.wait_born(), 20)
        for _ in range(3):
            await node.publish_data()
            await asyncio.sleep(0.1)
        await node.skip_seq()
        for _ in range(3):
            await node.publish_data()
            await asyncio.sleep(0.1)
        await node.send_garbage(model.devices[0].device_id if model.devices else None)
        await asyncio.sleep(3.0)  # past the reorder timeout: the gap is given up and recorded


async def _plant(op: Operation, plain: Path) -> None:
    config = SimConfig(
        broker=parse_broker_url(op.broker_url), plant="pilot", group_id=op.group, rate=40.0,
        duration=RUN_S, seed=2026, prefix=op.prefix, primary_host_id=op.host_id,
        context_interval=PHASE_S, keep_samples=True, client_id_prefix=f"val-{op.tag}", faults=FAULTS,
    )  # fmt: skip
    engine = _Engine(op, plain)
    await engine.start()

    async def kill_and_restart() -> _Engine:
        await asyncio.sleep(KILL_AT_S)
        killed_at = _now_ms()
        await engine.end(signal.SIGKILL)
        again = _Engine(op, plain)
        await again.start()
        op.outage = (killed_at - KILL_MARGIN_MS, _now_ms())
        await _gap_and_garbage(op)
        return again

    sim_task = asyncio.create_task(run_sim(config))
    restarted = await kill_and_restart()
    op.sim = await sim_task
    await asyncio.sleep(3.0)  # what is still on its way
    await restarted.end(signal.SIGTERM)


def report_request(op: Operation) -> Any:
    """The report request of :data:`BATCH` with the OQ's spec, plant model and trusted keys."""
    from uns.batch.api import load_spec  # noqa: PLC0415
    from uns.batch.report import ReportRequest  # noqa: PLC0415
    from uns.engine.plant import load_model  # noqa: PLC0415

    model = load_model(op.work / "plant.toml")
    return ReportRequest(BATCH, spec=load_spec(str(op.spec)), model=model, trusted_keys=str(op.trusted))


def _sign_batch(op: Operation) -> None:
    from uns.batch.report import build_report  # noqa: PLC0415
    from uns.batch.signing import load_signing, sign_report, signer_of_key  # noqa: PLC0415

    request = report_request(op)
    key, trusted, keyring = load_signing(op.signer_key, str(op.trusted))
    done = sign_report(
        op.lake, BATCH, document=lambda con: build_report(con, request).document,
        signer=signer_of_key(trusted), meaning="approved", reason="uns validate OQ", key=key,
        keyring=keyring, expect_sha256=None, spec=request.spec.identity(),
    )  # fmt: skip
    op.signature_seq = done.seq


async def _signed_context(op: Operation, signed: Path) -> None:
    engine = _Engine(op, signed)
    await engine.start()
    try:
        name, key = load_private_key(op.signer_key)
        intruder = load_private_key(op.work / "keys" / f"{INTRUDER}.key")
        start = op.sim.contexts[0].ts if op.sim and op.sim.contexts else 0
        path = UNIT
        base = {"ts": start + 1, "source": "uns-validate", "user": "oq", "reason": "uns validate OQ-12"}
        events = {
            "signed": sign_event(
                key, name, path, {**base, "id": f"oq-{op.tag}-signed", "set": {"operator": "oq"}}
            ),
            "unsigned": {**base, "id": f"oq-{op.tag}-unsigned", "set": {"oq": "unsigned"}},
            "untrusted": sign_event(
                intruder[1], intruder[0], path, {**base, "id": f"oq-{op.tag}-untrusted", "set": {"oq": "x"}}
            ),
        }
        outgoing = [
            Outgoing(f"{op.prefix}/_context/{path}", json.dumps(ev).encode(), str(ev["id"]))
            for ev in events.values()
        ]
        ack_topic = f"{op.prefix}/_engine/{op.host_id}/context_ack"
        acks = await send_events(parse_broker_url(op.broker_url), outgoing, ack_topic=ack_topic, wait=15.0)
        op.signed_context = {what: acks.get(str(ev["id"])) for what, ev in events.items()}
    finally:
        await engine.end(signal.SIGTERM)


async def _operate(op: Operation) -> None:
    try:
        # the broker first: an engine would retry an unreachable one for ever
        async with FastClient(parse_broker_url(op.broker_url), identifier=f"val-{op.tag}-probe"):
            pass
        plain, signed = _prepare(op)
        await _plant(op, plain)
        await asyncio.to_thread(_sign_batch, op)
        await _signed_context(op, signed)
    finally:  # a run that failed half-way leaves no engine behind
        for proc in op.processes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def operate(work: Path, broker_url: str | None) -> Operation:
    """Run the OQ scenario in ``work`` on a private mosquitto, or on ``broker_url``."""
    tag = uuid.uuid4().hex[:8]
    op = Operation(work, broker_url or "", tag, broker_url is None)
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            if op.own_broker:
                from uns.mqtt.mosquitto import running_mosquitto  # noqa: PLC0415

                op.broker_url = stack.enter_context(running_mosquitto()).url
            asyncio.run(_operate(op))
        except Exception as exc:  # the checks then fail, naming what is missing
            op.problems.append(f"the OQ run stopped: {type(exc).__name__}: {exc}")
    return op
