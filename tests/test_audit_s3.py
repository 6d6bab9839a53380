"""The audit trail on object storage (issue 28, item 3), against the local S3 server
(moto, tests/s3_server.py): a lake in a bucket keeps its chain and file hashes like a
directory lake, through the store's filesystem; its anchors go to a bucket under Object
Lock (compliance mode); each tampering of the auditor's list is found and named.

moto enforces here: Object Lock must be on for a bucket to take locked objects, a second
put with ``If-None-Match: *`` is refused, a locked version cannot be deleted.  It does
not refuse shortening a compliance retention (real S3 does): not relied on."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.s3_server import S3Server
from tests.test_audit_anchors import INTERVAL, rechain, restore_all, run_engine
from uns.audit.trail import verify_lines
from uns.config import AuditSection
from uns.errors import LakeError
from uns.lake import Lake
from uns.lake.anchors import AnchorSettings, anchor_name, open_store
from uns.lake.audit_entries import entry
from uns.lake.manual import cli_recorder, record_report
from uns.lake.storage import LakeStore

pytestmark = pytest.mark.slow


def section(anchor: str) -> AuditSection:
    return AuditSection(anchor=anchor, anchor_interval_s=INTERVAL, anchor_retention_days=1)


@pytest.fixture
def anchored(s3_server: S3Server, s3_lake: str, tmp_path: Path) -> tuple[str, str]:
    """An engine's lake in a bucket, its anchors in another bucket under Object Lock, and a
    few entries of the chain run by hand."""
    anchors = f"s3://{s3_server.new_bucket(object_lock=True)}/anchors"
    audit = section(anchors)
    asyncio.run(run_engine(s3_lake, audit, range(6), tmp_path / "wal"))
    for n in range(3):
        record_report(s3_lake, f"{n:02d}" * 32, "B-S3", audit=audit)
    return s3_lake, anchors


def _copy(server: S3Server, url: str, to: str) -> str:
    """Every object of the lake at ``url`` copied under the prefix ``to`` of the same bucket."""
    client = server.client()
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            client.copy_object(
                Bucket=bucket, Key=to + key[len(prefix) :], CopySource={"Bucket": bucket, "Key": key}
            )
    return f"s3://{bucket}/{to}"


def _objects(server: S3Server, url: str, table: str) -> list[str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    page = server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/date=")
    return sorted(item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".parquet"))


def verify(url: str, anchors: str | None) -> tuple[int, list[str]]:
    return verify_lines(LakeStore(url), audit=section(anchors) if anchors else None)


def test_a_lake_in_a_bucket_keeps_its_audit_trail_and_verifies_clean(anchored: tuple[str, str]) -> None:
    url, anchors = anchored
    code, lines = verify(url, anchors)
    assert code == 0, "\n".join(lines)
    assert " data files, " in lines[0] and not lines[0].startswith("audit trail intact: 0 entries")
    assert "anchor (default)@" in "\n".join(lines) and "anchor uns-cli@3:" in "\n".join(lines)
    maintained = Lake(LakeStore(url), audit=section(anchors))
    maintained.compact()
    maintained.vacuum(0, enforce_retention=False)
    code, lines = verify(url, anchors)
    assert code == 0, "\n".join(lines)


def _changed_file(server: S3Server, url: str) -> str:
    client = server.client()
    bucket = url.removeprefix("s3://").partition("/")[0]
    key = _objects(server, url, "measurements")[0]
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    return f"{key.rpartition('/measurements/')[2]}: content changed (SHA-256 differs from audit (default) seq"


def _deleted_file(server: S3Server, url: str) -> str:
    bucket = url.removeprefix("s3://").partition("/")[0]
    key = _objects(server, url, "sessions")[0]
    server.client().delete_object(Bucket=bucket, Key=key)
    return f"{key.rpartition('/sessions/')[2]}: data file missing (deleted; audit (default) seq"


def _deleted_tail(server: S3Server, url: str) -> str:
    del server
    table = DeltaTable(f"{url}/audit")
    table.delete("writer_id = 'uns-cli' AND seq > 1")
    return "audit: writer uns-cli ends at seq 1 but was anchored at seq 3 "


def _rolled_back(server: S3Server, url: str) -> str:
    del server
    restore_all(url, 2)
    return "but was anchored at seq"


def _rechained_signer(server: S3Server, url: str) -> str:
    del server
    seq = rechain(url, "uns-cli", "report", actor="M. Smith (Head of QA)")
    return f"audit: writer uns-cli seq {seq} differs from its anchor of "


@pytest.mark.parametrize(
    "tamper", [_changed_file, _deleted_file, _deleted_tail, _rolled_back, _rechained_signer]
)
def test_each_tampering_of_a_lake_in_a_bucket_is_named(
    anchored: tuple[str, str], s3_server: S3Server, tamper: Any
) -> None:
    url, anchors = anchored
    copy = _copy(s3_server, url, "tampered")
    assert verify(copy, anchors)[0] == 0
    expected = tamper(s3_server, copy)
    code, lines = verify(copy, anchors)
    assert code == 1 and any(expected in line for line in lines), "\n".join(lines)


def test_anchors_in_a_bucket_are_locked_and_never_replaced(
    anchored: tuple[str, str], s3_server: S3Server
) -> None:
    _, anchors = anchored
    bucket, _, prefix = anchors.removeprefix("s3://").partition("/")
    client = s3_server.client()
    key = f"{prefix}/{anchor_name('uns-cli', 1)}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    with pytest.raises(LakeError, match="exists already"):
        open_store(anchors).put(anchor_name("uns-cli", 1), b"{}")
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])


def test_a_bucket_without_object_lock_is_refused_in_one_line(
    s3_server: S3Server, s3_lake: str, tmp_path: Path
) -> None:
    plain = f"s3://{s3_server.new_bucket()}/anchors"
    audit = section(plain)
    why = r"^the anchor bucket \S+ has no Object Lock: audit anchors need a bucket created with Object Lock"
    with pytest.raises(LakeError, match=why):
        record_report(s3_lake, "aa" * 32, "B", audit=audit)
    with pytest.raises(LakeError, match=why):
        asyncio.run(run_engine(s3_lake, audit, range(1), tmp_path / "wal"))
    assert AnchorSettings.of(audit) is not None


def test_the_chain_of_a_lake_in_a_bucket_is_checked_without_anchors_too(s3_lake: str, tmp_path: Path) -> None:
    asyncio.run(run_engine(s3_lake, AuditSection(), range(3), tmp_path / "wal"))
    recorder = cli_recorder(s3_lake)
    recorder.record([entry(recorder.clock(), "report", "B", {"sha256": "aa" * 32})] * 2)
    assert verify(s3_lake, None)[0] == 0
    DeltaTable(f"{s3_lake}/audit").delete("writer_id = 'uns-cli' AND seq = 1")
    code, lines = verify(s3_lake, None)
    assert code == 1 and "audit: writer uns-cli seq 1 missing (row deleted?)" in lines


def test_a_compaction_checksum_reads_dictionary_and_plain_text_alike(s3_lake: str, tmp_path: Path) -> None:
    """The native lane writes text columns dictionary-encoded, the Python lane plain: the rows
    a compaction replaced may mix both (a busy engine alternates), and their checksum in a
    bucket must equal the directory lake's (it raised "incompatible types" and the compaction
    was reported as changing the rows)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from uns.lake.audit_files import row_checksum  # noqa: PLC0415
    from uns.lake.storage import TableFiles  # noqa: PLC0415

    native = pa.table({"path": pa.array(["a/b", "a/c"]).dictionary_encode(), "value": [1.0, 2.0]})
    plain = pa.table({"path": pa.array(["a/b", "a/d"]), "value": [3.0, 4.0]})
    remote, local = TableFiles(LakeStore(s3_lake), "mixed"), TableFiles(LakeStore(str(tmp_path)), "mixed")
    (tmp_path / "mixed").mkdir()
    for name, data in (("n.parquet", native), ("p.parquet", plain)):
        pq.write_table(data, remote.arrow_path(name), filesystem=remote.filesystem())
        pq.write_table(data, local.arrow_path(name))
    in_bucket = row_checksum(remote, ["n.parquet", "p.parquet"], ["path", "value"])
    assert in_bucket == row_checksum(local, ["n.parquet", "p.parquet"], ["path", "value"])
    assert in_bucket[0] == 4
