"""The lake's commit worker: Delta commits (Arrow, Parquet, the Delta log) in a
process of their own, so they do not compete with the engine for its GIL.

:class:`CommitWorker` (used by :class:`lake.sink.LakeSink`) starts
``python -c <lake.worker.main> ROOT WRITER_ID PARENT_PID MAX_RSS_MB NICE`` and sends it one request at
a time over its stdin: commit sealed WAL segment N (the worker reads it back
from the file and commits it with :class:`lake.writer.DeltaWriter`, exactly as
the in-process committer does: app transactions make it exactly-once), or
compact recent partitions.  Replies come back on its stdout.  Frames are a
4-byte big-endian length and a pickle; both ends are this module.

The worker dies with its parent (``PR_SET_PDEATHSIG``), so a killed engine
never leaves a committer behind that could race the next start; if the worker
dies, the request fails with :class:`uns.errors.LakeError`, the sink retries
it (the segment is still in the WAL) and the next request starts a new worker.
Its own process is started directly, not through :mod:`multiprocessing`: no
re-import of the caller's ``__main__``, no extra resource-tracker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Final

from uns.errors import LakeError
from uns.lake.anchors import ANCHOR_ENV, AnchorSettings
from uns.lake.storage import OPTIONS_ENV, LakeStore, as_store, store_from_env

__all__ = ["JEMALLOC_CONF", "CommitWorker", "main"]

log = logging.getLogger(__name__)

#: deltalake's own allocator (jemalloc, inside its extension module) reads this when
#: the worker starts: freed pages go back to the system within a second instead of
#: ten, and two arenas serve all threads instead of one per thread.
JEMALLOC_CONF: Final = "narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0"
#: give the glibc heap's free pages back to the system at most this often (malloc_trim)
TRIM_INTERVAL_S: Final = 10.0
#: reopen the Delta tables this often: a DeltaTable that commits again and again keeps
#: growing (at 50,000 samples/s the worker grew ~8 MB/min over a 10-minute soak with
#: handles kept open; reopened after every commit it levelled off near 200 MB after
#: about 100 s in a 4-minute run)
REOPEN_INTERVAL_S: Final = 30.0
_FRAME: Final = struct.Struct(">I")
#: the worker's command (not ``-m uns.lake.worker``: the package imports this module first)
_ENTRY: Final = "import sys; from uns.lake.worker import main; sys.exit(main(sys.argv[1:]))"


# ---------------------------------------------------------------- engine side
class CommitWorker:
    """The engine's handle on one worker process (one request at a time)."""

    def __init__(
        self,
        root: Path | LakeStore,
        writer_id: str,
        max_rss_mb: int = 0,
        *,
        nice: int = 0,
        anchor: AnchorSettings | None = None,
    ) -> None:
        self.store = as_store(root)
        self.anchor = anchor
        self.writer_id = writer_id
        self.max_rss_mb = max_rss_mb
        self.nice = nice
        self._proc: asyncio.subprocess.Process | None = None
        self._killed: list[asyncio.subprocess.Process] = []  # killed on a cancel, not yet reaped
        self._lock = asyncio.Lock()
        self.starts = 0
        self.deaths = 0  # workers that died under a request
        self.recycled = 0  # workers replaced after outgrowing max_rss_mb

    @property
    def pid(self) -> int:
        """The running worker's pid (0 when none runs)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else 0

    async def start(self) -> None:
        """Start the process (it imports deltalake in the background; requests wait for it)."""
        env = dict(os.environ)
        env.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
        env[OPTIONS_ENV] = self.store.options_json()  # not in argv: ps shows argv to everyone
        env.pop(ANCHOR_ENV, None)
        if self.anchor is not None:
            env[ANCHOR_ENV] = self.anchor.to_json()
        argv = [sys.executable, "-c", _ENTRY, self.store.url, self.writer_id, str(os.getpid())]
        argv += [str(self.max_rss_mb), str(self.nice)]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
            )
        except OSError as exc:
            raise LakeError(f"cannot start the lake commit worker: {exc}") from exc
        self.starts += 1

    async def call(self, op: str, *args: object) -> Any:
        """Run ``op`` in the worker and return its result; LakeError on any failure."""
        async with self._lock:
            if self.pid == 0:
                await self.start()
            proc = self._proc
            assert proc is not None
            assert proc.stdin is not None
            assert proc.stdout is not None
            data = pickle.dumps((op, args))
            try:
                proc.stdin.write(_FRAME.pack(len(data)) + data)
                await proc.stdin.drain()
                (size,) = _FRAME.unpack(await proc.stdout.readexactly(_FRAME.size))
                kind, value, retire = pickle.loads(await proc.stdout.readexactly(size))  # noqa: S301 - our child
            except (OSError, asyncio.IncompleteReadError) as exc:
                code = await self._reap()
                self.deaths += 1
                raise LakeError(f"the lake commit worker died ({_exit_text(code)}) during {op}") from exc
            except asyncio.CancelledError:
                # Its reply would be read as the next request's: this worker is done (the
                # next request starts a fresh one).  Whatever it was writing is not in the
                # lake: a Delta commit is atomic.
                self._proc = None
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                self._killed.append(proc)
                raise
            if retire:  # it outgrew max_rss_mb and exits; the next request starts a fresh one
                self.recycled += 1
                await self._finish(proc)
        if kind == "ok":
            return value
        raise LakeError(str(value))

    async def _finish(self, proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> None:
        """Close its input and wait for it to exit (kill it after ``timeout_s``)."""
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("lake: the commit worker did not exit; killing it")
        await self._reap()

    async def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return await proc.wait()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Let the worker finish (it exits at the end of its input), kill it after ``timeout_s``."""
        async with self._lock:
            if self._proc is not None:
                await self._finish(self._proc, timeout_s)
            killed, self._killed = self._killed, []
            for proc in killed:
                await proc.wait()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no process"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


