"""Property tests of seq tracking and the reorder buffer against simple oracles.

A node sends NDATA with seq s0+1 .. s0+n (mod 256, so runs wrap across 255 -> 0);
each message carries its index as the value, so the samples show the order in
which the tracker released them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_session import T0, TEMP, Edge, Msg, metric
from uns.config import SparkplugSection
from uns.core.events import SessionEventKind
from uns.sparkplug.outcome import Outcome
from uns.sparkplug.reorder import REORDER_SPAN
from uns.sparkplug.session import SessionManager

TIMEOUT = 2000
MAX_RUN = REORDER_SPAN - 6  # a run the buffer can always hold

seq_bases = st.integers(0, 255) | st.sampled_from([250, 254, 255])  # favour wrap-around


def node_sending(n: int, s0: int, config: SparkplugSection) -> tuple[Edge, list[Msg]]:
    edge = Edge(SessionManager(config))
    edge.nbirth(TEMP, seq=s0)
    return edge, [edge.msg("NDATA", metric(None, float(i), alias=1)) for i in range(n)]


def released(outs: list[Outcome]) -> list[int]:
    return [int(s.value) for o in outs for s in o.batch.samples]  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(s0=seq_bases, n=st.integers(1, MAX_RUN), data=st.data())
def test_any_arrival_order_within_the_window_is_released_in_seq_order(
    s0: int, n: int, data: st.DataObject
) -> None:
    edge, msgs = node_sending(n, s0, SparkplugSection(reorder_timeout_ms=TIMEOUT))
    order = data.draw(st.permutations(range(n)))
    outs = []
    for k, i in enumerate(order):
        outs.append(edge.deliver(msgs[i], at=T0 + k))
        outs.append(edge.mgr.tick(T0 + k))  # the engine's timer may run at any time
    assert released(outs) == list(range(n))
    assert [s.seq for o in outs for s in o.batch.samples] == [(s0 + 1 + i) & 255 for i in range(n)]
    assert all(o.rebirths == [] and o.batch.rejected == [] for o in outs)
    assert edge.mgr.next_deadline() is None
    assert edge.mgr.nodes()[0].next_seq == (s0 + 1 + n) & 255


@settings(max_examples=150, deadline=None)
@given(s0=seq_bases, n=st.integers(2, MAX_RUN), data=st.data())
def test_messages_missing_beyond_the_timeout_cause_a_rebirth(s0: int, n: int, data: st.DataObject) -> None:
    edge, msgs = node_sending(n, s0, SparkplugSection(reorder_timeout_ms=TIMEOUT))
    # the last message always arrives, otherwise nothing shows that the others are missing
    lost = data.draw(st.sets(st.integers(0, n - 2), min_size=1, max_size=n - 1))
    arriving = data.draw(st.permutations([i for i in range(n) if i not in lost]))
    outs = [edge.deliver(msgs[i], at=T0 + k) for k, i in enumerate(arriving)]
    assert all(o.rebirths == [] for o in outs)
    assert edge.mgr.next_deadline() is not None
    outs.append(edge.mgr.tick(T0 + len(arriving) + TIMEOUT))
    assert released(outs) == sorted(arriving)
    assert sum(len(o.rebirths) for o in outs) == 1  # one request, the rest rate-limited
    gaps = [e.detail for o in outs for e in o.batch.sessions if e.event == SessionEventKind.SEQ_GAP]
    assert gaps
    assert f"seq {(s0 + 1 + min(lost)) & 255}" in gaps[0]
    assert edge.mgr.next_deadline() is None


@settings(max_examples=150, deadline=None)
@given(s0=seq_bases, n=st.integers(1, MAX_RUN), data=st.data())
def test_without_buffering_only_ever_newer_messages_are_used(s0: int, n: int, data: st.DataObject) -> None:
    edge, msgs = node_sending(n, s0, SparkplugSection(reorder_timeout_ms=0))
    order = data.draw(st.permutations(range(n)))
    outs = [edge.deliver(msgs[i], at=T0) for i in order]
    newest = -1
    expected = []
    for i in order:  # oracle: a message is used iff it is newer than everything used before
        if i > newest:
            expected.append(i)
            newest = i
    assert released(outs) == expected
    assert sum(len(o.batch.rejected) for o in outs) == n - len(expected)
    in_order = list(order) == list(range(n))
    assert (sum(len(o.rebirths) for o in outs) == 0) == in_order
    assert edge.mgr.next_deadline() is None


@st.composite
def deliveries(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """(message index, time step) pairs: some messages lost, some duplicated, any order."""
    copies = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    sends = [i for i in range(n) for _ in range(copies[i])]
    sends = draw(st.permutations(sends))
    steps = draw(st.lists(st.integers(0, 1500), min_size=len(sends), max_size=len(sends)))
    return list(zip(sends, steps, strict=True))


@settings(max_examples=200, deadline=None)
@given(s0=seq_bases, n=st.integers(1, 60), data=st.data())
def test_nothing_is_lost_and_order_holds_under_loss_duplicates_and_delay(
    s0: int, n: int, data: st.DataObject
) -> None:
    edge, msgs = node_sending(n, s0, SparkplugSection(reorder_timeout_ms=TIMEOUT, rebirth_min_interval_ms=0))
    plan = data.draw(deliveries(n))
    now = T0
    outs = []
    for i, step in plan:
        now += step
        outs.append(edge.deliver(msgs[i], at=now))
        if data.draw(st.booleans()):
            outs.append(edge.mgr.tick(now))
    outs.append(edge.mgr.tick(now + TIMEOUT))
    used = released(outs)
    # every delivery is either a used message or a recorded rejection, nothing silently dropped
    assert len(used) + sum(len(o.batch.rejected) for o in outs) == len(plan)
    # released in seq order, each message at most once
    assert used == sorted(set(used))
    # whatever did not make it (lost, or given up and arriving late) was noticed
    delivered = {i for i, _ in plan}
    if delivered and used != list(range(max(delivered) + 1)):
        assert sum(len(o.rebirths) for o in outs) >= 1
    assert edge.mgr.next_deadline() is None
    assert edge.mgr.nodes()[0].buffered == 0
