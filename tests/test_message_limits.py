"""Bounded cost per message (issue 29, item 1), without a broker: the limits at the
decoder's entry, rejected records that stay small whatever a message holds, a large
message in slices giving what it gives at once, WAL segments within
``lake.max_segment_rows``, and a segment the commit worker always fails on moved aside.
The same attacks over a real mosquitto into a real lake: tests/test_message_attacks.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lake_helpers import query
from tests.protowire import lfield
from uns.config import SparkplugSection, load_config
from uns.core.events import (
    MAX_REJECTED_PER_MESSAGE,
    REJECTED_HEAD_BYTES,
    REJECTED_TEXT_CHARS,
    Batch,
    Rejected,
    Sample,
    metric_rejections,
)
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.engine.plant import load_model
from uns.errors import LakeError, SparkplugLimitError
from uns.lake import LakeConfig, LakeSink
from uns.lake.tables import batch_columns, column_count, split_columns
from uns.lake.wal import encode_record
from uns.sparkplug import DataType, decode_payload, decode_payload_lenient, encode_payload
from uns.sparkplug.compression import COMPRESSED_UUID
from uns.sparkplug.limits import MessageLimits
from uns.sparkplug.payload import Metric, Payload, PropertySet, PropertyValue, Template
from uns.sparkplug.session import SessionManager
from uns.sparkplug.topic import parse_topic

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_765_000_000_000
#: what one rejected row can weigh in the WAL: the payload's head, the topic and the reason
#: (at most 4 bytes per character in UTF-8), the digest, two integers and marshal's framing
ROW_BOUND = REJECTED_HEAD_BYTES + 2 * 4 * REJECTED_TEXT_CHARS + 64 + 64


# ---------------------------------------------------------------- the limits at the decoder's entry


def test_a_payload_over_max_payload_bytes_is_refused_whole_before_it_is_parsed() -> None:
    limits = MessageLimits(max_payload_bytes=1000)
    with pytest.raises(SparkplugLimitError) as caught:
        decode_payload_lenient(b"\xff" * 1001, limits)  # not even protobuf: never parsed
    assert (
        caught.value.reason
        == "over limit: 1,001 payload bytes, more than sparkplug.max_payload_bytes = 1,000"
    )
    assert (caught.value.limit, caught.value.value, caught.value.maximum) == (
        "sparkplug.max_payload_bytes",
        1001,
        1000,
    )
    decode_payload(encode_payload(Payload(timestamp=T0)), limits)


def test_metrics_are_counted_with_the_members_of_templates() -> None:
    limits = MessageLimits(max_metrics=10)
    flat = encode_payload(
        Payload(metrics=[Metric(name=f"m{i}", datatype=DataType.Int32, value=i) for i in range(11)])
    )
    with pytest.raises(
        SparkplugLimitError, match=r"11 metrics, more than sparkplug\.max_metrics_per_message = 10"
    ):
        decode_payload_lenient(flat, limits)
    members = [Metric(name=f"m{i}", datatype=DataType.Int32, value=i) for i in range(9)]
    nested = encode_payload(
        Payload(metrics=[Metric(name="t", datatype=DataType.Template, value=Template(metrics=members))])
    )
    decode_payload(nested, MessageLimits(max_metrics=10))  # 1 + 9
    with pytest.raises(SparkplugLimitError, match=r"more than sparkplug\.max_metrics_per_message = 9"):
        decode_payload(nested, MessageLimits(max_metrics=9))


def test_a_compression_bomb_is_held_to_the_limits_of_its_inner_payload() -> None:
    """40 KB that inflate to megabytes of empty metrics: the inner payload's metrics count."""
    inner = lfield(2, b"") * 1_000_000  # 2 MB of metrics
    body = zlib.compress(inner, 9)
    assert len(body) < 50_000
    envelope = encode_payload(Payload(uuid=COMPRESSED_UUID, body=body, timestamp=T0, seq=0))
    sessions = SessionManager(SparkplugSection(max_metrics_per_message=10_000))
    out, _ = sessions.handle_raw(parse_topic("spBv1.0/G/NBIRTH/n1"), envelope, T0)
    (row,) = out.batch.rejected
    assert row.error == (
        "over limit NBIRTH: 1,000,000 metrics, more than sparkplug.max_metrics_per_message = 10,000"
    )
    assert (row.payload_size, len(row.payload)) == (len(envelope), len(envelope[:1024]))


