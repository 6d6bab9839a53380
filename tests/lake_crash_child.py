"""Helper processes for the lake's crash and concurrency tests (and the benchmark).

``python -m tests.lake_crash_child write LAKE START COUNT [COMMIT_INTERVAL_S] [FSYNC_INTERVAL_S]``
    adds deterministic batches START..START+COUNT-1 to a LakeSink, ACCEPT_GROUP per
    event-loop iteration, and prints ``accepted <i>`` (flushed) for each once the
    loop has run past the iteration that added it (the sink's WAL guarantee); then
    flushes and prints ``done``.  The parent SIGKILLs it at some point, or the env hook
    ``UNS_LAKE_TEST_HOOK`` (see lake/writer.py) kills it inside a commit.

``python -m tests.lake_crash_child read LAKE SECONDS``
    connects repeatedly for SECONDS and prints ``<rows> <distinct keys> <max i>``
    of ``measurements`` per snapshot.

Every row of batch ``i`` is identifiable: measurements have ``ts = BASE_TS + i``
and metric ``m<j>``; the other tables carry ``i`` in their timestamp as well.  The
measurements of every odd batch travel as a sample block (columns, what the native
decoder makes: uns.lake.blocks) unless ``UNS_NATIVE=0``, so the WAL holds both kinds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

from uns.core.events import (
    BLOCK_FLOAT,
    BLOCK_INT,
    BLOCK_ROW,
    Batch,
    CatalogEntry,
    ContextChange,
    Rejected,
    Sample,
    SampleBlock,
    SessionEvent,
)
from uns.lake import LakeConfig, LakeSink, connect
from uns.sparkplug import native
from uns.sparkplug.datatypes import DataType

BASE_TS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SAMPLES_PER_BATCH = 5
#: batches added per event-loop iteration (one WAL record each); reported as accepted after it
ACCEPT_GROUP = 10
_PATH = "acme/basel/pilot/granulation/gr-201"


def _sample(i: int, j: int, ts: int, ctx: dict[str, str]) -> Sample:
    """Measurement ``j`` of batch ``i``: an integer counter first, then doubles."""
    dtype, value = (DataType.Double, i * 0.5 + j) if j else (DataType.Int64, i)
    sample = Sample("PilotPlant", "GRAN-Ctrl", "GR-201", f"m{j}", dtype, value, ts, ts + 3, seq=i % 256)
    return dataclasses.replace(sample, bdseq=0, alias=j, path=_PATH, unit="degC", context=ctx)


@dataclasses.dataclass(frozen=True)
class _Born:  # what a block row needs of its born metric
    name: str
    alias: int
    unit: str


_BORN = [_Born(f"m{j}", j, "degC") for j in range(64)]


def _block(i: int, ts: int, ctx: dict[str, str], samples: int) -> SampleBlock:
    """The samples of :func:`_sample` as one block."""
    rows = b"".join(
        BLOCK_ROW.pack(ts, i, 0.0, int(DataType.Int64), BLOCK_INT) if j == 0
        else BLOCK_ROW.pack(ts, 0, i * 0.5 + j, int(DataType.Double), BLOCK_FLOAT)
        for j in range(samples)
    )  # fmt: skip
    block = SampleBlock(
        "PilotPlant", "GRAN-Ctrl", "GR-201", i % 256, 0, ts + 3, ts, rows, tuple(_BORN[:samples])
    )
    block.path, block.context = _PATH, ctx
    return block


_BLOCKS = native.AVAILABLE


def deterministic_batch(i: int, samples: int = SAMPLES_PER_BATCH) -> Batch:
    """Batch ``i``: ``samples`` measurements, plus now and then a row for every other table."""
    ts = BASE_TS + i
    ctx = {"batch_id": f"B{i // 100}", "phase": "dry_mix" if i % 2 else "granulate"}
    if i % 2 and _BLOCKS:
        batch = Batch(blocks=[_block(i, ts, ctx, samples)])
    else:
        batch = Batch(samples=[_sample(i, j, ts, ctx) for j in range(samples)])
    if i % 7 == 0:
        batch.sessions.append(SessionEvent(ts, "PilotPlant", "GRAN-Ctrl", None, "seq_gap", f"batch {i}"))
        batch.context.append(ContextChange(ts, ts + 1, _PATH, "phase", ctx["phase"], source="test"))
    if i % 11 == 0:
        batch.catalog.append(
            CatalogEntry("PilotPlant", "GRAN-Ctrl", "GR-201", f"m{i}", i, DataType.Double, ts, 0)
        )
        batch.rejected.append(Rejected(ts, "spBv1.0/PilotPlant/DDATA/GRAN-Ctrl", bytes([i % 256]), "test"))
    return batch


async def _write(lake: str, start: int, count: int, interval: float, fsync: float) -> None:
    # commit_worker_nice 0: the crashes are the test, not the worker's lower priority, which
    # CPU hogs at nice 0 (stress-ng --cpu 2) starved past a 300 s wait for the final replay
    config = LakeConfig(
        commit_interval=interval, commit_rows=2_000, fsync_interval=fsync, commit_worker_nice=0
    )
    async with LakeSink(lake, config) as sink:
        group: list[int] = []
        for i in range(start, start + count):
            sink.add(deterministic_batch(i))
            group.append(i)
            if len(group) == ACCEPT_GROUP or i == start + count - 1:
                # Let the loop run, as the engine would between socket reads: the sink writes
                # the group's rows to the WAL before anything else runs, so they count as
                # accepted only now (the sink's guarantee is per loop iteration).
                await asyncio.sleep(0.002)
                sys.stdout.write("".join(f"accepted {n}\n" for n in group))
                sys.stdout.flush()
                group = []
        await sink.flush()
    print("done", flush=True)


def _read(lake: str, seconds: float, at_least: int = 0) -> None:
    """Snapshots for ``seconds``, and on until ``at_least`` were taken (a loaded machine
    takes fewer per second; at most two minutes in all)."""
    start = time.monotonic()
    end = start + seconds
    taken = 0
    while (time.monotonic() < end or taken < at_least) and time.monotonic() < start + 120:
        taken += 1
        con = connect(lake)
        try:
            row = con.execute(
                "SELECT count(*), count(DISTINCT (ts, metric)), coalesce(max(epoch_ms(ts)), 0)"
                " FROM measurements"
            ).fetchone()
        finally:
            con.close()
        assert row is not None
        print(row[0], row[1], row[2] - BASE_TS if row[2] else -1, flush=True)
        time.sleep(0.02)


def main(argv: list[str]) -> None:
    mode, lake = argv[0], argv[1]
    if mode == "write":
        interval = float(argv[4]) if len(argv) > 4 else 0.1
        fsync = float(argv[5]) if len(argv) > 5 else 1.0
        asyncio.run(_write(lake, int(argv[2]), int(argv[3]), interval, fsync))
    elif mode == "read":
        _read(lake, float(argv[2]), int(argv[3]) if len(argv) > 3 else 0)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