# ---------------------------------------------------------------- worker side
def _die_with_parent(parent: int) -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker ends when its stdin closes
        libc = None
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    return libc


def _rss_mb() -> float:
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # not Linux
        return 0.0
    return resident * os.sysconf("SC_PAGE_SIZE") / 2**20


def _serve(
    inp: BinaryIO, out: BinaryIO, root: LakeStore, writer_id: str, libc: ctypes.CDLL | None, max_rss_mb: int
) -> None:
    from uns.lake import writer as writer_module  # noqa: PLC0415 - deltalake: in the worker only

    writer_module.IN_WORKER = True
    writer = writer_module.DeltaWriter(root, writer_id, anchor=AnchorSettings.from_env())
    last_trim = last_reopen = time.monotonic()
    while True:
        header = inp.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return  # the engine closed our input: done
        (size,) = _FRAME.unpack(header)
        op, args = pickle.loads(inp.read(size))  # noqa: S301 - our own parent
        reply: tuple[str, object]
        try:
            if op == "commit":
                number, path = args
                reply = ("ok", writer.commit_segment(number, Path(path), None))
            elif op == "compact":
                (since,) = args
                reply = ("ok", writer.compact_recent(since))
            elif op == "open":
                reply = ("ok", writer.open_tables())
            elif op == "anchor":
                (force,) = args
                reply = ("ok", writer.audit.anchor_due(force=bool(force)))
            elif op == "ping":
                reply = ("ok", os.getpid())
            else:
                reply = ("error", f"unknown request {op!r}")
        except LakeError as exc:
            writer.forget_handles()
            reply = ("error", str(exc))
        except Exception as exc:  # a bug must reach the engine's log, not kill the worker
            writer.forget_handles()
            reply = ("error", f"{op} failed: {exc!r}")
        if time.monotonic() - last_reopen >= REOPEN_INTERVAL_S:
            last_reopen = time.monotonic()
            writer.forget_handles()
        # Arrow and Parquet leave the glibc heap fragmented; without this the worker's
        # RSS creeps up over hours.
        if libc is not None and time.monotonic() - last_trim >= TRIM_INTERVAL_S:
            last_trim = time.monotonic()
            with contextlib.suppress(AttributeError):  # not glibc
                libc.malloc_trim(0)
        # deltalake's native memory grows with every commit (its table state, its
        # allocator) and is not ours to free: past the bound, this worker hands over.
        retire = max_rss_mb > 0 and _rss_mb() > max_rss_mb
        data = pickle.dumps((*reply, retire))
        out.write(_FRAME.pack(len(data)) + data)
        out.flush()
        if retire:
            return


def main(argv: list[str]) -> int:
    root, writer_id, parent, max_rss_mb, nice = argv
    libc = _die_with_parent(int(parent))
    # Below the engine's priority: on a busy machine a commit burst (Arrow, Parquet, the
    # Delta log; several native threads) then waits for the receive loop, not the other
    # way round.  The WAL already holds the rows; a commit a few hundred ms later costs
    # nothing but lake lag.
    if int(nice) > 0:
        with contextlib.suppress(OSError):
            os.nice(int(nice))
    # Replies own the real stdout; anything else printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s lake-worker: %(message)s")
    # The engine decides when we stop (end of input; PR_SET_PDEATHSIG if it dies): Ctrl-C
    # hits the whole process group and systemd's stop SIGTERMs the whole cgroup, and a
    # worker that quit then would fail the engine's final flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):
        _serve(sys.stdin.buffer, out, store_from_env(root), writer_id, libc, int(max_rss_mb))
    return 0