def test_the_limits_are_config_keys_with_their_rules() -> None:
    cfg = load_config(env={"UNS_SPARKPLUG_MAX_NESTING": "8", "UNS_SPARKPLUG_MAX_PAYLOAD_BYTES": "1000"})
    assert SessionManager(cfg.sparkplug).limits == MessageLimits(1000, 100_000, 8)
    for key, bad in (("max_nesting", "49"), ("max_nesting", "0"), ("max_metrics_per_message", "0")):
        with pytest.raises(Exception, match=f"sparkplug.{key}"):
            load_config(env={f"UNS_SPARKPLUG_{key.upper()}": bad})


# ---------------------------------------------------------------- rejected records stay bounded

texts = st.text(max_size=40) | st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 5000))
payloads = st.binary(max_size=2048) | st.builds(
    lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(0, 300_000)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=texts, payload=payloads, errors=st.lists(texts, min_size=1, max_size=3), more=st.integers(0, 400)
)
def test_no_payload_shape_makes_a_rejected_record_larger_than_its_bound(
    topic: str, payload: bytes, errors: list[str], more: int
) -> None:
    """Whatever the topic, payload and reasons -- and however many metrics of one message
    are rejected -- each WAL row of the rejected table stays within ROW_BOUND, a message
    makes at most MAX_REJECTED_PER_MESSAGE + 1 rows, and each row names the whole payload
    by its size and SHA-256."""
    first = Rejected(T0, topic, payload, errors[0])
    rows = [first]
    for n in range(more):
        rows.append(first.again(errors[n % len(errors)]))
    rows += metric_rejections(T0, topic, payload, [errors[-1]] * more)
    digest = hashlib.sha256(payload).hexdigest()
    for row in rows:
        assert (row.payload_size, row.payload_sha256) == (len(payload), digest)
        assert len(row.payload) <= REJECTED_HEAD_BYTES and payload.startswith(row.payload)
        assert len(row.topic) <= REJECTED_TEXT_CHARS and len(row.error) <= REJECTED_TEXT_CHARS
        wal = encode_record(batch_columns(Batch(rejected=[row])))
        assert len(wal) <= ROW_BOUND, len(wal)
    assert len(metric_rejections(T0, topic, payload, [errors[0]] * more)) <= MAX_REJECTED_PER_MESSAGE + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=payloads,
    mtype=st.sampled_from(["NBIRTH", "NDATA", "DBIRTH", "DDATA", "NDEATH"]),
    unborn=st.integers(0, 3000),
)
def test_no_message_makes_the_sessions_record_more_than_bounded_rows(
    raw: bytes, mtype: str, unborn: int
) -> None:
    """Random bytes, or an NDATA of thousands of metrics no birth defined, from an online
    node: the rows for the rejected table are bounded in number and in size."""
    sessions = SessionManager(SparkplugSection(max_payload_bytes=200_000))
    sessions.handle_raw(parse_topic("spBv1.0/G/NBIRTH/n"), encode_payload(Payload(seq=0, metrics=[])), T0)
    if unborn:
        metrics = [Metric(alias=i + 1, value=1.0) for i in range(unborn)]
        raw = encode_payload(Payload(seq=1, metrics=metrics))
        mtype = "NDATA"
    topic = parse_topic(f"spBv1.0/G/{mtype}/n" + ("/d" if mtype.startswith("D") else ""))
    out, bad = sessions.handle_raw(topic, raw, T0 + 1)
    rejected = out.batch.rejected
    assert len(rejected) <= MAX_REJECTED_PER_MESSAGE + 1 and len(bad) <= max(unborn, 300_000)
    for row in rejected:
        assert row.payload_size == len(raw) and len(row.payload) <= REJECTED_HEAD_BYTES
        assert len(encode_record(batch_columns(Batch(rejected=[row])))) <= ROW_BOUND
    if unborn > MAX_REJECTED_PER_MESSAGE:
        assert f"{unborn - MAX_REJECTED_PER_MESSAGE} more rejections of this message" in rejected[-1].error


