"""The audit trail anchored outside the lake (issue 28, items 1 and 2): the auditor's
tampering, done on copies of a real lake, each found by ``uns audit verify`` and named;
an untouched lake, also after compaction and vacuum, verifies clean.  Anchors in a
directory here; in an S3 bucket under Object Lock in tests/test_audit_s3.py; RFC 3161
time-stamps from a local OpenSSL TSA at the end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.lake_crash_child import deterministic_batch
from tests.tsa_server import running_tsa
from uns.audit.trail import verify_lines
from uns.config import AuditSection, load_config
from uns.engine.daemon import audited
from uns.errors import LakeError
from uns.lake import Lake, LakeConfig, LakeSink
from uns.lake.anchors import AnchorSettings, DirectoryStore, anchor_name, open_store
from uns.lake.audit_entries import entry
from uns.lake.hashing import canonical, ts_micros
from uns.lake.manual import cli_recorder, record_report
from uns.lake.tables import TABLES
from uns.lake.timesync import time_sync_state

INTERVAL = 0.2
DAY_US = 86_400_000_000


def section(anchor: Path | str, **more: object) -> AuditSection:
    return AuditSection(anchor=str(anchor), anchor_interval_s=INTERVAL, **more)  # type: ignore[arg-type]


async def run_engine(
    lake: Path | str, audit: AuditSection, batches: range, wal_dir: Path | None = None
) -> None:
    """An engine's sink (engine_start and engine_stop recorded) committing ``batches`` in
    several segments, anchoring its head as it goes and at its stop."""
    config = LakeConfig(commit_interval=0.05, compact_interval=0, wal_dir=str(wal_dir) if wal_dir else None)
    engine_config = load_config(env={}, overrides={"lake.path": str(lake)})
    sink = audited(LakeSink(lake, config, anchor=AnchorSettings.of(audit)), engine_config)
    async with sink:
        for i in batches:
            sink.add(deterministic_batch(i))
            await sink.flush()
            if i % 3 == 2:  # let an interval pass now and then: anchors while running
                await asyncio.sleep(INTERVAL)


def build(lake: Path, anchors: Path) -> None:
    anchors.mkdir()
    audit = section(anchors)
    asyncio.run(run_engine(lake, audit, range(12)))
    for n in range(4):
        record_report(lake, f"{n:02d}" * 32, "B-ANCHOR", detail={"format": "json"}, audit=audit)
    # an old-form, keyless signature, as an older uns wrote them
    legacy = {"batch_id": "B-ANCHOR", "meaning": "approved", "report_sha256": "ab" * 32, "spec": None}
    recorder = cli_recorder(lake, audit=audit)
    recorder.record([entry(recorder.clock(), "signature", "B-ANCHOR", legacy, actor="QP Anyone")])
    record_report(lake, "ff" * 32, "B-ANCHOR", audit=audit)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("anchored")
    build(root / "lake", root / "anchors")
    return root / "lake", root / "anchors"


@pytest.fixture
def copy(template: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the lake and of its anchors (a test may add entries, and so anchors)."""
    lake, anchors = template
    shutil.copytree(lake, tmp_path / "lake", ignore=shutil.ignore_patterns("_wal*"))
    shutil.copytree(anchors, tmp_path / "anchors")
    return tmp_path / "lake", tmp_path / "anchors"


def verify(lake: Path, anchors: Path, **kw: object) -> tuple[int, list[str]]:
    return verify_lines(str(lake), audit=section(anchors), **kw)  # type: ignore[arg-type]


def tail(lake: Path, writer: str) -> int:
    seqs = DeltaTable(lake / "audit").to_pyarrow_table(filters=[("writer_id", "=", writer)])["seq"]
    return int(pa.compute.max(seqs).as_py())


# ------------------------------------------------------------------ untouched


