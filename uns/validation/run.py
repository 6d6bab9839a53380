"""``uns validate``: a protocol, then its execution, with evidence to file.

- :func:`write_protocol` (``--protocol-only``): the protocol of the parts chosen for
  this version and configuration (:mod:`uns.validation.protocol`), as JSON, HTML and
  PDF, with its SHA-256.
- :func:`run_validation`: executes a protocol -- the file given (``--protocol``,
  refused in one line when it is not one this installation may execute) or, without
  one, the protocol written for this run -- and writes into ``--out``:

  - ``protocol.json``: the protocol executed, as given;
  - ``validation.json``, ``validation.html``, ``validation.pdf``: per requirement and
    step the expected result (the protocol's words) against the actual one,
    pass/fail, a numbered deviation for every failure with what was observed, the
    protocol's approvals found in the lake, the environment, "N of M passed";
  - what the OQ used and made (``oq/``: its lake, the engine's log, the batch report);
  - ``SHA256SUMS`` over every file of the folder but itself; its own SHA-256 is
    printed and recorded as an audit entry in the OQ's lake or the lake of ``--lake``.

IQ: :mod:`uns.validation.iq`; OQ: :mod:`uns.validation.oq` and
:mod:`uns.validation.oq_checks`; PQ on the plant's own configuration and lake:
:mod:`uns.validation.pq`.  The exit code is 0 only when every requirement passed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uns
from uns.errors import UnsError
from uns.validation.checks import PARTS, REQUIREMENTS, Check
from uns.validation.evidence import deviations, record_seal, seal, summary, write_document

if TYPE_CHECKING:
    from uns.config import Config

__all__ = ["ValidationRequest", "run_validation", "write_protocol"]

Echo = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class ValidationRequest:
    """What ``uns validate`` was asked: the folder, the parts, and where they run."""

    out: Path
    parts: tuple[str, ...] = ("iq", "oq")
    broker: str | None = None  # the OQ's broker (None: a private mosquitto)
    config_file: str | None = None
    lake: str | None = None  # the PQ's lake; the lake the seal is recorded in
    batches: tuple[str, ...] = ()  # the PQ's batches
    protocol_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _empty_folder(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UnsError(f"{target} is not empty: evidence goes into a directory of its own")
    target.mkdir(parents=True, exist_ok=True)


def _config(file: str | None) -> Config:
    from uns.config import load_config  # noqa: PLC0415

    return load_config(file)


def _masked(broker: str | None) -> str | None:
    from uns.mqtt.settings import parse_broker_url  # noqa: PLC0415

    return parse_broker_url(broker).masked_url() if broker else None


def _protocol(request: ValidationRequest, config: Config | None) -> dict[str, Any]:
    from uns.validation.environment import environment  # noqa: PLC0415
    from uns.validation.oq import KILL_AT_S, RUN_S  # noqa: PLC0415
    from uns.validation.protocol import build_protocol, config_sha256  # noqa: PLC0415

    if "pq" in request.parts and not request.lake:
        raise UnsError("the PQ runs on the plant's lake: pass --lake LAKE (and --config FILE)")
    env = environment(None, broker=request.broker, config_file=request.config_file)
    configuration = {
        "file": env["config_file"],
        "file_sha256": env["config_file_sha256"],
        "sha256": config_sha256(config) if config is not None else None,
    }
    oq = {"broker": _masked(request.broker) or "private mosquitto", "plant": "simulated pilot plant",
          "run_s": RUN_S, "kill_at_s": KILL_AT_S}  # fmt: skip
    pq = {
        "lake": str(Path(request.lake).resolve()) if request.lake else None,
        "batches": list(request.batches),
    }
    return build_protocol(
        request.parts, created=_now(), author=env["user"], host=socket.gethostname(),
        configuration=configuration, oq=oq, pq=pq,
    )  # fmt: skip


def write_protocol(request: ValidationRequest, echo: Echo = print) -> int:
    """``--protocol-only``: the protocol into ``request.out`` as JSON, HTML and PDF."""
    config = _config(request.config_file)
    doc = _protocol(request, config)
    _empty_folder(request.out)
    write_document(request.out, "protocol", doc, "protocol.html.j2", echo)
    done = seal(request.out)
    echo(f"uns validate: the protocol of {', '.join(p.upper() for p in doc['parts'])} "
         f"({len(doc['requirements'])} requirements) is in {request.out}")  # fmt: skip
    echo(f"protocol SHA-256: {doc['protocol_sha256']}")
    echo(f"approve it with: uns audit sign {request.out / 'protocol.json'} --meaning approved --user NAME "
         "[--key KEY] --lake LAKE (or sign the printed protocol)")  # fmt: skip
    echo(f"SHA256SUMS ({done.files} files) SHA-256: {done.sha256}")
    return 0


def _resolve(request: ValidationRequest) -> tuple[ValidationRequest, dict[str, Any] | None, Config | None]:
    """The request as the protocol file says (its parts, configuration, lake, batches),
    the protocol (None: none given) and the configuration; UnsError when the file may not
    be executed here."""
    from uns.errors import ConfigError  # noqa: PLC0415
    from uns.validation.protocol import config_sha256, load_protocol  # noqa: PLC0415

    if request.protocol_file is None:
        try:
            return request, None, _config(request.config_file)
        except ConfigError:
            if "pq" in request.parts:
                raise
            return request, None, None  # IQ-07 fails and says why
    probe = load_protocol(request.protocol_file, config_sha256=None)
    written_for = probe["configuration"].get("file")
    file = request.config_file
    if file is None and written_for and not str(written_for).startswith("(none"):
        file = str(written_for)
    config = _config(file)
    protocol = load_protocol(request.protocol_file, config_sha256=config_sha256(config))
    oq = protocol.get("oq") or {}
    here = _masked(request.broker) or "private mosquitto"
    if "oq" in protocol["parts"] and here != oq.get("broker"):
        raise UnsError(
            f"the protocol's OQ runs on {oq.get('broker')}, not on {here} (give the same --broker)"
        )
    pq = protocol.get("pq") or {}
    resolved = replace(
        request, parts=tuple(protocol["parts"]), config_file=file,
        lake=pq.get("lake") or request.lake, batches=tuple(pq.get("batches") or ()),
    )  # fmt: skip
    return resolved, protocol, config


def _approvals(protocol: dict[str, Any], lake: str | None, config: Config | None) -> dict[str, Any]:
    """The protocol's signatures in the lake (``--lake``, else the configured one)."""
    from uns.validation.documents import document_signatures  # noqa: PLC0415

    where = lake or (config.lake.path if config is not None else None)
    subject = f"protocol:{protocol['protocol_sha256']}"
    if not where or not Path(where).is_dir():
        return {"lake": where, "signatures": [], "note": "no lake to look in: approval on paper"}
    trusted = config.audit.trusted_keys if config is not None else None
    found = [s.to_dict() for s in document_signatures(where, subject, trusted)]
    note = "" if found else f"no signature of this protocol in {where}: approval on paper"
    return {"lake": where, "signatures": found, "note": note}