# ---------------------------------------------------------------- a large message in slices


PLANT = """
format = 1
[equipment."acme"]
level = "enterprise"
[equipment."acme/line"]
level = "area"
[[source]]
group = "G"
node = "n1"
path = "acme/line"
[source.metrics."Batch/ID"]
context = "batch_id"
"""


def big_birth(metrics: int, *, context_at: int) -> bytes:
    """An NBIRTH of ``metrics`` metrics with a Batch/ID context metric at index ``context_at``."""
    ms = [Metric(name="bdSeq", datatype=DataType.UInt64, value=0)]
    for i in range(metrics):
        name = "Batch/ID" if i == context_at else f"Area{i // 500}/Tag{i}"
        dt, value = (DataType.String, "B-77") if i == context_at else (DataType.Double, float(i))
        props = PropertySet({"engUnit": PropertyValue(DataType.String, "degC")})
        ms.append(Metric(name=name, alias=i + 1, datatype=dt, value=value, properties=props))
    return encode_payload(Payload(timestamp=T0, metrics=ms, seq=0))


def test_a_large_birth_in_slices_gives_exactly_what_it_gives_at_once(tmp_path: Path) -> None:
    """The rows, their enrichment (a context metric in the last slice reaches every sample
    at the same time) and the counters: process_steps is process, in slices."""
    model = tmp_path / "plant.toml"
    model.write_text(PLANT)
    raw = big_birth(9000, context_at=8500)
    cfg = load_config(env={}, overrides={"engine.model": str(model), "lake.path": ""})

    def engine() -> Engine:
        return Engine(cfg, model=load_model(model), transport=MemoryBroker())

    whole = engine().process("spBv1.0/G/NBIRTH/n1", raw, T0 + 5)
    sliced_engine = engine()
    steps = sliced_engine.dispatch.process_steps("spBv1.0/G/NBIRTH/n1", raw, T0 + 5)
    parts: list[Batch] = []
    pauses = 0
    while True:
        try:
            part = next(steps)
        except StopIteration as done:
            last, rebirths, publishes = done.value
            break
        pauses += 1
        if part is not None:
            parts.append(part)
    parts.append(last)
    assert pauses > 9000 // 2048 * 3 and len(parts) == 5  # slices of decoding, birth, enrichment, delivery
    merged = Batch()
    for part in parts:
        merged.extend(part)
    key = lambda s: (s.metric, s.path, s.context, s.value)  # noqa: E731
    assert [key(s) for s in merged.samples] == [key(s) for s in whole[0].samples]
    assert all(s.context == {"batch_id": "B-77"} for s in merged.samples)
    assert [(c.metric, c.path) for c in merged.catalog] == [(c.metric, c.path) for c in whole[0].catalog]
    assert len(merged.context) == len(whole[0].context) == 1
    assert parts[-1].sessions and not any(p.sessions for p in parts[:-1])  # the birth's event last
    assert (rebirths, publishes) == (whole[1], whole[2])
    at_once = engine()
    at_once.process("spBv1.0/G/NBIRTH/n1", raw, T0 + 5)
    assert sliced_engine.counters.as_dict() == at_once.counters.as_dict()


# ---------------------------------------------------------------- WAL segments and the commit worker


