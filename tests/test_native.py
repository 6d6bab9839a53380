"""The native DATA decoder against the pure-Python decoder (the reference).

Whenever ``native.decode_data`` answers, the samples it makes must be the Python path's
for the same bytes and session state; when it does not answer the Python path decides
(accepts or rejects) -- checked on generated, random and mutated payloads.  The lake's
rows of a sample block must be the rows the same samples make as objects.
"""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine_helpers import CollectingSink
from tests.strategies import same
from tests.test_session_fast import DEVICE, DEVICE_METRICS, NODE_METRICS, T0, Pair, birth, pb, topic
from uns.config import SparkplugSection
from uns.core.events import BLOCK_ROW, Batch, Sample, SampleBlock, SampleRuns
from uns.sparkplug import native
from uns.sparkplug.native_data import native_outcome
from uns.sparkplug.session import SessionManager

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason=native.STATUS)


def test_row_layout_and_status() -> None:
    from uns.sparkplug import _speedups  # noqa: PLC0415

    assert BLOCK_ROW.size == _speedups.ROW_BYTES
    assert native.load({"UNS_NATIVE": "0"})[0] is None
    assert "UNS_NATIVE=0" in native.load({"UNS_NATIVE": "0"})[1]
    assert native.load({})[0] is not None


def _born() -> tuple[SessionManager, object]:
    pair = Pair(SparkplugSection())
    pair.births()
    owner = pair.fast._nodes[("G", "N1")].devices[DEVICE]
    return pair.fast, owner


def _python_samples(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> object:
    """The Python path's outcome for ``raw`` from a freshly born manager."""
    with monkeypatch.context() as m:
        m.setattr(native, "AVAILABLE", False)
        mgr, _owner = _born()
        return mgr.handle_raw(topic("DDATA", DEVICE), raw, T0)


def _native_samples(raw: bytes) -> object:
    mgr, _owner = _born()
    return mgr.handle_raw(topic("DDATA", DEVICE), raw, T0)


def _ordinary(seq: int = 2) -> bytes:  # 2: the births took 0 and 1
    p = pb.Payload(timestamp=T0, seq=seq)
    p.metrics.add(alias=10, float_value=1.5)
    p.metrics.add(alias=11, int_value=200)
    p.metrics.add(alias=12, long_value=2**64 - 3)
    p.metrics.add(alias=13, boolean_value=True, timestamp=T0 + 5)
    p.metrics.add(alias=18, long_value=2**64 - 1, datatype=8)
    p.metrics.add(alias=19, int_value=255)
    p.metrics.add(name="d_noalias", double_value=math.nan)
    p.metrics.add(alias=0, datatype=10)  # no value: a null Double
    return p.SerializeToString()


def test_ordinary_data_takes_the_native_path_with_the_reference_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = _ordinary()
    _mgr, owner = _born()
    got = native.decode_data(raw, owner.by_alias, owner.by_name, T0, 0)  # type: ignore[attr-defined]
    assert got is not None
    seq, rows, records, ts = got
    assert (seq, len(rows), len(records), ts) == (2, 8 * BLOCK_ROW.size, 8, None)  # ts differ: one +5
    assert same(_native_samples(raw), _python_samples(raw, monkeypatch))


def test_a_block_is_made_when_every_row_shares_its_timestamp() -> None:
    mgr, _owner = _born()
    mgr.columnar = True
    p = pb.Payload(timestamp=T0, seq=2)
    p.metrics.add(alias=10, float_value=2.5)
    p.metrics.add(alias=11, int_value=7)
    out, _bad = mgr.handle_raw(topic("DDATA", DEVICE), p.SerializeToString(), T0 + 1)
    (block,) = out.batch.blocks
    assert isinstance(block, SampleBlock) and not out.batch.samples
    assert (block.ts, block.seq, len(block)) == (T0, 2, 2)
    assert [(s.metric, s.value) for s in block.samples()] == [("d_flt", 2.5), ("d_u8", 7)]


def test_limits_leave_the_message_to_the_python_path() -> None:
    mgr, owner = _born()
    raw = _ordinary()
    assert native.decode_data(raw, owner.by_alias, owner.by_name, T0, 3) is None  # type: ignore[attr-defined]
    mgr.max_payload_bytes = 10
    node = mgr._nodes[("G", "N1")]
    assert native_outcome(mgr, node, owner, raw, T0) is None  # type: ignore[arg-type]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """An ordinary payload with a few bytes flipped, inserted, deleted or appended."""
    data = bytearray(_ordinary(draw(st.integers(0, 255))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "append"]))
        byte = draw(st.integers(0, 255))
        if action == "flip" and at < len(data):
            data[at] ^= byte or 1
        elif action == "insert":
            data.insert(at, byte)
        elif action == "delete" and at < len(data):
            del data[at]
        else:
            data += draw(st.binary(max_size=6))
    return bytes(data)


