"""Writing the evidence of ``uns validate``: documents, deviations, the seal.

A document is written as JSON, as self-contained HTML (a Jinja template of
``templates/``) and as PDF (headless Chromium, :mod:`uns.pdf`; left out with a
``.missing`` note saying why when Chromium is not there).  The evidence folder is
then sealed: ``SHA256SUMS`` lists the SHA-256 of every file in it but itself
(``sha256sum -c SHA256SUMS`` checks them), and the SHA-256 of ``SHA256SUMS`` is
recorded as an audit entry (``kind = report``) in a lake's trail, so the folder
cannot be changed later without the change showing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from uns.lake.hashing import file_sha256

__all__ = ["SUMS", "Seal", "deviations", "record_seal", "render_html", "seal", "summary", "write_document"]

SUMS: Final = "SHA256SUMS"
Echo = Callable[[str], Any]


def write_document(
    target: Path, stem: str, doc: Mapping[str, Any], template: str, echo: Echo, **extra: Any
) -> list[Path]:
    """``<stem>.json``, ``<stem>.html`` (``template`` rendered with ``doc`` and ``extra``)
    and, when Chromium is there, ``<stem>.pdf`` in ``target``; returns the files written."""
    json_path = target / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    html = render_html(template, doc=doc, json_sha256=file_sha256(json_path), **extra)
    html_path = target / f"{stem}.html"
    html_path.write_text(html, encoding="utf-8")
    written = [json_path, html_path]
    try:
        from uns.pdf import render_pdf  # noqa: PLC0415

        pdf = render_pdf(html)
    except Exception as exc:  # no Chromium: the HTML is the evidence, the note says why
        echo(f"uns validate: no PDF of {stem} ({type(exc).__name__}: {exc})")
        missing = target / f"{stem}.pdf.missing"
        missing.write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
        written.append(missing)
    else:
        pdf_path = target / f"{stem}.pdf"
        pdf_path.write_bytes(pdf)
        written.append(pdf_path)
    return written


def render_html(template: str, **values: Any) -> str:
    """A template of ``uns/validation/templates`` rendered, everything escaped."""
    import jinja2  # noqa: PLC0415

    folder = resources.files("uns.validation").joinpath("templates")
    loader = jinja2.FunctionLoader(lambda name: folder.joinpath(name).read_text(encoding="utf-8"))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template(template).render(**values)


def deviations(checks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One numbered deviation (D-001, D-002, ...) for every failed step of the executed
    checks (``Check.to_dict()``), with what was expected and what was observed."""
    out: list[dict[str, Any]] = []
    for check in checks:
        for step in check["steps"]:
            if step["result"] != "fail":
                continue
            out.append(
                {
                    "number": f"D-{len(out) + 1:03d}",
                    "requirement": check["requirement"],
                    "step": step["n"],
                    "step_id": step["id"],
                    "expected": step["expected"],
                    "observed": step["actual"],
                }
            )
    return out


def summary(checks: Sequence[Mapping[str, Any]], found: Sequence[Mapping[str, Any]]) -> str:
    """``N of M passed`` (requirements), and the deviations when there are any."""
    passed = sum(1 for c in checks if c["result"] == "pass")
    text = f"{passed} of {len(checks)} passed"
    if found:
        text += f"; {len(found)} deviation{'s' if len(found) != 1 else ''} ({found[0]['number']}"
        text += f"..{found[-1]['number']})" if len(found) > 1 else ")"
    return text


@dataclass(frozen=True, slots=True)
class Seal:
    """The seal of an evidence folder: SHA256SUMS, its SHA-256, the files it lists, and
    where its audit entry went (``lake`` None: nowhere, ``why`` says why)."""

    sums: Path
    sha256: str
    files: int
    lake: str | None = None
    writer_id: str | None = None
    seq: int | None = None
    why: str = ""


def seal(target: Path) -> Seal:
    """Write ``SHA256SUMS`` over every file below ``target`` but itself, sorted by path, in
    the format of ``sha256sum`` (checked by ``sha256sum -c SHA256SUMS``)."""
    sums = target / SUMS
    files = sorted(p for p in target.rglob("*") if p.is_file() and not p.is_symlink() and p != sums)
    lines = []
    for path in files:
        name = path.relative_to(target).as_posix()
        if "\n" in name or "\\" in name:  # sha256sum would escape these: none of ours has one
            raise ValueError(f"{name!r}: a file name sha256sum cannot list as is")
        lines.append(f"{file_sha256(path)}  {name}\n")
    sums.write_text("".join(lines), encoding="utf-8")
    return Seal(sums, file_sha256(sums), len(files))


def record_seal(done: Seal, lake: str | Path | None, detail: Mapping[str, Any], why_not: str = "") -> Seal:
    """Record the SHA-256 of ``done``'s SHA256SUMS in ``lake``'s audit trail (``kind =
    report``, subject ``uns validate``, writer ``uns-cli``); without a lake, the seal says
    why it was not recorded."""
    if lake is None:
        return Seal(done.sums, done.sha256, done.files, why=why_not or "no lake to record it in")
    from uns.lake.audit import CLI_WRITER  # noqa: PLC0415
    from uns.lake.manual import record_report  # noqa: PLC0415

    body = {"document": "uns validate evidence (SHA256SUMS)", "files": done.files, **detail}
    seq = record_report(lake, done.sha256, "uns validate", detail=body)
    return Seal(done.sums, done.sha256, done.files, str(lake), CLI_WRITER, seq)