def samples(n: int, start: int = 0) -> list[Sample]:
    return [
        Sample("G", "N", "D", f"m{i % 50}", DataType.Double, float(i), T0 + i, T0 + i, path="a/b", seq=i // 7)
        for i in range(start, start + n)
    ]


def test_split_columns_keeps_every_row_once_in_order() -> None:
    cols = batch_columns(Batch(samples=samples(1000)))
    parts = split_columns(cols, 333)
    assert [sum(map(column_count, p)) for p in parts] == [333, 333, 333, 1]
    values = [v for p in parts for v in p[0][3]]
    assert values == [float(i) for i in range(1000)]
    seqs = [s for p in parts for s, n in zip(p[0][14], p[0][-1], strict=True) for _ in range(n)]
    assert seqs == [i // 7 for i in range(1000)]  # runs cut where a part ends


async def test_no_wal_segment_holds_more_than_max_segment_rows(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    config = LakeConfig(
        max_segment_rows=1000,
        commit_rows=50_000,
        commit_interval=60,
        commit_worker="thread",
        compact_interval=0,
    )
    async with LakeSink(lake, config) as sink:
        sink.add(Batch(samples=samples(4500)))  # one record would hold 4,500 rows
        sink.add(Batch(samples=samples(700, 4500)))
        await sink.flush()
        sink.add(Batch(samples=samples(800, 5200)))  # would pass 1,000 in the last segment
        await sink.flush()
    per_segment = query(lake, "SELECT wal_segment, count(*) FROM measurements GROUP BY 1 ORDER BY 1")
    assert max(n for _, n in per_segment) <= 1000
    assert sum(n for _, n in per_segment) == 6000
    assert query(lake, "SELECT count(DISTINCT value_double) FROM measurements") == [(6000,)]


async def write_with_a_refused_segment(lake: Path) -> dict[str, int | float | str]:
    """Segments 0, 1 (which every commit refuses) and 2 through a LakeSink; its stats."""
    config = LakeConfig(
        quarantine_after=3, retry_initial_s=0.05, retry_max_s=0.1, commit_interval=60, compact_interval=0
    )
    async with LakeSink(lake, config) as sink:
        sink.add(Batch(samples=samples(10)))
        await sink.flush()  # segment 0
        sink.add(Batch(samples=samples(20, 10)))
        with pytest.raises(LakeError, match="segment 1 is refused"):
            await sink.flush()  # segment 1: fails, is retried, then moved aside
        for _ in range(200):
            if sink.stats()["segments_quarantined"]:
                break
            await asyncio.sleep(0.05)
        sink.add(Batch(samples=samples(30, 30)))
        await sink.flush()  # everything after it commits
        return sink.stats()


def test_a_segment_the_commit_worker_always_fails_on_is_moved_aside_and_the_lake_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    monkeypatch.setenv("UNS_LAKE_TEST_HOOK", "refuse_segment:1")  # read by the worker process
    stats = asyncio.run(write_with_a_refused_segment(lake))
    monkeypatch.delenv("UNS_LAKE_TEST_HOOK")
    assert (stats["segments_quarantined"], stats["rows_quarantined"]) == (1, 20)
    assert query(lake, "SELECT count(*) FROM measurements") == [(40,)]
    moved = lake / "_wal" / "quarantine" / "0000000000000001.wal"
    note = json.loads(moved.with_suffix(".json").read_text())
    assert (note["segment"], note["failures"], note["rows"]) == (1, 3, 20)
    assert "refused by every commit" in note["error"]
    (entry,) = query(lake, "SELECT detail FROM audit WHERE kind = 'wal_quarantine'")
    assert json.loads(entry[0])["moved_to"] == str(moved)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    listed = subprocess.run(
        [sys.executable, "-m", "uns", "lake", "quarantine", "--lake", str(lake), "--format", "json"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    (row,) = json.loads(listed.stdout)
    assert (row["segment"], row["rows"], row["failures"]) == (1, 20, 3)
    shown = subprocess.run(
        [sys.executable, "-m", "uns", "lake", "quarantine", "--show", "1", "--lake", str(lake)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    rows = json.loads(shown.stdout)["measurements"]
    assert [r["value"] for r in rows] == [float(i) for i in range(10, 30)]
