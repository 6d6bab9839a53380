"""The native DATA decoder, chosen at import; the pure-Python decoder is the reference.

``uns.sparkplug._speedups`` (C, ``uns/sparkplug/_speedups.c`` over the plain-C core in
``spdata.h``) decodes an ordinary NDATA/DDATA payload of a born owner straight into
packed rows (:class:`uns.core.events.SampleBlock`): one C loop per message, no
protobuf object, no Python object per metric.  It accepts only what it can type with
certainty -- numeric and boolean values of born metrics, no flags, properties, strings,
datasets or templates -- and returns None for anything else, having decided nothing:
the session then takes the Python path (:mod:`uns.sparkplug.fastdata`, then the typed
codec), which accepts the message or rejects it with its reason.  So whenever the
native decoder answers, its samples are the Python decoder's (a hypothesis test and a
fuzzer check it: ``tests/test_native.py``, ``tests/fuzz``).

It is used when the extension was built (``pip install`` builds it with the machine's
C compiler; optional) and ``UNS_NATIVE`` is not ``0``.  :data:`STATUS` says which
path runs and why; the engine logs it once at start.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Final

__all__ = [
    "AVAILABLE",
    "STATUS",
    "columns",
    "decode_data",
    "decode_many",
    "join_blocks",
    "load",
    "pack_blocks",
]


def load(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[ModuleType | None, str]:
    """The extension module (None when not used) and a one-line status."""
    if environ.get("UNS_NATIVE", "1").strip() == "0":
        return None, "native decoder off (UNS_NATIVE=0): the pure-Python decoder runs"
    try:
        import uns.sparkplug._speedups as _speedups  # noqa: PLC0415, PLR0402 - optional; mypy needs this form
    except ImportError as exc:
        return None, f"native decoder not built ({exc}): the pure-Python decoder runs"
    return _speedups, "native decoder on (uns.sparkplug._speedups)"


_MODULE, STATUS = load()
#: the native decoder is in use
AVAILABLE: Final = _MODULE is not None

#: ``decode_data(raw, by_alias, by_name, received_at, max_metrics)`` ->
#: ``(seq, rows, records, common ts or None)`` or None (see the module doc); None when not AVAILABLE
decode_data: Any = None if _MODULE is None else _MODULE.decode_data
#: ``decode_many(messages, start, routes, received_at, max_metrics, max_payload)`` ->
#: ``(next, rows, records, runs)``: the lane of uns.engine.dispatch.Dispatcher.process_many
decode_many: Any = None if _MODULE is None else _MODULE.decode_many
#: ``columns(rows)`` -> (ts, ival, dval, datatype, kind) packed columns; None when not AVAILABLE
columns: Any = None if _MODULE is None else _MODULE.columns
#: ``pack_blocks(...)`` -> one packed WAL record of sample blocks (uns.lake.blocks); None when not AVAILABLE
pack_blocks: Any = None if _MODULE is None else _MODULE.pack_blocks
#: ``join_blocks(records)`` -> a segment's packed records joined (uns.lake.blocks); None when not AVAILABLE
join_blocks: Any = None if _MODULE is None else _MODULE.join_blocks
