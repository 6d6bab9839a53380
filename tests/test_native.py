"""The native DATA decoder against the pure-Python decoder (the reference).

Whenever ``native.decode_data`` answers, the samples it makes must be the Python path's
for the same bytes and session state; when it does not answer the Python path decides
(accepts or rejects) -- checked on generated, random and mutated payloads.  The lake's
rows of a sample block must be the rows the same samples make as objects.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import same
from tests.test_session_fast import DEVICE, DEVICE_METRICS, T0, Pair, pb, topic
from uns.config import SparkplugSection
from uns.core.events import BLOCK_ROW, Batch, SampleBlock
from uns.sparkplug import native
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
    assert mgr._native_data(node, owner, raw, T0) is None  # type: ignore[arg-type]


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
    from uns.lake.blocks import encode_blocks  # noqa: PLC0415
    from uns.lake.tables import batch_columns  # noqa: PLC0415
    from uns.lake.to_arrow import arrow_table, block_measurements  # noqa: PLC0415

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
    got = block_measurements([encode_blocks(blocks[:3]), encode_blocks(blocks[3:])], 3, "w")
    samples = Batch([s for b in blocks for s in b.samples()])
    want = arrow_table("measurements", batch_columns(samples)[0], 3, "w")
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows == 10
    for a, b in zip(got.to_pylist(), want.to_pylist(), strict=True):
        for key, x in a.items():
            y = b[key]
            if not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                assert (key, x) == (key, y)