def test_an_anchored_lake_verifies_clean_and_names_its_anchored_heads(copy: tuple[Path, Path]) -> None:
    lake, anchors = copy
    code, lines = verify(lake, anchors)
    assert code == 0, "\n".join(lines)
    assert lines[0].startswith("audit trail intact:")
    assert lines[1].endswith(f"anchors at {anchors}:")
    heads = "\n".join(lines[2:])
    assert (
        f"anchor (default)@{tail(lake, '')}:" in heads and f"anchor uns-cli@{tail(lake, 'uns-cli')}:" in heads
    )
    assert "not time-stamped" in heads
    listed = DirectoryStore(str(anchors)).listing()
    assert len({a.seq for a in listed if a.writer_id == ""}) >= 2  # anchored while running, and at the stop
    # anchors are write-once files
    first = anchors / anchor_name("uns-cli", 1)
    assert first.stat().st_mode & 0o222 == 0
    with pytest.raises(LakeError, match="exists already"):
        DirectoryStore(str(anchors)).put(anchor_name("uns-cli", 1), b"{}")


async def test_compaction_and_vacuum_keep_it_clean(copy: tuple[Path, Path]) -> None:
    lake, anchors = copy
    maintained = Lake(lake, audit=section(anchors))
    assert maintained.compact()["measurements"]["numFilesRemoved"] > 0
    maintained.vacuum(0, enforce_retention=False)
    await run_engine(lake, section(anchors), range(12, 15))  # and the engine goes on
    code, lines = verify(lake, anchors)
    assert code == 0, "\n".join(lines)


# ------------------------------------------------------------------ the auditor's tampering


def delete_tail(lake: Path, writer: str, n: int) -> None:
    """The newest ``n`` entries of a chain deleted through Delta (a proper Delta commit)."""
    DeltaTable(lake / "audit").delete(f"writer_id = '{writer}' AND seq > {tail(lake, writer) - n}")


def rechain(lake: Path | str, writer: str, kind: str, **changes: str) -> int:
    """An entry of ``kind`` rewritten and every later hash of its chain recomputed, so the
    chain is consistent again (what a forger with the lake and the documented hash does);
    ``lake`` a directory or an s3:// URL."""
    table = DeltaTable(f"{lake}/audit")
    original = table.to_pyarrow_table()
    rows = original.to_pylist()
    chain = sorted((r for r in rows if r["writer_id"] == writer), key=lambda r: r["seq"])
    target = next(r for r in chain if r["kind"] == kind)
    target.update(changes)
    prev = None
    for row in chain:
        if row["seq"] < target["seq"]:
            prev = row["hash"]
            continue
        row["prev_hash"] = prev or row["prev_hash"]
        fields = [row[k] for k in ("writer_id", "seq")] + [ts_micros(row["ts"])]
        fields += [row[k] for k in ("kind", "actor", "reason", "subject", "detail", "prev_hash")]
        row["hash"] = prev = hashlib.sha256(canonical(*fields)).hexdigest()
    data = pa.Table.from_pylist(rows, schema=original.schema)
    write_deltalake(table, data, mode="overwrite")
    return int(target["seq"])


def restore_all(lake: Path | str, back: int) -> None:
    """Every table rolled back ``back`` versions (Delta RESTORE): a whole-lake rollback."""
    for name in TABLES:
        table = DeltaTable(f"{lake}/{name}")
        table.restore(max(0, table.version() - back))


Tamper = Callable[[Path], str]


def _tail_default(lake: Path) -> str:
    last = tail(lake, "")
    delete_tail(lake, "", 5)
    return f"audit: writer (default) ends at seq {last - 5} but was anchored at seq {last} "


def _tail_cli(lake: Path) -> str:
    last = tail(lake, "uns-cli")
    delete_tail(lake, "uns-cli", 3)  # the keyless signature among them
    return f"audit: writer uns-cli ends at seq {last - 3} but was anchored at seq {last} "


def _rollback(lake: Path) -> str:
    restore_all(lake, 3)
    return "but was anchored at seq"


def _rechained_signer(lake: Path) -> str:
    seq = rechain(lake, "uns-cli", "signature", actor="M. Smith (Head of QA)")
    return f"audit: writer uns-cli seq {seq} differs from its anchor of "


