"""Smaller faults of issue 29 in the batch report, on a real lake through the real CLI:
``--metric`` of a metric without limits renders as HTML, and a batch id (anyone's text:
it arrives as MQTT context) never puts the report's file outside the current directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.test_rejected_bounded import T0, uns
from uns.batch.api import report_file_name
from uns.core.events import Batch, ContextChange, Sample
from uns.lake import LakeConfig, LakeSink
from uns.sparkplug.datatypes import DataType

CONFIG = LakeConfig(commit_interval=60, commit_worker="thread", compact_interval=0)


async def write_batch(lake: Path, batch_id: str) -> None:
    changes = [
        ContextChange(T0, T0, "a/u1", "batch_id", batch_id, event_id="e1"),
        ContextChange(T0 + 10_000, T0 + 10_000, "a/u1", "batch_id", None, event_id="e2"),
    ]
    samples = [
        Sample(
            "G", "N", "D", "Plain", DataType.Double, float(i), T0 + i * 1000, T0 + i * 1000, path="a/u1/probe"
        )
        for i in range(10)
    ]
    async with LakeSink(lake, CONFIG) as sink:
        sink.add(Batch(samples=samples, context=changes))
        await sink.flush()


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    for name, batch_id in (("plain", "B1"), ("climbing", "../x")):
        asyncio.run(write_batch(root / name, batch_id))
    return root


def test_a_metric_without_limits_renders_as_html(lakes: Path, tmp_path: Path) -> None:
    r = uns(
        "batch",
        "report",
        "B1",
        "--lake",
        str(lakes / "plain"),
        "--metric",
        "Plain",
        "--format",
        "html",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "B1.html").read_text()
    assert 'data-metric="Plain"' in html and "UndefinedError" not in r.stderr


def test_a_batch_id_that_climbs_out_writes_its_report_here_under_a_safe_name(
    lakes: Path, tmp_path: Path
) -> None:
    here = tmp_path / "reports"
    here.mkdir()
    r = uns("batch", "report", "../x", "--lake", str(lakes / "climbing"), "--format", "json", cwd=here)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in here.iterdir()) == ["_x.json"]
    assert not (tmp_path / "x.json").exists()
    assert json.loads((here / "_x.json").read_text())["batch"]["batch_id"] == "../x"
    explicit = uns(
        "batch",
        "report",
        "../x",
        "--lake",
        str(lakes / "climbing"),
        "--format",
        "json",
        "-o",
        str(tmp_path / "mine.json"),
        cwd=here,
    )
    assert explicit.returncode == 0 and (tmp_path / "mine.json").exists()  # -o says where


@pytest.mark.parametrize(
    ("batch_id", "name"),
    [
        ("B2026-0001", "B2026-0001.pdf"),
        ("../x", "_x.pdf"),
        ("../../etc/passwd", "_.._etc_passwd.pdf"),
        (".hidden", "hidden.pdf"),
        ("a b/c\\d", "a_b_c_d.pdf"),
        ("..", "batch.pdf"),
        ("", "batch.pdf"),
        ("x" * 300, "x" * 120 + ".pdf"),
    ],
)
def test_report_file_names_are_plain_names(batch_id: str, name: str) -> None:
    assert report_file_name(batch_id, "pdf") == name
    assert Path(name).name == name and not name.startswith(".")