def _one(alias: int, field: str, value: object) -> bytes:
    p = pb.Payload(timestamp=T0, seq=2)
    m = p.metrics.add(alias=alias)
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        setattr(m, field, value)
    return p.SerializeToString()


PAYLOADS = (
    mutated()
    | st.binary(max_size=64)
    | st.builds(
        _one,
        st.sampled_from([a for _, a, _ in DEVICE_METRICS if a is not None] + [999]),
        st.sampled_from(["int_value", "long_value", "float_value", "double_value", "boolean_value"]),
        st.integers(0, 2**64 - 1) | st.floats() | st.booleans(),
    )
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=PAYLOADS)
def test_native_answers_only_with_the_python_samples(raw: bytes) -> None:
    """Random and mutated payloads: the same outcome either way (the same samples, or the
    Python path's rejection after the native decoder declined)."""
    with pytest.MonkeyPatch.context() as m:
        want = _python_samples(raw, m)
    assert same(_native_samples(raw), want)


def test_a_block_and_its_samples_make_the_same_lake_rows(tmp_path: Path) -> None:
    """block_measurements (Arrow compute over the block) against the object path."""
    from uns.lake.block_arrow import BLOCK_SCHEMA, block_measurements  # noqa: PLC0415
    from uns.lake.blocks import encode_blocks  # noqa: PLC0415
    from uns.lake.tables import batch_columns  # noqa: PLC0415
    from uns.lake.to_arrow import arrow_table  # noqa: PLC0415

    mgr, _owner = _born()
    mgr.columnar = True
    blocks = []
    for seq, metrics in enumerate(
        [
            [("alias", 10, "float_value", -0.0), ("alias", 18, "long_value", 2**64 - 1)],
            [("alias", 0, "double_value", math.nan), ("alias", 10, "float_value", 0.1)],
            [("alias", 12, "long_value", 2**63 + 1), ("alias", 13, "boolean_value", False)],
            [("alias", 0, "double_value", math.inf), ("alias", 19, "int_value", 200)],
            [("alias", 14, "long_value", 253_402_300_800_000)],  # a DateTime value past year 9999
            [("alias", 11, None, None)],  # null
        ]
    ):
        p = pb.Payload(timestamp=T0 + seq, seq=seq + 2)
        for key, alias, field, value in metrics:
            m = p.metrics.add(**{key: alias})
            if field is not None:
                setattr(m, field, value)
        out, _ = mgr.handle_raw(topic("DDATA", DEVICE), p.SerializeToString(), T0 + 100)
        (block,) = out.batch.blocks
        block.path, block.context = "site/area/unit", {"batch_id": "B1", "lot": "7"} if seq % 2 else None
        blocks.append(block)
    got = block_measurements([encode_blocks(blocks[:3])[0], encode_blocks(blocks[3:])[0]], 3, "w")
    samples = Batch([s for b in blocks for s in b.samples()])
    want = arrow_table("measurements", batch_columns(samples)[0], 3, "w")
    assert got.schema == BLOCK_SCHEMA  # text as dictionaries: the same table once cast
    got = got.cast(want.schema)
    assert got.num_rows == want.num_rows == 10
    for a, b in zip(got.to_pylist(), want.to_pylist(), strict=True):
        for key, x in a.items():
            y = b[key]
            if not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                assert (key, x) == (key, y)