def _operational(out: Path, broker: str | None, echo: Echo) -> tuple[list[Check], list[Path], dict[str, Any]]:
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
    namespace = {"tag": op.tag, "group": op.group, "prefix": op.prefix, "host_id": op.host_id,
                 "lake": str(op.lake)}  # fmt: skip
    return checks, artifacts, namespace


def _execute(
    request: ValidationRequest, config: Config | None, echo: Echo
) -> tuple[list[Check], list[Path], dict[str, Any]]:
    from uns.validation.iq import iq_checks  # noqa: PLC0415

    checks: list[Check] = []
    artifacts: list[Path] = []
    oq_namespace: dict[str, Any] = {}
    if "iq" in request.parts:
        echo("IQ: Python, uns, dependencies, installed files against their RECORD, schemas, config ...")
        checks += iq_checks(request.config_file)
    if "oq" in request.parts:
        more, files, oq_namespace = _operational(request.out, request.broker, echo)
        checks += more
        artifacts += files
    if "pq" in request.parts:
        from uns.validation.pq import pq_checks  # noqa: PLC0415

        assert config is not None
        assert request.lake is not None
        echo(f"PQ: the plant's model, spec, audit trail and batches in {request.lake} ...")
        checks += pq_checks(config, request.lake, request.batches)
    return checks, artifacts, oq_namespace