@pytest.mark.parametrize("tamper", [_tail_default, _tail_cli, _rollback, _rechained_signer])
def test_each_tampering_is_found_and_named(copy: tuple[Path, Path], tamper: Tamper) -> None:
    lake, anchors = copy
    assert verify(lake, anchors)[0] == 0
    expected = tamper(lake)
    code, lines = verify(lake, anchors)
    assert code == 1
    assert any(expected in line for line in lines), "\n".join(lines)


def test_without_anchors_the_rechained_lake_would_pass(copy: tuple[Path, Path]) -> None:
    """What the auditor saw: the chain alone cannot tell; the anchors can."""
    lake, anchors = copy
    rechain(lake, "uns-cli", "signature", actor="M. Smith (Head of QA)")
    assert verify_lines(str(lake))[0] == 0
    assert verify(lake, anchors)[0] == 1


def test_a_clock_set_back_is_a_finding(copy: tuple[Path, Path]) -> None:
    lake, anchors = copy
    recorder = cli_recorder(lake, audit=section(anchors))
    recorder.clock = lambda: time.time_ns() // 1000 - 30 * DAY_US  # the host clock set back 30 days
    seq = recorder.tail()[0] + 1
    recorder.record([entry(recorder.clock(), "report", "B-ANCHOR", {"sha256": "cd" * 32})])
    code, lines = verify(lake, anchors)
    assert code == 1
    assert any(f"audit: writer uns-cli seq {seq} is dated " in line and "the clock went back" in line
               for line in lines), lines  # fmt: skip
    before = "dated before an earlier seq was anchored"
    assert any(f"audit: writer uns-cli seq {seq} (dated " in line and before in line for line in lines), lines


def test_entries_left_unanchored_longer_than_the_interval_are_named(copy: tuple[Path, Path]) -> None:
    lake, anchors = copy
    recorder = cli_recorder(lake)  # a writer that does not anchor (audit.anchor not set there)
    seq = recorder.tail()[0] + 1
    recorder.record([entry(recorder.clock(), "report", "B-ANCHOR", {"sha256": "ee" * 32})] * 2)
    assert verify(lake, anchors)[0] == 0  # within the interval and the skew: not yet
    later = time.time_ns() // 1000 + 3_600_000_000
    code, lines = verify(lake, anchors, now_us=later)
    assert code == 1
    assert any(f"audit: writer uns-cli seq {seq}-{seq + 1} (from " in line and "not anchored" in line
               for line in lines), lines  # fmt: skip


def test_an_anchor_directory_that_is_not_there_is_refused_in_one_line(tmp_path: Path) -> None:
    audit = section(tmp_path / "missing")
    with pytest.raises(
        LakeError, match=r"^the audit anchor directory .*missing does not exist \(audit\.anchor\)$"
    ):
        asyncio.run(run_engine(tmp_path / "lake", audit, range(1)))
    with pytest.raises(LakeError, match=r"^the audit anchor directory .*missing does not exist"):
        record_report(tmp_path / "lake2", "aa" * 32, "B", audit=audit)
    assert verify_lines(str(tmp_path / "lake2"))[1][0].startswith(
        "audit trail intact: 0 entries"
    )  # nothing recorded


# ------------------------------------------------------------------ time: synchronisation, TSA


def test_the_time_synchronisation_state_comes_from_the_first_source_that_answers() -> None:
    def run(outputs: dict[str, str | None]) -> Callable[[list[str]], str | None]:
        return lambda argv: outputs.get(argv[0])

    synced = run({"timedatectl": "NTP=yes\nNTPSynchronized=yes\nTimezone=UTC\n"})
    assert time_sync_state(synced, kernel=False) == {
        "source": "timedatectl", "synchronized": True, "detail": "NTP=yes NTPSynchronized=yes"
    }  # fmt: skip
    chrony = "Reference ID    : C0A80001 (ntp1)\nSystem time     : 0.000001 seconds fast of NTP time\n" + (
        "Leap status     : Not synchronised\n"
    )
    got = time_sync_state(run({"chronyc": chrony}), kernel=False)
    assert (got["source"], got["synchronized"]) == ("chronyc", False) and "Reference ID: C0A80001" in got[
        "detail"
    ]
    assert time_sync_state(run({}), kernel=False)["source"] == "unknown"
    here = time_sync_state()  # this machine: whatever it tells (the kernel at least, on Linux)
    assert here["source"] in ("timedatectl", "chronyc", "kernel", "unknown")


