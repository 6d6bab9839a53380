"""``uns validate``: installation and operational qualification, with evidence to file.

Runs the IQ checks (:mod:`uns.validation.iq`) and the OQ scenario and checks
(:mod:`uns.validation.oq`, :mod:`uns.validation.oq_checks`), each check proving
one requirement (docs/gxp.md has the traceability matrix), and writes to ``--out``:

- ``validation.json``: every requirement with pass/fail, what was seen, the
  environment, the times, and the SHA-256 of each artifact;
- ``validation.html`` (self-contained) and ``validation.pdf`` (headless Chromium, as
  the batch report's; left out with a note when Chromium is missing);
- the OQ's artifacts: ``oq/`` with its lake, the engine's log and the batch report
  it checked;
- ``SHA256SUMS``: the SHA-256 of every file above (``sha256sum -c SHA256SUMS``).

The exit code is 0 only when every check passed.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final

import uns
from uns.validation.checks import REQUIREMENTS, Check

__all__ = ["PARTS", "run_validation"]

PARTS: Final = ("iq", "oq")
Echo = Callable[[str], Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _environment(broker: str | None) -> dict[str, Any]:
    from uns.mqtt.settings import parse_broker_url  # noqa: PLC0415

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return {
        "host": socket.gethostname(),
        "user": user,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "uns_version": uns.__version__,
        "uns_location": str(Path(uns.__file__).resolve().parent.parent),
        "broker": parse_broker_url(broker).masked_url() if broker else "private mosquitto on a free port",
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _operational(out: Path, broker: str | None, echo: Echo) -> tuple[list[Check], list[Path], dict[str, str]]:
    from uns.validation.oq import operate  # noqa: PLC0415
    from uns.validation.oq_checks import oq_checks, report_html  # noqa: PLC0415

    work = out / "oq"
    echo(f"OQ: simulated plant with faults, engine killed and restarted, in {work} ...")
    op = operate(work, broker)
    checks = oq_checks(op)
    shutil.rmtree(work / "lake-tampered", ignore_errors=True)
    shutil.rmtree(work / "keys", ignore_errors=True)  # the OQ's throw-away private keys
    log = work / "engine.log"
    log.write_text("\n".join(op.logs) + "\n", encoding="utf-8")
    artifacts = [log]
    report = report_html(op)
    if report is not None:
        artifacts.append(report)
    namespace = {"tag": op.tag, "group": op.group, "prefix": op.prefix, "host_id": op.host_id}
    return checks, artifacts, namespace


def run_validation(
    out: str | Path, *, broker: str | None = None, only: str | None = None, echo: Echo = print
) -> int:
    """Run the qualification (``only``: "iq" or "oq"; default both), write the evidence
    into ``out``; 0 when every check passed, else 1."""
    from uns.errors import UnsError  # noqa: PLC0415
    from uns.validation.iq import iq_checks  # noqa: PLC0415

    if only is not None and only not in PARTS:
        raise UnsError(f"--only must be iq or oq, not {only!r}")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise UnsError(f"{target} is not empty: evidence goes into a directory of its own")
    target.mkdir(parents=True, exist_ok=True)
    started, t0 = _now(), time.perf_counter()
    checks: list[Check] = []
    artifacts: list[Path] = []
    if only in (None, "iq"):
        echo("IQ: Python, uns, dependencies, installed files against their RECORD, schemas, config ...")
        checks += iq_checks()
    oq_namespace: dict[str, str] = {}
    if only in (None, "oq"):
        more, files, oq_namespace = _operational(target, broker, echo)
        checks += more
        artifacts += files
    passed = all(c.passed for c in checks)
    evidence = {
        "title": f"uns {uns.__version__} installation and operational qualification",
        "result": "pass" if passed else "fail",
        "parts": [only] if only else list(PARTS),
        "started": started,
        "finished": _now(),
        "seconds": round(time.perf_counter() - t0, 1),
        "environment": _environment(broker),
        "checks": [c.to_dict() for c in checks],
        "requirements_not_run": sorted(set(REQUIREMENTS) - {c.requirement for c in checks}),
        "oq_namespace": oq_namespace,
        "artifacts": [
            {"file": str(p.relative_to(target)), "sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in artifacts
        ],
    }
    written = _write_evidence(target, evidence, echo)
    sums = target / "SHA256SUMS"
    sums.write_text("".join(f"{_sha256(p)}  {p.relative_to(target)}\n" for p in [*artifacts, *written]))
    for c in checks:
        echo(f"  {c.requirement} {'pass' if c.passed else 'FAIL'}  {c.detail[:160]}")
    failed = [c.requirement for c in checks if not c.passed]
    summary = "every check passed" if passed else f"FAILED: {', '.join(failed)}"
    echo(f"uns validate: {summary} ({len(checks)} checks, {evidence['seconds']} s); evidence in {target}")
    return 0 if passed else 1


def _write_evidence(target: Path, evidence: dict[str, Any], echo: Echo) -> list[Path]:
    """validation.json, validation.html and (when Chromium is there) validation.pdf."""
    import jinja2  # noqa: PLC0415

    json_path = target / "validation.json"
    json_path.write_text(
        json.dumps(evidence, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    template = (
        resources.files("uns.validation")
        .joinpath("templates", "validation.html.j2")
        .read_text(encoding="utf-8")
    )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(template).render(
        doc=evidence, json_sha256=_sha256(json_path), requirements=REQUIREMENTS
    )
    html_path = target / "validation.html"
    html_path.write_text(html, encoding="utf-8")
    written = [json_path, html_path]
    try:
        from uns.pdf import render_pdf  # noqa: PLC0415

        pdf = render_pdf(html)
    except Exception as exc:  # no Chromium: the HTML is the evidence, the JSON says why
        echo(f"uns validate: no PDF ({type(exc).__name__}: {exc})")
        (target / "validation.pdf.missing").write_text(f"{type(exc).__name__}: {exc}\n")
    else:
        pdf_path = target / "validation.pdf"
        pdf_path.write_bytes(pdf)
        written.append(pdf_path)
    return written