def run_validation(request: ValidationRequest, echo: Echo = print) -> int:
    """Execute the protocol of ``request`` (see the module doc); 0 when every requirement
    passed, else 1.  UnsError (one line) when it cannot start."""
    from uns.validation.environment import environment  # noqa: PLC0415

    unknown = [p for p in request.parts if p not in PARTS]
    if unknown:
        raise UnsError(f"unknown part {unknown[0]!r}: iq, oq or pq")
    request, given, config = _resolve(request)
    protocol = given or _protocol(request, config)
    _empty_folder(request.out)
    protocol_path = request.out / "protocol.json"
    if request.protocol_file is not None:
        shutil.copyfile(request.protocol_file, protocol_path)
    else:
        protocol_path.write_text(json.dumps(protocol, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    started, t0 = _now(), time.perf_counter()
    checks, artifacts, oq_namespace = _execute(request, config, echo)
    wanted = [r["id"] for r in protocol["requirements"]]
    expected = {r["id"]: {s["id"]: s["expected"] for s in r["steps"]} for r in protocol["requirements"]}
    executed = [c.to_dict(expected[c.requirement]) for c in checks if c.requirement in expected]
    found = deviations(executed)
    passed = bool(executed) and all(c["result"] == "pass" for c in executed)
    evidence = {
        "title": f"uns {uns.__version__} {'/'.join(p.upper() for p in request.parts)} executed protocol",
        "result": "pass" if passed else "fail",
        "summary": summary(executed, found),
        "passed": sum(1 for c in executed if c["result"] == "pass"),
        "total": len(executed),
        "parts": list(request.parts),
        "protocol": {
            "file": "protocol.json",
            "sha256": protocol["protocol_sha256"],
            "given": request.protocol_file is not None,
            "created": protocol["created"],
            "approvals": _approvals(protocol, request.lake, config)
            if request.protocol_file
            else {"signatures": [], "note": "written for this run, not approved before execution"},
        },
        "started": started,
        "finished": _now(),
        "seconds": round(time.perf_counter() - t0, 1),
        "environment": environment(config, broker=request.broker, config_file=request.config_file),
        "checks": executed,
        "deviations": found,
        "requirements_not_run": [r for r in wanted if r not in {c["requirement"] for c in executed}],
        "requirements_not_in_protocol": [r for r in REQUIREMENTS if r not in wanted],
        "oq_namespace": oq_namespace,
        "pq": {"lake": request.lake, "batches": list(request.batches)} if "pq" in request.parts else None,
        "artifacts": [
            {"file": p.relative_to(request.out).as_posix(), "sha256": _sha(p), "bytes": p.stat().st_size}
            for p in [protocol_path, *artifacts]
        ],
    }
    write_document(request.out, "validation", evidence, "validation.html.j2", echo)
    done = seal(request.out)
    lake = request.lake or oq_namespace.get("lake")
    detail = {"result": evidence["result"], "summary": evidence["summary"],
              "protocol_sha256": protocol["protocol_sha256"], "out": str(request.out.resolve())}  # fmt: skip
    sealed = record_seal(done, lake, detail, "no lake: pass --lake to record the seal")
    _report(executed, evidence, request, sealed, echo)
    return 0 if passed else 1


def _sha(path: Path) -> str:
    from uns.lake.hashing import file_sha256  # noqa: PLC0415

    return file_sha256(path)


def _report(executed: Sequence[dict[str, Any]], evidence: dict[str, Any], request: ValidationRequest,
            sealed: Any, echo: Echo) -> None:  # fmt: skip
    for c in executed:
        echo(f"  {c['requirement']} {'pass' if c['result'] == 'pass' else 'FAIL'}  {c['detail'][:160]}")
    for d in evidence["deviations"]:
        echo(f"  {d['number']} {d['requirement']} step {d['step']}: expected {d['expected']}; "
             f"observed {str(d['observed'])[:200]}")  # fmt: skip
    verdict = "PASS" if evidence["result"] == "pass" else "FAIL"
    echo(
        f"uns validate: {verdict}, {evidence['summary']} ({evidence['seconds']} s); evidence in {request.out}"
    )
    where = (
        f"recorded in {sealed.lake} as audit entry {sealed.writer_id} #{sealed.seq}" if sealed.seq is not None
        else f"not recorded ({sealed.why})"
    )  # fmt: skip
    echo(f"SHA256SUMS ({sealed.files} files) SHA-256: {sealed.sha256}; {where}")