def test_engine_start_records_the_time_synchronisation_state(template: tuple[Path, Path]) -> None:
    lake, _ = template
    con = Lake(lake).connect()
    try:
        (detail,) = con.execute("SELECT detail FROM audit WHERE kind = 'engine_start'").fetchone() or ("{}",)
    finally:
        con.close()
    state = json.loads(detail)["time_sync"]
    assert set(state) == {"source", "synchronized", "detail"}
    # the batch report lists it: the engine start before a batch that began later
    from uns.batch.report import time_sync  # noqa: PLC0415

    con = Lake(lake).connect()
    try:
        listed = time_sync(con, {"start": "2099-01-01T00:00:00.000Z", "end": None})
    finally:
        con.close()
    assert [(t["writer_id"], t["source"], t["synchronized"]) for t in listed] == [
        ("", state["source"], state["synchronized"])
    ]


async def test_anchors_are_time_stamped_by_an_rfc3161_authority(tmp_path: Path) -> None:
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    lake = tmp_path / "lake"
    ca = tmp_path / "tsa-ca.pem"
    with running_tsa() as tsa:
        shutil.copy(tsa.ca_file, ca)
        audit = section(anchors, tsa_url=tsa.url, tsa_ca_file=str(ca))
        await run_engine(lake, audit, range(4))
        record_report(lake, "aa" * 32, "B-TSA", audit=audit)
        assert tsa.stamped >= 2
    tokens = sorted(anchors.rglob("*.tsr"))
    assert tokens and all(t.with_suffix(".json").is_file() for t in tokens)
    code, lines = verify_lines(str(lake), audit=audit)
    assert code == 0, "\n".join(lines)
    attested = [line for line in lines if "attested by the TSA at" in line]
    assert len(attested) == 2 and all(line.endswith("(verified)") for line in attested), lines
    # against another authority's CA the tokens do not verify
    with running_tsa() as other:
        shutil.copy(other.ca_file, tmp_path / "other-ca.pem")
    code, lines = verify_lines(str(lake), audit=section(anchors, tsa_ca_file=str(tmp_path / "other-ca.pem")))
    assert code == 1 and all("the time-stamp token does not verify" in line for line in lines), lines
    # an authority that does not answer: the anchor stands, without a token
    down = section(anchors, tsa_url="http://127.0.0.1:9/tsr", tsa_ca_file=str(ca))
    record_report(lake, "bb" * 32, "B-TSA", audit=down)
    code, lines = verify_lines(str(lake), audit=down)
    assert code == 0 and any(line.endswith("not time-stamped") for line in lines), lines


def test_an_anchor_store_is_a_directory_or_s3(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), DirectoryStore)
    with pytest.raises(LakeError, match="a directory or s3://bucket/prefix"):
        open_store("ftp://host/anchors")


def test_the_command_line_verifies_against_the_anchors(copy: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from uns.cli.app import app  # noqa: PLC0415

    lake, anchors = copy
    clean = {k: None for k in os.environ if k.startswith("UNS_")}
    ok = CliRunner().invoke(
        app, ["audit", "verify", "--lake", str(lake), "--anchor", str(anchors)], env=clean
    )
    assert ok.exit_code == 0, ok.output
    assert f"anchors at {anchors}:" in ok.output and "anchor uns-cli@" in ok.output
    delete_tail(lake, "uns-cli", 1)
    env = {**clean, "UNS_AUDIT_ANCHOR": str(anchors)}  # from the configuration this time
    bad = CliRunner().invoke(app, ["audit", "verify", "--lake", str(lake)], env=env)
    assert bad.exit_code == 1 and "audit: writer uns-cli ends at seq" in bad.output, bad.output