class ColumnarSink(CollectingSink):
    """A collecting sink that takes sample blocks (so the engine runs its native lane)."""

    accepts_blocks = True

    def __init__(self) -> None:
        super().__init__()
        self.lane_runs = 0

    def add(self, batch: Batch) -> None:
        self.lane_runs += sum(len(b.runs) for b in batch.blocks if isinstance(b, SampleRuns))
        super().add(Batch(batch.all_samples(), batch.sessions, batch.catalog, batch.rejected, batch.context))


def _stream(rng: random.Random) -> list[tuple[str, bytes]]:
    """Births, then DATA of a device and its node: mostly ordinary (one ts per message), some
    with several timestamps, a string, a seq gap, an unknown alias, an empty message."""
    node_topic, dev_topic = "spBv1.0/G/{}/N1", "spBv1.0/G/{}/N1/D1"
    out = [(node_topic.format("NBIRTH"), birth(NODE_METRICS, 0, bdseq=True))]
    out.append((dev_topic.format("DBIRTH"), birth(DEVICE_METRICS, 1, bdseq=False)))
    seq = 1
    device = [
        (10, "float_value", 1 / 3), (11, "int_value", 7), (12, "long_value", 2**64 - 5),
        (13, "boolean_value", True), (18, "long_value", 2**63 + 1), (19, "int_value", 200),
        (0, "double_value", -1 / 9), (15, "string_value", "txt"),
    ]  # fmt: skip
    for k in range(400):
        seq = (seq + (2 if k == 250 else 1)) & 255  # one gap
        p = pb.Payload(timestamp=T0 + k, seq=seq)
        on_node = rng.random() < 0.3
        for _ in range(rng.randint(0, 4)):
            alias, field, value = (
                rng.choice([(1, "double_value", k / 7), (2, "int_value", k)])
                if on_node
                else rng.choice(device)
            )
            m = p.metrics.add(alias=999 if k == 300 else alias)
            setattr(m, field, value)
            if rng.random() < 0.05:
                m.timestamp = T0 + k + 1  # rows of several times: the per-message path
        out.append(
            (node_topic.format("NDATA") if on_node else dev_topic.format("DDATA"), p.SerializeToString())
        )
    return out


async def _run_engine(stream: list[tuple[str, bytes]]) -> tuple[ColumnarSink, dict[str, object]]:
    from tests.engine_helpers import connected, engine_config, on_memory, wait_for  # noqa: PLC0415

    sink = ColumnarSink()
    config = engine_config("mqtt://memory", "lane", **{"sparkplug.reorder_timeout_ms": 0})
    async with on_memory(config, sink) as (broker, engine):
        edge = await connected(broker, "edge")
        for topic, payload in stream:  # no await between: the engine takes them in chunks
            edge.publish_nowait(topic, payload)
        await wait_for(lambda: engine.counters.messages >= len(stream), what="every message processed")
        counters = engine.counters.as_dict()
    return sink, counters


async def test_the_engine_lane_gives_what_the_python_path_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same stream through an engine with the native lane and one with UNS_NATIVE=0:
    the same samples, session events, rejections and counters."""
    stream = _stream(random.Random(34))
    native_sink, native_counts = await _run_engine(stream)
    assert native_sink.lane_runs > 100  # most DATA went through decode_many
    monkeypatch.setattr(native, "AVAILABLE", False)
    python_sink, python_counts = await _run_engine(stream)
    assert python_sink.lane_runs == 0

    def key(s: object) -> tuple[object, ...]:
        return tuple(getattr(s, f) for f in Sample.__slots__ if f not in ("context", "received_at"))

    assert [key(s) for s in native_sink.samples] == [key(s) for s in python_sink.samples]

    def events(sink: ColumnarSink) -> list[tuple[object, ...]]:  # (their ts is the receive time)
        return [(e.group_id, e.edge_node_id, e.device_id, e.event, e.detail) for e in sink.sessions]

    def rejected(sink: ColumnarSink) -> list[tuple[object, ...]]:
        return [(r.topic, r.payload, r.error) for b in sink.batches for r in b.rejected]

    assert events(native_sink) == events(python_sink)
    assert rejected(native_sink) == rejected(python_sink) != []
    assert {k: v for k, v in native_counts.items() if "time" not in k} == {
        k: v for k, v in python_counts.items() if "time" not in k
    }
