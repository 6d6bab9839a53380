"""The lake on object storage (issue 19, item 3): ``s3://bucket/prefix`` against a local
S3-compatible server (moto, on loopback; tests/s3_server.py), the WAL on local disk.

The real sink and commit worker write the bucket; ``lake.connect``, ``uns lake sql|info|
compact|vacuum`` read and maintain it on the same URL; store options come from the AWS_*
environment or from ``[lake.storage]``; secrets never show."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.lake_crash_child import SAMPLES_PER_BATCH, deterministic_batch
from tests.s3_server import SECRET, S3Server
from uns import lake
from uns.cli.app import app
from uns.config import LakeSection, load_config
from uns.core.events import Batch, ContextChange
from uns.engine.daemon import build_engine
from uns.errors import LakeError
from uns.lake.storage import LakeStore, wal_dir_of

BATCHES = 12
ROWS = BATCHES * SAMPLES_PER_BATCH


async def _fill(url: str, config: LakeSection) -> None:
    async with lake.LakeSink(url, config) as sink:
        for i in range(BATCHES):
            sink.add(deterministic_batch(i))
        change = ContextChange(1_000, 1_001, "acme/site", "batch_id", "B-9", event_id="ev-9")
        sink.add(Batch(context=[change]))
        await sink.flush()
        assert sink.stats()["commit_errors"] == 0


@pytest.mark.slow
async def test_a_lake_in_a_bucket_is_written_read_and_maintained_on_its_url(
    s3_lake: str, tmp_path: Path
) -> None:
    await _fill(s3_lake, LakeSection(wal_dir=str(tmp_path / "wal"), commit_interval=0.05))
    con = lake.connect(s3_lake)
    try:
        assert con.execute("SELECT count(*) FROM measurements").fetchone() == (ROWS,)
        assert con.execute("SELECT event_id FROM context WHERE key = 'batch_id'").fetchall() == [("ev-9",)]
        assert con.execute("SELECT count(*) FROM measurements_asof").fetchone() == (ROWS,)
        # the audit trail is kept on object storage too (issue 28): a data_commit per table and segment
        assert con.execute("SELECT count(*) FROM audit WHERE kind = 'data_commit'").fetchone()[0] > 0
    finally:
        con.close()
    run = CliRunner()
    out = run.invoke(
        app, ["lake", "sql", "SELECT count(*) AS n FROM measurements", "--lake", s3_lake, "-f", "csv"]
    )
    assert out.exit_code == 0, out.output
    assert out.output.split() == ["n", str(ROWS)]
    info = run.invoke(app, ["lake", "info", "--lake", s3_lake, "-f", "json"])
    assert info.exit_code == 0 and '"measurements"' in info.output, info.output
    compact = run.invoke(app, ["lake", "compact", "--lake", s3_lake])
    assert compact.exit_code == 0 and compact.output.startswith("table "), compact.output
    assert "\ncompacted " in compact.output, compact.output
    vacuum = run.invoke(app, ["lake", "vacuum", "--lake", s3_lake, "--retention-hours", "0", "--force"])
    assert vacuum.exit_code == 0, vacuum.output
    again = run.invoke(
        app, ["lake", "sql", "SELECT count(*) FROM measurements", "--lake", s3_lake, "-f", "csv"]
    )
    assert again.output.split()[-1] == str(ROWS)  # compacted and vacuumed: every row once
    verified = run.invoke(app, ["audit", "verify", "--lake", s3_lake])
    assert verified.exit_code == 0 and verified.output.startswith("audit trail intact:"), verified.output


async def test_store_options_from_the_config_file_take_the_place_of_the_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Only the credentials in the environment; the endpoint, region and http in [lake.storage]."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    env = s3_server.env()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", env["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env["AWS_SECRET_ACCESS_KEY"])
    url = f"s3://{s3_server.new_bucket()}/lake"
    file = tmp_path / "uns.toml"
    file.write_text(
        f'[lake]\npath = "{url}"\nwal_dir = "{tmp_path / "wal"}"\n[lake.storage]\n'
        f'aws_endpoint_url = "{s3_server.endpoint}"\naws_region = "us-east-1"\naws_allow_http = true\n'
    )
    config = load_config(file, env={})
    await _fill(url, config.lake)
    monkeypatch.setenv("UNS_CONFIG", str(file))
    out = CliRunner().invoke(app, ["lake", "sql", "SELECT count(*) FROM measurements", "-f", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.split()[-1] == str(ROWS)


def test_a_remote_lake_needs_a_local_wal_dir_and_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(LakeError, match=r"lake\.wal_dir \(UNS_LAKE_WAL_DIR\)"):
        wal_dir_of(LakeStore("s3://bucket/lake"), LakeSection())
    config = load_config(env={"UNS_LAKE": "s3://bucket/lake"}, overrides={"republish.enabled": False})
    with pytest.raises(LakeError, match="wal_dir"):
        build_engine(config)
    assert wal_dir_of(LakeStore("s3://bucket/lake"), LakeSection(wal_dir=str(tmp_path))) == tmp_path
    assert wal_dir_of(LakeStore(tmp_path), LakeSection(writer_id="a")) == tmp_path / "_wal-a"


@pytest.mark.parametrize(
    ("location", "url", "remote"),
    [
        ("s3://bucket/prefix/", "s3://bucket/prefix", True),
        ("S3://bucket", "s3://bucket", True),
        ("file:///var/lake", "/var/lake", False),
        ("./uns-lake", "./uns-lake", False),
    ],
)
def test_lake_locations(location: str, url: str, remote: bool) -> None:
    store = LakeStore(location)
    assert (store.url, store.remote) == (url, remote)
    assert store.table_uri("context") == (f"{url}/context" if remote else str(Path(url) / "context"))


@pytest.mark.parametrize("bad", ["ftp://host/lake", "s3://", "s3:///"])
def test_a_location_that_is_no_lake_is_refused(bad: str) -> None:
    with pytest.raises(LakeError):
        LakeStore(bad)


def test_secrets_of_the_store_never_show() -> None:
    options = {"aws_secret_access_key": SECRET, "aws_session_token": "tok-123", "aws_region": "eu-1"}
    store = LakeStore("s3://bucket/lake", options)
    assert SECRET not in repr(store) and "tok-123" not in repr(store) and "eu-1" in repr(store)
    assert SECRET not in str(store)
    section = LakeSection(path="s3://bucket/lake", storage=tuple(options.items()))
    assert SECRET not in repr(section)
